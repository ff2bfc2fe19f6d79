"""Settings, read once from ``FASHION_*`` environment variables.

Every tunable of the indexer and the web app lives here so that there is one
place to look. ``Settings.from_env()`` reads the environment; keyword
overrides (used by the CLI flags and by tests) win over it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from .models import DEFAULT_MODEL, MODEL_NAMES

PROJECT_ROOT = Path(__file__).resolve().parent.parent
INSTANCE_DIR = PROJECT_ROOT / "instance"


# which engine executes the Keras model (see indexer/runtimes.py)
RUNTIMES = ("auto", "tensorflow", "openvino", "openvino-int8")


class ConfigError(ValueError):
    """A configuration value is malformed."""


def _number(env: dict, name: str, default, minimum, parse, kind: str):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = parse(raw)
    except ValueError:
        value = None
    if value is None or not value >= minimum:  # also refuses NaN
        raise ConfigError(f"{name} must be {kind} of at least {minimum} (default {default}), got {raw!r}")
    return value


def _int(env: dict, name: str, default: int, minimum: int = 0) -> int:
    return _number(env, name, default, minimum, int, "a whole number")


def _float(env: dict, name: str, default: float, minimum: float = 0.0) -> float:
    return _number(env, name, default, minimum, float, "a number")


def _choice(env: dict, name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (env.get(name) or default).strip().lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {env.get(name)!r}")
    return value


def _bind(env: dict) -> str:
    """``BIND`` as given (``host:port`` or ``unix:/path``), else ``HOST``:``PORT``."""
    if env.get("BIND", "").strip():
        return env["BIND"].strip()
    port = _int(env, "PORT", 8000, minimum=1)
    if port > 65535:
        raise ConfigError(f"PORT must be at most 65535, got {port}")
    return f"{env.get('HOST', '127.0.0.1').strip() or '127.0.0.1'}:{port}"


def _secret(env: dict) -> str:
    value = env.get("FASHION_SECRET_KEY", "").strip()
    if value and len(value) < 32:
        raise ConfigError("FASHION_SECRET_KEY must be at least 32 characters (for example: openssl rand -hex 32)")
    return value


@dataclass(frozen=True)
class Settings:
    """Resolved configuration for one process."""

    catalogue: Path
    index_dir: Path
    is_demo: bool = False
    model: str = DEFAULT_MODEL  # see indexer/models
    weights: str = "auto"
    runtime: str = "auto"
    top_k: int = 5
    max_k: int = 50
    max_upload_mb: int = 10
    max_files: int = 4
    annoy_trees: int = 50
    annoy_search_k: int = -1
    search_candidates: int = 200  # Annoy candidates re-ranked exactly per search
    vectors: str = "float32"  # dtype of the re-ranking vectors workers map (float16: half the page cache)
    colour_weight: float = 0.2  # default share of colour in a search's score (0: shape alone, 1: colour alone)
    locate: bool = True  # find the product in an uploaded photo and embed that region
    tuning: bool = True  # the catalogue-tuned projection (indexer/tuning.py); off: the model's raw vectors
    tuning_products: int = 800  # products sampled to learn it (each seen on 3 scenes and on white)
    batch_size: int = 32
    checkpoint_every: int = 256
    thumb_size: int = 256
    tf_threads: int = 0  # 0: let TensorFlow choose
    decode_memory_mb: int = 256  # decoded bytes one process holds at once (uploads and builds)
    decode_slots: int = 2  # images one process decodes at once
    queue_timeout_s: float = 20.0  # longest wait for a model slot before a 503 + Retry-After
    request_deadline_s: float = 30.0  # a search's whole time limit, all photos included; below nginx's 60 s
    rescan_s: int = 300  # web app: how often to look for catalogue changes (0: never)
    random_seed: int = 1234
    # signs what pages carry back (show more); empty: a per-installation file in index_dir
    secret_key: str = dataclasses.field(default="", repr=False)
    metrics: bool = True  # /metrics and the counting behind it
    metrics_token: str = dataclasses.field(default="", repr=False)  # required as a Bearer token when set
    # gunicorn (read by gunicorn.conf.py)
    bind: str = "127.0.0.1:8000"
    workers: int = 2
    threads: int = 4
    backlog: int = 64
    worker_timeout_s: int = 120
    access_log: str = "-"
    log_level: str = "info"

    @classmethod
    def from_env(cls, env: dict | None = None, **overrides) -> Settings:
        """Build settings from ``env`` (default ``os.environ``) plus overrides.

        Overrides whose value is ``None`` are ignored, so CLI flags that were
        not given fall through to the environment.
        """
        env = dict(os.environ if env is None else env)
        overrides = {k: v for k, v in overrides.items() if v is not None}

        catalogue = overrides.pop("catalogue", None) or env.get("FASHION_CATALOGUE") or None
        is_demo = False
        if catalogue is None:
            own = INSTANCE_DIR / "catalogue"
            if own.is_dir():
                catalogue = own
            else:
                catalogue = INSTANCE_DIR / "demo-catalogue"
                is_demo = True
        index_dir = overrides.pop("index_dir", None) or env.get("FASHION_INDEX_DIR") or INSTANCE_DIR / "index"

        values = dict(
            catalogue=Path(catalogue).expanduser().resolve(),
            index_dir=Path(index_dir).expanduser().resolve(),
            is_demo=is_demo,
            model=_choice(env, "FASHION_MODEL", DEFAULT_MODEL, MODEL_NAMES),
            weights=env.get("FASHION_WEIGHTS", "auto").strip() or "auto",
            runtime=_choice(env, "FASHION_RUNTIME", "auto", RUNTIMES),
            top_k=_int(env, "FASHION_TOP_K", 5, minimum=1),
            max_k=_int(env, "FASHION_MAX_K", 50, minimum=1),
            max_upload_mb=_int(env, "FASHION_MAX_UPLOAD_MB", 10, minimum=1),
            max_files=_int(env, "FASHION_MAX_FILES", 4, minimum=1),
            annoy_trees=_int(env, "FASHION_ANNOY_TREES", 50, minimum=1),
            annoy_search_k=_int(env, "FASHION_ANNOY_SEARCH_K", -1, minimum=-1),
            search_candidates=_int(env, "FASHION_SEARCH_CANDIDATES", 200, minimum=1),
            vectors=_choice(env, "FASHION_VECTORS", "float32", ("float32", "float16")),
            colour_weight=_float(env, "FASHION_COLOUR_WEIGHT", 0.2, minimum=0.0),
            locate=_choice(env, "FASHION_LOCATE", "on", ("on", "off")) == "on",
            tuning=_choice(env, "FASHION_TUNING", "on", ("on", "off")) == "on",
            tuning_products=_int(env, "FASHION_TUNING_PRODUCTS", 800, minimum=16),
            batch_size=_int(env, "FASHION_BATCH_SIZE", 32, minimum=1),
            checkpoint_every=_int(env, "FASHION_CHECKPOINT_EVERY", 256, minimum=1),
            thumb_size=_int(env, "FASHION_THUMB_SIZE", 256, minimum=32),
            tf_threads=_int(env, "FASHION_TF_THREADS", 0, minimum=0),
            decode_memory_mb=_int(env, "FASHION_DECODE_MEMORY_MB", 256, minimum=16),
            decode_slots=_int(env, "FASHION_DECODE_SLOTS", 2, minimum=1),
            queue_timeout_s=_float(env, "FASHION_QUEUE_TIMEOUT_S", 20.0, minimum=0.0),
            request_deadline_s=_float(env, "FASHION_REQUEST_DEADLINE_S", 30.0, minimum=1.0),
            rescan_s=_int(env, "FASHION_RESCAN_SECONDS", 300, minimum=0),
            secret_key=_secret(env),
            metrics=_choice(env, "FASHION_METRICS", "on", ("on", "off")) == "on",
            metrics_token=env.get("FASHION_METRICS_TOKEN", "").strip(),
            bind=_bind(env),
            workers=_int(env, "FASHION_WORKERS", 2, minimum=1),
            threads=_int(env, "FASHION_THREADS", 4, minimum=1),
            backlog=_int(env, "FASHION_BACKLOG", 64, minimum=1),
            worker_timeout_s=_int(env, "FASHION_WORKER_TIMEOUT", 120, minimum=1),
            access_log=env.get("FASHION_ACCESS_LOG", "-"),
            log_level=_choice(env, "FASHION_LOG_LEVEL", "info", ("debug", "info", "warning", "error", "critical")),
        )
        values.update(overrides)
        if values["top_k"] > values["max_k"]:
            raise ConfigError("FASHION_TOP_K must not exceed FASHION_MAX_K")
        if values["colour_weight"] > 1:
            raise ConfigError(f"FASHION_COLOUR_WEIGHT must be from 0 to 1 (default 0.2), got {values['colour_weight']}")
        return cls(**values)

    def replace(self, **changes) -> Settings:
        """Return a copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @property
    def decode_budget_bytes(self) -> int:
        """Decoded image bytes one process may hold at once."""
        return self.decode_memory_mb * 1024 * 1024

    @property
    def max_upload_bytes(self) -> int:
        """Largest accepted request body, in bytes."""
        return self.max_upload_mb * 1024 * 1024
