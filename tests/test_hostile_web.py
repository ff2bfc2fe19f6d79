"""Web-layer cases of hostile input: redirects, odd names, symlinks, caching, limits."""

from __future__ import annotations

import io
import os
import shutil

import pytest

from indexer.build import build_index


def _search(client, photo: bytes, url: str = "/api/search", **fields):
    data = dict(fields, image=(io.BytesIO(photo), "q.jpg"))
    return client.post(url, data=data, content_type="multipart/form-data")


@pytest.mark.parametrize("path", ["//evil.example/", "//evil.example/items/1", "//items/1", "/items//1", "//healthz"])
def test_no_redirect_is_built_from_the_host_header(client, path):
    """A '//'-prefixed path was merged and redirected to a Location built from the Host header."""
    # PATH_INFO set directly: the test client would read "//host/" as a URL with a host
    response = client.get("/", environ_overrides={"PATH_INFO": path, "HTTP_HOST": "evil.example"})
    assert "evil.example" not in response.headers.get("Location", "")
    assert not 300 <= response.status_code < 400  # served or not found, never redirected


def test_redirects_are_relative(client):
    response = client.get("/items/1/")  # a trailing slash: not found, never an absolute redirect
    assert response.status_code in (308, 404)
    location = response.headers.get("Location", "")
    assert not location.startswith(("http:", "https:", "//"))


@pytest.fixture
def odd_site(small_settings, fake_embedder, demo_catalogue, make_fake_app):
    """24 demo images plus files with odd names and a symlink that is re-pointed later."""
    catalogue = small_settings.catalogue
    shutil.copy(demo_catalogue / "30.jpg", catalogue / "new\nline.jpg")
    shutil.copy(demo_catalogue / "31.jpg", catalogue / "sp ace #?%&.jpg")
    shutil.copy(demo_catalogue / "32.jpg", catalogue / "real.jpg")
    (catalogue / "images").mkdir()
    os.symlink("../real.jpg", catalogue / "images" / "linked.jpg")
    (catalogue / ".env").write_text("SECRET_KEY=do-not-serve\n")
    build_index(small_settings, fake_embedder)
    return make_fake_app(small_settings)


def _result_for(client, photo: bytes, filename: str) -> dict:
    results = _search(client, photo, k="10").get_json()["queries"][0]["results"]
    return next(r for r in results if r["filename"] == filename)


@pytest.mark.parametrize(("name", "source"), [("new\nline.jpg", "30.jpg"), ("sp ace #?%&.jpg", "31.jpg")])
def test_a_file_with_any_name_is_served_from_its_image_url(odd_site, demo_catalogue, name, source):
    """A newline in a file name: indexed, but its image_url gave 404 (the route did not match newlines)."""
    client = odd_site.test_client()
    photo = (demo_catalogue / source).read_bytes()
    result = _result_for(client, photo, name)
    original = client.get(result["image_url"])
    assert original.status_code == 200
    assert original.data == photo
    assert client.get(result["thumb_url"]).status_code == 200
    page = client.get(f"/items/{result['id']}")
    assert page.status_code == 200


def test_a_symlink_re_pointed_after_indexing_is_not_served(odd_site, small_settings, demo_catalogue):
    client = odd_site.test_client()
    result = _result_for(client, (demo_catalogue / "32.jpg").read_bytes(), "images/linked.jpg")
    assert client.get(result["image_url"]).status_code == 200  # control: served while it points at an image
    link = small_settings.catalogue / "images" / "linked.jpg"
    link.unlink()
    os.symlink("../.env", link)  # inside the catalogue, but not a file the catalogue would index
    response = client.get(result["image_url"])
    assert response.status_code == 404
    assert b"do-not-serve" not in response.data
    link.unlink()
    os.symlink("../styles.csv", link)
    assert client.get(result["image_url"]).status_code == 404


def test_answers_that_carry_an_upload_are_never_stored(client, demo_catalogue):
    photo = (demo_catalogue / "42.jpg").read_bytes()
    for url in ("/api/search", "/search"):
        assert _search(client, photo, url).headers["Cache-Control"] == "no-store"
        bad = client.post(url, data={"image": (io.BytesIO(b"not an image"), "x.jpg")},
                          content_type="multipart/form-data")
        assert bad.status_code == 415 and bad.headers["Cache-Control"] == "no-store"
    for url in ("/", "/api/status", "/items/42", "/api/items/42/similar"):
        assert client.get(url).headers["Cache-Control"] == "no-cache", url
    thumb = client.get("/api/items/42/similar").get_json()["item"]["thumb_url"]
    assert "max-age" in client.get(thumb).headers["Cache-Control"]


