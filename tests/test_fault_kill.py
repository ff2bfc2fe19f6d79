"""Artifact integrity under SIGKILL.

``python -m indexer build`` runs as a real subprocess (real TensorFlow,
random weights, batches and checkpoints of 8) on a 40-image catalogue and is
killed with SIGKILL at 10 points. Each point is a phase trigger plus a
seeded random delay, so the kills span TensorFlow import and model load
("start"), embedding (after the first shard is on disk) and publishing (the
build's "indexing" phase), whatever the speed of the machine:

* 2 kills during the very first build (no complete set exists yet), which
  then completes, reusing the shards finished before the kill;
* then the catalogue changes (4 removed, 16 added), so there is a
  "previous complete set", and 8 more kills. Whenever a killed run managed
  to finish first, the catalogue changes again so the next kill still has
  work to interrupt; the last kill always lands mid-embedding.

After every kill the index dir must hold the previous or the new complete
set (``load_index`` verifies every checksum, and the manifest's items equal
one of the catalogue listings), or nothing at all while no build has ever
completed. Finally a build runs to completion, publishes the latest listing
and embeds only what no finished shard or generation held: ``reused`` counts
the embeddings finished before the kills.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from indexer import checkpoints, generation, loading, progress
from indexer.catalogue import scan
from indexer.model import resolve_weights
from indexer.models import DEFAULT_MODEL, get_spec
from indexer.plan import key_for

pytestmark = pytest.mark.slow  # ten real `python -m indexer build` processes, killed

ROOT = Path(__file__).resolve().parent.parent
SEED = 20240611
RUN_TIMEOUT_S = 240
NEW_PER_CHANGE = 16  # two batches: a kill after the first shard still finds work left
SUMMARY = re.compile(r"(\d+) items in index: indexed (\d+), reused (\d+), removed (\d+)")


def child_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASHION_")}
    env.update(
        FASHION_WEIGHTS="none",
        FASHION_CHECKPOINT_EVERY="8",
        FASHION_BATCH_SIZE="8",
        FASHION_TF_THREADS="1",
        FASHION_RUNTIME="tensorflow",  # kill points are timed against TensorFlow's pace
        FASHION_TUNING="off",  # the model's own vectors: the kill points fall in embedding, not tuning
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONPATH=str(ROOT),
    )
    return env


class Harness:
    """Runs builds of one catalogue into one index dir and kills them."""

    def __init__(self, tmp: Path, demo: Path):
        self.demo = demo
        self.catalogue = tmp / "catalogue"
        self.catalogue.mkdir()
        self.index_dir = tmp / "index"
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.runs = 0
        self.timeline: list[str] = []
        self.ever_completed = False
        self.key = key_for(resolve_weights("none", 1234))
        self.spare = list(range(41, 145))

    # ------------------------------------------------------------ catalogue

    def add(self, ids) -> None:
        for item_id in ids:
            shutil.copy2(self.demo / f"{item_id}.jpg", self.catalogue / f"{item_id}.jpg")

    def add_new(self, count: int) -> None:
        ids, self.spare = self.spare[:count], self.spare[count:]
        self.add(ids)

    def remove(self, ids) -> None:
        for item_id in ids:
            (self.catalogue / f"{item_id}.jpg").unlink()

    def listing(self) -> list[str]:
        return [f.relpath for f in scan(self.catalogue)]

    # ------------------------------------------------------------ runs

    def spawn(self) -> tuple[subprocess.Popen, float, Path]:
        self.runs += 1
        log = self.logs / f"run-{self.runs}.log"
        started = time.time()
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "indexer", "build", "--catalogue", str(self.catalogue),
                 "--index-dir", str(self.index_dir)],
                cwd=ROOT, env=child_env(), stdout=out, stderr=subprocess.STDOUT,
            )
        return proc, started, log

    def _reached(self, phase: str, min_done: int, started: float) -> bool:
        if phase == "start":
            return True
        status = progress.read_status(self.index_dir)
        return (
            status.get("updated_at", 0) >= started
            and status.get("state") == "building"
            and status.get("phase") == phase
            and status.get("done", 0) >= min_done
        )

    def kill_at(self, phase: str, min_done: int, delay: float) -> str:
        """Start a build, wait for ``phase`` (with ``done >= min_done``), then ``delay`` s, then SIGKILL.

        Returns ``"killed"`` or ``"completed"`` (the build finished first).
        """
        proc, started, log = self.spawn()
        deadline = time.monotonic() + RUN_TIMEOUT_S
        try:
            while proc.poll() is None and not self._reached(phase, min_done, started):
                assert time.monotonic() < deadline, f"run {self.runs} never reached {phase}"
                time.sleep(0.005)
            fire_at = time.monotonic() + delay
            while proc.poll() is None and time.monotonic() < fire_at:
                time.sleep(0.002)
            if proc.poll() is None:
                status = progress.read_status(self.index_dir)
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=60)
                outcome = "killed"
                where = f"{status.get('phase')} {status.get('done')}/{status.get('total')}"
            else:
                outcome = "completed"
                where = "-"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=60)
        if outcome == "completed":
            assert proc.returncode == 0, log.read_text()[-3000:]
        else:
            assert proc.returncode == -signal.SIGKILL
        self.timeline.append(
            f"run {self.runs}: {phase}>={min_done} +{delay:.2f}s -> {outcome} at {time.time() - started:.1f}s ({where})"
        )
        return outcome

    def build(self) -> dict:
        """Run a build to completion and return its summary numbers."""
        proc, started, log = self.spawn()
        try:
            proc.wait(timeout=RUN_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=60)
        output = log.read_text()
        assert proc.returncode == 0, output[-3000:]
        match = SUMMARY.search(output)
        assert match, output[-3000:]
        total, indexed, reused, removed = map(int, match.groups())
        self.timeline.append(f"run {self.runs}: complete build in {time.time() - started:.1f}s: {match.group(0)}")
        self.ever_completed = True
        return {"total": total, "indexed": indexed, "reused": reused, "removed": removed}

    # ------------------------------------------------------------ checks

    def current_items(self, listings: list[list[str]]) -> list[str] | None:
        """Check the index dir holds one complete set from ``listings`` (or none yet); return its items."""
        gen = generation.current_generation(self.index_dir)
        if gen is None:
            assert not self.ever_completed, "a complete set existed and is gone"
            assert not (self.index_dir / "current").exists()
            return None
        loaded = loading.load_index(self.index_dir, expect=self.key)  # every checksum verified
        try:
            items = [relpath for relpath, _size, _mtime in loaded.manifest["items"]]
            assert items in listings, f"{len(items)} items match neither the previous nor the new catalogue"
            assert loaded.filenames == items
            assert loaded.embeddings.shape == (len(items), get_spec(DEFAULT_MODEL).dim)
            assert loaded.annoy.get_n_items() == len(items)
            for name in (*generation.ARTIFACT_FILES, generation.MANIFEST):
                link = self.index_dir / name
                if link.is_symlink():  # the fixed top-level links always lead into current
                    assert link.resolve() == (gen / name).resolve()
        finally:
            loaded.annoy.unload()
        self.ever_completed = True
        return items

    def note(self, items: list[str] | None, listings: list[list[str]]) -> None:
        """Add which set the index dir holds after the last kill to the timeline."""
        held = "no set yet" if items is None else f"catalogue version {listings.index(items) + 1} of {len(listings)}"
        self.timeline[-1] += f"; index holds {held}"

    def shard_paths(self) -> set[str]:
        return set(checkpoints.locate_shards(self.index_dir / generation.WORK_DIR, model_key=self.key))


def test_sigkill_at_ten_points_keeps_a_complete_set(tmp_path, demo_catalogue):
    rng = random.Random(SEED)
    h = Harness(tmp_path, demo_catalogue)
    h.add(range(1, 41))
    listings = [h.listing()]
    assert len(listings[0]) == 40
    kills = 0

    try:
        # ---- the very first build: nothing complete exists yet
        for phase, min_done, delay in [
            ("start", 0, rng.uniform(0.3, 3.0)),  # importing TensorFlow / loading the model
            ("embedding", 8, rng.uniform(0.0, 1.0)),  # at least one shard is on disk
        ]:
            h.kill_at(phase, min_done, delay)
            kills += 1
            h.note(h.current_items(listings), listings)

        if h.current_items(listings) is None:
            shards = h.shard_paths()
            assert shards, "a kill after the first shard should have left finished embeddings"
            report = h.build()
            assert report["total"] == 40
            assert report["indexed"] == 40 - len(shards)
            assert report["reused"] == len(shards) > 0
        assert h.current_items(listings) == listings[0]

        # ---- the catalogue changes: the set above is now the previous complete set
        h.remove(range(37, 41))
        h.add_new(NEW_PER_CHANGE)
        listings.append(h.listing())
        plan = [
            ("start", 0, rng.uniform(0.3, 2.0)),  # Python / TensorFlow import
            ("start", 0, rng.uniform(1.0, 4.0)),
            ("start", 0, rng.uniform(2.0, 6.0)),  # model load
            ("start", 0, rng.uniform(4.0, 9.0)),  # model load or the first batch
            ("embedding", 0, rng.uniform(0.0, 0.5)),  # the first batch
            ("indexing", 0, rng.uniform(0.0, 0.05)),  # publishing
            ("indexing", 0, rng.uniform(0.02, 0.3)),  # publishing, or just after
        ]
        for phase, min_done, delay in plan:
            if h.current_items(listings) == listings[-1]:
                # a killed run had finished first: change the catalogue again so this kill has work to interrupt
                h.add_new(NEW_PER_CHANGE)
                listings.append(h.listing())
            h.kill_at(phase, min_done, delay)
            kills += 1
            h.note(h.current_items(listings), listings)

        # ---- the last kill lands mid-embedding, after finished shards are on disk
        for _attempt in range(3):
            if h.current_items(listings) == listings[-1]:
                h.add_new(NEW_PER_CHANGE)
                listings.append(h.listing())
            outcome = h.kill_at("embedding", 8, rng.uniform(0.0, 0.2))
            kills += 1
            h.note(h.current_items(listings), listings)
            # a kill that landed after the build had published interrupted nothing: try again
            if outcome == "killed" and h.current_items(listings) != listings[-1]:
                break
        assert outcome == "killed"
        assert kills >= 10

        # ---- the next build completes and reuses the finished embeddings
        previous = h.current_items(listings)
        final = listings[-1]
        assert previous != final
        shards = h.shard_paths() & set(final)
        new_files = set(final) - set(previous or [])
        assert shards & new_files, "embeddings finished before the kill should be in shards"
        must_embed = set(final) - set(previous or []) - shards
        report = h.build()
        assert h.current_items(listings) == final
        assert report["total"] == len(final)
        assert report["indexed"] == len(must_embed)
        assert report["reused"] == len(final) - len(must_embed)
        assert report["reused"] >= len(shards & new_files) > 0
        assert not list((h.index_dir / generation.WORK_DIR).glob("shard-*")), "finished shards are cleared"
    except BaseException:
        print("\n".join(h.timeline))
        raise
    print("\n".join(h.timeline))

