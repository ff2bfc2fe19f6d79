"""Settings, declared once in ``SETTINGS`` and read once from the environment.

Every tunable of the indexer, the web app and gunicorn is one ``Setting``
below: its environment variable, the ``Settings`` field it fills, its type,
default, accepted range or choices and one line of help. Everything else is
drawn from that table:

* ``Settings.from_env()`` reads and checks the environment (keyword
  overrides, used by the CLI flags and by tests, win over it); a bad value is
  a ``ConfigError`` of one line naming the variable, what it accepts and its
  default;
* the defaults of the ``Settings`` dataclass;
* the settings listed by ``python -m indexer --help``;
* the table in README.md's Configuration section, printed by
  ``python -m indexer.config`` (``--write-readme`` puts it in place;
  tests/test_settings_table.py checks that README.md matches).

A variable that is unset or empty takes its default. Otherwise surrounding
spaces are ignored; a number or a choice is checked (spaces alone are
refused), and choices ignore case.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import os
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from .models import DEFAULT_MODEL, MODEL_NAMES

PROJECT_ROOT = Path(__file__).resolve().parent.parent
INSTANCE_DIR = PROJECT_ROOT / "instance"
README = PROJECT_ROOT / "README.md"
# Each catalogue's own index folder lives under here (see index_dir_for); FASHION_INDEX_DIR overrides.
INDEX_ROOT = INSTANCE_DIR / "index"


# which engine executes the Keras model (see indexer/runtimes.py)
RUNTIMES = ("auto", "tensorflow", "openvino", "openvino-int8")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
ON_OFF = ("on", "off")


class ConfigError(ValueError):
    """A configuration value is malformed."""


@dataclass(frozen=True)
class Setting:
    """One environment variable: what it fills, what it accepts, its default, what it is for."""

    name: str  # the environment variable
    field: str | None  # the Settings field it fills; None: read as part of another (HOST, PORT -> bind)
    kind: type  # int, float, str, Path, or bool (written on/off)
    default: object  # when unset or empty
    help: str  # one line (markdown backticks allowed): the CLI's --help, the README
    minimum: int | float | None = None
    maximum: int | float | None = None
    choices: tuple[str, ...] = ()  # for str: the accepted values, lower case
    min_length: int = 0  # for str: the shortest accepted value (empty stays "unset")
    example: str = ""  # how to make a good value, shown when one is refused
    secret: bool = False  # a refused value is described by its length, never echoed
    cli: bool = False  # python -m indexer reads it (listed in its --help)
    shown_default: str = ""  # markdown, for a default that is worked out rather than fixed
    accepts: str = ""  # markdown, for free text: what it may be
    more: str = ""  # further README-only sentences after ``help``

    # ---- reading

    def given(self, env) -> bool:
        """True when ``env`` sets this variable (to something other than the empty string)."""
        return env.get(self.name) not in (None, "")

    def read(self, env):
        """The value ``env`` gives (the default when unset or empty), checked; ``ConfigError`` says why not."""
        if not self.given(env):
            return self.default
        raw = env[self.name]
        text = raw.strip()
        if self.kind is bool:
            if text.lower() not in ON_OFF:
                raise self.refused(raw)
            return text.lower() == "on"
        if self.kind in (int, float):
            try:
                value = self.kind(text)
            except ValueError:
                raise self.refused(raw) from None
            self.check(value, raw)
            return value
        if self.choices:
            self.check(text.lower(), raw)
            return text.lower()
        if not text:  # free text of spaces alone counts as unset
            return self.default
        self.check(text, raw)
        return Path(text) if self.kind is Path else text

    def check(self, value, raw=None) -> None:
        """Refuse ``value`` when it is out of range, not a choice or too short; ``raw`` is what to quote."""
        if self.kind in (int, float) and isinstance(value, int | float) and not isinstance(value, bool):
            low = -math.inf if self.minimum is None else self.minimum
            high = math.inf if self.maximum is None else self.maximum
            if not low <= value <= high:  # also refuses NaN
                raise self.refused(value if raw is None else raw)
        elif self.choices and value not in self.choices:
            raise self.refused(value if raw is None else raw)
        elif self.min_length and isinstance(value, str) and 0 < len(value) < self.min_length:
            raise self.refused(value if raw is None else raw)

    def refused(self, raw, accepted: str | None = None) -> ConfigError:
        """The one-line error for ``raw``: the variable, what it accepts, its default, what it got."""
        got = f"a value of {len(str(raw).strip())} characters" if self.secret else repr(raw)
        example = f"; make one with: {self.example}" if self.example else ""
        return ConfigError(
            f"{self.name} must be {accepted or self.accepted()} (default {self.default_text()}), got {got}{example}"
        )

    # ---- describing

    def accepted(self, markdown: bool = False, short: bool = False) -> str:
        """What the variable accepts: ``a whole number of at least 1``, ``one of on, off`` (short: ``>= 1``)."""
        quote = (lambda s: f"`{s}`") if markdown else str
        if self.kind is bool or self.choices:
            choices = ON_OFF if self.kind is bool else self.choices
            return "|".join(choices) if short else "one of " + ", ".join(quote(c) for c in choices)
        if self.kind in (int, float):
            noun = "a whole number" if self.kind is int else "a number"
            if self.minimum is not None and self.maximum is not None:
                return f"{self.minimum} to {self.maximum}" if short else f"{noun} from {self.minimum} to {self.maximum}"
            if self.minimum is not None:
                return f">= {self.minimum}" if short else f"{noun} of at least {self.minimum}"
            return noun
        if self.min_length:
            return f"at least {self.min_length} characters"
        text = self.accepts or ("a path" if self.kind is Path else "any text")
        return text if markdown else _plain(text)

    def default_text(self, markdown: bool = False) -> str:
        """The default as docs show it: ``5``, ``on``, or how it is worked out."""
        if self.shown_default:
            return self.shown_default if markdown else _plain(self.shown_default)
        if self.kind is bool:
            text = "on" if self.default else "off"
        else:
            text = str(self.default)
        return f"`{text}`" if markdown else text

    def meaning(self) -> str:
        """The README's text: the help line, then any further sentences."""
        return f"{self.help}. {self.more}" if self.more else self.help


