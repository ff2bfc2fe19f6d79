"""Path safety of the image routes.

A small writable catalogue is built into a real index, with traps around
it: ``secret.jpg`` next to the catalogue folder, a symlink ``evil.jpg``
inside the catalogue pointing at it, a symlinked folder pointing outside,
a hidden image, non-image files, and a thumbnail-named symlink planted in
the index's ``thumbs/`` folder. ``/catalogue/<path>`` and ``/thumbs/<name>``
must answer 404 to every traversal variant (plain, encoded, double-encoded,
absolute, backslashes, NUL bytes, symlinks, non-indexed files) and never
return the secret's bytes, while the legitimate files stay reachable.
"""

from __future__ import annotations

import os
import shutil

import pytest

from indexer.build import build_index
from indexer.config import Settings

SECRET_SOURCE = "100.jpg"


@pytest.fixture(scope="module")
def trap(tmp_path_factory, demo_catalogue, fake_embedder, make_fake_app):
    """Build a small index over a catalogue surrounded by traps; return (app, settings, facts)."""
    root = tmp_path_factory.mktemp("paths")
    catalogue = root / "catalogue"
    (catalogue / "sub").mkdir(parents=True)
    for item_id in (1, 2, 3, 4, 5):
        shutil.copy2(demo_catalogue / f"{item_id}.jpg", catalogue / f"{item_id}.jpg")
    shutil.copy2(demo_catalogue / "6.jpg", catalogue / "sub" / "6.jpg")
    shutil.copy2(demo_catalogue / "7.jpg", catalogue / ".hidden.jpg")
    shutil.copy2(demo_catalogue / "styles.csv", catalogue / "styles.csv")
    (catalogue / "notes.txt").write_text("not for the public\n")

    secret = root / "secret.jpg"
    shutil.copy2(demo_catalogue / SECRET_SOURCE, secret)
    outside = root / "outside"
    outside.mkdir()
    shutil.copy2(demo_catalogue / "8.jpg", outside / "inner.jpg")
    os.symlink("../secret.jpg", catalogue / "evil.jpg")  # a file symlink pointing out
    os.symlink(str(outside), catalogue / "linked")  # a folder symlink pointing out
    os.symlink("/etc/passwd", catalogue / "passwd.jpg")

    settings = Settings.from_env(catalogue=str(catalogue), index_dir=str(root / "index"))
    build_index(settings, fake_embedder)
    app = make_fake_app(settings)
    searcher = app.extensions["fashion.service"].searcher
    assert searcher is not None

    thumbs = sorted((settings.index_dir / "thumbs").glob("*/*.jpg"))
    assert thumbs
    planted = "ab" + "0" * 22 + ".jpg"
    (settings.index_dir / "thumbs" / "ab").mkdir(exist_ok=True)
    os.symlink(secret, settings.index_dir / "thumbs" / "ab" / planted)
    return app, settings, {
        "secret": secret.read_bytes(),
        "thumb": thumbs[0].name,
        "planted": planted,
        "indexed": set(searcher.filenames),
    }


@pytest.fixture
def client_(trap):
    return trap[0].test_client()


def get_final(client, path):
    """GET ``path``, following same-site redirects (Werkzeug merges ``//``); return the last response."""
    response = client.get(path, follow_redirects=True)
    for hop in response.history:
        assert hop.headers["Location"].startswith(("/", "http://localhost/"))
    return response


def test_controls_legitimate_files_are_served(client_, trap, demo_catalogue):
    _, settings, facts = trap
    assert {"1.jpg", "sub/6.jpg"} <= facts["indexed"]
    response = client_.get("/catalogue/1.jpg")
    assert response.status_code == 200
    assert response.data == (demo_catalogue / "1.jpg").read_bytes()
    assert client_.get("/catalogue/sub/6.jpg").status_code == 200
    assert client_.get(f"/thumbs/{facts['thumb']}").status_code == 200


def test_hidden_and_foreign_files_are_not_indexed(trap):
    indexed = trap[2]["indexed"]
    assert ".hidden.jpg" not in indexed
    assert not any(name.startswith("linked/") for name in indexed)
    assert "passwd.jpg" not in indexed  # /etc/passwd is no image


