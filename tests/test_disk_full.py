"""A full disk during a build is an ordinary error: refused up front, or cleaned up after, never a SIGBUS.

The fast tests fake the free space (``os.statvfs``). The others mount a
small tmpfs, which needs root (as in CI): elsewhere they skip, unless
``FASHION_REQUIRE_ROOT=1`` (set by .ci/run), where that is an error instead.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import indexer.build
import indexer.publish
from indexer.build import build_index
from indexer.cleaning import remove_orphan_generations
from indexer.config import Settings
from indexer.generation import MANIFEST, STATUS, current_generation
from indexer.loading import load_index
from indexer.progress import read_status
from indexer.publish import NotEnoughSpace, annoy_bytes

ROOT = Path(__file__).resolve().parents[1]


def _generations(index_dir: Path) -> list[str]:
    return sorted(p.name for p in Path(index_dir).glob("gen-*"))


def _failures(app) -> dict[str, float]:
    text = app.test_client().get("/metrics").get_data(as_text=True)
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "fashion_build_failures_total"
    }


def _add_photos(settings: Settings, demo_catalogue: Path, ids) -> None:
    for item in ids:
        shutil.copy2(demo_catalogue / f"{item}.jpg", settings.catalogue / f"{item}.jpg")


# ---------------------------------------------------------------- fast: faked free space


def test_a_build_refuses_to_start_without_the_space_it_needs(
    tiny_settings, fake_embedder, demo_catalogue, monkeypatch, make_fake_app
):
    settings = tiny_settings
    build_index(settings, fake_embedder)
    served = current_generation(settings.index_dir)
    _add_photos(settings, demo_catalogue, [9, 10])
    real = os.statvfs
    index_dir = str(settings.index_dir)

    def little_free(path):
        stats = real(path)
        if not str(path).startswith(index_dir):
            return stats
        values = list(stats)
        values[4] = 10  # f_bavail: 10 blocks free
        return os.statvfs_result(values)

    monkeypatch.setattr(os, "statvfs", little_free)
    with pytest.raises(NotEnoughSpace) as raised:
        build_index(settings, fake_embedder)
    assert raised.value.errno == errno.ENOSPC
    assert "free" in str(raised.value) and "needed" in str(raised.value)
    status = read_status(settings.index_dir)
    assert status["state"] == "error" and status["reason"] == "disk_full"
    assert "disk is full" in status["message"] and "MB free" in status["message"] and "needed" in status["message"]
    assert index_dir not in status["message"]
    assert status["failures"] == {"disk_full": 1}
    assert current_generation(settings.index_dir) == served
    assert _generations(settings.index_dir) == [served.name]
    assert len(load_index(settings.index_dir).filenames) == 8
    assert _failures(make_fake_app(settings)) == {"disk_full": 1.0}

    monkeypatch.setattr(os, "statvfs", real)
    report = build_index(settings, fake_embedder)
    assert report.total == 10
    status = read_status(settings.index_dir)
    assert status["state"] == "ready" and status["reason"] is None
    assert status["failures"] == {"disk_full": 1}  # counted for good, like a Prometheus counter


def test_a_build_removes_generations_a_killed_publish_left(tiny_settings, fake_embedder, demo_catalogue):
    settings = tiny_settings
    build_index(settings, fake_embedder)
    served = current_generation(settings.index_dir)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = Path(settings.index_dir) / f"gen-1-{dead.pid}"
    (orphan).mkdir()
    (orphan / "embeddings.npy").write_bytes(b"half")
    busy = Path(settings.index_dir) / "gen-2-1"  # pid 1 is alive: perhaps writing it now
    busy.mkdir()
    _add_photos(settings, demo_catalogue, [9])
    build_index(settings, fake_embedder)
    assert not orphan.exists()
    assert busy.exists()
    new = current_generation(settings.index_dir)
    assert sorted(_generations(settings.index_dir)) == sorted([busy.name, served.name, new.name])


def test_orphan_removal_never_touches_current_or_complete_generations(tmp_path):
    complete = tmp_path / "gen-5-999999999"
    complete.mkdir()
    (complete / MANIFEST).write_text("{}")
    current = tmp_path / "gen-6-999999999"
    current.mkdir()  # no manifest, but current: never removed here
    os.symlink(current.name, tmp_path / "current")
    orphan = tmp_path / f"gen-7-{os.getpid()}"
    orphan.mkdir()
    assert remove_orphan_generations(tmp_path) == [orphan]
    assert complete.exists() and current.exists()


def test_the_annoy_bound_holds(tmp_path):
    import numpy as np

    from indexer.publish import build_annoy

    for count, dim, trees in ((3, 8, 10), (200, 16, 50), (2000, 64, 20)):
        vectors = np.random.default_rng(count).standard_normal((count, dim)).astype(np.float32)
        np.save(tmp_path / "v.npy", vectors)
        build_annoy(tmp_path / "v.npy", trees, tmp_path / "index.ann")
        assert os.path.getsize(tmp_path / "index.ann") <= annoy_bytes(count, dim, trees)


# ---------------------------------------------------------------- a real full disk (root: tmpfs)


@pytest.fixture
def small_disk(tmp_path):
    """A factory mounting a tmpfs of the given size in MB; unmounted after the test."""
    mounted = []

    def mount(size_mb: int) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        problem = None
        if os.geteuid() != 0:
            problem = "mounting a tmpfs needs root"
        elif shutil.which("mount") is None:
            problem = "no mount command"
        else:
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(folder)],
                capture_output=True, text=True,
            )
            if done.returncode != 0:
                problem = f"mount failed: {done.stderr.strip()}"
        if problem is not None:
            if os.environ.get("FASHION_REQUIRE_ROOT") == "1":
                pytest.fail(problem + " (FASHION_REQUIRE_ROOT=1, so this is an error, not a skip)")
            pytest.skip(problem)
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(disk: Path, leave: int) -> Path:
    """A ballast file taking all of ``disk``'s free space but ``leave`` bytes."""
    stats = os.statvfs(disk)
    free = stats.f_bavail * stats.f_frsize
    ballast = disk / "ballast"
    size = max(0, free - leave)
    with open(ballast, "wb") as handle:
        if size:
            os.posix_fallocate(handle.fileno(), 0, size)
    return ballast