def _plain(markdown: str) -> str:
    return markdown.replace("`", "")


# Every setting, in the order README.md lists them. Help lines are markdown
# (backticks only); "see X" points at a README section.
SETTINGS: tuple[Setting, ...] = (
    # what is indexed, and how
    Setting(
        "FASHION_CATALOGUE", "catalogue", Path, None, "folder of product images", cli=True, accepts="a folder",
        shown_default="`instance/catalogue`, else the generated demo",
    ),
    Setting(
        "FASHION_INDEX_DIR", "index_dir", Path, None, "where the artifacts live", cli=True,
        accepts="a folder", shown_default="`instance/index/<catalogue folder name>-<short hash of its resolved path>`",
        more="Each catalogue has a folder of its own by default, so switching catalogues keeps every index "
        "(`python -m indexer status` lists them)",
    ),
    Setting(
        "FASHION_MODEL", "model", str, DEFAULT_MODEL, "the network (see Models and weights)", choices=MODEL_NAMES,
        cli=True,
    ),
    Setting(
        "FASHION_WEIGHTS", "weights", str, "auto", "the model's weights (see Models and weights)", cli=True,
        accepts="`auto`, `imagenet`, `none` or a weights file",
    ),
    Setting(
        "FASHION_RUNTIME", "runtime", str, "auto", "what executes the model (see Runtime)", choices=RUNTIMES, cli=True
    ),
    # searching
    Setting("FASHION_TOP_K", "top_k", int, 5, "results per photo", minimum=1, cli=True),
    Setting("FASHION_MAX_K", "max_k", int, 50, "largest `k` a request may ask for", minimum=1, cli=True),
    Setting(
        "FASHION_MAX_UPLOAD_MB", "max_upload_mb", int, 10, "request body limit (all photos of one search)", minimum=1
    ),
    Setting("FASHION_MAX_FILES", "max_files", int, 4, "photos per search", minimum=1),
    Setting(
        "FASHION_ANNOY_TREES", "annoy_trees", int, 50, "Annoy trees (more: better recall, bigger file)", minimum=1,
        cli=True,
    ),
    Setting(
        "FASHION_ANNOY_SEARCH_K", "annoy_search_k", int, -1, "Annoy `search_k` (-1: trees x candidates)", minimum=-1,
        cli=True,
    ),
    Setting(
        "FASHION_SEARCH_CANDIDATES", "search_candidates", int, 200,
        "Annoy candidates re-ranked exactly per search (more: better recall, slower)", minimum=1, cli=True,
    ),
    Setting(
        "FASHION_VECTORS", "vectors", str, "float32",
        "dtype of the re-ranking vectors the workers map (`embeddings.npy`): `float16` halves them, for large "
        "catalogues",
        choices=("float32", "float16"), cli=True,
        more="`embeddings.pkl` stays float32; the first build's dtype: an index keeps the one it was published "
        "with (a process set otherwise serves it and logs that) until `python -m indexer build --vectors "
        "<dtype>`, which embeds nothing again (see Scaling out)",
    ),
    Setting(
        "FASHION_LOCATE", "locate", bool, True,
        "`off`: search uploads whole unless the request says `locate=true` (see Finding the product)", cli=True,
    ),
    Setting(
        "FASHION_COLOUR_WEIGHT", "colour_weight", float, 0.2,
        "the default share of colour in a search's score, 0 (shape alone) to 1 (colour alone)",
        minimum=0.0, maximum=1.0, cli=True, more="Each search may choose its own (see Shape and colour)",
    ),
    Setting(
        "FASHION_TUNING", "tuning", bool, True,
        "`off`: search with the model's own vectors instead of the catalogue-tuned ones (see Shopper photos)",
        cli=True,
    ),
    Setting(
        "FASHION_TUNING_PRODUCTS", "tuning_products", int, 800,
        "products sampled to learn the catalogue tuning, each seen on white, on 2 scenes and cropped from a third",
        minimum=16, cli=True,
    ),
    # building
    Setting("FASHION_BATCH_SIZE", "batch_size", int, 32, "images per forward pass while indexing", minimum=1, cli=True),
    Setting(
        "FASHION_CHECKPOINT_EVERY", "checkpoint_every", int, 256, "images between build checkpoints", minimum=1,
        cli=True,
    ),
    Setting(
        "FASHION_THUMB_SIZE", "thumb_size", int, 256, "long side of the thumbnails a build writes, in pixels",
        minimum=32, cli=True,
    ),
    Setting(
        "FASHION_TF_THREADS", "tf_threads", int, 0,
        "model threads (TensorFlow intra-op, OpenVINO inference threads); 0: the runtime chooses",
        minimum=0, cli=True, shown_default="cores / workers under gunicorn, else `0`",
    ),
    Setting(
        "FASHION_DECODE_MEMORY_MB", "decode_memory_mb", int, 256,
        "decoded image memory one process holds at once (each gunicorn worker, a local build, each Ray worker)",
        minimum=16, cli=True, more="A photo that alone needs more is refused with a 413 that says so",
    ),
    Setting("FASHION_DECODE_SLOTS", "decode_slots", int, 2, "photos one process decodes at once", minimum=1, cli=True),
    Setting(
        "FASHION_DECODE_TIMEOUT_S", "decode_timeout_s", float, 10.0,
        "longest a shopper's photo may take to decode, in seconds: past it its decode process is stopped and "
        "the answer is 422",
        minimum=0.5,
        more="Each gunicorn worker decodes uploads in `FASHION_DECODE_SLOTS` processes of its own, each capped "
        "at `FASHION_DECODE_MEMORY_MB` by the operating system (see Architecture)",
    ),
    # the web app
    Setting(
        "FASHION_SHOP_NAME", "shop_name", str, "Visual search",
        "the shop's name, in every page's header and browser tab title", accepts="a name",
    ),
    Setting(
        "FASHION_QUEUE_TIMEOUT_S", "queue_timeout_s", float, 20.0,
        "longest wait for the model before a 503 + `Retry-After`, in seconds", minimum=0.0,
    ),
    Setting(
        "FASHION_REQUEST_DEADLINE_S", "request_deadline_s", float, 30.0,
        "a search's whole time limit in seconds, all its photos included: past it the work stops and the answer "
        "is 503 + `Retry-After`",
        minimum=1.0, more="Keep it well below the proxy's `proxy_read_timeout` (60 s in `deploy/nginx.conf`)",
    ),
    Setting(
        "FASHION_RESCAN_SECONDS", "rescan_s", int, 300,
        "how often the site checks the catalogue for changes, in seconds (0: never)", minimum=0,
    ),
    Setting("FASHION_METRICS", "metrics", bool, True, "`off` drops `/metrics` and the counting behind it"),
    Setting(
        "FASHION_METRICS_TOKEN", "metrics_token", str, "", "when set, `/metrics` needs `Authorization: Bearer <token>`",
        min_length=16, example="openssl rand -hex 16", secret=True, shown_default="unset",
    ),
    Setting(
        "FASHION_SECRET_KEY", "secret_key", str, "", "signs the vectors results pages carry for \"show more\"",
        min_length=32, example="openssl rand -hex 32", secret=True,
        shown_default="a random key kept in the index folder",
        more="Unset: the first worker writes a random one to `secret_key` in the index folder (mode 0600) and "
        "every worker shares it. Set it when several hosts serve one site, for example to `openssl rand -hex 32`",
    ),
    # gunicorn (read by gunicorn.conf.py)
    Setting(
        "BIND", "bind", str, None, "where gunicorn listens; overrides `HOST` and `PORT`",
        accepts="`host:port` or `unix:/path`", shown_default="`HOST`:`PORT`",
    ),
    Setting("HOST", None, str, "127.0.0.1", "the address gunicorn listens on (without `BIND`)", accepts="a host"),
    Setting("PORT", None, int, 8000, "the port gunicorn listens on (without `BIND`)", minimum=1, maximum=65535),
    Setting("FASHION_WORKERS", "workers", int, 2, "gunicorn worker processes", minimum=1),
    Setting(
        "FASHION_THREADS", "threads", int, 4,
        "threads per gunicorn worker for `GET` and `HEAD` requests: pages, images, status and health checks",
        minimum=1,
    ),
    Setting(
        "FASHION_SEARCH_THREADS", "search_threads", int, 2,
        "threads per gunicorn worker for searches (every other method)", minimum=1,
        more="Searches beyond them wait as connections, holding no thread, and the wait counts against "
        "`FASHION_QUEUE_TIMEOUT_S`; a page or a health check never waits behind a search (see Deployment)",
    ),
    Setting("FASHION_BACKLOG", "backlog", int, 64, "connections the kernel queues before refusing", minimum=1),
    Setting("FASHION_WORKER_TIMEOUT", "worker_timeout_s", int, 120, "gunicorn worker timeout, in seconds", minimum=1),
    Setting(
        "FASHION_ACCESS_LOG", "access_log", str, "-", "gunicorn's access log", accepts="`-` (stdout) or a file",
    ),
    Setting("FASHION_LOG_LEVEL", "log_level", str, "info", "gunicorn's log level", choices=LOG_LEVELS),
)

