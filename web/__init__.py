"""The web tier: the Flask application factory, its blueprints and the index service.

``create_app()`` follows Flask's tutorial layout: settings come from the
environment (or the caller), features are blueprints (``views`` for pages,
``api`` for JSON), and every failure goes through ``errors``.
"""

from __future__ import annotations

from flask import Flask

from indexer.config import PROJECT_ROOT, Settings
from indexer.embedder import Embedder
from indexer.images import configure_decode_budget

from . import api, views
from .carried import CarriedVectors
from .errors import register_error_handlers
from .facets import FIELD_LABELS, FILTER_LABELS
from .files import AnyPathConverter
from .queries import InMemoryRequest
from .searching import ModelGate
from .secret import load_secret
from .security import add_cache_policy, add_security_headers, shop_link
from .service import IndexService
from .site_health import worker_state
from .titles import number, product_title, title_facts
from .worker_states import StateKeeper, this_worker


def create_app(
    settings: Settings | None = None, *, embedder: Embedder | None = None, autobuild: bool = True, **flask_config
) -> Flask:
    """Build the site.

    ``settings`` defaults to ``Settings.from_env()``; ``embedder`` shares an
    already loaded model (tests, scripts); ``autobuild`` builds missing or
    stale artifacts in the background; ``flask_config`` goes into
    ``app.config`` (for example ``TESTING=True``).
    """
    settings = settings or Settings.from_env()
    # templates/ and static/ sit at the project root, beside app.py
    app = Flask(__name__, root_path=str(PROJECT_ROOT), instance_relative_config=True)
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
        # FLASK_DEBUG in the environment would turn debug on under gunicorn;
        # only an explicit DEBUG in ``flask_config`` may.
        DEBUG=False,
    )
    app.config.update(flask_config)
    # "//host/x" was merged to "/x" and redirected to an absolute URL built
    # from the Host header; without merging it is simply not found
    app.url_map.merge_slashes = False
    app.url_map.converters["anypath"] = AnyPathConverter

    # memory is per process: this worker's decodes share one budget
    configure_decode_budget(
        settings.decode_budget_bytes, settings.decode_slots, on_wait=_decode_wait_observer(settings)
    )
    service = IndexService(settings, embedder=embedder, autobuild=autobuild)
    app.extensions["fashion.service"] = service
    app.extensions["fashion.gate"] = ModelGate(slots=1, timeout_s=settings.queue_timeout_s)
    app.extensions["fashion.carried"] = CarriedVectors(load_secret(settings.secret_key, settings.index_dir))

    app.register_blueprint(views.bp)
    app.register_blueprint(api.bp)
    if settings.metrics:
        from . import metrics

        metrics.init_app(app, service)
    app.after_request(add_security_headers)
    app.after_request(add_cache_policy)
    register_error_handlers(app)
    app.jinja_env.globals.update(
        field_labels=FIELD_LABELS, filter_labels=FILTER_LABELS, shop_link=shop_link,
        product_title=product_title, title_facts=title_facts,
    )
    app.jinja_env.filters["number"] = number  # every count on every page: "3,000"

    # a gunicorn worker shares its state with its siblings, so that /healthz answers for the site
    states = this_worker()
    if states is not None:
        app.extensions["fashion.worker_states"] = states
        StateKeeper(states, read_state=lambda: worker_state(service), pick_up=service.pick_up_published).start()

    @app.context_processor
    def site_context():
        return {
            "catalogue_name": service.settings.catalogue.name,
            "shop_name": service.settings.shop_name,
            "locate_products": service.settings.locate,
            "catalogue_is_demo": service.settings.is_demo,
            "catalogue_count": len(service.searcher) if service.searcher else 0,
            "random_weights": service.random_weights,
        }

    return app


def _decode_wait_observer(settings: Settings):
    if not settings.metrics:
        return None
    from .metrics import observe_decode_wait

    return observe_decode_wait
