"""The building state (first run): an app started on an empty index dir.

* While a build is in progress (held deterministically by taking the build
  lock from the test, as another gunicorn worker would), ``GET /`` shows the
  building page with a progress bar (503 + Retry-After), ``/healthz`` is 503,
  ``/api/status`` says ``building`` with done/total, and the search routes
  answer 503 with Retry-After. After the lock is released the *same* app
  builds and becomes ready without a restart.
* Mid-build progress: the (fake) embedder is wrapped so that the build pauses
  inside its second batch; the page and ``/api/status`` then show 8 of 24.
* A failing build (catalogue folder missing) gives an error page that says
  why, and ``/api/status`` state ``error``.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time

import pytest

from indexer.build import build_lock


def _post(client, url, path):
    data = {"image": (io.BytesIO(path.read_bytes()), path.name)}
    return client.post(url, data=data, content_type="multipart/form-data")


def _assert_building_everywhere(client, catalogue):
    page = client.get("/")
    assert page.status_code == 503
    assert page.headers["Retry-After"]
    body = page.get_data(as_text=True)
    assert "Preparing the catalogue" in body
    assert '<progress id="build-progress"' in body
    assert 'data-status-url="/api/status"' in body
    assert '<input id="image"' not in body  # no search form yet

    health = client.get("/healthz")
    assert health.status_code == 503
    assert health.get_json()["state"] == "building"

    status = client.get("/api/status")
    assert status.status_code == 200
    payload = status.get_json()
    assert payload["state"] == "building"
    assert isinstance(payload["done"], int) and isinstance(payload["total"], int)
    assert payload["rebuilding"] is True
    assert payload["items"] == 0

    api = _post(client, "/api/search", catalogue / "1.jpg")
    assert api.status_code == 503
    assert api.headers["Retry-After"]
    assert api.mimetype == "application/json"
    assert api.get_json()["error"]["state"] == "building"
    assert api.get_json()["error"]["message"]

    html = _post(client, "/search", catalogue / "1.jpg")
    assert html.status_code == 503
    assert "Preparing the catalogue" in html.get_data(as_text=True)

    assert client.get("/api/items/1/similar").status_code == 503
    assert client.get("/items/1").status_code == 503
    assert client.get("/catalogue/1.jpg").status_code == 404  # nothing is indexed yet
    return payload


def _assert_ready(client, catalogue, count):
    page = client.get("/")
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert '<input id="image"' in body
    assert f"<strong>{count}</strong> products" in body
    assert client.get("/healthz").status_code == 200
    status = client.get("/api/status").get_json()
    assert status["state"] == "ready" and status["items"] == count
    response = _post(client, "/api/search", catalogue / "3.jpg")
    assert response.status_code == 200
    assert response.get_json()["queries"][0]["results"][0]["id"] == "3"


@pytest.mark.slow  # a real build in another thread, polled
def test_build_in_progress_elsewhere_then_ready_without_restart(small_settings, make_fake_app):
    lock = build_lock(small_settings.index_dir)
    lock.acquire()
    try:
        app = make_fake_app(small_settings, autobuild=True)
        service = app.extensions["fashion.service"]
        client = app.test_client()
        _assert_building_everywhere(client, small_settings.catalogue)
        # while someone else holds the lock this app must not build (nor become ready)
        assert service.wait_until_ready(timeout=1.0) is False
        assert service.searcher is None
    finally:
        lock.release()
    assert service.wait_until_ready(timeout=600)
    _assert_ready(client, small_settings.catalogue, 24)


class PausingEmbedder:
    """The session's fake embedder; the build's second ``embed`` call waits for ``release``.

    The first call returns after a short rest so that the throttled progress
    writer (0.5 s) publishes its result before the pause.
    """

    def __init__(self, inner):
        self._inner = inner
        self.calls = 0
        self.paused = threading.Event()
        self.release = threading.Event()

    def embed(self, batch):
        self.calls += 1
        vectors = self._inner.embed(batch)
        if self.calls == 1:
            time.sleep(0.6)
        elif self.calls == 2:
            self.paused.set()
            self.release.wait(timeout=600)
        return vectors

    def embed_one(self, image):
        return self.embed(image[None])[0]

    def __getattr__(self, name):
        return getattr(self._inner, name)


def test_building_page_shows_live_progress(small_settings, fake_embedder):
    from web import create_app

    settings = small_settings.replace(batch_size=8, checkpoint_every=8)
    pausing = PausingEmbedder(fake_embedder)
    app = create_app(settings, embedder=pausing, autobuild=True, TESTING=True)
    service = app.extensions["fashion.service"]
    client = app.test_client()
    try:
        assert pausing.paused.wait(timeout=600), "the build never reached its second batch"
        payload = _assert_building_everywhere(client, settings.catalogue)
        assert payload["phase"] == "embedding"
        assert (payload["done"], payload["total"]) == (8, 24)
        assert payload["eta_s"] is not None and payload["eta_s"] > 0
        page = client.get("/").get_data(as_text=True)
        bar = re.search(r'<progress id="build-progress"[^>]*>', page).group(0)
        assert 'max="24"' in bar and 'value="8"' in bar
        assert "8 of 24 photos" in page
        assert "s left" in page
    finally:
        pausing.release.set()
    assert service.wait_until_ready(timeout=600)
    _assert_ready(client, settings.catalogue, 24)


def test_failed_build_shows_why(small_settings, make_fake_app, tmp_path):
    missing = tmp_path / "no-such-catalogue"
    settings = small_settings.replace(catalogue=missing)
    app = make_fake_app(settings, autobuild=True)
    service = app.extensions["fashion.service"]
    client = app.test_client()
    assert service.wait_until_ready(timeout=300) is False

    page = client.get("/")
    assert page.status_code >= 500
    body = page.get_data(as_text=True)
    assert 'role="alert"' in body
    assert "could not be built" in body
    assert "the catalogue folder is missing" in body
    # the path and the exception stay in the server log (the folder's bare name is the site's title)
    for secret in (str(missing), str(missing.parent), "FileNotFoundError", "does not exist", "Traceback"):
        assert secret not in body
    # no "Back to search": the search page is the page that failed
    assert "Back to search" not in body and "Check the status" in body

    status = client.get("/api/status").get_json()
    assert status["state"] == "error"
    assert status["message"] == "The index could not be built: the catalogue folder is missing."
    assert str(missing) not in json.dumps(status) and "Error" not in json.dumps(status)

    health = client.get("/healthz")
    assert health.status_code == 503
    assert health.get_json()["state"] == "error"

    api = client.post("/api/search", data={"image": (io.BytesIO(b"x"), "x.jpg")}, content_type="multipart/form-data")
    assert api.status_code == 503
    assert api.get_json()["error"]["state"] == "error"


@pytest.mark.parametrize("path", ["/", "/api/status", "/healthz"])
def test_ready_app_never_shows_building(client, path):
    """Control for the tests above: the ready demo app answers normally."""
    response = client.get(path)
    assert response.status_code == 200
    assert "Preparing the catalogue" not in response.get_data(as_text=True)


def test_a_build_whose_process_is_gone_reads_as_interrupted(small_settings, make_fake_app):
    """status.json said "building" for ever after its build was killed."""
    import subprocess
    import sys

    from indexer.progress import read_status, write_status

    write_status(small_settings.index_dir, {"state": "building", "phase": "embedding", "done": 3, "total": 9})
    assert read_status(small_settings.index_dir)["state"] == "building"  # this process: alive
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    path = small_settings.index_dir / "status.json"
    path.write_text(json.dumps(dict(json.loads(path.read_text()), pid=gone.pid)))
    status = read_status(small_settings.index_dir)
    assert status["state"] == "interrupted" and "interrupted" in status["message"]
    app = make_fake_app(small_settings)  # no index, no autobuild
    payload = app.test_client().get("/api/status").get_json()
    assert payload["build_state"] == "interrupted" and "interrupted" in payload["message"]
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert "fashion_build_running 0.0" in metrics
