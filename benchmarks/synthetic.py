"""Synthetic catalogues whose nearest-neighbour distances match a real one's.

The scale benchmark grows ~3,000 real vectors (one per product photo) into
catalogues of up to a million. A real vector plus tiny noise makes clusters of
near-copies, which nearest-neighbour search finds too easily. Here each
synthetic item is instead a point between two real items of the same label
(e.g. the same ``articleType``) plus isotropic noise, re-normalised; the noise
level is calibrated so that a synthetic sample as large as the real set has the
real set's median distance to its nearest neighbour.

- ``neighbour_distance_medians(vectors, ks)``: median k-th neighbour distance.
- ``SyntheticCatalogue(vectors, labels, seed)``: calibrates on construction;
  ``rows(start, stop)`` gives a deterministic block of synthetic rows and the
  real row each comes from; ``report()`` puts real and synthetic medians side
  by side.

Numpy only (the neighbour search is `indexer.calibration`'s), so a benchmark parent
process stays small.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence

import numpy as np

from indexer.calibration import kth_neighbour_similarities

log = logging.getLogger(__name__)

BLOCK_ROWS = 1024  # rows per matrix product in neighbour_distance_medians: 1024 x 10,000 float32 is 40 MB
ALPHA_BRACKET = (0.0, 2.0)  # noise norm is alpha times the real NN1 median; 2 is far more than needed
MAX_ALPHA = 64.0  # how far the upper end may be doubled if the bracket is too narrow
CALIBRATION_ROUNDS = 15
CALIBRATION_TOLERANCE = 0.005  # relative; stop early once this close (the contract is 2 %)
# Seed-sequence keys of the calibration and report samples; far above any row index passed to rows(),
# so they never share draws with a block of the catalogue.
CALIBRATION_KEY = 2**62
REPORT_KEY = 2**62 + 1
_UNLABELLED = object()  # group key of an unlabelled row, with its row number: equal to no real label


def neighbour_distance_medians(vectors: np.ndarray, ks=(1, 10)) -> dict[int, float]:
    """For each ``k`` in ``ks``, the median over items of the distance to their k-th nearest other item.

    ``vectors`` must be unit vectors (rows); distances are euclidean, from
    cosines as ``sqrt(max(2 - 2 cos, 0))``. An item is never its own
    neighbour, but an exact duplicate of it counts (at distance 0). Rows are
    processed ``BLOCK_ROWS`` at a time, so memory is a block of similarities,
    not the full ``n x n`` matrix.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    n = len(vectors)
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1 or ks[-1] > n - 1:
        raise ValueError(f"each k must be in 1..{n - 1} for {n} items, got {ks}")
    # the same computation as the manifest's match scale, over every item
    kth_sims = kth_neighbour_similarities(vectors, np.arange(n), ks, block_rows=BLOCK_ROWS)
    distances = np.sqrt(np.maximum(2.0 - 2.0 * kth_sims.astype(np.float64), 0.0))
    return {k: float(np.median(distances[row])) for row, k in enumerate(ks)}


