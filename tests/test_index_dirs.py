"""Each catalogue keeps its own index folder; ``python -m indexer status`` lists them and removes unused ones.

Fast: the fake embedder builds a few images; ``instance/index`` is a
temporary folder (``config.INDEX_ROOT`` patched), and ``status`` runs in
process through ``indexer.__main__.main``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from indexer import config
from indexer.__main__ import main
from indexer.build import build_index
from indexer.config import Settings
from indexer.index_dirs import index_catalogue
from tests.test_cli import run_cli


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    """A temporary ``instance/index``; the environment names no catalogue or index folder."""
    folder = tmp_path / "instance" / "index"
    monkeypatch.setattr(config, "INDEX_ROOT", folder)
    monkeypatch.delenv("FASHION_INDEX_DIR", raising=False)
    monkeypatch.delenv("FASHION_CATALOGUE", raising=False)
    return folder


def _catalogue(folder: Path, demo_catalogue: Path, ids: range) -> Path:
    """A catalogue of some demo images (with their styles.csv rows)."""
    folder.mkdir(parents=True)
    lines = (demo_catalogue / "styles.csv").read_text().splitlines()
    keep = [line for line in lines[1:] if int(line.split(",")[0]) in ids]
    for line in keep:
        shutil.copy2(demo_catalogue / f"{line.split(',')[0]}.jpg", folder)
    (folder / "styles.csv").write_text("\n".join([lines[0], *keep]) + "\n")
    return folder


@pytest.fixture
def two(tmp_path, root, demo_catalogue, fake_embedder):
    """Two catalogues (6 and 4 items), each built into its default index folder."""
    shop = _catalogue(tmp_path / "shop" / "photos", demo_catalogue, range(1, 7))
    demo = _catalogue(tmp_path / "demo" / "photos", demo_catalogue, range(7, 11))  # same folder name
    settings = [Settings.from_env(env={}, catalogue=str(c), annoy_trees=2) for c in (shop, demo)]
    for one in settings:
        build_index(one, fake_embedder)
    return settings


def _status(capsys, *args: str) -> tuple[int, dict | None]:
    code = main(["status", *args])
    out = capsys.readouterr().out
    return code, (json.loads(out) if out else None)


def test_each_catalogue_has_its_own_folder(tmp_path, root):
    shop, demo = tmp_path / "shop" / "photos", tmp_path / "demo" / "photos"
    a, b = (Settings.from_env(env={}, catalogue=str(c)).index_dir for c in (shop, demo))
    assert a.parent == b.parent == root.resolve() and a != b
    assert a.name.startswith("photos-") and len(a.name) == len("photos-") + 8
    assert a == config.index_dir_for(shop) == Settings.from_env(env={"FASHION_CATALOGUE": str(shop)}).index_dir


def test_the_index_folder_setting_and_flag_still_win(tmp_path, root):
    chosen = tmp_path / "elsewhere"
    env = {"FASHION_INDEX_DIR": str(chosen)}
    assert Settings.from_env(env=env, catalogue=str(tmp_path)).index_dir == chosen
    assert Settings.from_env(env=env, catalogue=str(tmp_path), index_dir=str(tmp_path / "flag")).index_dir == (
        tmp_path / "flag"
    )


def test_building_one_catalogue_leaves_the_others_index_intact(two, demo_catalogue, fake_embedder):
    shop, demo = two
    assert shop.index_dir != demo.index_dir
    manifest = shop.index_dir / "current" / "manifest.json"
    before = manifest.read_bytes()
    shutil.copy2(demo_catalogue / "20.jpg", demo.catalogue / "20.jpg")
    report = build_index(demo, fake_embedder)
    assert report.indexed == 1
    assert manifest.read_bytes() == before
    assert index_catalogue(shop.index_dir) == str(shop.catalogue)
    assert index_catalogue(demo.index_dir) == str(demo.catalogue)


def test_status_lists_every_index_folder(two, capsys):
    shop, demo = two
    code, payload = _status(capsys, "--catalogue", str(shop.catalogue))
    assert code == 0
    assert payload["in_use"] == str(shop.index_dir)
    by_folder = {entry["folder"]: entry for entry in payload["indexes"]}
    assert set(by_folder) == {str(shop.index_dir), str(demo.index_dir)}
    for settings, items, in_use in ((shop, 6, True), (demo, 4, False)):
        entry = by_folder[str(settings.index_dir)]
        assert entry["catalogue"] == str(settings.catalogue)
        assert (entry["items"], entry["in_use"], entry["catalogue_exists"]) == (items, in_use, True)
        assert entry["state"] == "ready"
        assert entry["size_bytes"] > 0 and entry["built_at"].endswith("Z")
    shutil.rmtree(demo.catalogue)
    _, payload = _status(capsys, "--catalogue", str(shop.catalogue))
    assert {e["folder"]: e["catalogue_exists"] for e in payload["indexes"]}[str(demo.index_dir)] is False


def test_remove_takes_only_an_unused_index_folder(two, root, tmp_path, capsys, caplog):
    shop, demo = two
    notes = root / "notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("mine")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "status.json").write_text("{}")
    for folder, reason in (
        (shop.index_dir, "the index the current settings use"),
        (outside, "not a folder inside"),
        (root, "not a folder inside"),
        (notes, "not an index folder"),
        (root / "gone", "does not exist"),
    ):
        caplog.clear()
        code, payload = _status(capsys, "--catalogue", str(shop.catalogue), "--remove", str(folder))
        assert (code, payload) == (2, None), folder
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and "\n" not in errors[0] and reason in errors[0], errors
    assert (notes / "keep.txt").exists() and (outside / "status.json").exists()
    assert index_catalogue(shop.index_dir) == str(shop.catalogue)

    code, payload = _status(capsys, "--catalogue", str(shop.catalogue), "--remove", demo.index_dir.name)
    assert code == 0
    assert payload["removed"] == str(demo.index_dir) and payload["items"] == 4 and payload["freed_bytes"] > 0
    assert not demo.index_dir.exists() and index_catalogue(shop.index_dir) == str(shop.catalogue)
    _, listing = _status(capsys, "--catalogue", str(shop.catalogue))
    assert [e["folder"] for e in listing["indexes"]] == [str(shop.index_dir)]


def test_an_index_built_into_instance_index_itself_keeps_serving_its_catalogue(
    tmp_path, root, demo_catalogue, fake_embedder, capsys
):
    """An install from before catalogues had their own folders: its shop index is neither lost nor rebuilt."""
    shop = _catalogue(tmp_path / "shop", demo_catalogue, range(1, 5))
    build_index(Settings.from_env(env={}, catalogue=str(shop), index_dir=str(root), annoy_trees=2), fake_embedder)
    assert Settings.from_env(env={}, catalogue=str(shop)).index_dir == root.resolve()
    other = Settings.from_env(env={}, catalogue=str(tmp_path / "demo"))
    assert other.index_dir == config.index_dir_for(tmp_path / "demo")
    code, payload = _status(capsys, "--catalogue", str(tmp_path / "demo"))
    assert code == 0
    entries = {e["folder"]: e for e in payload["indexes"]}
    assert entries[str(root.resolve())]["catalogue"] == str(shop.resolve())
    assert entries[str(other.index_dir)]["state"] == "missing"
    assert _status(capsys, "--catalogue", str(tmp_path / "demo"), "--remove", str(root))[0] == 2
    assert (root / "current").is_symlink()


def test_status_command_from_the_shell(tmp_path):
    """The subprocess path: JSON on stdout, and a refusal is one line with exit code 2."""
    catalogue = tmp_path / "photos"
    catalogue.mkdir()
    index_dir = tmp_path / "index"
    result = run_cli("status", "--catalogue", str(catalogue), "--index-dir", str(index_dir), timeout=60)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["in_use"] == str(index_dir)
    assert payload["indexes"][-1]["folder"] == str(index_dir) and payload["indexes"][-1]["state"] == "missing"
    result = run_cli(
        "status", "--catalogue", str(catalogue), "--index-dir", str(index_dir), "--remove", str(tmp_path), timeout=60
    )
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "nothing removed" in result.stderr
