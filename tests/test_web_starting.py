"""The starting state: a worker answers at once while the model loads in the background.

The app is created without an embedder, as gunicorn workers create it, so
the service loads the model in its start-up thread. The test holds the demo
catalogue's generation lock (as another worker drawing the catalogue would),
which keeps start-up deterministically at its first step: every page says
what it is doing, the API and ``/healthz`` answer 503 with ``Retry-After``.
Once the lock is released the same app draws the catalogue, indexes it and serves.
"""

from __future__ import annotations

import dataclasses
import io

import pytest
from filelock import FileLock

pytestmark = pytest.mark.slow  # the app loads the real model in its start-up thread


def test_pages_and_api_answer_while_the_model_loads(tmp_path, built_index, demo_catalogue):
    from web import create_app

    demo = tmp_path / "demo-catalogue"
    # its own index dir: an index belongs to one catalogue, and this demo catalogue is new
    settings = dataclasses.replace(built_index, catalogue=demo, is_demo=True, index_dir=tmp_path / "index")
    lock = FileLock(str(tmp_path / ".demo-catalogue.lock"))
    lock.acquire()
    try:
        app = create_app(settings, autobuild=True, TESTING=True)  # returns without waiting for the model
        client = app.test_client()

        page = client.get("/")
        assert page.status_code == 503
        assert page.headers["Retry-After"]
        body = page.get_data(as_text=True)
        assert "Starting up" in body
        assert '<li data-step="catalogue" class="current" aria-current="step">Drawing the demo catalogue</li>' in body
        assert '<li data-step="model" class="">Loading the image model</li>' in body
        assert "Drawing the demo catalogue." in body  # the step's message under the bar
        assert '<input id="image"' not in body

        health = client.get("/healthz")
        assert health.status_code == 503 and health.headers["Retry-After"]
        assert health.get_json()["state"] == "starting"

        status = client.get("/api/status").get_json()
        assert status["state"] == "starting" and status["step"] == "catalogue"
        assert status["weights"] is None  # not known before the model is loaded

        photo = demo_catalogue / "1.jpg"
        api = client.post(
            "/api/search", data={"image": (io.BytesIO(photo.read_bytes()), "1.jpg")}, content_type="multipart/form-data"
        )
        assert api.status_code == 503 and api.headers["Retry-After"]
        error = api.get_json()["error"]
        assert error["state"] == "starting" and error["step"] == "catalogue"
        assert client.get("/api/items/1/similar").status_code == 503
    finally:
        lock.release()

    service = app.extensions["fashion.service"]
    assert service.wait_until_ready(timeout=300)
    assert client.get("/healthz").status_code == 200
    assert client.get("/api/status").get_json()["weights"] == "random-seed1234"
    assert '<input id="image"' in client.get("/").get_data(as_text=True)