ENV: dict[str, Setting] = {s.name: s for s in SETTINGS}  # by variable name
FIELDS: dict[str, Setting] = {s.field: s for s in SETTINGS if s.field}  # by Settings field


def _default(field: str):
    return FIELDS[field].default


@dataclass(frozen=True)
class Settings:
    """Resolved configuration for one process. Defaults, ranges and help: ``SETTINGS`` above."""

    catalogue: Path
    index_dir: Path
    is_demo: bool = False  # no catalogue was given: the generated demo is used
    model: str = _default("model")  # see indexer/models
    weights: str = _default("weights")
    runtime: str = _default("runtime")
    top_k: int = _default("top_k")
    max_k: int = _default("max_k")
    max_upload_mb: int = _default("max_upload_mb")
    max_files: int = _default("max_files")
    annoy_trees: int = _default("annoy_trees")
    annoy_search_k: int = _default("annoy_search_k")
    search_candidates: int = _default("search_candidates")
    vectors: str = _default("vectors")
    colour_weight: float = _default("colour_weight")
    locate: bool = _default("locate")
    tuning: bool = _default("tuning")  # the catalogue-tuned projection (indexer/tuning.py)
    tuning_products: int = _default("tuning_products")
    batch_size: int = _default("batch_size")
    checkpoint_every: int = _default("checkpoint_every")
    thumb_size: int = _default("thumb_size")
    tf_threads: int = _default("tf_threads")
    decode_memory_mb: int = _default("decode_memory_mb")
    decode_slots: int = _default("decode_slots")
    decode_timeout_s: float = _default("decode_timeout_s")
    shop_name: str = _default("shop_name")
    queue_timeout_s: float = _default("queue_timeout_s")
    request_deadline_s: float = _default("request_deadline_s")
    rescan_s: int = _default("rescan_s")
    random_seed: int = 1234  # not a setting: the same random weights everywhere (FASHION_WEIGHTS=none)
    secret_key: str = dataclasses.field(default=_default("secret_key"), repr=False)
    metrics: bool = _default("metrics")
    metrics_token: str = dataclasses.field(default=_default("metrics_token"), repr=False)
    # gunicorn (read by gunicorn.conf.py)
    bind: str = f"{ENV['HOST'].default}:{ENV['PORT'].default}"
    workers: int = _default("workers")
    threads: int = _default("threads")
    search_threads: int = _default("search_threads")
    backlog: int = _default("backlog")
    worker_timeout_s: int = _default("worker_timeout_s")
    access_log: str = _default("access_log")
    log_level: str = _default("log_level")

    @classmethod
    def from_env(cls, env: dict | None = None, **overrides) -> Settings:
        """Build settings from ``env`` (default ``os.environ``) plus overrides.

        Overrides whose value is ``None`` are ignored, so CLI flags that were
        not given fall through to the environment. The others are checked
        against the same ranges and choices as the environment.
        """
        env = dict(os.environ if env is None else env)
        overrides = {k: v for k, v in overrides.items() if v is not None}

        values = {s.field: s.read(env) for s in SETTINGS if s.field}
        if values["bind"] is None:
            values["bind"] = f"{ENV['HOST'].read(env)}:{ENV['PORT'].read(env)}"
        for field, value in overrides.items():
            if field in FIELDS:
                if FIELDS[field].choices and isinstance(value, str):
                    overrides[field] = value = value.strip().lower()  # as the environment's are
                FIELDS[field].check(value)
        values.update(overrides)

        is_demo = False
        if values["catalogue"] is None:
            own = INSTANCE_DIR / "catalogue"
            if own.is_dir():
                values["catalogue"] = own
            else:
                values["catalogue"] = INSTANCE_DIR / "demo-catalogue"
                is_demo = True
        values["catalogue"] = Path(values["catalogue"]).expanduser().resolve()
        if values["index_dir"] is None:
            values["index_dir"] = default_index_dir(values["catalogue"])
        values["index_dir"] = Path(values["index_dir"]).expanduser().resolve()
        values["is_demo"] = is_demo
        if values["top_k"] > values["max_k"]:
            top_k = FIELDS["top_k"]
            accepted = f"a whole number from {top_k.minimum} to FASHION_MAX_K ({values['max_k']})"
            raise top_k.refused(values["top_k"], accepted)
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


