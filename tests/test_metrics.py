"""/metrics: Prometheus' text format, read back with the client library's own parser."""

from __future__ import annotations

import io
import time
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.proxy import OTHER_CLIENT, deployment, nginx_binary


def _samples(text: str) -> dict[tuple, float]:
    """Every sample as ``(name, sorted labels) -> value``."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _scrape(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return _samples(response.get_data(as_text=True))


def _upload(client, demo_catalogue, url="/api/search", item=17):
    photo = (io.BytesIO((demo_catalogue / f"{item}.jpg").read_bytes()), f"{item}.jpg")
    return client.post(url, data={"image": photo}, content_type="multipart/form-data")


def test_requests_searches_and_the_index_are_counted(client, fake_app, demo_catalogue):
    before = _scrape(client)
    assert _upload(client, demo_catalogue).status_code == 200
    assert _upload(client, demo_catalogue, "/search").status_code == 200
    assert client.get("/api/items/17/similar").status_code == 200
    assert client.get("/no-such-page").status_code == 404
    after = _scrape(client)

    def grew(name, **labels):
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert grew("fashion_http_requests_total", route="/api/search", method="POST", status="200") == 1
    assert grew("fashion_http_requests_total", route="/search", method="POST", status="200") == 1
    assert grew("fashion_http_requests_total", route="/api/items/<item_id>/similar", method="GET", status="200") == 1
    assert grew("fashion_http_requests_total", route="unmatched", method="GET", status="404") == 1  # no path label
    for stage in ("decode", "queue", "model", "neighbours"):
        assert grew("fashion_search_stage_seconds_count", stage=stage) == 2, stage
    # each upload is decoded once, and each box located in it once more (from the upload's bytes)
    boxes = 2 * 2  # at most two per photo; a box covering nearly the whole photo is dropped
    assert 2 <= grew("fashion_decode_wait_seconds_count") <= 2 + boxes
    assert grew("fashion_http_request_duration_seconds_count", route="/api/search") == 1
    items = len(fake_app.extensions["fashion.service"].searcher)
    assert _value(after, "fashion_index_items") == items > 0
    assert _value(after, "fashion_index_age_seconds") >= 0
    assert _value(after, "fashion_index_published_timestamp_seconds") > 1.7e9
    assert _value(after, "fashion_build_running") in (0.0, 1.0)
    assert ("fashion_build_progress_ratio", ()) in after


def test_a_made_up_method_does_not_make_a_new_series(client):
    before = _scrape(client)
    for method in ("FOOBAR", "PURGE", "XYZZY"):
        assert client.open("/healthz", method=method).status_code == 405
    after = _scrape(client)
    assert not [key for key in after if ("method", "FOOBAR") in key[1] or ("method", "PURGE") in key[1]]
    other = {"route": "unmatched", "method": "other", "status": "405"}  # a 405 matches no rule
    counted = "fashion_http_requests_total"
    assert _value(after, counted, **other) - _value(before, counted, **other) == 3


def test_503s_are_counted_by_reason(fake_index, make_fake_app, demo_catalogue):
    app = make_fake_app(fake_index.replace(queue_timeout_s=0.1))
    client = app.test_client()
    before = _scrape(client)
    with app.extensions["fashion.gate"].slot():  # another request holds the model
        assert _upload(client, demo_catalogue).status_code == 503
    after = _scrape(client)
    assert _value(after, "fashion_unavailable_total", reason="model_queue") - _value(
        before, "fashion_unavailable_total", reason="model_queue"
    ) == 1


def test_a_token_is_required_when_configured(fake_index, make_fake_app):
    app = make_fake_app(fake_index.replace(metrics_token="s3cret-token-0123456789"))
    client = app.test_client()
    refused = client.get("/metrics")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer s3cret-token-0123456789"}).status_code == 200


def test_metrics_can_be_switched_off(fake_index, make_fake_app):
    app = make_fake_app(fake_index.replace(metrics=False))
    assert app.test_client().get("/metrics").status_code == 404


@pytest.mark.slow  # gunicorn and nginx, workers loading the real model
@pytest.mark.skipif(nginx_binary() is None, reason="nginx not installed: run scripts/install.sh")
def test_every_gunicorn_worker_is_counted_and_nginx_keeps_it_local(built_index, demo_catalogue, tmp_path):
    """Two workers, each with its own counters: one scrape through nginx adds them up."""
    searches = 12
    photo = (demo_catalogue / "17.jpg").read_bytes()
    files = tmp_path / "prometheus"
    files.mkdir()
    extra = {"FASHION_RESCAN_SECONDS": "0", "PROMETHEUS_MULTIPROC_DIR": str(files)}
    index = built_index.index_dir
    with deployment(tmp_path / "site", built_index.catalogue, index, workers=2, extra_env=extra) as site:
        # one worker may answer while the other still loads its model: wait for both. Ten
        # /healthz answers in a row can all come from the same worker, so each worker's
        # "Serving index" line is awaited as well.
        deadline = time.monotonic() + 120
        while (
            [site.request("GET", "/healthz")[0] for _ in range(10)] != [200] * 10
            or (site.folder / "gunicorn.log").read_text(errors="replace").count("Serving index") < 2
        ):
            assert time.monotonic() < deadline, "both workers never became ready"
            time.sleep(0.5)
        for number in range(searches):
            boundary = uuid.uuid4().hex
            body = (
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"q.jpg\"\r\n"
                "Content-Type: image/jpeg\r\n\r\n"
            ).encode() + photo + f"\r\n--{boundary}--\r\n".encode()
            status, _, _ = site.request(
                "POST", "/api/search", body=body, source=f"127.0.9.{number + 1}",
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            )
            assert status == 200
        scrapes = []
        for _ in range(8):  # whichever worker answers, the totals are the same
            status, _, payload = site.request("GET", "/metrics")
            assert status == 200
            scrapes.append(_samples(payload.decode()))
        denied, _, _ = site.request("GET", "/metrics", source=OTHER_CLIENT)
    samples = scrapes[0]
    searched = {"route": "/api/search", "method": "POST", "status": "200"}
    totals = {_value(scrape, "fashion_http_requests_total", **searched) for scrape in scrapes}
    assert totals == {searches}
    # each worker writes its own files; more than one worker wrote them
    assert len({path.stem.rsplit("_", 1)[-1] for path in files.glob("counter_*.db")}) >= 2
    assert denied == 403  # only a scraper on the host itself (nginx sees 127.0.0.2 as another machine)
    assert _value(samples, "fashion_search_stage_seconds_count", stage="model") == searches
    assert _value(samples, "fashion_index_items") == 144
    log = (tmp_path / "site" / "gunicorn.log").read_text()
    assert log.count("Booting worker") >= 2
