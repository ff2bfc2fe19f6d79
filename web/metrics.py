"""Prometheus metrics at ``/metrics``, counted across every gunicorn worker.

gunicorn.conf.py points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder
before the workers start; each worker's counters and histograms then live
in memory-mapped files there, and a scrape of any worker adds them all up
(``prometheus_client``'s multiprocess mode). Without that variable (the
Flask test client, ``flask run``) the process's own registry is served.

Counted as things happen: requests by route and status, search time by
stage, waits for a decode share, and every 503 by its reason. Read at
scrape time, from the files every worker shares: the index's size and age
and the last build's progress and duration, and failed builds by reason
(``fashion_build_failures_total``: counted in status.json, so a build of
the CLI counts too, and a full disk shows as ``reason="disk_full"``).

Not public: the shipped nginx config answers ``/metrics`` only to the host
itself, and ``FASHION_METRICS_TOKEN`` makes the app require
``Authorization: Bearer <token>`` too.
"""

from __future__ import annotations

import hmac
import os
import time

from flask import Blueprint, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from indexer.progress import read_status

bp = Blueprint("metrics", __name__)

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUESTS = Counter(
    "fashion_http_requests",
    "HTTP requests answered, by route pattern, method and status",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "fashion_http_request_duration_seconds", "Time to answer a request, by route pattern", ["route"], buckets=_SECONDS
)
SEARCH_STAGE_SECONDS = Histogram(
    "fashion_search_stage_seconds",
    "Time of each stage of a photo search: decode (all photos), queue (wait for the model), model, neighbours",
    ["stage"],
    buckets=_SECONDS,
)
DECODE_WAIT_SECONDS = Histogram(
    "fashion_decode_wait_seconds", "Wait for a share of the decode memory budget, per photo", buckets=_SECONDS
)
UNAVAILABLE = Counter(
    "fashion_unavailable", "503 answers, by reason: model_queue, deadline, decode_busy, not_ready", ["reason"]
)
DECODE_REFUSALS = Counter(
    "fashion_decode_refusals",
    "Uploaded photos refused, by reason: too_large (memory: from the header, or the decode process ran out), "
    "too_many_scans, too_slow (the decode process overran its time and was stopped), crashed (it died), "
    "and not_an_image, unreadable, too_small, empty, bad_crop",
    ["reason"],
)

_METHODS = frozenset({"GET", "HEAD", "POST", "OPTIONS"})
# the stage names of ``run_query``'s timings (milliseconds) as exported
_STAGES = {"decode": "decode", "queue": "queue", "embed": "model", "colour": "colour", "search": "neighbours"}


def observe_search(timing_ms: dict) -> None:
    """Record one search's stage timings (``run_query``'s milliseconds)."""
    for key, stage in _STAGES.items():
        if key in timing_ms:
            SEARCH_STAGE_SECONDS.labels(stage).observe(timing_ms[key] / 1000)


def count_unavailable(reason: str) -> None:
    """Count one 503 answer."""
    UNAVAILABLE.labels(reason).inc()


def count_decode_refusal(reason: str) -> None:
    """Count one uploaded photo refused, by its ``ImageError`` reason."""
    DECODE_REFUSALS.labels(reason).inc()


def observe_decode_wait(seconds: float) -> None:
    """Record how long one photo waited for its decode share."""
    DECODE_WAIT_SECONDS.observe(seconds)


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _count_request(response):
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    # any token is a valid method to nginx and gunicorn; an unbounded label would grow without end
    method = request.method if request.method in _METHODS else "other"
    REQUESTS.labels(route, method, str(response.status_code)).inc()
    started = g.get("metrics_started")
    if started is not None:
        REQUEST_SECONDS.labels(route).observe(time.perf_counter() - started)
    return response


class IndexCollector:
    """Gauges read at scrape time: the served index and the build status file, shared by all workers."""

    def __init__(self, service):
        self.service = service

    def collect(self):
        """Yield the index and build gauges (called by ``prometheus_client`` on each scrape)."""
        searcher = self.service.searcher
        items = GaugeMetricFamily("fashion_index_items", "Products in the index being served")
        items.add_metric([], len(searcher) if searcher is not None else 0)
        yield items
        published = searcher.manifest.get("published_ns") if searcher is not None else None
        if published:
            stamp = GaugeMetricFamily(
                "fashion_index_published_timestamp_seconds", "When the served index generation was published"
            )
            stamp.add_metric([], published / 1e9)
            yield stamp
            age = GaugeMetricFamily("fashion_index_age_seconds", "Age of the served index generation")
            age.add_metric([], max(0.0, time.time() - published / 1e9))
            yield age
        yield from _build_gauges(read_status(self.service.settings.index_dir))


def _build_gauges(status: dict):
    state = status.get("state")
    running = GaugeMetricFamily("fashion_build_running", "1 while a build of the index is running")
    running.add_metric([], 1.0 if state == "building" else 0.0)
    yield running
    total = status.get("total") or 0
    progress = GaugeMetricFamily("fashion_build_progress_ratio", "Share of the images to embed that are done")
    progress.add_metric([], (status.get("done", 0) / total) if total else (1.0 if state == "ready" else 0.0))
    yield progress
    if state in ("ready", "error") and status.get("started_at") and status.get("updated_at"):
        duration = GaugeMetricFamily("fashion_last_build_duration_seconds", "How long the last finished build took")
        duration.add_metric([], max(0.0, status["updated_at"] - status["started_at"]))
        yield duration
        finished = GaugeMetricFamily("fashion_last_build_finished_timestamp_seconds", "When the last build finished")
        finished.add_metric([], status["updated_at"])
        yield finished
        failed = GaugeMetricFamily("fashion_last_build_failed", "1 when the last build failed")
        failed.add_metric([], 1.0 if state == "error" else 0.0)
        yield failed
    failures = status.get("failures")
    counted = CounterMetricFamily(
        "fashion_build_failures",
        "Failed builds of this index, by reason (disk_full, out_of_memory, ...)",
        labels=["reason"],
    )
    if isinstance(failures, dict):
        for reason, count in sorted(failures.items()):
            if type(count) is int and count >= 0:
                counted.add_metric([str(reason)], count)
    yield counted


class _ThisProcess:
    """The process's own default registry, as one collector of an app's registry."""

    def collect(self):
        """Yield everything the default registry holds."""
        from prometheus_client import REGISTRY

        yield from REGISTRY.collect()


def _registry(service) -> CollectorRegistry:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)  # every worker's files, added up
    else:
        registry.register(_ThisProcess())
    registry.register(IndexCollector(service))
    return registry


@bp.get("/metrics")
def metrics():
    """Every metric in Prometheus' text format; 401 without the configured token."""
    token = current_app.extensions["fashion.service"].settings.metrics_token
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return Response("metrics need the token in an Authorization: Bearer header\n", 401,
                            {"WWW-Authenticate": "Bearer"}, mimetype="text/plain")
    registry = current_app.extensions["fashion.metrics"]
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def init_app(app, service) -> None:
    """Count every request of ``app`` and serve ``/metrics`` for it."""
    app.before_request(_start_timer)
    app.after_request(_count_request)
    app.extensions["fashion.metrics"] = _registry(service)
    app.register_blueprint(bp)
