"""Uploads are decoded in separate processes under the operating system's limits (indexer/decode_pool.py).

The hostile photos are real files: progressive JPEGs of full-size frames
and many scans (``tests/support/hostile_jpeg.py``) and a PNG whose text
chunks need more memory than its pixels. Through the web app (fast): each
is answered with its limit and counted in ``/metrics``. Against the pool
itself (slow: each starts decode processes): a photo over its time limit
is stopped while another photo decodes, a photo over the memory cap is
refused, a lost process is replaced, and no process outlives its pool, its
owner or a gunicorn worker.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from indexer.decode_pool import DecodePool
from indexer.images import DECODE_BUDGET_BYTES, MAX_JPEG_SCANS, ImageError, load_for_model, load_with_size
from indexer.locate import Photo, locate
from indexer.query import decode_photo
from tests.corpus import make_image, make_jpeg
from tests.fakes import FakeEmbedder
from tests.support.hostile_jpeg import progressive_jpeg

MB = 1024 * 1024
REPO = Path(__file__).resolve().parent.parent


def _post(client, data: bytes, name: str = "photo.jpg"):
    return client.post("/api/search", data={"image": (io.BytesIO(data), name)}, content_type="multipart/form-data")


def _refusals(client) -> dict[str, float]:
    text = client.get("/metrics").get_data(as_text=True)
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "fashion_decode_refusals"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


# ---------------------------------------------------------------- through the web app (fast)


def test_hostile_progressive_jpegs_get_their_limit_and_are_counted(client):
    limit_mb = DECODE_BUDGET_BYTES // MB
    before = _refusals(client)
    for components in (3, 4):  # 8000 x 8000 colour and CMYK: 370 and 492 MB, however small the draft
        response = _post(client, progressive_jpeg(8000, 8000, components=components))
        assert response.status_code == 413
        message = response.get_json()["error"]["message"]
        assert f"the limit is {limit_mb} MB per photo" in message and "8000x8000 JPEG" in message
    many = _post(client, progressive_jpeg(1000, 1000, scans=5000))  # 60 KB: minutes of decoding before
    assert many.status_code == 422
    assert "made of more than 100 scans" in many.get_json()["error"]["message"]
    assert _post(client, make_jpeg((640, 480), progressive=True)).status_code == 200  # an ordinary one
    after = _refusals(client)
    assert after.get("too_large", 0) - before.get("too_large", 0) == 2
    assert after.get("too_many_scans", 0) - before.get("too_many_scans", 0) == 1


def test_every_limit_reason_has_a_client_error_status():
    from web.queries import _STATUS_FOR_REASON

    assert {reason: _STATUS_FOR_REASON[reason] for reason in ("too_many_scans", "too_slow", "crashed")} == {
        "too_many_scans": 422, "too_slow": 422, "crashed": 422,
    }


# ---------------------------------------------------------------- the pool (slow: decode processes)


def _photo() -> bytes:
    return make_jpeg((800, 600))


def _slow_photo() -> bytes:
    """A progressive 8000 x 8000 JPEG of as many scans as accepted: about a second of decoding, priced 126 MB."""
    return progressive_jpeg(8000, 8000, scans=MAX_JPEG_SCANS)


def _text_bomb() -> bytes:
    """A 64 x 64 PNG with 60 MB of compressed text chunks (Pillow keeps up to 64 MB): 61 KB, priced 16 KB."""
    out = io.BytesIO()
    make_image((64, 64)).save(out, "PNG")
    png = out.getvalue()
    text = zlib.compress(b"a" * 1_000_000, 9)
    chunks = b"".join(
        struct.pack(">I", len(payload)) + b"zTXt" + payload + struct.pack(">I", zlib.crc32(b"zTXt" + payload))
        for payload in (b"note%d\x00\x00" % i + text for i in range(60))
    )
    return png[:33] + chunks + png[33:]  # after the 8-byte signature and the IHDR chunk


def _start_both(decoder: DecodePool) -> None:
    """Two photos at once, so that both of a two-process pool's processes are started (each when first needed)."""
    threads = [threading.Thread(target=decoder.decode, args=(_photo(), 224)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(decoder.pids()) == 2


def _gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (reaped, or a zombie waiting for a reaper)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait_gone(pids, timeout_s: float = 15.0) -> list[int]:
    """The pids still running after waiting up to ``timeout_s`` for them all to go."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not all(_gone(pid) for pid in pids):
        time.sleep(0.1)
    return [pid for pid in pids if not _gone(pid)]


@pytest.fixture
def pool():
    pools = []

    def make(processes=2, memory_mb=256, timeout_s=10.0, **kwargs):
        made = DecodePool(processes, memory_mb * MB, timeout_s, **kwargs)
        pools.append(made)
        return made

    yield make
    for made in pools:
        made.close()


@pytest.mark.slow
def test_the_pool_gives_what_the_worker_would_decode(pool):
    decoder = pool(processes=1)
    for data, crop in ((_photo(), None), (_photo(), (0.1, 0.2, 0.5, 0.5)), (make_jpeg((300, 900)), None)):
        array, size = decoder.decode(data, 224, crop)
        expected, expected_size = load_with_size(data, 224, crop)
        assert np.array_equal(array, expected)
        assert size == expected_size
    with pytest.raises(ImageError) as info:
        decoder.decode(b"not an image", 224)
    assert info.value.reason == "not_an_image"
    assert len(decoder.pids()) == 1 and decoder.replaced == 0  # a refusal costs no process


@pytest.mark.slow
def test_a_photo_over_its_time_limit_is_stopped_while_another_photo_decodes(pool):
    decoder = pool(processes=2, timeout_s=0.3)
    _start_both(decoder)
    started = set(decoder.pids())
    outcome = {}

    def slow():
        try:
            decoder.decode(_slow_photo(), 224)
        except ImageError as exc:
            outcome["error"] = exc

    attacker = threading.Thread(target=slow)
    attacker.start()
    served = 0
    while attacker.is_alive():  # the other process keeps decoding shoppers' photos meanwhile
        array, _ = decoder.decode(_photo(), 224)
        assert array.shape == (224, 224, 3)
        served += 1
    attacker.join()
    assert served >= 1
    assert outcome["error"].reason == "too_slow"
    assert "takes too long to decode (more than 0.3 s)" in outcome["error"].message
    assert decoder.replaced == 1
    assert len(decoder.pids()) == 2 and len(started - set(decoder.pids())) == 1  # the slow one was replaced
    assert decoder.decode(_photo(), 224)[0].shape == (224, 224, 3)


@pytest.mark.slow
def test_the_request_deadline_stops_a_decode_already_running(pool):
    decoder = pool(processes=1, timeout_s=30.0)
    decoder.decode(_photo(), 224)
    with pytest.raises(ImageError) as info:
        decoder.decode(_slow_photo(), 224, wait_s=0.2)  # what the request had left
    assert info.value.reason == "too_slow"
    assert "the search had left" in info.value.message
    assert decoder.replaced == 1
    with pytest.raises(ImageError) as info:  # no time left at all: a 503, and no process is stopped for it
        decoder.decode(_photo(), 224, wait_s=0.0)
    assert info.value.reason == "busy"
    assert decoder.replaced == 1
    assert decoder.decode(_photo(), 224)[0].shape == (224, 224, 3)


@pytest.mark.slow
def test_a_photo_needing_more_memory_than_the_cap_is_refused(pool):
    decoder = pool(processes=1, memory_mb=16, headroom_bytes=16 * MB)
    data = _text_bomb()
    assert load_with_size(data, 224)[1] == (64, 64)  # in the worker, its 60 MB go unpriced
    with pytest.raises(ImageError) as info:
        decoder.decode(data, 224)
    assert info.value.reason == "too_large"  # 413
    assert "more memory than a photo may use" in info.value.message
    assert decoder.decode(_photo(), 224)[0].shape == (224, 224, 3)
    roomy = pool(processes=1, memory_mb=16)  # the default headroom takes what Pillow allows
    assert roomy.decode(data, 224)[1] == (64, 64)


@pytest.mark.slow
def test_a_lost_process_is_replaced(pool):
    decoder = pool(processes=1)
    decoder.decode(_photo(), 224)
    (first,) = decoder.pids()
    os.kill(first, signal.SIGKILL)  # dies while idle
    assert _wait_gone([first]) == []
    assert decoder.decode(_photo(), 224)[0].shape == (224, 224, 3)
    (second,) = decoder.pids()
    assert second != first
    # dies during a decode: that photo gets a clear refusal, the next one a fresh process
    threading.Timer(0.3, os.kill, (second, signal.SIGSEGV)).start()
    with pytest.raises(ImageError) as info:
        decoder.decode(_slow_photo(), 224)
    assert info.value.reason == "crashed"
    assert decoder.decode(_photo(), 224)[0].shape == (224, 224, 3)
    assert decoder.pids() != [second] and decoder.replaced == 2


@pytest.mark.slow
def test_close_leaves_no_process_behind(pool):
    decoder = pool(processes=2)
    _start_both(decoder)
    pids = decoder.pids()
    decoder.close()
    assert _wait_gone(pids, timeout_s=0) == []
    with pytest.raises(ImageError):
        decoder.decode(_photo(), 224)


_OWNER = """
import os, signal, sys, threading, time
from indexer.decode_pool import DecodePool
from tests.corpus import make_jpeg
from tests.support.hostile_jpeg import progressive_jpeg

pool = DecodePool(2, 256 * 1024 * 1024, 30.0)
pool.decode(make_jpeg((800, 600)), 224)
threading.Thread(target=pool.decode, args=(progressive_jpeg(8000, 8000, scans=100), 224), daemon=True).start()
while len(pool.pids()) < 2:
    time.sleep(0.05)
time.sleep(0.3)  # one process idle, one decoding
print(" ".join(map(str, pool.pids())), flush=True)
if sys.argv[1] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.slow
@pytest.mark.parametrize("ending", ["exit", "kill"])
def test_no_process_outlives_its_owner(ending):
    """An owner that exits closes its pool; one that is killed leaves processes that notice and go."""
    done = subprocess.run(
        [sys.executable, "-c", _OWNER, ending], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    pids = [int(pid) for pid in done.stdout.split()]
    assert len(pids) == 2, done.stderr
    assert _wait_gone(pids, timeout_s=10) == []


@pytest.mark.slow
def test_a_gunicorn_worker_takes_its_decode_processes_with_it(built_index, tmp_path):
    from tests.e2e.server import start_server

    server = start_server(built_index.catalogue, built_index.index_dir, tmp_path / "gunicorn.log", workers=1)
    try:
        server.wait_until_ready(300)
        photo = (built_index.catalogue / "17.jpg").read_bytes()
        boundary = uuid.uuid4().hex
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="17.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n".encode() + photo + f"\r\n--{boundary}--\r\n".encode()
        )
        request = urllib.request.Request(
            server.url + "/api/search", data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            assert json.load(response)["queries"][0]["results"]
        decoders = [pid for pid in _descendants(server.process.pid) if b"indexer.decode_process" in _cmdline(pid)]
        assert decoders, server.log_tail()
        server.process.send_signal(signal.SIGTERM)  # gunicorn stops its worker gracefully
        server.process.wait(timeout=60)
        assert _wait_gone(decoders, timeout_s=10) == [], server.log_tail()
    finally:
        server.stop()


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return b""


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class _CountingPool(DecodePool):
    """A real pool that counts the photos and boxes given to it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.crops: list = []

    def decode(self, data, size, crop=None, wait_s=None):
        self.crops.append(crop)
        return super().decode(data, size, crop, wait_s)


@pytest.mark.slow
def test_located_boxes_are_decoded_in_the_pool_too():
    """A box the search locates is decoded again from the upload: in a decode process, like the upload itself."""
    counting = _CountingPool(1, 256 * MB, 10.0)
    try:
        image = np.full((300, 400, 3), 235, np.uint8)
        image[60:200, 80:220] = (200, 30, 30)
        data = make_image_bytes(image)
        photo = decode_photo(data, "shot.png", size=224, pool=counting)
        (regions,) = locate(FakeEmbedder(), [Photo(photo.source, photo.array, photo.size, photo.decode_box)])
        boxes = [region.box for region in regions[1:]]
        assert boxes  # control: something was located
        assert counting.crops == [None, *boxes]  # the upload, then each box: all in the pool
        for region in regions[1:]:
            np.testing.assert_array_equal(region.array, load_for_model(data, 224, crop=region.box))
    finally:
        counting.close()


def make_image_bytes(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, "PNG")
    return out.getvalue()


class _RefusingPool:
    """Decodes nothing: every photo is refused, as a busy or broken decode process would."""

    def decode(self, data, size, crop=None, wait_s=None):
        raise ImageError("busy", "The decoders are busy.")


def test_a_box_that_cannot_be_decoded_names_its_own_photo():
    photo = decode_photo(make_image_bytes(np.full((64, 80, 3), 200, np.uint8)), "second.png", size=224)
    refused = dataclasses.replace(photo, pool=_RefusingPool())
    with pytest.raises(ImageError) as info:
        refused.decode_box(224, (0.1, 0.1, 0.5, 0.5), None)
    assert info.value.reason == "busy" and info.value.filename == "second.png"
