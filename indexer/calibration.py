"""A match scale calibrated on the catalogue itself, so that results read at a glance.

Raw cosine similarities of pooled CNN features crowd into a narrow band
(ImageNet EfficientNet-Lite0: a product's nearest neighbour is typically
0.87 similar and its 50th 0.72; with random weights everything is 0.99+),
so "87% similar" says little. At publish time we look at how similar the catalogue's items are
to their own neighbours: for a sample of items, the similarity of their
1st, 10th and 50th nearest neighbour (themselves excluded). A search hit is
then placed on that scale: as close as a typical nearest neighbour is a
"very close" match, as close as a typical 50th neighbour only "loosely
related". The quantiles are stored in the manifest (``match_scale``); the
API keeps the raw distance and similarity.
"""

from __future__ import annotations

import numpy as np

SCALE_VERSION = 1
RANKS = (1, 10, 50)  # neighbour ranks whose similarity is recorded
QUANTILES = (0.1, 0.5, 0.9)
SAMPLE = 500  # catalogue items used as queries; enough for stable medians
_CHUNK_FLOATS = 1 << 24  # similarities per matrix product (64 MB), whatever the catalogue's size
_MAX_CHUNK_ROWS = 128  # query rows per matrix product in a small catalogue

# (rank, quantile) -> score: the anchors of the 0-100 scale, in increasing order
_ANCHORS = (((50, 0.1), 0.0), ((50, 0.5), 20.0), ((10, 0.5), 45.0), ((1, 0.5), 75.0), ((1, 0.9), 95.0))
# score thresholds of the labels, best first
LABELS = ((75.0, "Very close match"), (45.0, "Close match"), (20.0, "Related"), (0.0, "Loosely related"))
EXACT_DISTANCE = 1e-3  # the same photo (up to float rounding)


def kth_neighbour_similarities(
    embeddings: np.ndarray, rows: np.ndarray, ks, block_rows: int | None = None
) -> np.ndarray:
    """Similarity of each of ``rows`` to its k-th nearest other item in ``embeddings``, one row per k in ``ks``.

    An item is never its own neighbour (an exact duplicate is). Query rows
    go ``block_rows`` at a time, by default as many as keep a block of
    similarities near ``_CHUNK_FLOATS`` whatever the catalogue's size.
    """
    n = len(embeddings)
    if block_rows is None:
        block_rows = max(1, min(_MAX_CHUNK_ROWS, _CHUNK_FLOATS // n))
    positions = [n - k for k in ks]  # the k-th largest sits at ascending position n - k
    found = np.empty((len(positions), len(rows)), np.float32)
    for start in range(0, len(rows), block_rows):
        chunk = rows[start : start + block_rows]
        sims = embeddings[chunk] @ embeddings.T
        sims[np.arange(len(chunk)), chunk] = -np.inf  # an item is not its own neighbour
        found[:, start : start + len(chunk)] = np.partition(sims, positions, axis=1)[:, positions].T
    return found


def match_scale(embeddings: np.ndarray, *, sample: int = SAMPLE, seed: int = 0) -> dict | None:
    """Quantiles of neighbour similarities in ``embeddings`` (unit rows), for the manifest.

    Returns ``None`` when the catalogue is too small to have a 50th neighbour
    worth measuring (fewer than 3 items); ranks beyond its size are clipped.
    """
    n = len(embeddings)
    if n < 3:
        return None
    ranks = sorted({min(rank, n - 1) for rank in RANKS})
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(n, sample), replace=False))
    found = dict(zip(ranks, kth_neighbour_similarities(embeddings, rows, ranks)))
    return {
        "version": SCALE_VERSION,
        "sample": int(len(rows)),
        "quantiles": [float(q) for q in QUANTILES],
        "similarity": {
            str(rank): [round(float(v), 6) for v in np.quantile(found[rank], QUANTILES)]
            for rank in ranks
        },
    }


def _anchors(scale: dict) -> tuple[np.ndarray, np.ndarray]:
    quantiles = scale["quantiles"]
    table = scale["similarity"]
    sims, scores = [], []
    for (rank, q), score in _ANCHORS:
        values = table.get(str(rank)) or table[max(table, key=int)]  # small catalogues clip the ranks
        sims.append(values[quantiles.index(q)])
        scores.append(score)
    sims.append(1.0)
    scores.append(100.0)
    # a tiny catalogue can give anchors out of order; keep the scale monotonic
    return np.maximum.accumulate(np.asarray(sims)), np.asarray(scores)


def match_score(similarity: float, scale: dict | None) -> float | None:
    """Where ``similarity`` sits on the catalogue's scale, 0 (loosely related) to 100 (identical)."""
    if not scale or scale.get("version") != SCALE_VERSION:
        return None
    sims, scores = _anchors(scale)
    return float(np.interp(similarity, sims, scores))


def match_label(score: float | None, same_photo: bool = False) -> str | None:
    """The words shown for a match score (``same_photo``: the query is this very photo)."""
    if same_photo:
        return "Same photo"
    if score is None:
        return None
    return next(label for threshold, label in LABELS if score >= threshold)
