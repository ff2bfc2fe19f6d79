"""IndexService: what the web app knows about the index, and keeping it current.

One instance per process (gunicorn worker). It loads the embedder once,
serves searches from a verified ``Searcher``, and when the artifacts are
missing or stale starts the indexer's build in a background thread. The
build lock in the index dir makes sure only one worker builds; the others
see ``building`` and pick the new generation up once ``current`` switches.

When an index is already published (a reload, a restarted worker, any start
but the first), the model and the index are loaded before the constructor
returns, so the worker takes its first request ready to search: a reload
never answers with the starting page. Only the comparison of the catalogue
with the index (a scan of every file) runs in the background.

On a first start there is nothing to serve yet, and loading TensorFlow and
the model takes tens of seconds on a small machine, so it happens in a
background thread: the worker answers HTTP at once, with the state
``starting`` (a page that says what it is doing, 503 + ``Retry-After`` from
the API) until the model is ready, then ``building`` while it indexes.
"""

from __future__ import annotations

import logging
import threading
import time

from filelock import Timeout

from indexer.build import BuildInProgress, build_index, build_lock, check_freshness, public_failure
from indexer.config import Settings
from indexer.embedder import Embedder
from indexer.generation import ArtifactError, current_generation
from indexer.memory import release_free_memory
from indexer.plan import key_for
from indexer.progress import read_status
from indexer.query import QueryPipeline
from indexer.runtimes import load_for_settings
from indexer.search import Searcher

log = logging.getLogger(__name__)

READY, BUILDING, ERROR, STARTING = "ready", "building", "error", "starting"
STARTUP_MESSAGES = {
    "catalogue": "Drawing the demo catalogue.",
    "model": "Loading the image model.",
    "index": "Opening the index.",
}
# The steps the starting and building page lists, in order, and the build
# phase (indexer.progress) or start-up step each one covers.
STEPS = ("catalogue", "model", "scanning", "embedding", "publishing")
_STEP_OF = {"catalogue": "catalogue", "model": "model", "index": "scanning", "scanning": "scanning",
            "embedding": "embedding", "tuning": "embedding", "indexing": "publishing", "done": "publishing"}
BUILD_RETRY_S = 60.0  # a failed background build is retried after this long
LOCK_WAIT_S = 2.0  # how long a build waits for the lock held by a status probe


class NotReady(RuntimeError):
    """No index can serve searches yet (building, or the build failed); answered with a 503.

    ``status`` is the ``/api/status`` payload at the time, for the building page.
    """

    def __init__(self, status: dict):
        super().__init__(status.get("message") or status["state"])
        self.status = status


