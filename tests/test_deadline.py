"""One deadline per search request, across all its photos, below the proxy's timeout."""

from __future__ import annotations

import io
import re
import threading
import time
from pathlib import Path

import pytest
from werkzeug.datastructures import FileStorage, MultiDict

from indexer.config import Settings
from indexer.images import DECODE_BUDGET
from web.deadline import Busy, Deadline
from web.queries import read_images
from web.searching import ModelGate

ROOT = Path(__file__).resolve().parents[1]


def _photos(demo_catalogue: Path, count: int) -> list[tuple[io.BytesIO, str]]:
    paths = sorted(demo_catalogue.glob("*.jpg"))[:count]
    return [(io.BytesIO(path.read_bytes()), path.name) for path in paths]


@pytest.fixture
def deadline_app(fake_index, make_fake_app):
    """A ready app whose searches must finish within one second; the model queue alone would allow 20."""
    return make_fake_app(fake_index.replace(request_deadline_s=1.0, queue_timeout_s=20.0))


def test_deadline_counts_the_wait_for_a_thread():
    assert Deadline(10.0, already_waited_s=4.0).remaining() == pytest.approx(6.0, abs=0.1)
    with pytest.raises(Busy, match="within 2 s"):
        Deadline(2.0, already_waited_s=3.0).check()
    Deadline(2.0).check()  # time left: no error


def test_expired_request_decodes_no_further_photo():
    """Photos are started only while time is left: the broken second photo is never reached."""
    good = FileStorage(io.BytesIO(b"\xff\xd8 not decoded"), filename="a.jpg", name="image")
    broken = FileStorage(io.BytesIO(b"not an image"), filename="b.jpg", name="image")
    with pytest.raises(Busy):
        read_images(MultiDict([("image", good), ("image", broken)]), max_files=4, deadline=Deadline(0.0))


def test_gate_wait_is_capped_by_what_is_left_of_the_deadline():
    gate = ModelGate(slots=1, timeout_s=20.0)
    with gate.slot():
        started = time.monotonic()
        with pytest.raises(Busy), gate.slot(max_wait_s=0.2):
            pass
        assert time.monotonic() - started < 5.0  # the deadline's 0.2 s, not the queue's 20 s


@pytest.mark.slow  # waits out real deadlines, about 1.2 s each
@pytest.mark.parametrize("url", ["/api/search", "/search"])
def test_four_photo_request_behind_a_busy_model_stops_at_its_deadline(deadline_app, demo_catalogue, url):
    client = deadline_app.test_client()
    with deadline_app.extensions["fashion.gate"].slot():  # another request holds the model
        started = time.monotonic()
        response = client.post(url, data={"image": _photos(demo_catalogue, 4)}, content_type="multipart/form-data")
        elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert elapsed < 10.0  # the 1 s deadline ended it, not the 20 s model queue
    assert "busy" in response.get_data(as_text=True)
    again = client.post(url, data={"image": _photos(demo_catalogue, 4)}, content_type="multipart/form-data")
    assert again.status_code == 200


@pytest.mark.slow  # waits out a real deadline
def test_decode_waits_are_capped_by_the_deadline(deadline_app, demo_catalogue):
    """Every decode slot taken by other requests: the 20 s decode wait gives way to the 1 s deadline."""
    release, held = threading.Event(), threading.Event()

    def hold_every_slot():
        with DECODE_BUDGET.reserve(1), DECODE_BUDGET.reserve(1):
            held.set()
            release.wait(30)

    assert DECODE_BUDGET.slots == 2
    holder = threading.Thread(target=hold_every_slot, daemon=True)
    holder.start()
    try:
        assert held.wait(5)
        started = time.monotonic()
        response = deadline_app.test_client().post(
            "/api/search", data={"image": _photos(demo_catalogue, 4)}, content_type="multipart/form-data"
        )
        elapsed = time.monotonic() - started
    finally:
        release.set()
        holder.join(5)
    assert response.status_code == 503
    assert "Retry-After" in response.headers
    assert elapsed < 10.0


def test_default_deadline_is_well_inside_the_proxy_timeout():
    """nginx gives up at proxy_read_timeout; the app must have answered (503 or results) before then."""
    config = (ROOT / "deploy" / "nginx.conf").read_text()
    proxy_timeout = int(re.search(r"proxy_read_timeout (\d+)s;", config).group(1))
    settings = Settings.from_env({})
    # the longest a single decode or forward pass can run past the deadline is a few seconds
    assert settings.request_deadline_s + 15 <= proxy_timeout
    assert Settings.from_env({"FASHION_REQUEST_DEADLINE_S": "12.5"}).request_deadline_s == 12.5