def _allocated(folder: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def _on_disk(settings: Settings, disk: Path) -> Settings:
    return settings.replace(index_dir=disk / "index")


def test_annoy_on_a_full_disk_raises_instead_of_dying_of_sigbus(small_disk, tmp_path):
    disk = small_disk(4)
    script = (
        "import sys, numpy as np; from pathlib import Path; from indexer.publish import build_annoy\n"
        "np.save(sys.argv[1], np.random.default_rng(0).standard_normal((8000, 128)).astype(np.float32))\n"
        "try:\n"
        "    build_annoy(Path(sys.argv[1]), 10, Path(sys.argv[2]))\n"
        "except OSError as exc:\n"
        "    print('errno', exc.errno); sys.exit(3)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "v.npy"), str(disk / "index.ann")],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert done.returncode == 3, (done.returncode, done.stderr)  # -7 would be the SIGBUS
    assert f"errno {errno.ENOSPC}" in done.stdout
    assert os.listdir(disk) == []  # the temporary file is gone


@pytest.mark.parametrize("leave", ["almost nothing", "all but half of Annoy"])
def test_a_disk_filling_up_mid_publish_fails_cleanly(
    leave, small_disk, small_settings, fake_embedder, demo_catalogue, monkeypatch, make_fake_app
):
    disk = small_disk(128)
    settings = _on_disk(small_settings, disk)
    held = []
    for path in sorted(settings.catalogue.glob("*.jpg")):
        if int(path.stem) > 16:
            held.append(path.stem)
            path.unlink()
    build_index(settings, fake_embedder)
    served = current_generation(settings.index_dir)
    size = _allocated(served)
    annoy = (served / "index.ann").stat().st_blocks * 512
    _add_photos(settings, demo_catalogue, held)

    real_publish = indexer.build.publish

    def filling_up(*args, **kwargs):  # the disk fills once the publish has started (another writer, say)
        _fill(disk, 16 * 1024 if leave == "almost nothing" else size - annoy // 2)
        return real_publish(*args, **kwargs)

    monkeypatch.setattr(indexer.build, "publish", filling_up)
    # as if the estimate had been wrong: the publish starts and meets the full disk
    monkeypatch.setattr(indexer.publish, "ensure_free_space", lambda index_dir, needed: None)
    with pytest.raises(OSError) as raised:
        build_index(settings, fake_embedder)
    assert raised.value.errno == errno.ENOSPC
    if leave == "all but half of Annoy":  # the vectors fit; Annoy's file did not, and said so instead of a SIGBUS
        assert "could not reserve" in str(raised.value) and "Annoy" in str(raised.value)
    assert _generations(settings.index_dir) == [served.name]  # nothing half-written left
    assert current_generation(settings.index_dir) == served
    assert len(load_index(settings.index_dir).filenames) == 16  # still served
    status = json.loads((Path(settings.index_dir) / STATUS).read_text())
    assert status["state"] == "error" and status["reason"] == "disk_full"
    assert status["message"] == "The index could not be built: the disk is full."
    assert _failures(make_fake_app(settings)) == {"disk_full": 1.0}

    monkeypatch.undo()
    (disk / "ballast").unlink()
    report = build_index(settings, fake_embedder)
    assert report.total == 24
    assert len(_generations(settings.index_dir)) == 2  # the new one and the one before


def test_a_real_full_disk_is_refused_before_anything_is_written(
    small_disk, small_settings, fake_embedder, demo_catalogue
):
    disk = small_disk(128)
    settings = _on_disk(small_settings, disk)
    build_index(settings, fake_embedder)
    served = current_generation(settings.index_dir)
    _add_photos(settings, demo_catalogue, [25, 26])
    _fill(disk, 32 * 2**20)  # under the 64 MB margin
    with pytest.raises(NotEnoughSpace, match="MB free"):
        build_index(settings, fake_embedder)
    assert _generations(settings.index_dir) == [served.name]
    assert current_generation(settings.index_dir) == served
    status = read_status(settings.index_dir)
    assert status["state"] == "error" and status["reason"] == "disk_full" and "needed" in status["message"]
