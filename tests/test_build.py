"""The incremental, resumable build: what gets embedded, reused, removed, skipped and when."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from indexer import checkpoints, generation, progress
from indexer import plan as plan_module
from indexer.build import BuildInProgress, build_index, build_lock, check_freshness
from indexer.colour import colour_descriptors
from indexer.config import PROJECT_ROOT, Settings
from indexer.images import load_for_model
from indexer.loading import load_index
from indexer.plan import key_for
from indexer.search import Searcher
from tests.corpus import build_corpus

CORPUS = {upload.name: upload for upload in build_corpus()}


def _vectors(index_dir: Path) -> dict[str, np.ndarray]:
    loaded = load_index(index_dir)
    try:
        return {name: loaded.embeddings[row].copy() for row, name in enumerate(loaded.filenames)}
    finally:
        loaded.annoy.unload()


def _thumb_files(index_dir: Path) -> set[str]:
    return {p.name for p in (index_dir / generation.THUMBS_DIR).glob("*/*.jpg")}


def _counts(report) -> tuple[int, int, int, int]:
    return report.indexed, report.reused, report.removed, report.total


# ---------------------------------------------------------------- incremental


def test_incremental_add_change_remove(small_settings, fake_counting_embedder, demo_catalogue):
    catalogue, index_dir = small_settings.catalogue, small_settings.index_dir
    first = build_index(small_settings, fake_counting_embedder)
    assert _counts(first) == (24, 0, 0, 24)
    assert fake_counting_embedder.images == 24
    before = _vectors(index_dir)
    assert len(_thumb_files(index_dir)) == 24

    # add two, change one (new content and a new mtime), remove one
    shutil.copy2(demo_catalogue / "25.jpg", catalogue / "25.jpg")
    shutil.copy2(demo_catalogue / "26.jpg", catalogue / "26.jpg")
    changed = catalogue / "5.jpg"
    changed.write_bytes((demo_catalogue / "30.jpg").read_bytes())
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    (catalogue / "7.jpg").unlink()

    fake_counting_embedder.images = 0
    second = build_index(small_settings, fake_counting_embedder)
    assert _counts(second) == (3, 22, 1, 25)
    assert fake_counting_embedder.images == 3  # only the new and the changed files

    after = _vectors(index_dir)
    assert sorted(after) == sorted(p.name for p in catalogue.glob("*.jpg"))
    assert "7.jpg" not in after and {"25.jpg", "26.jpg"} <= set(after)
    for name in set(before) - {"5.jpg", "7.jpg"}:
        assert np.array_equal(after[name], before[name]), f"{name} should have been reused as is"
    # the changed file now carries the vector of its new content
    assert not np.allclose(after["5.jpg"], before["5.jpg"])
    searcher = Searcher.load(index_dir)
    query = fake_counting_embedder.embed_one(load_for_model(demo_catalogue / "30.jpg"))
    best = searcher.search(query, 1)[0]
    assert searcher.filenames[best.row] == "5.jpg" and best.distance < 1e-3
    searcher.index.annoy.unload()
    # one thumbnail per item: the removed and the replaced ones are gone
    manifest = json.loads((index_dir / "manifest.json").read_text())
    assert _thumb_files(index_dir) == set(manifest["thumbs"])
    assert len(manifest["thumbs"]) == 25
    # the previous generation is kept for readers still on it, older ones go
    assert len(list(index_dir.glob("gen-*"))) == 2

    fake_counting_embedder.images = 0
    third = build_index(small_settings, fake_counting_embedder)
    assert _counts(third) == (0, 25, 0, 25)
    assert fake_counting_embedder.images == 0

    # lost thumbnails come back without embedding anything again
    shutil.rmtree(index_dir / generation.THUMBS_DIR)
    fourth = build_index(small_settings, fake_counting_embedder)
    assert _counts(fourth) == (0, 25, 0, 25)
    assert fake_counting_embedder.images == 0
    assert _thumb_files(index_dir) == set(manifest["thumbs"])


def test_a_build_with_nothing_to_do_keeps_the_current_generation(tiny_settings, fake_counting_embedder):
    index_dir = tiny_settings.index_dir
    first = build_index(tiny_settings, fake_counting_embedder)
    assert not first.up_to_date
    current = generation.current_generation(index_dir)
    folders = sorted(index_dir.glob("gen-*"))
    fake_counting_embedder.images = 0
    again = build_index(tiny_settings, fake_counting_embedder)
    assert again.up_to_date and _counts(again) == (0, 8, 0, 8) and fake_counting_embedder.images == 0
    assert generation.current_generation(index_dir) == current
    assert sorted(index_dir.glob("gen-*")) == folders  # nothing published, nothing deleted
    assert "up to date" in again.summary() and "images/s" not in again.summary()
    assert again.to_dict()["up_to_date"] is True
    status = progress.read_status(index_dir)
    assert status["state"] == "ready" and "up to date" in status["message"]
    # a damaged generation is not "up to date": the build repairs it
    (current / "filenames.pkl").write_bytes(b"damaged")
    repaired = build_index(tiny_settings, fake_counting_embedder)
    assert not repaired.up_to_date and generation.current_generation(index_dir) != current
    # --full always publishes
    assert not build_index(tiny_settings, fake_counting_embedder, full=True).up_to_date
    # so does a change of the Annoy settings
    assert not build_index(tiny_settings.replace(annoy_trees=7), fake_counting_embedder).up_to_date


def test_a_skipped_file_that_reads_now_is_not_up_to_date(tiny_settings, fake_counting_embedder, demo_catalogue):
    """A file skipped for a passing reason (a permission since fixed) changes only its ctime: retry it."""
    good = (demo_catalogue / "12.jpg").read_bytes()
    broken = tiny_settings.catalogue / "later.jpg"
    broken.write_bytes(b"\xff\xd8" + b"\0" * (len(good) + 10))
    first = build_index(tiny_settings, fake_counting_embedder)
    assert [s.relpath for s in first.skipped] == ["later.jpg"]
    stat = broken.stat()
    broken.write_bytes(good + b"\0" * (stat.st_size - len(good)))  # same size, same mtime: same fingerprint
    os.utime(broken, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = build_index(tiny_settings, fake_counting_embedder)
    assert not again.up_to_date and "later.jpg" not in [s.relpath for s in again.skipped]


def test_full_rebuild_embeds_everything_again(tiny_settings, fake_counting_embedder):
    build_index(tiny_settings, fake_counting_embedder)
    before = _vectors(tiny_settings.index_dir)
    fake_counting_embedder.images = 0
    report = build_index(tiny_settings, fake_counting_embedder, full=True)
    assert _counts(report) == (8, 0, 0, 8)
    assert fake_counting_embedder.images == 8
    after = _vectors(tiny_settings.index_dir)
    assert sorted(after) == sorted(before)
    for name, vector in before.items():
        np.testing.assert_allclose(after[name], vector, atol=1e-5)


def test_progress_is_reported(tiny_settings, fake_embedder):
    seen = []
    report = build_index(tiny_settings, fake_embedder, progress_callback=seen.append)
    phases = [p.phase for p in seen]
    assert phases[0] == "scanning" and "embedding" in phases and phases[-1] == "done"
    assert seen[-1].state == "ready"
    embedding = [p for p in seen if p.phase == "embedding"]
    assert embedding[-1].done == embedding[-1].total == 8
    status = progress.read_status(tiny_settings.index_dir)
    assert status["state"] == "ready" and status["message"] == report.summary()


def test_a_second_build_is_refused_while_one_holds_the_lock(tiny_settings, fake_embedder):
    with build_lock(tiny_settings.index_dir):
        with pytest.raises(BuildInProgress):
            build_index(tiny_settings, fake_embedder)
    assert generation.current_generation(tiny_settings.index_dir) is None
    assert build_index(tiny_settings, fake_embedder).total == 8  # the lock was released


# ---------------------------------------------------------------- bad catalogue files


def test_bad_files_are_skipped_with_reasons(tiny_settings, fake_counting_embedder, demo_catalogue):
    catalogue = tiny_settings.catalogue
    (catalogue / "notes.jpg").write_bytes(b"Shopping list:\n- red dress\n")
    (catalogue / "truncated.jpg").write_bytes(CORPUS["truncated_jpeg"].data)
    (catalogue / "pixel.png").write_bytes(CORPUS["one_by_one"].data)
    (catalogue / "empty.jpg").write_bytes(b"")
    (catalogue / "bomb.png").write_bytes(CORPUS["decompression_bomb"].data)
    (catalogue / "readme.txt").write_text("not a picture, and not named like one\n")
    # nested folders are searched; hidden files and folders are not
    (catalogue / "shoes" / "new").mkdir(parents=True)
    shutil.copy2(demo_catalogue / "9.jpg", catalogue / "shoes" / "new" / "9.jpg")
    (catalogue / ".cache").mkdir()
    shutil.copy2(demo_catalogue / "10.jpg", catalogue / ".cache" / "10.jpg")
    shutil.copy2(demo_catalogue / "11.jpg", catalogue / ".11.jpg")

    report = build_index(tiny_settings, fake_counting_embedder)
    reasons = {s.relpath: s.reason for s in report.skipped}
    assert reasons.pop("empty.jpg") in ("empty", "not_an_image")
    assert reasons == {
        "notes.jpg": "not_an_image",
        "truncated.jpg": "unreadable",
        "pixel.png": "too_small",
        "bomb.png": "too_large",
    }
    assert all(s.message for s in report.skipped)
    assert report.total == 9 and report.indexed == 9
    assert fake_counting_embedder.images == 9

    manifest = json.loads((tiny_settings.index_dir / "manifest.json").read_text())
    assert {s["relpath"]: s["reason"] for s in manifest["skipped"]} == {s.relpath: s.reason for s in report.skipped}
    loaded = load_index(tiny_settings.index_dir)
    assert "shoes/new/9.jpg" in loaded.filenames
    everything = json.dumps(manifest) + json.dumps(report.to_dict()) + " ".join(loaded.filenames)
    for ignored in ("readme.txt", ".cache", ".11.jpg"):
        assert ignored not in everything
    loaded.annoy.unload()
    assert "skipped 5" in report.summary()
    assert report.to_dict()["skipped_by_reason"]["too_small"] == 1

    # nothing changed: the bad files are tried again but nothing is embedded
    assert check_freshness(tiny_settings, key_for(fake_counting_embedder)) == "fresh"
    fake_counting_embedder.images = 0
    again = build_index(tiny_settings, fake_counting_embedder)
    assert (again.indexed, again.reused, len(again.skipped)) == (0, 9, 5)
    assert fake_counting_embedder.images == 0

    # a skipped file that is fixed makes the index stale, and is indexed next time
    shutil.copy2(demo_catalogue / "12.jpg", catalogue / "notes.jpg")
    assert check_freshness(tiny_settings, key_for(fake_counting_embedder)) == "stale"
    fixed = build_index(tiny_settings, fake_counting_embedder)
    assert (fixed.indexed, fixed.reused, len(fixed.skipped)) == (1, 9, 4)
    assert fake_counting_embedder.images == 1
    assert check_freshness(tiny_settings, key_for(fake_counting_embedder)) == "fresh"


# ---------------------------------------------------------------- freshness


def test_freshness_follows_the_catalogue(tiny_settings, fake_counting_embedder):
    key = key_for(fake_counting_embedder)
    assert check_freshness(tiny_settings, key) == "missing"
    build_index(tiny_settings, fake_counting_embedder)
    assert check_freshness(tiny_settings, key) == "fresh"
    assert check_freshness(tiny_settings, dict(key, weights_id="imagenet")) == "incompatible"

    touched = tiny_settings.catalogue / "3.jpg"
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    assert check_freshness(tiny_settings, key) == "stale"
    fake_counting_embedder.images = 0
    report = build_index(tiny_settings, fake_counting_embedder)
    assert (report.indexed, report.reused) == (1, 7) and fake_counting_embedder.images == 1
    assert check_freshness(tiny_settings, key) == "fresh"

    # new metadata: stale, and the next build picks it up without embedding
    styles = tiny_settings.catalogue / "styles.csv"
    styles.write_text(styles.read_text().replace(",Casual,", ",Formal,"))
    assert check_freshness(tiny_settings, key) == "stale"
    fake_counting_embedder.images = 0
    build_index(tiny_settings, fake_counting_embedder)
    assert fake_counting_embedder.images == 0
    loaded = load_index(tiny_settings.index_dir)
    assert {m["usage"] for m in loaded.metadata} == {"Formal"}
    loaded.annoy.unload()
    assert check_freshness(tiny_settings, key) == "fresh"

    (tiny_settings.catalogue / "8.jpg").unlink()
    assert check_freshness(tiny_settings, key) == "stale"


def _claim_other_weights(settings: Settings, monkeypatch) -> None:
    _edit_manifest(settings.index_dir, weights_id="imagenet")


def _claim_old_preprocessing(settings: Settings, monkeypatch) -> None:
    _edit_manifest(settings.index_dir, preprocess_version="0")


def _bump_preprocessing_in_code(settings: Settings, monkeypatch) -> None:
    monkeypatch.setattr(plan_module, "PREPROCESS_VERSION", plan_module.PREPROCESS_VERSION + "-next")


def _edit_manifest(index_dir: Path, **changes) -> None:
    path = generation.current_generation(index_dir) / generation.MANIFEST
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("change", [_claim_other_weights, _claim_old_preprocessing, _bump_preprocessing_in_code])
def test_incompatible_index_is_fully_reembedded(change, tiny_settings, fake_counting_embedder, monkeypatch):
    build_index(tiny_settings, fake_counting_embedder)
    change(tiny_settings, monkeypatch)
    assert check_freshness(tiny_settings, key_for(fake_counting_embedder)) == "incompatible"
    fake_counting_embedder.images = 0
    report = build_index(tiny_settings, fake_counting_embedder)
    assert (report.indexed, report.reused, report.total) == (8, 0, 8)
    assert fake_counting_embedder.images == 8
    assert check_freshness(tiny_settings, key_for(fake_counting_embedder)) == "fresh"
    manifest = load_index(tiny_settings.index_dir, expect=key_for(fake_counting_embedder)).manifest
    assert manifest["preprocess_version"] == plan_module.PREPROCESS_VERSION


# ---------------------------------------------------------------- checkpoints and resuming


def test_shards_of_an_interrupted_build_are_reused(tiny_settings, fake_counting_embedder):
    """Rows already in work/ are not embedded again; a damaged shard is ignored."""
    catalogue, index_dir = tiny_settings.catalogue, tiny_settings.index_dir
    key = key_for(fake_counting_embedder)
    work = checkpoints.work_dir(index_dir)
    names = ["1.jpg", "2.jpg", "3.jpg"]
    arrays = np.stack([load_for_model(catalogue / n) for n in names])
    vectors = fake_counting_embedder.embed(arrays)
    colours = colour_descriptors(arrays)
    items = [[n, (catalogue / n).stat().st_size, (catalogue / n).stat().st_mtime_ns] for n in names]
    checkpoints.write_shard(work, vectors[:2], items[:2], colours=colours[:2], model_key=key)
    damaged = checkpoints.write_shard(work, vectors[2:], items[2:], colours=colours[2:], model_key=key)
    damaged.with_suffix(".npy").write_bytes(b"\x93NUMPY garbage")
    (work / ".half-written.npy.1234.tmp").write_bytes(b"partial")
    # a shard made with other weights is not reused either, nor one with a different colour version
    for other in (dict(key, weights_id="imagenet"), dict(key, colour_version="0")):
        checkpoints.write_shard(work, vectors[2:], items[2:], colours=colours[2:], model_key=other)

    fake_counting_embedder.images = 0
    report = build_index(tiny_settings, fake_counting_embedder)
    assert (report.indexed, report.reused, report.total) == (6, 2, 8)
    assert fake_counting_embedder.images == 6
    assert not work.exists() or not any(work.iterdir())  # published, so the staging area is cleared
    after = _vectors(index_dir)
    np.testing.assert_allclose(after["1.jpg"], vectors[0], atol=1e-5)
    np.testing.assert_allclose(after["3.jpg"], vectors[2], atol=1e-5)
    loaded = load_index(index_dir)
    row = loaded.filenames.index("1.jpg")
    np.testing.assert_allclose(loaded.colours[row], colours[0], atol=1e-6)  # the shard's colour, published
    loaded.annoy.unload()


def test_a_file_changed_after_an_interrupted_build_is_not_lost(tiny_settings, fake_embedder, demo_catalogue):
    """A stale shard row for a file rewritten since must not shadow its fresh vector."""
    catalogue, index_dir = tiny_settings.catalogue, tiny_settings.index_dir
    key = key_for(fake_embedder)
    target = catalogue / "1.jpg"
    old_array = load_for_model(target)[None]
    old_vector = fake_embedder.embed(old_array)
    stat = target.stat()
    # "shard-zzz" sorts after every shard the next build writes
    checkpoints.write_shard(
        checkpoints.work_dir(index_dir), old_vector, [["1.jpg", stat.st_size, stat.st_mtime_ns]],
        colours=colour_descriptors(old_array), model_key=key, name="shard-zzz",
    )
    target.write_bytes((demo_catalogue / "20.jpg").read_bytes())
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 3_000_000_000))

    report = build_index(tiny_settings, fake_embedder)
    assert report.total == 8 and not report.skipped
    after = _vectors(index_dir)
    assert "1.jpg" in after
    fresh = fake_embedder.embed(load_for_model(demo_catalogue / "20.jpg")[None])[0]
    np.testing.assert_allclose(after["1.jpg"], fresh, atol=1e-4)


def _shard_rows(work: Path) -> int:
    rows = 0
    for sidecar in work.glob("*.json"):
        rows += len(json.loads(sidecar.read_text())["items"])
    return rows


@pytest.mark.slow  # a real `python -m indexer build` (TensorFlow) is killed; its vectors are compared
def test_resume_after_a_killed_build(tmp_path, demo_catalogue, embedder, counting_embedder):
    catalogue, index_dir = tmp_path / "catalogue", tmp_path / "index"
    catalogue.mkdir()
    for image_id in range(1, 9):
        shutil.copy2(demo_catalogue / f"{image_id}.jpg", catalogue)
    settings = Settings.from_env(catalogue=str(catalogue), index_dir=str(index_dir))
    build_index(settings, embedder)  # a complete previous generation of 8 images
    for image_id in range(9, 65):
        shutil.copy2(demo_catalogue / f"{image_id}.jpg", catalogue)

    env = dict(os.environ, FASHION_WEIGHTS="none", FASHION_CHECKPOINT_EVERY="8", FASHION_BATCH_SIZE="8")
    work = index_dir / generation.WORK_DIR
    with open(tmp_path / "stdout", "wb") as out, open(tmp_path / "stderr", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "indexer", "build", "--catalogue", str(catalogue), "--index-dir", str(index_dir)],
            cwd=PROJECT_ROOT, env=env, stdout=out, stderr=err,
        )
        try:
            deadline = time.monotonic() + 300  # a guard against hanging, not a measurement
            while proc.poll() is None and time.monotonic() < deadline and not list(work.glob("shard-*.json")):
                time.sleep(0.02)
            assert proc.poll() is None, "the build ended before it could be interrupted: " + (
                (tmp_path / "stderr").read_text(errors="replace")[-2000:]
            )
            assert list(work.glob("shard-*.json")), "no shard appeared"
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    # never a half-set: `current` is still the complete previous generation
    gen = generation.current_generation(index_dir)
    assert gen is not None
    loaded = load_index(index_dir)
    assert loaded.manifest["count"] == 8
    loaded.annoy.unload()
    located = checkpoints.locate_shards(work, model_key=key_for(embedder))
    # read now: publishing clears work/
    shards = {name: np.array(source[0].open()[source[2]]) for name, (_fingerprint, source) in located.items()}
    in_shards = len(shards)
    assert in_shards == _shard_rows(work) and in_shards >= 8

    report = build_index(settings, counting_embedder)
    assert report.total == 64 and not report.skipped
    assert report.reused >= 8 + in_shards
    assert counting_embedder.images == report.indexed == 64 - report.reused
    loaded = load_index(index_dir)
    assert loaded.filenames == sorted(f"{i}.jpg" for i in range(1, 65))
    # the vectors the killed process wrote are the right ones, and are the ones used
    names = sorted(shards)
    expected = embedder.embed(np.stack([load_for_model(catalogue / name) for name in names]))
    rows = [loaded.filenames.index(name) for name in names]
    np.testing.assert_allclose(loaded.embeddings[rows], expected, atol=1e-4)
    np.testing.assert_array_equal(loaded.embeddings[rows], np.stack([shards[name] for name in names]))
    loaded.annoy.unload()
    assert not work.exists() or not any(work.iterdir())


def test_scan_ignores_symlinks_out_of_the_catalogue(tmp_path, small_catalogue):
    """A link to a file outside the catalogue is never indexed; one inside is."""
    from indexer.catalogue import scan

    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.jpg"
    secret.write_bytes((small_catalogue / "1.jpg").read_bytes())
    (small_catalogue / "leak.jpg").symlink_to(secret)
    (small_catalogue / "alias.jpg").symlink_to(small_catalogue / "2.jpg")
    listed = {item.relpath for item in scan(small_catalogue)}
    assert "leak.jpg" not in listed
    assert "alias.jpg" in listed and "1.jpg" in listed


def test_a_failed_thumbnail_regeneration_keeps_the_reused_vector(tiny_settings, fake_counting_embedder):
    """A reused item whose thumbnail cannot be rewritten stays in the index and is not reported skipped."""
    build_index(tiny_settings, fake_counting_embedder)
    victim = sorted(tiny_settings.catalogue.glob("*.jpg"))[0]
    stat = victim.stat()
    manifest = load_index(tiny_settings.index_dir).manifest
    row = [relpath for relpath, *_ in manifest["items"]].index(victim.name)
    plan_module.thumb_path(tiny_settings.index_dir, manifest["thumbs"][row]).unlink()
    # Same size and mtime, so the stored vector is reused; the bytes no longer decode.
    victim.write_bytes(b"\0" * stat.st_size)
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    report = build_index(tiny_settings, fake_counting_embedder)

    assert report.skipped == []
    assert victim.name in load_index(tiny_settings.index_dir).filenames
