"""Headers and configuration.

* Every kind of response (HTML pages, JSON, catalogue images, thumbnails,
  static assets, 304s, 4xx, 413, 500 and 503 errors) carries
  ``X-Content-Type-Options: nosniff``, a Content-Security-Policy allowing
  only same-origin scripts and styles plus ``data:`` images, and a
  ``Referrer-Policy``; the pages have no inline script or style that such a
  policy would break.
* A forced internal error (test-only routes registered on a fresh app)
  returns a 500 page / JSON without a traceback or the exception text.
* Debug is off, even with ``FLASK_DEBUG=1`` in the environment.
* A busy model gate (its one slot held by the test, wait shortened to 0.1 s)
  gives 503 with Retry-After, and searches work again once it is free.
"""

from __future__ import annotations

import io
import re

import pytest

SECRET = "secret-detail-6f1c /etc/shadow"
REFERRER_POLICIES = {"no-referrer", "same-origin", "strict-origin", "strict-origin-when-cross-origin"}


@pytest.fixture(scope="module")
def hdr_app(fake_index, make_fake_app):
    """A fresh production-like app (TESTING off, 1 MB limit) with two routes that fail on purpose."""
    app = make_fake_app(fake_index.replace(max_upload_mb=1), TESTING=False)

    @app.get("/boom")
    def boom():
        raise RuntimeError(SECRET)

    @app.get("/api/boom")
    def api_boom():
        raise KeyError(SECRET)

    return app


@pytest.fixture
def hclient(hdr_app):
    return hdr_app.test_client()


def upload(client, url, data: bytes, name: str = "q.jpg", **fields):
    fields["image"] = (io.BytesIO(data), name)
    return client.post(url, data=fields, content_type="multipart/form-data")


def parse_csp(value: str) -> dict[str, list[str]]:
    directives = {}
    for part in value.split(";"):
        words = part.split()
        if words:
            directives[words[0].lower()] = words[1:]
    return directives


def _thumb_url(client, photo):
    return upload(client, "/api/search", photo).get_json()["queries"][0]["results"][0]["thumb_url"]


def _conditional(client, path):
    etag = client.get(path).headers["ETag"]
    return client.get(path, headers={"If-None-Match": etag})


@pytest.fixture(scope="module")
def photo(demo_catalogue) -> bytes:
    return (demo_catalogue / "11.jpg").read_bytes()


REQUESTS = {
    "home": lambda c, p: c.get("/"),
    "results": lambda c, p: upload(c, "/search", p),
    "item": lambda c, p: c.get("/items/11"),
    "api-search": lambda c, p: upload(c, "/api/search", p),
    "api-similar": lambda c, p: c.get("/api/items/11/similar"),
    "api-status": lambda c, p: c.get("/api/status"),
    "healthz": lambda c, p: c.get("/healthz"),
    "catalogue-image": lambda c, p: c.get("/catalogue/11.jpg"),
    "thumbnail": lambda c, p: c.get(_thumb_url(c, p)),
    "not-modified": lambda c, p: _conditional(c, "/catalogue/11.jpg"),
    "static-css": lambda c, p: c.get("/static/style.css"),
    "static-js": lambda c, p: c.get("/static/app.js"),
    "html-404": lambda c, p: c.get("/nope"),
    "json-404": lambda c, p: c.get("/api/nope"),
    "json-405": lambda c, p: c.get("/api/search"),
    "html-400": lambda c, p: upload(c, "/search", p, k="zero"),
    "json-415": lambda c, p: upload(c, "/api/search", b"not an image"),
    "json-413": lambda c, p: upload(c, "/api/search", b"\0" * (2 * 1024 * 1024)),
    "html-413": lambda c, p: upload(c, "/search", b"\0" * (2 * 1024 * 1024)),
    "html-500": lambda c, p: c.get("/boom"),
    "json-500": lambda c, p: c.get("/api/boom"),
}
EXPECTED_STATUS = {"not-modified": 304, "html-404": 404, "json-404": 404, "json-405": 405, "html-400": 400}
EXPECTED_STATUS |= {"json-415": 415, "json-413": 413, "html-413": 413, "html-500": 500, "json-500": 500}


