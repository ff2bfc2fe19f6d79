"""A stand-in for ``app.py`` whose boot lasts as long as a test wants.

``gunicorn -c gunicorn.conf.py tests.support.held_app:app`` runs the real
server hooks (state files, the handover, the boot watchdog) without a model:
creating the app waits while the file named by ``HELD_APP_HOLD`` exists,
then the worker shares its state as the real app does (``ready``, serving a
generation called ``held``) and answers every request with 200.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from web.worker_states import StateKeeper, this_worker

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # as app.py
_hold = os.environ.get("HELD_APP_HOLD")
while _hold and Path(_hold).exists():
    time.sleep(0.05)

_states = this_worker()
if _states is not None:
    StateKeeper(
        _states,
        read_state=lambda: {"state": "ready", "generation": "held", "items": 1, "refused": None},
        pick_up=lambda: None,
    ).start()


def app(environ, start_response):
    """Every request: 200 ``ok``."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\n"]