class IndexService:
    """Owns the embedder, the current searcher and the background build."""

    def __init__(self, settings: Settings, *, embedder: Embedder | None = None, autobuild: bool = True):
        self.settings = settings
        self.autobuild = autobuild
        self.embedder: Embedder | None = None  # set once loaded and warmed up
        self.key: dict | None = None
        self.startup_step = "model"  # what ``starting`` is busy with: a key of STARTUP_MESSAGES
        self.searcher: Searcher | None = None
        self.error: str | None = None
        self._build_thread: threading.Thread | None = None
        self._lock = threading.RLock()
        self._last_refresh = 0.0
        self._last_rescan: float | None = None
        self._failed_gen: str | None = None  # a generation that failed verification
        self._failed_at = 0.0  # when the last background build failed
        self._started = False  # the first refresh after loading the model is done
        self._startup_thread: threading.Thread | None = None
        if embedder is not None:
            # an embedder handed in is already loaded: nothing worth a thread
            self._start(embedder)
        elif current_generation(settings.index_dir) is not None:
            # an index is published: be ready to search before taking a request
            self._start(scan_later=True)
        else:
            self._startup_thread = threading.Thread(target=self._start, name="model-load", daemon=True)
            self._startup_thread.start()

    def _start(self, embedder: Embedder | None = None, *, scan_later: bool = False) -> None:
        """Prepare the catalogue, load and warm up the model, then serve or build the index.

        With ``scan_later`` only the published generation is opened here, and
        the catalogue is compared with it in a background thread.
        """
        try:
            if self.settings.is_demo:
                self.startup_step = "catalogue"
                self._prepare_catalogue()
            self.startup_step = "model"
            if embedder is None:
                embedder = load_for_settings(self.settings)
            embedder.warm_up()  # trace the graph now, not on the first shopper's request
        except Exception:  # noqa: BLE001 - shown on every page and in /api/status
            log.exception("Start-up failed while %s", STARTUP_MESSAGES[self.startup_step].lower().rstrip("."))
            # the details (paths, exception text) go to the log, not to the public page
            self.error = "The site could not start; the server log has the details."
            return
        # an index of another catalogue (the demo's, after FASHION_CATALOGUE changed) is never
        # served: it counts as missing, so shoppers see the building page, not someone else's products
        self.key = dict(key_for(embedder), catalogue=str(self.settings.catalogue))
        self.embedder = embedder
        self.startup_step = "index"
        try:
            if scan_later:
                with self._lock:
                    self._serve_published()
            else:
                self.refresh(force=True)
        finally:
            self._started = True
        if scan_later:
            self._startup_thread = threading.Thread(
                target=self.refresh, kwargs={"force": True}, name="index-check", daemon=True
            )
            self._startup_thread.start()

    # ------------------------------------------------------------ state

    @property
    def random_weights(self) -> bool:
        """True when results come from random weights (``FASHION_WEIGHTS=none``, for tests)."""
        if self.embedder is None:  # still loading: the setting says what is coming
            return self.settings.weights.strip().lower() == "none"
        return self.embedder.choice.random

    @property
    def state(self) -> str:
        """``ready`` when searches can be served, ``starting`` while the model loads,
        else ``building`` or ``error`` (a pure read)."""
        if self.searcher is not None:
            return READY
        if self.error:
            return ERROR
        return BUILDING if self._started else STARTING

    def require_searcher(self) -> Searcher:
        """The searcher serving right now; raises ``NotReady`` when there is none."""
        searcher = self.searcher
        if searcher is None:
            raise NotReady(self.status())
        return searcher

    def pipeline(self) -> QueryPipeline:
        """The query pipeline over the serving searcher and the model; raises ``NotReady`` without them."""
        searcher = self.require_searcher()
        return QueryPipeline(self.embedder, searcher)

    def status(self) -> dict:
        """The payload of ``/api/status``."""
        state = self.state
        progress = read_status(self.settings.index_dir) if state != STARTING else {}
        if state == STARTING:
            message = STARTUP_MESSAGES[self.startup_step]
        elif state == ERROR:
            message = self.error
        else:
            message = progress.get("message", "")
        payload = {
            "state": state,
            "done": progress.get("done", 0),
            "total": progress.get("total", 0),
            "phase": self.startup_step if state == STARTING else progress.get("phase"),
            "step": _STEP_OF.get(self.startup_step if state == STARTING else progress.get("phase"), "scanning"),
            "rate": progress.get("rate"),
            "eta_s": progress.get("eta_s"),
            "message": message,
            "rebuilding": self.building_now(),
            # the last build's own state: "interrupted" when its process is gone (indexer.progress.read_status)
            "build_state": progress.get("state"),
            "items": len(self.searcher) if self.searcher else 0,
            "catalogue": self.settings.catalogue.name,
            "demo": self.settings.is_demo,
            "model": self.embedder.choice.model if self.embedder else self.settings.model,
            "weights": self.embedder.weights_id if self.embedder else None,
            "runtime": self.embedder.runtime if self.embedder else None,
        }
        return payload

    @property
    def refused_generation(self) -> str | None:
        """The published generation this worker refused to serve (it failed verification), or None."""
        return self._failed_gen

    def published_generation(self) -> str | None:
        """The name of the generation ``current`` points at (what every worker should serve), or None."""
        gen = current_generation(self.settings.index_dir)
        return gen.name if gen is not None else None

    def building_now(self) -> bool:
        """True while this or another process holds the build lock."""
        if self._build_thread is not None and self._build_thread.is_alive():
            return True
        probe = build_lock(self.settings.index_dir)
        try:
            probe.acquire(timeout=0)
        except Timeout:  # someone else holds it
            return True
        probe.release()
        return False

    # ------------------------------------------------------------ refresh

    def _prepare_catalogue(self) -> None:
        from indexer.demo import generate_demo_catalogue

        generate_demo_catalogue(self.settings.catalogue)

    def refresh(self, force: bool = False) -> None:
        """Pick up a newly published generation; start a build when one is needed.

        Cheap enough to call on every request: it does real work at most
        once a second, and a request that finds another thread already
        refreshing carries on with the current searcher instead of waiting.
        """
        now = time.monotonic()
        if self.embedder is None:  # the startup thread refreshes once the model is loaded
            return
        if not force and now - self._last_refresh < 1.0:
            return
        if not self._lock.acquire(blocking=force):
            return
        try:
            self._last_refresh = now
            self._serve_published()
            if self.error is not None and now - self._failed_at >= BUILD_RETRY_S:
                log.info("Retrying the index build that failed %.0f s ago", now - self._failed_at)
                self.error = None  # a missing mount or a full disk may have been fixed
                self._last_rescan = None
            if self.autobuild and self.error is None and self._rescan_due(now, force) and not self.building_now():
                self._last_rescan = now
                freshness = check_freshness(self.settings, self.key)
                release_free_memory()  # the manifest and the catalogue listing it parsed
                if freshness != "fresh" or self.searcher is None:
                    log.info("Index is %s; starting a background build", freshness)
                    self.start_build()
        finally:
            self._lock.release()

    def pick_up_published(self) -> None:
        """Switch to a newly published generation, without comparing the catalogue with it.

        Cheap (one ``readlink``) when nothing changed; skipped while another
        thread is refreshing.
        """
        if self.embedder is None or not self._lock.acquire(blocking=False):
            return
        try:
            self._serve_published()
        finally:
            self._lock.release()

    def _serve_published(self) -> None:
        """Load the generation ``current`` points at unless it is served already or failed (lock held)."""
        gen = current_generation(self.settings.index_dir)
        if gen is not None and gen.name != self._failed_gen and (
            self.searcher is None or self.searcher.generation != gen.name
        ):
            self._load(gen.name)

    def _rescan_due(self, now: float, force: bool) -> bool:
        """Whether to compare the catalogue with the index again.

        Scanning a large catalogue costs real time, so it happens at start,
        whenever nothing is served yet, and then every ``rescan_s`` seconds.
        """
        if force or self.searcher is None or self._last_rescan is None:
            return True
        interval = self.settings.rescan_s
        return interval > 0 and now - self._last_rescan >= interval

    def _load(self, gen_name: str) -> None:
        try:
            searcher = Searcher.for_settings(self.settings, expect=self.key)
        except ArtifactError as exc:
            # not retried until `current` changes; a build replaces it
            log.warning("Index %s not usable: %s", gen_name, exc)
            self._failed_gen = gen_name
            return
        # The old searcher is not unloaded here: requests still running may
        # hold it, and Annoy frees its mapping when the last one lets go.
        self.searcher = searcher
        self._failed_gen = None
        log.info("Serving index %s (%d items)", searcher.generation, len(searcher))

    def start_build(self) -> bool:
        """Start a background build unless one is already running anywhere."""
        with self._lock:
            if self._build_thread is not None and self._build_thread.is_alive():
                return False
            self.error = None
            self._build_thread = threading.Thread(target=self._run_build, name="index-build", daemon=True)
            self._build_thread.start()
            return True

    def _run_build(self) -> None:
        try:
            # a short wait lets a status poll's probe of the lock pass
            build_index(self.settings, self.embedder, lock_timeout=LOCK_WAIT_S)
        except BuildInProgress:
            log.info("Another process is building the index; waiting for it")
        except Exception as exc:  # noqa: BLE001 - reported on the error page, not swallowed
            log.exception("Background build failed")
            self.error = public_failure(exc)  # shown to shoppers; the details are in the log above
            self._failed_at = time.monotonic()
        finally:
            # pick up the new generation now, but do not rescan the catalogue
            # straight away: a catalogue that keeps changing must not loop
            self._last_rescan = time.monotonic()
            self._last_refresh = 0.0
        self.refresh()

    def wait_until_ready(self, timeout: float = 300.0) -> bool:
        """Block until the index is served (True) or its build failed or timed out (False)."""
        deadline = time.monotonic() + timeout
        if self._startup_thread is not None:
            self._startup_thread.join(timeout)
        while time.monotonic() < deadline:
            if self._build_thread is not None:
                self._build_thread.join(timeout=0.2)
            self.refresh(force=True)
            if self.searcher is not None and not self.building_now():
                return True
            if self.error:
                return False
            time.sleep(0.2)
        return False
