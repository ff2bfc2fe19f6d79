"""gunicorn settings, read from the environment. Start with: gunicorn app:app

Each worker process loads the model once and memory-maps the Annoy file, so
workers share the index pages. TensorFlow's pool is sized so that
workers x TF threads does not exceed the cores.
"""

import os

_cores = os.cpu_count() or 1

bind = os.environ.get("BIND") or f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("FASHION_WORKERS", "2"))
# A few threads per worker let status polls, thumbnails and health checks
# through while one request holds the model; forward passes are gated to one
# at a time per worker inside the app.
threads = int(os.environ.get("FASHION_THREADS", "4"))
# gthread, plus the time each request waited for a thread, so that a request
# that queued past FASHION_QUEUE_TIMEOUT_S gets its 503 at once (web/workers.py).
worker_class = "web.workers.QueueTimedThreadWorker"
# Queued connections beyond this are refused by the kernel rather than
# piling up; the app answers 503 + Retry-After when its model queue is full.
backlog = int(os.environ.get("FASHION_BACKLOG", "64"))
# Loading TensorFlow and the model takes a few seconds per worker; a first
# build runs in a background thread, so requests never wait on it.
timeout = int(os.environ.get("FASHION_WORKER_TIMEOUT", "120"))
graceful_timeout = 30
keepalive = 5
# Loading the app in the master and forking would share TensorFlow state
# across processes, which TensorFlow does not support.
preload_app = False
limit_request_line = 4094
limit_request_fields = 100
accesslog = os.environ.get("FASHION_ACCESS_LOG", "-")
loglevel = os.environ.get("FASHION_LOG_LEVEL", "info")
# The control socket has one default path per user, so two servers on one
# host (tests, benchmarks, blue/green) would fight over it; nothing uses it.
control_socket_disable = True

raw_env = []
if "FASHION_TF_THREADS" not in os.environ:
    os.environ["FASHION_TF_THREADS"] = str(max(1, _cores // max(1, workers)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
