"""The index artifacts: shapes, order, checksums, atomicity and refusing anything damaged."""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import pickle
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from annoy import AnnoyIndex

from indexer import generation, progress, vector_files
from indexer.build import build_index
from indexer.config import Settings
from indexer.generation import ArtifactError
from indexer.loading import load_index, safe_unpickle
from indexer.models import DEFAULT_MODEL, get_spec
from indexer.plan import key_for, thumb_path
from indexer.publish import publish
from indexer.search import Searcher
from tests.fakes import FAKE_WEIGHTS_ID

EMBEDDING_DIM = get_spec(DEFAULT_MODEL).dim

# ---------------------------------------------------------------- a complete index


def _styles(catalogue: Path) -> dict[str, dict[str, str]]:
    with open(catalogue / "styles.csv", newline="", encoding="utf-8") as handle:
        return {row.pop("id"): row for row in csv.DictReader(handle)}


def test_embeddings_are_float32_unit_rows(fake_index):
    with open(fake_index.index_dir / "embeddings.pkl", "rb") as handle:
        embeddings = safe_unpickle(handle.read())
    assert isinstance(embeddings, np.ndarray)
    assert embeddings.dtype == np.float32
    assert embeddings.shape == (144, EMBEDDING_DIM)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    # distinct images give distinct vectors
    assert len({row.tobytes() for row in embeddings}) == 144


def test_filenames_manifest_and_annoy_agree_row_by_row(fake_index):
    index_dir, catalogue = fake_index.index_dir, fake_index.catalogue
    embeddings = safe_unpickle((index_dir / "embeddings.pkl").read_bytes())
    filenames = safe_unpickle((index_dir / "filenames.pkl").read_bytes())
    manifest = json.loads((index_dir / "manifest.json").read_text())

    assert isinstance(filenames, list) and len(filenames) == len(embeddings)
    assert all(isinstance(f, str) and not os.path.isabs(f) and (catalogue / f).is_file() for f in filenames)
    assert len(set(filenames)) == len(filenames)
    assert {f"{i}.jpg" for i in range(1, 145)} == set(filenames)
    assert [item[0] for item in manifest["items"]] == filenames
    for relpath, size, mtime_ns in manifest["items"]:
        stat = (catalogue / relpath).stat()
        assert [size, mtime_ns] == [stat.st_size, stat.st_mtime_ns]

    annoy = AnnoyIndex(EMBEDDING_DIM, "euclidean")
    annoy.load(str(index_dir / "index.ann"))
    try:
        assert annoy.get_n_items() == len(filenames)
        for row in range(len(filenames)):
            np.testing.assert_allclose(annoy.get_item_vector(row), embeddings[row], atol=1e-6)
        # and Annoy's nearest neighbour of each stored vector is that row itself
        for row in range(0, len(filenames), 7):
            assert annoy.get_nns_by_vector(embeddings[row].tolist(), 1) == [row]
    finally:
        annoy.unload()


def test_metadata_aligned_with_styles_csv_by_stem(fake_index):
    loaded = load_index(fake_index.index_dir)
    styles = _styles(fake_index.catalogue)
    assert len(loaded.metadata) == len(loaded.filenames)
    for relpath, meta in zip(loaded.filenames, loaded.metadata):
        expected = {k: v for k, v in styles[Path(relpath).stem].items() if v}
        assert meta == expected
    loaded.annoy.unload()


def test_manifest_records_model_and_checksums(fake_index, fake_embedder):
    index_dir = fake_index.index_dir
    manifest = json.loads((index_dir / "manifest.json").read_text())
    assert manifest["format_version"] == generation.FORMAT_VERSION
    assert manifest["model"] == get_spec(DEFAULT_MODEL).model_id
    assert manifest["weights_id"] == fake_embedder.weights_id == FAKE_WEIGHTS_ID
    assert manifest["preprocess_version"] == key_for(fake_embedder)["preprocess_version"]
    assert manifest["dim"] == EMBEDDING_DIM
    assert manifest["count"] == 144
    assert manifest["metric"] == "euclidean"
    assert manifest["trees"] == fake_index.annoy_trees
    gen = generation.current_generation(index_dir)
    for name in generation.ARTIFACT_FILES:
        assert manifest["checksums"][name] == hashlib.sha256((gen / name).read_bytes()).hexdigest()
    # thumbnails exist for every row
    assert len(manifest["thumbs"]) == 144
    for name in manifest["thumbs"]:
        assert thumb_path(index_dir, name).is_file()


