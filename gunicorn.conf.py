"""gunicorn settings, from the same validated ``Settings`` as the app. Start with: gunicorn app:app

Each worker process loads the model once and memory-maps the Annoy file, so
workers share the index pages. TensorFlow's pool is sized so that
workers x TF threads does not exceed the cores.
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

from indexer.config import FIELDS, ConfigError, Settings, tf_threads_per_worker

try:
    _settings = Settings.from_env()
except ConfigError as exc:
    # one line naming the variable, not gunicorn's traceback of this file
    sys.stderr.write(f"fashion-search: {exc}\n")
    sys.exit(2)

bind = _settings.bind
workers = _settings.workers
# Threads for GET and HEAD (pages, thumbnails, status polls, health checks).
# Searches run in a pool of their own, FASHION_SEARCH_THREADS per worker, so a
# page never waits behind them; forward passes are gated to one at a time per
# worker inside the app.
threads = _settings.threads
# gthread with that second pool, plus the time each request waited for a
# thread, so that a request that queued past FASHION_QUEUE_TIMEOUT_S gets its
# 503 at once, and a body the app refused read before the connection closes
# (web/workers.py).
worker_class = "web.workers.QueueTimedThreadWorker"
# Queued connections beyond this are refused by the kernel rather than
# piling up; the app answers 503 + Retry-After when its model queue is full.
backlog = _settings.backlog
# Loading TensorFlow and the model takes a few seconds per worker; a first
# build runs in a background thread, so requests never wait on it. A worker
# that has not created its app within this time ends itself (post_fork).
timeout = _settings.worker_timeout_s
graceful_timeout = 30
keepalive = 5
# Loading the app in the master and forking would share TensorFlow state
# across processes, which TensorFlow does not support.
preload_app = False
# gunicorn has no timeout for reading a request's headers or body: a slow
# client holds a worker thread as long as it likes. In production, nginx
# (deploy/nginx.conf) reads every request first and passes on whole ones,
# and its own header limits are below these, so that it refuses first.
limit_request_line = 4094
limit_request_fields = 100
accesslog = _settings.access_log
loglevel = _settings.log_level
# The control socket has one default path per user, so two servers on one
# host (tests, benchmarks, blue/green) would fight over it; nothing uses it.
control_socket_disable = True

# /metrics adds up every worker's counters from files in this folder
# (prometheus_client's multiprocess mode; web/metrics.py). It must be set
# before a worker imports prometheus_client, and start empty: files of an
# earlier run would be counted again.
# gunicorn reads this file again on HUP (a reload): the folder is set up once.
if _settings.metrics and not os.environ.get("FASHION_METRICS_DIR_READY"):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        _metrics_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        _metrics_dir.mkdir(parents=True, exist_ok=True)
        for _stale in _metrics_dir.glob("*.db"):
            _stale.unlink()
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="fashion-metrics-")
        os.environ["FASHION_METRICS_DIR_OWNED"] = "1"
    os.environ["FASHION_METRICS_DIR_READY"] = "1"


def on_exit(server):
    """Remove the metrics folder this server made (not one the operator chose) and its worker states."""
    if os.environ.get("FASHION_METRICS_DIR_OWNED") and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
    if getattr(server, "fashion_worker_states", None):
        shutil.rmtree(server.fashion_worker_states, ignore_errors=True)


# ---------------------------------------------------------------- /healthz for the whole site
# Each worker keeps a small file saying what it serves (web/worker_states.py),
# in one folder per server, so that any worker's /healthz answers for all of
# them. The folder is made once, before the first workers are forked, and
# kept on the arbiter: this file is read again on every HUP, the arbiter is not.


def when_ready(server):
    """Make this server's folder of worker state files, writable by the workers' user."""
    folder = None
    try:
        folder = tempfile.mkdtemp(prefix="fashion-workers-")
        # run as root with --user/--group, the workers drop to that user after the fork
        if os.geteuid() == 0 and (server.cfg.uid, server.cfg.gid) != (0, 0):
            os.chown(folder, server.cfg.uid, server.cfg.gid)
    except OSError as exc:
        # /healthz then answers for each worker alone, and reloads do not wait for new workers
        server.log.error("No folder for the workers' states (%s): /healthz answers per worker", exc)
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
        return
    server.fashion_worker_states = folder


def post_worker_init(worker):
    """The app is created: stop the boot watchdog; during a reload, serve until the new workers have loaded."""
    from web.boot_watchdog import boot_finished
    from web.handover import serve_until_siblings_boot
    from web.worker_states import this_worker

    boot_finished()
    states = this_worker()
    if states is not None:
        serve_until_siblings_boot(worker, states, limit_s=worker.cfg.timeout)


def worker_exit(server, worker):
    """A worker that exits marks its state file ``exiting`` (the master removes it in ``child_exit``)."""
    if os.getpid() == server.pid:
        return  # gunicorn also calls this in the master, for a worker that was already gone
    from web.worker_states import mark_this_worker_exiting

    mark_this_worker_exiting()


def child_exit(server, worker):
    """Remove the state file of a worker the master reaped (marked ``exiting``, or left behind when killed)."""
    folder = getattr(server, "fashion_worker_states", None)
    if folder:
        # the name web/worker_states.py's state_file() gives
        Path(folder, f"{worker.pid}.json").unlink(missing_ok=True)


# Workers read FASHION_TF_THREADS through Settings: unless it is set, split the cores between them.
if not FIELDS["tf_threads"].given(os.environ):
    os.environ[FIELDS["tf_threads"].name] = str(tf_threads_per_worker(workers))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")



# ---------------------------------------------------------------- memory after a burst of large uploads
# Decoding large photos on several threads at once leaves freed memory in
# glibc's per-thread arenas (8 per core by default), where it still counts as
# the worker's RSS. glibc reads MALLOC_ARENA_MAX when the process starts, so
# the unit sets it (deploy/fashion-search.service); for a gunicorn started by
# hand without it, each worker bounds its arenas right after the fork, before
# it starts any thread (mallopt(M_ARENA_MAX) applies to arenas made from then
# on). After a request whose body was large, the worker hands free heap pages
# back (malloc_trim), once the answer has been sent.
_ARENA_MAX = 2
_M_ARENA_MAX = -8  # glibc's malloc.h
TRIM_AFTER_BYTES = 1024 * 1024


def post_fork(server, worker):
    """Bound this worker's malloc arenas unless MALLOC_ARENA_MAX already did; time its boot; share its state."""
    if not os.environ.get("MALLOC_ARENA_MAX"):
        _bound_malloc_arenas()
    # only now: importing the web app starts numpy's threads, each of which may make an arena
    if worker is not None and worker.cfg.timeout > 0:
        from web.boot_watchdog import watch_this_boot

        # gunicorn's own timeout starts only once the worker runs (web/boot_watchdog.py);
        # its SIGTERM handler only clears ``alive``, which it reads once the app is created
        watch_this_boot(worker.cfg.timeout, told_to_stop=lambda: not worker.alive)
    if getattr(server, "fashion_worker_states", None):
        from web.worker_states import enable

        enable(server.fashion_worker_states)


def _bound_malloc_arenas():
    import ctypes

    try:
        mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    except (OSError, TypeError):
        return
    if mallopt is not None:  # not glibc (musl has one arena anyway): nothing to bound
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        mallopt(_M_ARENA_MAX, _ARENA_MAX)


def post_request(worker, req, environ, resp):
    """After a large upload has been answered, return the freed heap to the system."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return
    if length >= TRIM_AFTER_BYTES:
        from indexer.memory import release_free_memory

        release_free_memory()
