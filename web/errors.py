"""One error path for the whole site: friendly messages, HTML or JSON, never a traceback.

Every page, API route and error handler answers failures through
``error_response()``, so status codes, ``Retry-After`` and the JSON shape
``{"error": {"status", "message", ...}}`` are decided in one place.
"""

from __future__ import annotations

import logging

from flask import Flask, current_app, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from indexer.options import BadQuery
from indexer.query import UnknownItem

from .deadline import Busy
from .queries import SMALL_BODY_BYTES
from .service import ERROR, NotReady

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5  # what a 503 asks clients to wait before trying again

FRIENDLY = {
    400: "The request could not be understood.",
    404: "There is nothing at this address.",
    405: "This address does not accept that kind of request.",
    413: "The upload is too large.",
    500: "Something went wrong on our side. Please try again.",
    503: "The service is busy. Please try again in a moment.",
}


def wants_json() -> bool:
    """API and health routes answer in JSON; everything else gets an HTML page."""
    return request.path.startswith("/api/") or request.path == "/healthz"


def error_response(code: int, message: str, headers: dict | None = None, *, template: str = "error.html", **extra):
    """The response for a failed request: JSON for the API, a page otherwise.

    ``extra`` goes into the JSON error object and into the template.
    """
    headers = dict(headers or {})
    if code == 503:
        headers.setdefault("Retry-After", str(RETRY_AFTER_S))
    if wants_json():
        return jsonify({"error": {"status": code, "message": message, **extra}}), code, headers
    return render_template(template, code=code, message=message, **extra), code, headers


def too_large_message() -> str:
    """Which limit a 413 broke: the body size, or the form's part count or field size (Werkzeug does not say)."""
    config = current_app.config
    body_mb = current_app.extensions["fashion.service"].settings.max_upload_mb
    parts, field_kb = config["MAX_FORM_PARTS"], config["MAX_FORM_MEMORY_SIZE"] // 1024
    length = request.content_length
    if request.mimetype != "multipart/form-data":
        return (
            f"A request body that is not a photo upload may be at most {SMALL_BODY_BYTES // 1024} KB; "
            "photos are sent as multipart/form-data."
        )
    if length is not None and length > config["MAX_CONTENT_LENGTH"]:
        return f"The upload is larger than the {body_mb} MB limit. Please send a smaller photo."
    if length is not None:
        return f"The form has more than {parts} parts or a text field larger than {field_kb} KB; those are the limits."
    return f"The request is over a limit: {body_mb} MB in all, {parts} form parts, {field_kb} KB per text field."


def not_ready_response(exc: NotReady):
    """503 while the model loads, the index is built or after a failure (the building or error page)."""
    status = exc.status
    if status["state"] == ERROR:
        return error_response(503, status["message"], state=status["state"])
    message = status.get("message") or "The catalogue index is still being built."
    if wants_json():
        return error_response(
            503, message, state=status["state"], step=status["step"], done=status["done"], total=status["total"]
        )
    return error_response(503, message, template="building.html", status=status)


def _count_unavailable(reason: str) -> None:
    if "fashion.metrics" in current_app.extensions:
        from .metrics import count_unavailable

        count_unavailable(reason)


def count_bad_query(exc: BadQuery) -> None:
    """Count a refused query in the metrics when it is a 503 (no decode memory in time, or no products yet)."""
    if exc.status == 503:
        _count_unavailable("decode_busy" if exc.field == "image" else "empty_catalogue")


def register_error_handlers(app: Flask) -> None:
    """Route every failure through ``error_response``."""

    @app.errorhandler(NotReady)
    def not_ready(exc: NotReady):
        _count_unavailable("not_ready")
        return not_ready_response(exc)

    @app.errorhandler(BadQuery)
    def bad_query(exc: BadQuery):
        count_bad_query(exc)
        return error_response(exc.status, exc.message, field=exc.field)

    @app.errorhandler(UnknownItem)
    def unknown_item(_exc):
        return error_response(404, "There is no product with that id.")

    @app.errorhandler(Busy)
    def busy(exc: Busy):
        _count_unavailable(exc.reason)
        return error_response(503, str(exc))

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_exc):
        return error_response(413, too_large_message())

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = exc.code or 500
        # keep the headers the status needs (Allow on a 405), drop the rest of werkzeug's page
        keep = {name: value for name, value in exc.get_headers() if name in ("Allow", "Retry-After")}
        return error_response(code, FRIENDLY.get(code, "Request failed."), keep)

    @app.errorhandler(Exception)
    def unexpected(_exc: Exception):
        log.exception("Unhandled error on %s %s", request.method, request.path)
        return error_response(500, FRIENDLY[500])