@pytest.mark.parametrize("kind", list(REQUESTS))
def test_security_headers_on_every_response(hclient, photo, kind):
    response = REQUESTS[kind](hclient, photo)
    assert response.status_code == EXPECTED_STATUS.get(kind, 200)
    assert_security_headers(response)


def assert_security_headers(response):
    headers = response.headers
    assert headers.get("X-Content-Type-Options") == "nosniff"
    assert headers.get("Referrer-Policy") in REFERRER_POLICIES
    csp = parse_csp(headers.get("Content-Security-Policy", ""))
    assert csp.get("default-src") == ["'self'"]
    assert csp.get("script-src") == ["'self'"]
    assert csp.get("style-src") == ["'self'"]
    assert "'self'" in csp.get("img-src", []) and "data:" in csp["img-src"]
    assert set(csp["img-src"]) <= {"'self'", "data:", "blob:"}
    assert csp.get("object-src") == ["'none'"]
    assert csp.get("frame-ancestors") == ["'none'"]
    for sources in csp.values():
        assert not {"*", "'unsafe-inline'", "'unsafe-eval'", "http:", "https:"} & set(sources)


@pytest.mark.parametrize("kind", ["home", "results", "item", "html-404", "html-400"])
def test_pages_need_nothing_the_policy_forbids(hclient, photo, kind):
    """No inline scripts, inline styles, event-handler attributes or foreign assets."""
    page = REQUESTS[kind](hclient, photo).get_data(as_text=True)
    for tag in re.findall(r"<script\b[^>]*>", page):
        assert "src=" in tag
    assert "<style" not in page
    assert not re.search(r"\sstyle\s*=", page)
    assert not re.search(r"\son[a-z]+\s*=", page)
    assert "javascript:" not in page
    for url in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert url.startswith(("/", "#", "data:image/")), url


@pytest.mark.parametrize("path", ["/boom", "/api/boom"])
def test_internal_error_hides_the_traceback(hclient, path):
    response = hclient.get(path)
    assert response.status_code == 500
    body = response.get_data(as_text=True)
    for leak in ("Traceback", 'File "', "RuntimeError", "KeyError", "secret-detail", "/etc/shadow"):
        assert leak not in body
    if path.startswith("/api/"):
        assert response.mimetype == "application/json"
        assert response.get_json()["error"] == {"status": 500, "message": response.get_json()["error"]["message"]}
        assert "try again" in response.get_json()["error"]["message"]
    else:
        assert response.mimetype == "text/html"
        assert "Something went wrong" in body


def test_debug_is_off(hdr_app, fake_app):
    assert hdr_app.debug is False
    assert fake_app.debug is False


def test_debug_stays_off_with_flask_debug_in_the_environment(monkeypatch, fake_index, make_fake_app):
    monkeypatch.setenv("FLASK_DEBUG", "1")
    app = make_fake_app(fake_index)
    assert app.debug is False
    assert app.config["PROPAGATE_EXCEPTIONS"] is not True


@pytest.mark.parametrize("url", ["/api/search", "/search"])
def test_busy_model_gives_503_with_retry_after(hdr_app, hclient, photo, url):
    gate = hdr_app.extensions["fashion.gate"]
    gate.timeout_s = 0.1  # the QUEUE_TIMEOUT_S of this test app
    with gate.slot():  # another request is using the model
        response = upload(hclient, url, photo)
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) > 0
        assert_security_headers(response)
        if url.startswith("/api/"):
            assert "busy" in response.get_json()["error"]["message"]
        else:
            assert "busy" in response.get_data(as_text=True)
        # requests that do not need the model still work meanwhile
        assert hclient.get("/api/items/11/similar").status_code == 200
        assert hclient.get("/healthz").status_code == 200
    again = upload(hclient, url, photo)
    assert again.status_code == 200
