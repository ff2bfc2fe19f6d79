"""Visual fashion search: the Flask application.

``create_app()`` is the factory (tests call it with a config mapping);
``app`` at the bottom is what ``gunicorn app:app`` serves.
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from indexer.config import Settings
from web import api, views
from web.queries import InMemoryRequest
from web.searching import Busy, ModelGate
from web.security import add_security_headers
from web.service import IndexService

log = logging.getLogger(__name__)

_FRIENDLY = {
    400: "The request could not be understood.",
    404: "There is nothing at this address.",
    405: "This address does not accept that kind of request.",
    413: "The upload is too large.",
    500: "Something went wrong on our side. Please try again.",
    503: "The service is busy. Please try again in a moment.",
}


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.path == "/healthz"


def _error_response(code: int, message: str, headers: dict | None = None):
    headers = dict(headers or {})
    if code == 503:
        headers.setdefault("Retry-After", "5")
    if _wants_json():
        return jsonify({"error": {"status": code, "message": message}}), code, headers
    return render_template("error.html", code=code, message=message), code, headers


def register_error_handlers(app: Flask) -> None:
    """HTML or JSON errors, never a stack trace."""

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_exc):
        limit = app.extensions["fashion.service"].settings.max_upload_mb
        return _error_response(413, f"The upload is larger than the {limit} MB limit. Please send a smaller photo.")

    @app.errorhandler(Busy)
    def busy(exc):
        return _error_response(503, str(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = exc.code or 500
        # keep the headers the status needs (Allow on a 405), drop the rest of werkzeug's page
        keep = {name: value for name, value in exc.get_headers() if name in ("Allow", "Retry-After")}
        return _error_response(code, _FRIENDLY.get(code, exc.description or "Request failed."), keep)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("Unhandled error on %s %s", request.method, request.path)
        return _error_response(500, _FRIENDLY[500])


def create_app(config: dict | None = None) -> Flask:
    """Build the app. ``config`` may hold Flask keys and ``FASHION`` settings.

    Recognised extras in ``config``: ``FASHION_SETTINGS`` (a ``Settings``),
    ``FASHION_EMBEDDER`` (a loaded embedder to share), ``FASHION_AUTOBUILD``
    (default True: build missing or stale artifacts in the background).
    """
    config = dict(config or {})
    settings: Settings = config.pop("FASHION_SETTINGS", None) or Settings.from_env()
    embedder = config.pop("FASHION_EMBEDDER", None)
    autobuild = config.pop("FASHION_AUTOBUILD", True)

    app = Flask(__name__, instance_relative_config=True)
    app.request_class = InMemoryRequest
    # One body limit for the whole request: all photos of a search together.
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        # Werkzeug applies this to each raw chunk it parses (64 KiB reads), file parts
        # included, so it must stay well above 64 KiB or every photo over ~64 KB is a 413.
        MAX_FORM_MEMORY_SIZE=512 * 1024,
        MAX_FORM_PARTS=100,
        JSON_SORT_KEYS=False,
        SEND_FILE_MAX_AGE_DEFAULT=3600,
    )
    # Debug stays off (FLASK_DEBUG in the environment would turn it on under
    # gunicorn) unless the config mapping asks for it explicitly.
    app.config["DEBUG"] = False
    app.config.update(config)

    service = IndexService(settings, embedder=embedder, autobuild=autobuild)
    app.extensions["fashion.service"] = service
    app.extensions["fashion.gate"] = ModelGate(slots=1, timeout_s=settings.queue_timeout_s)

    app.register_blueprint(views.bp)
    app.register_blueprint(api.bp)
    app.after_request(add_security_headers)
    register_error_handlers(app)

    @app.context_processor
    def site_context():
        svc = app.extensions["fashion.service"]
        return {
            "catalogue_name": svc.settings.catalogue.name,
            "catalogue_is_demo": svc.settings.is_demo,
            "catalogue_count": len(svc.searcher) if svc.searcher else 0,
            "random_weights": svc.random_weights,
            "weights_fallback": svc.weights_fallback,
        }

    return app


def _create_default_app() -> Flask:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return create_app()


def __getattr__(name: str):
    """``app`` is created on first access, so importing ``create_app`` (tests) loads nothing."""
    if name == "app":
        globals()["app"] = application = _create_default_app()
        return application
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    _create_default_app().run(host="127.0.0.1", port=5000)