@pytest.mark.parametrize("url", ["/search", "/api/search"])
def test_too_many_form_parts_names_that_limit(client, url):
    """The 413 for too many form parts said 'larger than 10 MB'."""
    data = {f"f{i}": "x" for i in range(120)}
    response = client.post(url, data=data, content_type="multipart/form-data")
    assert response.status_code == 413
    text = response.get_data(as_text=True)
    assert "more than 100 parts" in text
    assert "10 MB" not in text


def test_an_oversized_body_still_names_the_size_limit(client):
    response = client.post(
        "/api/search", data={"image": (io.BytesIO(b"\0" * (11 * 1024 * 1024)), "big.jpg")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 413
    assert "larger than the 10 MB limit" in response.get_json()["error"]["message"]


def test_status_while_building_names_no_path(small_settings, fake_embedder, make_fake_app):
    """During a build /api/status said 'Scanning /srv/...'."""
    app = make_fake_app(small_settings, autobuild=True)
    client = app.test_client()
    seen = []
    service = app.extensions["fashion.service"]
    while not service.wait_until_ready(timeout=0.5):
        seen.append(client.get("/api/status").get_data(as_text=True))
    seen.append(client.get("/api/status").get_data(as_text=True))
    for body in seen:
        assert str(small_settings.catalogue) not in body
        assert str(small_settings.index_dir) not in body


@pytest.mark.parametrize("url", ["/search", "/api/search"])
def test_a_photo_that_cannot_get_decode_memory_in_time_gets_503_with_retry_after(client, demo_catalogue, monkeypatch,
                                                                                url):
    from indexer import images

    monkeypatch.setattr(images.DECODE_BUDGET, "wait_s", 0.05)
    photo = (demo_catalogue / "42.jpg").read_bytes()
    with images.DECODE_BUDGET.reserve(images.DECODE_BUDGET.limit_bytes):  # other requests hold it all
        response = _search(client, photo, url)
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert "busy decoding other photos" in response.get_data(as_text=True)
    assert _search(client, photo, url).status_code == 200  # released: served again


@pytest.mark.slow  # starts decode processes under their memory cap
def test_the_decode_memory_setting_bounds_each_process(fake_index, make_fake_app):
    from indexer import images
    from tests.corpus import make_png

    photo = make_png((3000, 2000))  # a few KB uploaded, about 23 MB decoded
    small = make_fake_app(fake_index.replace(decode_memory_mb=16)).test_client()
    response = _search(small, photo)
    assert response.status_code == 413
    assert "the limit is 16 MB per photo" in response.get_json()["error"]["message"]
    assert images.DECODE_BUDGET.limit_bytes == 16 * 1024 * 1024
    default = make_fake_app(fake_index).test_client()  # the next app sets the default back
    assert _search(default, photo).status_code == 200
    assert images.DECODE_BUDGET.limit_bytes == images.DECODE_BUDGET_BYTES


@pytest.mark.parametrize("route", ["/search", "/api/search"])
def test_a_large_urlencoded_body_is_refused_before_it_is_parsed(client, route):
    # 3.3 million empty fields used to cost seconds of CPU and hundreds of MB per request
    flood = b"k=&" * 3_300_000
    response = client.post(route, data=flood, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 413
    assert "not a photo upload may be at most 64 KB" in response.get_data(as_text=True)


def test_small_non_multipart_bodies_still_get_their_usual_answer(client):
    response = client.post("/api/search", data="k=5", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400  # no photo: the ordinary error, not a 413
    json_body = client.post("/api/search", data=b"{" + b" " * 70_000 + b"}", content_type="application/json")
    assert json_body.status_code == 413


_EVERY_KIND_OF_ANSWER = [
    ("GET", "/", None),
    ("GET", "/browse?page=2", None),
    ("GET", "/browse?page=%C2%B2", None),
    ("GET", "/items/17", None),
    ("GET", "/items/no-such-item", None),
    ("GET", "/api/items/17/similar", None),
    ("GET", "/api/items/no-such-item/similar", None),
    ("GET", "/api/facets", None),
    ("GET", "/api/status", None),
    ("GET", "/healthz", None),
    ("GET", "/catalogue/17.jpg", None),
    ("GET", "/catalogue/../../etc/passwd", None),
    ("GET", "/thumbs/no-such-thumb.jpg", None),
    ("GET", "/no-such-page", None),
    ("GET", "/search", None),
    ("POST", "/search", {"image": (io.BytesIO(b"not an image"), "x.jpg")}),
    ("POST", "/api/search", {"image": (io.BytesIO(b"not an image"), "x.jpg")}),
    ("POST", "/api/search", {"image": (io.BytesIO(b""), "")}),
    ("POST", "/search/more", {"query": "AAAA", "filename": "x", "preview": ""}),
]


@pytest.mark.parametrize(("method", "path", "data"), _EVERY_KIND_OF_ANSWER, ids=lambda v: str(v)[:40])
def test_no_answer_names_a_server_path(client, fake_index, method, path, data):
    """Pages, JSON and headers, for successes and every kind of error: no folder of the server is named."""
    response = client.open(path, method=method, data=data, content_type="multipart/form-data" if data else None)
    text = response.get_data().decode("utf-8", "replace") + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    for folder in (fake_index.catalogue, fake_index.index_dir, fake_index.catalogue.parent):
        assert str(folder) not in text, (response.status_code, folder)


def _raw_multipart(disposition: bytes, photo: bytes, eol: bytes = b"\r\n") -> tuple[bytes, str]:
    """A one-photo multipart body built by hand: ``disposition`` goes into the part header as raw bytes.

    ``eol`` ends its lines (CRLF, as the standard says; some tools send LF alone).
    """
    boundary = b"----round4boundary"
    body = b"".join([
        b"--" + boundary + eol,
        b'Content-Disposition: form-data; name="image"; ' + disposition + eol,
        b"Content-Type: image/jpeg" + eol + eol,
        photo,
        eol + b"--" + boundary + b"--" + eol,
    ])
    return body, "multipart/form-data; boundary=" + boundary.decode()


@pytest.mark.parametrize(
    ("disposition", "shown"),
    [
        (b'filename="caf\xe9.jpg"', "café.jpg"),  # Latin-1, as older browsers and tools send it
        (b"filename*=UTF-8''caf%C3%A9.jpg", "café.jpg"),  # RFC 5987
        (b'filename="caf\xc3\xa9.jpg"', "café.jpg"),  # raw UTF-8, as browsers send it today
        (b'filename="x"; filename*=UTF-8\'\'%E2%9C%93%20ok.jpg', "✓ ok.jpg"),
        (b'filename="\xff\xfe\x80.jpg"', "ÿþ.jpg"),  # bytes that are no UTF-8 at all; C1 controls dropped
        (b'filename="   .jpg"', ".jpg"),
        (b'filename="..\\\\..\\\\a\xe9.jpg"', "aé.jpg"),
    ],
)
def test_upload_file_names_in_any_encoding_are_accepted(client, demo_catalogue, disposition, shown):
    """A raw Latin-1 byte in ``filename=`` made werkzeug drop the whole form: "No photo was uploaded"."""
    body, content_type = _raw_multipart(disposition, (demo_catalogue / "42.jpg").read_bytes())
    response = client.post("/api/search", data=body, content_type=content_type)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["queries"][0]["filename"] == shown
    page = client.post("/search", data=body, content_type=content_type)
    assert page.status_code == 200
    assert "No photo was uploaded" not in page.get_data(as_text=True)


@pytest.mark.parametrize("eol", [b"\n", b"\r\n"])
def test_a_latin_1_file_name_is_read_with_any_line_ends(client, demo_catalogue, eol):
    """Werkzeug reads part headers ended by LF alone too; the Latin-1 pre-pass must find those blocks as well."""
    body, content_type = _raw_multipart(b'filename="caf\xe9.jpg"', (demo_catalogue / "42.jpg").read_bytes(), eol)
    response = client.post("/api/search", data=body, content_type=content_type)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["queries"][0]["filename"] == "café.jpg"


def test_a_boundary_that_is_not_ascii_is_a_clear_400_not_a_crash(client, demo_catalogue):
    body, _ = _raw_multipart(b'filename="a.jpg"', (demo_catalogue / "42.jpg").read_bytes())
    response = client.post(
        "/api/search", data=body, content_type="multipart/form-data; boundary*=UTF-8''%E2%82%AC"
    )
    assert response.status_code == 400
    assert "No photo was uploaded" in response.get_json()["error"]["message"]


def test_a_chunked_upload_over_the_limit_is_413(client, demo_catalogue, fake_app):
    """Without a length, the body is cut at the limit: that must be a 413, never a form parsed from half a body."""
    limit = fake_app.config["MAX_CONTENT_LENGTH"]
    body, content_type = _raw_multipart(b'filename="big.jpg"', b"\xff" * (limit + 1024))
    response = client.post(
        "/api/search", input_stream=io.BytesIO(body), content_type=content_type,
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413
