"""Hostile and odd uploads, against the real app (with the fast tier's fake embedder).

* Every case of ``tests/corpus.py`` through both ``POST /search`` (HTML) and
  ``POST /api/search`` (JSON): "ok" cases give 200 with results, "reject"
  cases a 4xx (never 5xx) with a human message (in the page; in
  ``error.message``), and the app still serves normal searches afterwards.
* Request-level cases: a body over ``FASHION_MAX_UPLOAD_MB`` (413), the
  decompression bomb (413), no file field, an empty filename, too many
  files, non-multipart bodies (400), odd part Content-Types, non-ASCII and
  ``../../etc/passwd`` filenames with nothing written to disk, uploads kept
  in memory (no temporary file), an EXIF-rotated photo searched upright and
  an animated GIF searched by its first frame.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from flask import request_finished
from markupsafe import escape
from PIL import Image, ImageOps

from indexer.images import ImageError, load_for_model
from tests.corpus import MEGAPIXEL_CASES, build_corpus

CORPUS = build_corpus()
OK = [u for u in CORPUS if u.expect == "ok"]
# the 64-megapixel cases take a second or more each to decode: the slow tier's
OK_PARAMS = [pytest.param(u, id=u.name, marks=[pytest.mark.slow] if u.name in MEGAPIXEL_CASES else []) for u in OK]
REJECT = [u for u in CORPUS if u.expect == "reject"]
SHOWN_NAME = {"traversal_filename": "passwd"}  # only the last path component is ever displayed
REJECT_STATUS = {"empty_file": 400, "decompression_bomb": 413, "webp_huge": 413}


def post(client, url, files, **fields):
    """``files``: a list of ``(bytes, filename, content_type)``."""
    data = dict(fields)
    data["image"] = [(io.BytesIO(content), name, ctype) for content, name, ctype in files]
    return client.post(url, data=data, content_type="multipart/form-data")


def post_case(client, url, case):
    return post(client, url, [(case.data, case.filename, case.content_type)])


def image_message(data: bytes) -> str:
    """What the shared image pipeline says about ``data`` (the message the shopper must see)."""
    with pytest.raises(ImageError) as info:
        load_for_model(data)
    return info.value.message


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def api_results(client, data: bytes, name: str, ctype: str = "image/png") -> list[tuple[str, float]]:
    response = post(client, "/api/search", [(data, name, ctype)], k="8")
    assert response.status_code == 200, response.get_json()
    return [(r["id"], r["distance"]) for r in response.get_json()["queries"][0]["results"]]


@pytest.fixture(scope="module")
def demo_photo(demo_catalogue) -> bytes:
    return (demo_catalogue / "42.jpg").read_bytes()


@pytest.fixture(scope="module")
def baseline(fake_app, demo_photo):
    """Results of a normal search before any bad upload was sent."""
    client = fake_app.test_client()
    return api_results(client, demo_photo, "42.jpg", "image/jpeg")


def test_baseline_before_corpus(baseline):
    assert baseline[0][0] == "42"
    assert len(baseline) == 8


def test_corpus_is_complete():
    assert len(CORPUS) >= 25
    assert len({u.name for u in CORPUS}) == len(CORPUS)
    assert OK and REJECT


# ---------------------------------------------------------------- the corpus, both endpoints


@pytest.mark.parametrize("case", OK_PARAMS)
def test_ok_case_html(client, case):
    response = post_case(client, "/search", case)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert page.count('<li class="card">') == 5
    assert str(escape(SHOWN_NAME.get(case.name, case.filename))) in page
    assert 'role="alert"' not in page


@pytest.mark.parametrize("case", OK_PARAMS)
def test_ok_case_api(client, case):
    response = post_case(client, "/api/search", case)
    assert response.status_code == 200
    queries = response.get_json()["queries"]
    assert len(queries) == 1
    assert queries[0]["filename"] == SHOWN_NAME.get(case.name, case.filename)
    assert "/" not in queries[0]["filename"]
    assert len(queries[0]["results"]) == 5


@pytest.mark.parametrize("case", REJECT, ids=lambda u: u.name)
def test_reject_case_html(client, case):
    message = image_message(case.data)
    response = post_case(client, "/search", case)
    assert 400 <= response.status_code < 500
    if case.name in REJECT_STATUS:
        assert response.status_code == REJECT_STATUS[case.name]
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert 'role="alert"' in page
    assert str(escape(message)) in page
    assert '<li class="card">' not in page
    assert "<script>alert" not in page  # payloads are never echoed as markup
    assert "Traceback" not in page


@pytest.mark.parametrize("case", REJECT, ids=lambda u: u.name)
def test_reject_case_api(client, case):
    message = image_message(case.data)
    response = post_case(client, "/api/search", case)
    assert 400 <= response.status_code < 500
    if case.name in REJECT_STATUS:
        assert response.status_code == REJECT_STATUS[case.name]
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["status"] == response.status_code
    assert error["message"] == f"{case.filename}: {message}"
    assert error["field"] == "image"


def test_a_bad_photo_among_good_ones_rejects_the_request(client, demo_photo):
    bad = next(u for u in REJECT if u.name == "truncated_jpeg")
    response = post(client, "/api/search", [(demo_photo, "a.jpg", "image/jpeg"), (bad.data, "b.jpg", "image/jpeg")])
    assert response.status_code == 422
    assert response.get_json()["error"]["message"].startswith("b.jpg: ")


# ---------------------------------------------------------------- request-level cases


def noise_png(megabytes: float) -> bytes:
    side = int((megabytes * 1024 * 1024 / 3) ** 0.5) + 8
    pixels = np.random.default_rng(7).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return png_bytes(Image.fromarray(pixels))


@pytest.fixture(scope="module")
def two_megabytes() -> bytes:
    data = noise_png(2.0)
    assert 2 * 1024 * 1024 <= len(data) < 3 * 1024 * 1024
    return data


@pytest.fixture(scope="module")
def one_mb_app(fake_index, make_fake_app):
    settings = fake_index.replace(max_upload_mb=1)
    return make_fake_app(settings)


def test_upload_over_the_limit_is_413(one_mb_app, two_megabytes, demo_photo):
    client = one_mb_app.test_client()
    page = post(client, "/search", [(two_megabytes, "big.png", "image/png")])
    assert page.status_code == 413
    assert page.mimetype == "text/html"
    assert "larger than the 1 MB limit" in page.get_data(as_text=True)
    api = post(client, "/api/search", [(two_megabytes, "big.png", "image/png")])
    assert api.status_code == 413
    assert "larger than the 1 MB limit" in api.get_json()["error"]["message"]
    # the same app still serves a photo under the limit
    assert post(client, "/api/search", [(demo_photo, "ok.jpg", "image/jpeg")]).status_code == 200


def test_the_same_upload_is_fine_under_the_default_limit(client, two_megabytes):
    response = post(client, "/api/search", [(two_megabytes, "big.png", "image/png")])
    assert response.status_code == 200
    assert len(response.get_json()["queries"][0]["results"]) == 5


@pytest.mark.parametrize("url", ["/search", "/api/search"])
def test_decompression_bomb_is_413(client, url):
    bomb = next(u for u in REJECT if u.name == "decompression_bomb")
    response = post_case(client, url, bomb)
    assert response.status_code == 413
    assert "too large" in response.get_data(as_text=True)


@pytest.mark.parametrize("url", ["/search", "/api/search"])
def test_no_file_field_is_400(client, url):
    response = client.post(url, data={"k": "5"}, content_type="multipart/form-data")
    assert response.status_code == 400
    assert "No photo was uploaded" in response.get_data(as_text=True)


@pytest.mark.parametrize("url", ["/search", "/api/search"])
def test_empty_filename_is_400(client, url):
    # what a browser sends when the file picker was left empty
    response = post(client, url, [(b"", "", "application/octet-stream")])
    assert response.status_code == 400
    assert "No file was selected" in response.get_data(as_text=True)


@pytest.mark.parametrize("url", ["/search", "/api/search"])
def test_more_files_than_allowed_is_400(client, url, demo_photo):
    response = post(client, url, [(demo_photo, f"{i}.jpg", "image/jpeg") for i in range(5)])
    assert response.status_code == 400
    assert "At most 4 photos" in response.get_data(as_text=True)


@pytest.mark.parametrize("url", ["/search", "/api/search"])
@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ('{"image": "aGVsbG8="}', "application/json"),
        ("image=%FF%D8%FF&k=5", "application/x-www-form-urlencoded"),
        ("just some text", "text/plain"),
        ("", None),
    ],
    ids=["json", "urlencoded", "text", "no-body"],
)
def test_non_multipart_body_is_400(client, url, body, content_type):
    response = client.post(url, data=body, content_type=content_type)
    assert response.status_code == 400
    assert "No photo was uploaded" in response.get_data(as_text=True)


def test_multipart_without_boundary_is_4xx(client):
    response = client.post("/api/search", data=b"garbage", content_type="multipart/form-data")
    assert 400 <= response.status_code < 500
    assert response.get_json()["error"]["message"]


@pytest.mark.parametrize("ctype", ["application/octet-stream", "text/html", "image/gif", "x/y; charset=utf-8"])
def test_part_content_type_is_ignored(client, demo_photo, ctype):
    response = post(client, "/api/search", [(demo_photo, "42.jpg", ctype)])
    assert response.status_code == 200
    assert response.get_json()["queries"][0]["results"][0]["id"] == "42"


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            stat = path.lstat()
            found[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return found


@pytest.mark.parametrize("url", ["/search", "/api/search"])
def test_hostile_filenames_search_and_write_nothing(client, fake_index, demo_photo, tmp_path, monkeypatch, url):
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    watched = [fake_index.catalogue, fake_index.index_dir]
    before = [_listing(folder) for folder in watched]
    names = ["фото 雨.jpg", "../../etc/passwd", "..\\..\\win.ini", "/tmp/x.jpg", "a\x00b.jpg", "<img src=x>.jpg"]
    for name in names:
        response = post(client, url, [(demo_photo, name, "image/jpeg")])
        assert response.status_code == 200, name
        if url == "/search":
            assert "<img src=x>" not in response.get_data(as_text=True)
        else:
            shown = response.get_json()["queries"][0]["filename"]
            assert "/" not in shown and "\\" not in shown and "\x00" not in shown
    assert [_listing(folder) for folder in watched] == before
    assert _listing(workdir) == {}


def test_uploads_stay_in_memory(fake_app, client, two_megabytes):
    """Werkzeug spools parts over 500 KB to a temporary file; ours must stay in memory."""
    seen: list = []

    def inspect_request(sender, response, **extra):
        from flask import request

        for upload in request.files.getlist("image"):
            seen.append(upload.stream)

    request_finished.connect(inspect_request, fake_app)
    try:
        response = post(client, "/api/search", [(two_megabytes, "big.png", "image/png")])
    finally:
        request_finished.disconnect(inspect_request, fake_app)
    assert response.status_code == 200
    assert len(seen) == 1
    assert isinstance(seen[0], io.BytesIO), f"upload stored in {type(seen[0]).__name__}"


def test_exif_rotated_photo_is_searched_upright(client):
    case = next(u for u in OK if u.name == "exif_rotated_jpeg")
    stored = Image.open(io.BytesIO(case.data))
    assert stored.getexif().get(0x0112) == 6
    upright = png_bytes(ImageOps.exif_transpose(stored))  # rotated by hand, lossless
    sideways = png_bytes(stored.convert("RGB"))  # the stored pixels, EXIF dropped
    rotated_results = api_results(client, case.data, "rotated.jpg", "image/jpeg")
    upright_results = api_results(client, upright, "upright.png")
    sideways_results = api_results(client, sideways, "sideways.png")
    assert [i for i, _ in rotated_results] == [i for i, _ in upright_results]
    assert [d for _, d in rotated_results] == pytest.approx([d for _, d in upright_results], abs=1e-4)
    # control: orientation matters to the model, so this comparison can fail
    assert sideways_results != rotated_results


def test_animated_gif_is_searched_by_its_first_frame(client):
    case = next(u for u in OK if u.name == "animated_gif")
    gif = Image.open(io.BytesIO(case.data))
    frames = []
    for index in range(gif.n_frames):
        gif.seek(index)
        frames.append(png_bytes(gif.convert("RGB")))
    animated = api_results(client, case.data, "anim.gif", "image/gif")
    first = api_results(client, frames[0], "first.png")
    second = api_results(client, frames[1], "second.png")
    assert [i for i, _ in animated] == [i for i, _ in first]
    assert [d for _, d in animated] == pytest.approx([d for _, d in first], abs=1e-4)
    assert second != animated


# ---------------------------------------------------------------- after everything


def test_app_still_serves_normally_after_the_corpus(fake_app, client, baseline, demo_photo):
    for case in REJECT:  # once more, back to back
        assert 400 <= post_case(client, "/api/search", case).status_code < 500
    assert fake_app.extensions["fashion.service"].state == "ready"
    assert api_results(client, demo_photo, "42.jpg", "image/jpeg") == baseline
    page = post(client, "/search", [(demo_photo, "42.jpg", "image/jpeg")])
    assert page.status_code == 200
    assert page.get_data(as_text=True).count('<li class="card">') == 5
    assert client.get("/healthz").status_code == 200