def index_dir_for(catalogue: Path) -> Path:
    """The index folder of ``catalogue`` when FASHION_INDEX_DIR is unset: ``INDEX_ROOT/<name>-<hash>``.

    The name is the catalogue folder's (for people), the hash the first 8 hex
    digits of the SHA-256 of its resolved path (two folders of one name apart).
    """
    resolved = Path(catalogue).expanduser().resolve()
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", resolved.name).strip("._") or "catalogue"
    digest = hashlib.sha256(str(resolved).encode("utf-8")).hexdigest()[:8]
    return INDEX_ROOT / f"{name}-{digest}"


def default_index_dir(catalogue: Path) -> Path:
    """Where ``catalogue``'s index lives when FASHION_INDEX_DIR is unset.

    Its own folder (``index_dir_for``), except on an install from before
    catalogues had their own folders: an index of this catalogue published
    straight into ``instance/index`` keeps serving there (never re-embedded)
    while its own folder does not exist.
    """
    own = index_dir_for(catalogue)
    if not own.exists() and (INDEX_ROOT / "current").is_symlink():
        from .index_dirs import index_catalogue

        if index_catalogue(INDEX_ROOT) == str(Path(catalogue).expanduser().resolve()):
            return INDEX_ROOT
    return own


def tf_threads_per_worker(workers: int) -> int:
    """Model threads gunicorn.conf.py gives each worker when FASHION_TF_THREADS is unset: the cores shared out."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


# ---- documentation drawn from SETTINGS


def markdown_table() -> str:
    """README.md's Configuration table, one row per setting (ends with a newline)."""
    rows = ["| variable | default | accepts | meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        cells = (f"`{s.name}`", s.default_text(markdown=True), s.accepted(markdown=True), s.meaning())
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


def cli_epilog(width: int = 100) -> str:
    """The settings ``python -m indexer`` reads, for its ``--help``: name, help, [accepted values; default]."""
    shown = [s for s in SETTINGS if s.cli]
    column = max(len(s.name) for s in shown) + 4
    lines = ["settings, from the environment (python -m indexer.config lists them all, the site's included):"]
    for s in shown:
        text = f"{_plain(s.help)} [{s.accepted(short=True)}; default {s.default_text()}]"
        lines.extend(
            textwrap.wrap(
                text, width=width, initial_indent=f"  {s.name}".ljust(column), subsequent_indent=" " * column,
                break_on_hyphens=False,
            )
        )
    return "\n".join(lines)


_README_TABLE = re.compile(r"^\| variable \|.*\n(?:\|.*\n)*", re.MULTILINE)


def readme_with_table(readme: str) -> str:
    """``readme`` with its Configuration table replaced by ``markdown_table()``."""
    section = readme.index("## Configuration")
    match = _README_TABLE.search(readme, section)
    if match is None:
        raise ValueError("README.md has no settings table (a line starting '| variable |') under ## Configuration")
    return readme[: match.start()] + markdown_table() + readme[match.end() :]


def main(argv: list[str] | None = None) -> int:
    """``python -m indexer.config``: print the README's settings table, or put it in README.md."""
    parser = argparse.ArgumentParser(
        prog="python -m indexer.config", description="Print README.md's settings table, drawn from SETTINGS."
    )
    parser.add_argument("--write-readme", action="store_true", help=f"replace the table in {README.name} in place")
    args = parser.parse_args(argv)
    if args.write_readme:
        README.write_text(readme_with_table(README.read_text(encoding="utf-8")), encoding="utf-8")
        print(f"updated the settings table in {README}", file=sys.stderr)
    else:
        sys.stdout.write(markdown_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
