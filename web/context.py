"""Access to the per-app objects (service, model gate) from request handlers, and the readiness guard."""

from __future__ import annotations

from functools import wraps

from flask import current_app


def service():
    """The app's ``IndexService``, refreshed at most once a second."""
    svc = current_app.extensions["fashion.service"]
    svc.refresh()
    return svc


def gate():
    """The app's ``ModelGate``."""
    return current_app.extensions["fashion.gate"]


def carried():
    """The app's ``CarriedVectors`` (signs and checks the vectors "show more" sends back)."""
    return current_app.extensions["fashion.carried"]


def settings():
    """The app's ``Settings``."""
    return current_app.extensions["fashion.service"].settings


def requires_index(view):
    """Let ``view`` run only while an index is served; otherwise ``NotReady`` answers 503.

    The error handler turns ``NotReady`` into the building page, the error
    page or a JSON 503, whichever fits the route.
    """

    @wraps(view)
    def guarded(*args, **kwargs):
        service().require_searcher()
        return view(*args, **kwargs)

    return guarded