def test_top_level_names_point_into_current(fake_index):
    index_dir = fake_index.index_dir
    gen = generation.current_generation(index_dir)
    assert gen is not None and gen.name.startswith("gen-")
    for name in (*generation.ARTIFACT_FILES, generation.MANIFEST):
        link = index_dir / name
        assert link.is_symlink()
        assert link.resolve() == (gen / name).resolve()
    assert not list(gen.glob(".*"))  # no temporaries left behind


def test_status_reports_ready(fake_index):
    status = progress.read_status(fake_index.index_dir)
    assert status["state"] == "ready"
    assert "144 items" in status["message"]


# ---------------------------------------------------------------- damage is refused


def _corrupt_truncate(index_dir: Path, name: str) -> None:
    with open(index_dir / name, "r+b") as handle:  # through the symlink, into the generation
        handle.truncate(os.path.getsize(index_dir / name) // 2)


def _corrupt_flip_byte(index_dir: Path, name: str) -> None:
    path = index_dir / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    with open(path, "r+b") as handle:
        handle.write(data)


def _manifest_edit(index_dir: Path, change) -> None:
    path = generation.current_generation(index_dir) / generation.MANIFEST
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


CORRUPTIONS = {
    "embeddings_truncated": lambda d: _corrupt_truncate(d, "embeddings.pkl"),
    "embeddings_flipped": lambda d: _corrupt_flip_byte(d, "embeddings.pkl"),
    "filenames_truncated": lambda d: _corrupt_truncate(d, "filenames.pkl"),
    "metadata_flipped": lambda d: _corrupt_flip_byte(d, "metadata.json"),
    "annoy_truncated": lambda d: _corrupt_truncate(d, "index.ann"),
    "annoy_flipped": lambda d: _corrupt_flip_byte(d, "index.ann"),
    "annoy_deleted": lambda d: (generation.current_generation(d) / "index.ann").unlink(),
    "manifest_truncated": lambda d: _corrupt_truncate(d, "manifest.json"),
    "manifest_not_json": lambda d: (d / "manifest.json").write_text("{not json"),
    "manifest_wrong_count": lambda d: _manifest_edit(d, lambda m: m.update(count=m["count"] + 1)),
    "manifest_wrong_checksum": lambda d: _manifest_edit(d, lambda m: m["checksums"].update({"index.ann": "0" * 64})),
    "manifest_other_format": lambda d: _manifest_edit(d, lambda m: m.update(format_version=99)),
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, demo_catalogue, fake_embedder):
    """An 8-image catalogue and its index, built once for this module. Copy before changing."""
    root = tmp_path_factory.mktemp("reference")
    catalogue = root / "catalogue"
    catalogue.mkdir()
    lines = (demo_catalogue / "styles.csv").read_text().splitlines()
    keep = [line for line in lines[1:] if int(line.split(",")[0]) <= 8]
    for line in keep:
        shutil.copy2(demo_catalogue / f"{line.split(',')[0]}.jpg", catalogue)
    (catalogue / "styles.csv").write_text("\n".join([lines[0], *keep]) + "\n")
    settings = Settings.from_env(catalogue=str(catalogue), index_dir=str(root / "index"))
    assert build_index(settings, fake_embedder).indexed == 8
    loaded = load_index(settings.index_dir)
    loaded.annoy.unload()
    return settings, loaded.embeddings, loaded.filenames


@pytest.fixture
def damaged(reference, tmp_path):
    """A private copy of the reference index, ready to be damaged."""
    settings, _, _ = reference
    index_dir = tmp_path / "index"
    shutil.copytree(settings.index_dir, index_dir, symlinks=True)
    copy = settings.replace(index_dir=index_dir)
    load_index(copy.index_dir).annoy.unload()  # intact before the test damages it
    return copy


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_artifacts_are_refused(corruption, damaged):
    CORRUPTIONS[corruption](damaged.index_dir)
    with pytest.raises(ArtifactError):
        load_index(damaged.index_dir)
    with pytest.raises(ArtifactError):
        Searcher.load(damaged.index_dir)


@pytest.mark.parametrize("corruption", ["embeddings_truncated", "annoy_flipped", "manifest_truncated"])
def test_corrupt_artifacts_are_rebuilt(corruption, damaged, reference, fake_counting_embedder):
    _, vectors, names = reference
    CORRUPTIONS[corruption](damaged.index_dir)
    report = build_index(damaged, fake_counting_embedder)
    assert (report.indexed, report.reused, report.total) == (8, 0, 8)
    assert fake_counting_embedder.images == 8  # nothing was trusted from the damaged set
    after = load_index(damaged.index_dir)
    assert after.filenames == names
    np.testing.assert_allclose(after.embeddings, vectors, atol=1e-5)
    after.annoy.unload()


class _Boom:
    """Unpickling this would run ``os.system``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Boom(marker), protocol=4)
    with pytest.raises(pickle.UnpicklingError):
        safe_unpickle(payload)
    # hidden after a perfectly good array
    payload = pickle.dumps([np.zeros(3, np.float32), _Boom(marker)], protocol=4)
    with pytest.raises(pickle.UnpicklingError):
        safe_unpickle(payload)
    assert not marker.exists()


def test_malicious_pickle_with_fixed_checksum_is_refused(damaged, tmp_path):
    tiny_settings = damaged
    gen = generation.current_generation(tiny_settings.index_dir)
    marker = tmp_path / "pwned"
    for name in ("embeddings.pkl", "filenames.pkl"):
        payload = pickle.dumps(_Boom(marker), protocol=4)
        original = (gen / name).read_bytes()
        (tiny_settings.index_dir / name).write_bytes(payload)
        # an attacker who can also edit the manifest "fixes" the checksum
        _manifest_edit(
            tiny_settings.index_dir,
            lambda m, n=name, p=payload: m["checksums"].update({n: hashlib.sha256(p).hexdigest()}),
        )
        if name == "filenames.pkl":
            with pytest.raises(ArtifactError, match="decoded"):
                load_index(tiny_settings.index_dir)
        else:  # served from embeddings.npy: the loader never unpickles embeddings.pkl at all
            load_index(tiny_settings.index_dir).annoy.unload()
        assert not marker.exists()
        (gen / name).write_bytes(original)
        _manifest_edit(
            tiny_settings.index_dir,
            lambda m, n=name, o=original: m["checksums"].update({n: hashlib.sha256(o).hexdigest()}),
        )
    load_index(tiny_settings.index_dir).annoy.unload()  # restored: loads again


@pytest.mark.parametrize("protocol", [4, 5])
def test_safe_unpickle_accepts_plain_arrays_and_lists(protocol):
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(safe_unpickle(pickle.dumps(array, protocol=protocol)), array)
    assert safe_unpickle(pickle.dumps(["a.jpg", "b/c.jpg"], protocol=protocol)) == ["a.jpg", "b/c.jpg"]


def test_expect_mismatch_is_refused(fake_index):
    with pytest.raises(ArtifactError, match="weights_id"):
        load_index(fake_index.index_dir, expect={"weights_id": "imagenet"})
    with pytest.raises(ArtifactError, match="no index"):
        load_index(fake_index.index_dir / "nowhere")


# ---------------------------------------------------------------- publishing


def _publish(index_dir: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return publish(
        index_dir,
        embeddings=vectors,
        filenames=[f"{i}.jpg" for i in range(n)],
        metadata=[{} for _ in range(n)],
        manifest={"model": "test"},
        trees=3,
    )


def test_publish_switches_generations_and_keeps_one_previous(tmp_path):
    gens = [_publish(tmp_path, n, seed=n) for n in (3, 4, 5, 6)]
    assert generation.current_generation(tmp_path) == gens[-1]
    remaining = sorted(p.name for p in tmp_path.glob("gen-*"))
    assert remaining == sorted([gens[-1].name, gens[-2].name])
    loaded = load_index(tmp_path)
    assert loaded.manifest["count"] == 6 and loaded.filenames[-1] == "5.jpg"
    loaded.annoy.unload()


def test_a_failed_publish_leaves_nothing_and_poisons_nothing(tmp_path):
    first = _publish(tmp_path, 3, seed=1)
    second = _publish(tmp_path, 4, seed=2)

    def disk_full(_vectors):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        publish(
            tmp_path, embeddings=np.ones((5, 8), np.float32), filenames=[f"{i}.jpg" for i in range(5)],
            metadata=[{} for _ in range(5)], manifest={}, trees=1, derive=disk_full,
        )
    assert sorted(p.name for p in tmp_path.glob("gen-*")) == sorted([first.name, second.name])
    assert generation.current_generation(tmp_path) == second

    # a crash that could not clean up (SIGKILL) leaves a folder without a manifest, touched last
    crashed = tmp_path / f"gen-{time.time_ns()}-999999"
    crashed.mkdir()
    (crashed / "embeddings.npy").write_bytes(b"half")
    os.utime(first, ns=(time.time_ns() + 10**12, time.time_ns() + 10**12))  # folder times must not matter
    third = _publish(tmp_path, 6, seed=3)
    # the previous real generation (which workers may still serve) stays; the wreck and the oldest go
    assert sorted(p.name for p in tmp_path.glob("gen-*")) == sorted([second.name, third.name])
    assert load_index(tmp_path).manifest["published_ns"] > json.loads((second / "manifest.json").read_text())[
        "published_ns"
    ]


def test_publish_refuses_misaligned_inputs(tmp_path):
    with pytest.raises(ValueError):
        publish(
            tmp_path,
            embeddings=np.zeros((3, 8), np.float32),
            filenames=["a.jpg", "b.jpg"],
            metadata=[{}, {}],
            manifest={},
            trees=1,
        )
    assert generation.current_generation(tmp_path) is None


def test_empty_index_loads(tmp_path):
    publish(
        tmp_path,
        embeddings=np.zeros((0, EMBEDDING_DIM), np.float32),
        filenames=[],
        metadata=[],
        manifest={},
        trees=1,
    )
    loaded = load_index(tmp_path)
    assert loaded.embeddings.shape == (0, EMBEDDING_DIM) and loaded.filenames == []


# ---------------------------------------------------------------- verify once


def _bytes_read() -> int:
    """Bytes this process has read through read() calls so far (``rchar``)."""
    with open("/proc/self/io", encoding="ascii") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("rchar:"))


def _big_index(tmp_path: Path, n: int = 3000, dim: int = 256) -> Path:
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    publish(
        tmp_path,
        embeddings=vectors,
        filenames=[f"{i}.jpg" for i in range(n)],
        metadata=[{"baseColour": "Blue"} for _ in range(n)],
        manifest={"model": "test"},
        trees=2,
    )
    return generation.current_generation(tmp_path)


def _read_while_loading(index_dir: Path) -> int:
    before = _bytes_read()
    load_index(index_dir).annoy.unload()
    return _bytes_read() - before


def test_opening_a_verified_generation_does_not_rehash_it(tmp_path):
    gen = _big_index(tmp_path)
    vectors_size = (gen / "embeddings.npy").stat().st_size  # 3 MB
    assert vectors_size > 3_000_000
    # published: the checksums were recorded as the files were written
    assert _read_while_loading(tmp_path) < vectors_size / 4
    # a file whose mtime changed is hashed again (its bytes are read) and, still
    # matching, recorded again; the next open reads none of the large files
    os.utime(gen / "index.ann")
    assert _read_while_loading(tmp_path) > (gen / "index.ann").stat().st_size
    assert _read_while_loading(tmp_path) < vectors_size / 4


def test_a_copied_generation_is_verified_once_then_trusted(tmp_path):
    gen = _big_index(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b", symlinks=True)  # new inodes and ctimes
    vectors_size = (gen / "embeddings.npy").stat().st_size
    assert _read_while_loading(tmp_path / "b") > 2 * vectors_size  # vectors, pickle and Annoy hashed
    assert _read_while_loading(tmp_path / "b") < vectors_size / 4


def _flip_in_place(path: Path, keep_times: bool) -> None:
    stat = path.stat()
    with open(path, "r+b") as handle:
        handle.seek(stat.st_size // 2)
        byte = handle.read(1)
        handle.seek(stat.st_size // 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    if keep_times:  # an attacker restores size and mtime; ctime still moves
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.mark.parametrize("keep_times", [False, True], ids=["mtime-changed", "mtime-restored"])
@pytest.mark.parametrize("name", ["embeddings.npy", "index.ann", "embeddings.pkl", "metadata-codes.npy"])
def test_tampering_after_verification_is_still_refused(tmp_path, name, keep_times):
    gen = _big_index(tmp_path)
    load_index(tmp_path).annoy.unload()  # verified and recorded
    _flip_in_place(gen / name, keep_times)
    with pytest.raises(ArtifactError, match="checksum"):
        load_index(tmp_path)


def test_a_swapped_file_with_the_same_size_and_mtime_is_refused(tmp_path):
    gen = _big_index(tmp_path)
    load_index(tmp_path).annoy.unload()
    target = gen / "embeddings.npy"
    stat = target.stat()
    forged = bytearray(target.read_bytes())
    forged[-1] ^= 0xFF
    swap = gen / "forged.tmp"
    swap.write_bytes(forged)
    os.utime(swap, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(swap, target)
    with pytest.raises(ArtifactError, match="checksum"):
        load_index(tmp_path)


def test_tampered_pickle_with_a_forged_record_is_never_unpickled(damaged, tmp_path):
    # filenames.pkl is read into memory, so it is hashed on every open, record or not
    gen = generation.current_generation(damaged.index_dir)
    marker = tmp_path / "pwned"
    (gen / "filenames.pkl").write_bytes(pickle.dumps(_Boom(marker), protocol=4))
    record = json.loads((gen / generation.VERIFIED).read_text())
    record["filenames.pkl"]["identity"] = generation._identity(gen / "filenames.pkl")
    (gen / generation.VERIFIED).write_text(json.dumps(record))
    with pytest.raises(ArtifactError, match="checksum"):
        load_index(damaged.index_dir)
    assert not marker.exists()


# ---------------------------------------------------------------- streaming publish


class _LazyRows:
    """Vectors computed a block at a time, as a build's shards are read."""

    def __init__(self, n: int, dim: int):
        self.shape = (n, dim)
        self.blocks = 0

    def __getitem__(self, rows: slice) -> np.ndarray:
        self.blocks += 1
        index = np.arange(self.shape[0])[rows]
        return np.stack([np.random.default_rng(int(i)).normal(size=self.shape[1]) for i in index]).astype(np.float32)


def test_publish_streams_rows_and_writes_the_same_artifacts(tmp_path):
    n = vector_files.CHUNK_ROWS + 904  # crosses a block boundary
    lazy = _LazyRows(n, 8)
    expected = lazy[0:n]
    gen = publish(
        tmp_path,
        embeddings=lazy,
        filenames=[f"{i}.jpg" for i in range(n)],
        metadata=[{"i": str(i % 5)} for i in range(n)],
        manifest={},
        trees=2,
    )
    assert lazy.blocks == 1 + 2  # the check above, then two blocks of the publish
    np.testing.assert_array_equal(np.load(gen / "embeddings.npy"), expected)
    # embeddings.pkl unpickles (standard and safe unpickler) to the same array as pickle.dump wrote before
    data = (gen / "embeddings.pkl").read_bytes()
    np.testing.assert_array_equal(pickle.loads(data), expected)
    np.testing.assert_array_equal(safe_unpickle(data), pickle.loads(pickle.dumps(expected, protocol=5)))
    assert safe_unpickle(data).flags.writeable
    annoy = AnnoyIndex(8, "euclidean")
    annoy.load(str(gen / "index.ann"))
    assert annoy.get_n_items() == n
    assert all((gen / name).stat().st_mode & 0o777 == 0o644 for name in generation.ARTIFACT_FILES)
    np.testing.assert_allclose(annoy.get_item_vector(n - 1), expected[n - 1], rtol=1e-6)
    annoy.unload()
    assert json.loads((gen / "metadata.json").read_text())[7] == {"i": "2"}


def test_a_generation_without_the_npy_files_still_loads(tmp_path):
    # the layout before embeddings.npy and the metadata codes: loaded in memory after a full check
    gen = _big_index(tmp_path, n=50, dim=8)
    expected = load_index(tmp_path)
    manifest = json.loads((gen / generation.MANIFEST).read_text())
    for name in ("embeddings.npy", "metadata-codes.npy", "metadata-values.json"):
        (gen / name).unlink()
        del manifest["checksums"][name]
    (gen / generation.VERIFIED).unlink()
    (gen / generation.MANIFEST).write_text(json.dumps(manifest))
    legacy = load_index(tmp_path)
    np.testing.assert_array_equal(legacy.embeddings, expected.embeddings)
    assert list(legacy.metadata) == list(expected.metadata)
    legacy.annoy.unload()
    expected.annoy.unload()