class SyntheticCatalogue:
    """A seeded generator of synthetic unit vectors shaped like ``vectors``.

    One synthetic item: pick a real row ``i`` uniformly; pick a partner ``j``
    uniformly among the rows with ``i``'s label (possibly ``i`` itself); take
    ``(1 - t) x_i + t x_j`` with ``t ~ Uniform(0, 1/2)``; add Gaussian noise
    of per-dimension sigma ``alpha * real_nn1_median / sqrt(D)``; re-normalise.

    Mixing law: since ``j`` is drawn from ``i``'s own group, the pair
    ``(i, j)`` is exchangeable, so ``t ~ Uniform(0, 1/2)`` gives exactly the
    same distribution of points as ``t ~ Uniform(0, 1)``; the half range only
    makes ``i`` (the reported source, whose metadata and colours the caller
    reuses) always the parent the point is closer to.

    Unlabelled rows (label ``None`` or ``""``) each form a group of their own:
    nothing says which items they resemble, so they are only perturbed, never
    mixed with an unrelated item.

    ``alpha`` is calibrated on construction by bisection, with the same random
    draws every round, so that ``calibration_items`` synthetic items (default:
    as many as real ones, so the two densities compare) have the real median
    nearest-neighbour distance.

    Attributes: ``alpha``; ``real_medians`` (``{1: ..., 10: ...}``, of the
    real vectors); ``sigma`` (the per-dimension noise sigma).
    """

    def __init__(
        self,
        vectors: np.ndarray,
        labels: Sequence[Hashable | None],
        seed: int,
        *,
        calibration_items: int | None = None,
    ) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.vectors.ndim != 2 or len(self.vectors) < 11:
            raise ValueError(f"need a 2-D array of at least 11 real vectors, got shape {self.vectors.shape}")
        if len(labels) != len(self.vectors):
            raise ValueError(f"{len(labels)} labels for {len(self.vectors)} vectors")
        self.seed = int(seed)
        self.dim = self.vectors.shape[1]
        self._group_of, self._group_members, self._group_start, self._group_size = _groups(labels)
        self.real_medians = neighbour_distance_medians(self.vectors, (1, 10))
        self.calibration_items = int(calibration_items or len(self.vectors))
        self.alpha = self._calibrate()
        self.sigma = self.alpha * self.real_medians[1] / np.sqrt(self.dim)

    # ------------------------------------------------------------ generation

    def _draw(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The random part of ``count`` items: mixed (un-normalised) points, unit noise, and sources."""
        sources = rng.integers(0, len(self.vectors), count)
        groups = self._group_of[sources]
        partners = self._group_members[self._group_start[groups] + rng.integers(0, self._group_size[groups])]
        t = rng.uniform(0.0, 0.5, count).astype(np.float32)[:, None]
        mixed = (1.0 - t) * self.vectors[sources] + t * self.vectors[partners]
        noise = rng.standard_normal((count, self.dim), dtype=np.float32)
        return mixed, noise, sources

    def _finish(self, mixed: np.ndarray, noise: np.ndarray, alpha: float) -> np.ndarray:
        """Unit rows from the mixed points and unit noise at noise level ``alpha``."""
        sigma = np.float32(alpha * self.real_medians[1] / np.sqrt(self.dim))
        rows = mixed + sigma * noise
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        return rows.astype(np.float32, copy=False)

    def rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Synthetic rows ``start..stop`` (float32, unit norm) and the real row (int64) each derives from.

        Seeded by ``(seed, start)``: the same block always gives the same rows,
        as long as the caller keeps the same block layout.
        """
        if not 0 <= start <= stop:
            raise ValueError(f"bad block {start}..{stop}")
        rng = np.random.default_rng([self.seed, int(start)])
        mixed, noise, sources = self._draw(rng, stop - start)
        return self._finish(mixed, noise, self.alpha), sources.astype(np.int64)

    # ------------------------------------------------------------ calibration and report

    def _calibrate(self) -> float:
        """Bisect ``alpha`` so the synthetic NN1 median matches the real one (same draws every round)."""
        target = self.real_medians[1]
        rng = np.random.default_rng([self.seed, CALIBRATION_KEY])
        mixed, noise, _ = self._draw(rng, self.calibration_items)

        def nn1(alpha: float) -> float:
            return neighbour_distance_medians(self._finish(mixed, noise, alpha), (1,))[1]

        low, high = ALPHA_BRACKET
        at_low = nn1(low)
        if at_low >= target:
            # mixing alone already spreads items as far apart as real ones: noise could only make it worse
            log.warning("Synthetic NN1 median %.4f without noise is already >= real %.4f; alpha = 0", at_low, target)
            return 0.0
        rounds = 1
        best = (abs(at_low - target), low)
        at_high = nn1(high)
        rounds += 1
        # more noise spreads items further apart; widen the bracket until it does
        while at_high < target and high < MAX_ALPHA:
            low, high = high, high * 2
            at_high = nn1(high)
            rounds += 1
        best = min(best, (abs(at_high - target), high))
        if at_high < target:
            log.warning("Synthetic NN1 median %.4f < real %.4f even at alpha %.1f", at_high, target, high)
            return high
        while rounds < CALIBRATION_ROUNDS and best[0] > CALIBRATION_TOLERANCE * target:
            middle = (low + high) / 2
            got = nn1(middle)
            rounds += 1
            best = min(best, (abs(got - target), middle))
            if got < target:
                low = middle
            else:
                high = middle
        error, alpha = best
        if error > 0.02 * target:
            log.warning("Calibration missed: NN1 off by %.1f %% at alpha %.4f", 100 * error / target, alpha)
        log.info(
            "Calibrated alpha %.4f in %d rounds on %d items (real NN1 median %.4f, synthetic off by %.2f %%)",
            alpha, rounds, self.calibration_items, target, 100 * error / target,
        )
        return float(alpha)

    def report(self, sample_seed: int = 1) -> dict:
        """Real and synthetic NN1 / NN10 medians side by side, and ``alpha``.

        The synthetic figures come from a fresh sample (not the calibration
        draws) of as many items as the real set, so both are measured at the
        same density.
        """
        rng = np.random.default_rng([self.seed, REPORT_KEY, int(sample_seed)])
        mixed, noise, _ = self._draw(rng, len(self.vectors))
        synthetic = neighbour_distance_medians(self._finish(mixed, noise, self.alpha), (1, 10))
        return {
            "real_nn1_median": round(self.real_medians[1], 4),
            "synthetic_nn1_median": round(synthetic[1], 4),
            "real_nn10_median": round(self.real_medians[10], 4),
            "synthetic_nn10_median": round(synthetic[10], 4),
            "alpha": round(self.alpha, 4),
        }


def _groups(labels: Sequence[Hashable | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Group id of each row, the rows sorted by group, and each group's start and size in that order."""
    ids: dict[Hashable, int] = {}
    group_of = np.empty(len(labels), dtype=np.int64)
    for row, label in enumerate(labels):
        if label is None or label == "":
            group_of[row] = len(ids)
            ids[(_UNLABELLED, row)] = group_of[row]  # a group of its own
        else:
            group_of[row] = ids.setdefault(label, len(ids))
    members = np.argsort(group_of, kind="stable")
    size = np.bincount(group_of, minlength=len(ids))
    start = np.concatenate([[0], np.cumsum(size)[:-1]])
    return group_of, members, start, size
