"""Access to the per-app objects (service, model gate) from request handlers."""

from __future__ import annotations

from flask import current_app


def service():
    """The app's ``IndexService``, refreshed at most once a second."""
    svc = current_app.extensions["fashion.service"]
    svc.refresh()
    return svc


def gate():
    """The app's ``ModelGate``."""
    return current_app.extensions["fashion.gate"]


def settings():
    """The app's ``Settings``."""
    return current_app.extensions["fashion.service"].settings