CATALOGUE_VARIANTS = [
    "/catalogue/../secret.jpg",
    "/catalogue/%2e%2e/secret.jpg",
    "/catalogue/%2E%2E%2Fsecret.jpg",
    "/catalogue/%252e%252e/secret.jpg",
    "/catalogue/%252e%252e%252fsecret.jpg",
    "/catalogue/..%2fsecret.jpg",
    "/catalogue/1.jpg/../../secret.jpg",
    "/catalogue/sub/../../secret.jpg",
    "/catalogue/sub/../1.jpg",
    "/catalogue/./1.jpg",
    "/catalogue//etc/passwd",
    "/catalogue/%2Fetc%2Fpasswd",
    "/catalogue/..%5c..%5csecret.jpg",
    "/catalogue/..\\..\\secret.jpg",
    "/catalogue/sub%5c6.jpg",
    "/catalogue/1.jpg%00",
    "/catalogue/1.jpg%00.png",
    "/catalogue/%00../secret.jpg",
    "/catalogue/%c0%ae%c0%ae/secret.jpg",
    "/catalogue/..;/secret.jpg",
    "/catalogue/1.JPG",
    "/catalogue/evil.jpg",
    "/catalogue/linked/inner.jpg",
    "/catalogue/passwd.jpg",
    "/catalogue/.hidden.jpg",
    "/catalogue/styles.csv",
    "/catalogue/notes.txt",
    "/catalogue/",
    "/catalogue/sub",
]


@pytest.mark.parametrize("path", CATALOGUE_VARIANTS)
def test_catalogue_traversal_is_404(client_, trap, path):
    response = get_final(client_, path)
    assert response.status_code == 404
    assert trap[2]["secret"] not in response.data
    assert b"root:" not in response.data


def test_catalogue_absolute_path_of_a_real_file_is_404(client_, trap, demo_catalogue):
    _, settings, facts = trap
    for target in (settings.catalogue / "1.jpg", settings.catalogue.parent / "secret.jpg"):
        response = get_final(client_, "/catalogue/" + str(target))
        assert response.status_code == 404
        assert facts["secret"] not in response.data
        assert (demo_catalogue / "1.jpg").read_bytes() not in response.data


def test_symlink_out_of_the_catalogue_is_not_served(client_, trap):
    """Whether or not the indexer listed it, the route resolves symlinks and refuses."""
    response = client_.get("/catalogue/evil.jpg")
    assert response.status_code == 404
    assert trap[2]["secret"] not in response.data


def thumb_variants(facts) -> list[str]:
    real = facts["thumb"]
    return [
        "/thumbs/../manifest.json",
        "/thumbs/..%2Fmanifest.json",
        "/thumbs/%2e%2e%2fstatus.json",
        "/thumbs/%252e%252e%252fmanifest.json",
        "/thumbs/..%2F..%2Fsecret.jpg",
        "/thumbs/..%5c..%5csecret.jpg",
        f"/thumbs/../thumbs/{real[:2]}/{real}",
        f"/thumbs/{real[:2]}%2F{real}",
        f"/thumbs/{real.upper()}",
        f"/thumbs/{real}%00",
        f"/thumbs/{real}%00.png",
        "/thumbs/" + "f" * 24 + ".jpg",
        "/thumbs/status.json",
        f"/thumbs/{facts['planted']}",
        "/thumbs/",
    ]


def test_thumbnail_traversal_is_404(client_, trap):
    facts = trap[2]
    variants = thumb_variants(facts)
    assert len(variants) >= 10
    for path in variants:
        response = get_final(client_, path)
        assert response.status_code == 404, path
        assert facts["secret"] not in response.data, path


def test_demo_app_refuses_the_same_variants(client):
    """The session demo app (no traps) refuses too: index files and styles.csv stay private."""
    for path in ["/catalogue/styles.csv", "/catalogue/../demo-index0/manifest.json", "/thumbs/../manifest.json"]:
        assert get_final(client, path).status_code == 404


def test_several_byte_ranges_get_the_whole_file_and_one_range_a_part(client):
    """A satisfiable multi-range request is never 416: the whole file, 200; a single range stays 206."""
    page = client.get("/api/items/1/similar").get_json()
    url = page["item"]["image_url"]
    whole = client.get(url)
    assert whole.status_code == 200
    several = client.get(url, headers={"Range": "bytes=0-10,20-30"})
    assert several.status_code == 200 and several.data == whole.data
    one = client.get(url, headers={"Range": "bytes=0-10"})
    assert one.status_code == 206 and one.data == whole.data[:11]
    thumb = page["item"]["thumb_url"]
    assert client.get(thumb, headers={"Range": "bytes=0-1,4-5"}).status_code == 200
