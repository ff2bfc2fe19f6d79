"""Command line for the indexer: ``python -m indexer --help``.

Every command prints one JSON document on stdout and nothing else: while a
command runs, anything else that writes to stdout (Keras' "Downloading data
from ..." line) is sent to stderr with the logs, so the output can be piped
into ``python -m json.tool`` or ``jq``. Arguments, paths and labels are
checked before any model loads: a mistake costs well under a second, exit
code 2 and a message that says what to do, and creates nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path

from .config import INSTANCE_DIR, ConfigError, Settings, cli_epilog
from .model import WeightsError

log = logging.getLogger("indexer")


class UsageError(ValueError):
    """A command-line value the command cannot use; the message says what to do instead."""


def _settings(args) -> Settings:
    settings = Settings.from_env(catalogue=args.catalogue, index_dir=args.index_dir)
    if settings.catalogue.exists() and not settings.catalogue.is_dir():
        raise UsageError(f"{settings.catalogue} is a file, not a folder: give the folder that holds the photos.")
    from .images import configure_decode_budget

    configure_decode_budget(settings.decode_budget_bytes, settings.decode_slots)
    return settings


def _require_catalogue(settings: Settings) -> None:
    if not settings.is_demo and not settings.catalogue.is_dir():
        raise UsageError(
            f"The catalogue folder {settings.catalogue} does not exist. Point --catalogue (or FASHION_CATALOGUE) "
            "at the folder that holds the product photos, or set neither to use the demo catalogue."
        )


def _require_index(settings: Settings) -> dict:
    """The current generation's manifest, read once for the checks below; a usage error without an index."""
    from .generation import current_generation, read_manifest

    gen = current_generation(settings.index_dir)
    if gen is None:
        raise UsageError(
            f"There is no index yet in {settings.index_dir}: run `python -m indexer build` first"
            + ("" if settings.is_demo else f" (catalogue: {settings.catalogue}).")
        )
    return read_manifest(gen)


def _require_same_catalogue(settings: Settings, manifest: dict, verb: str = "Search") -> None:
    built_for = manifest.get("catalogue")
    if built_for != str(settings.catalogue):
        raise UsageError(
            f"The index in {settings.index_dir} belongs to the catalogue {built_for}, not {settings.catalogue}. "
            f"{verb} that one with --catalogue {built_for}, or index this one first: python -m indexer build."
        )


def _require_same_tuning(settings: Settings, manifest: dict) -> None:
    """The index must be tuned as ``FASHION_TUNING`` says, or it is not what the site would serve."""
    tuned = bool(manifest.get("tuning"))
    if tuned != settings.tuning:
        built, wanted = ("on", "off") if tuned else ("off", "on")
        raise UsageError(
            f"The index in {settings.index_dir} was published with FASHION_TUNING={built}, but it is {wanted} here, "
            f"so the site would publish it again before serving it. Run python -m indexer build first "
            f"(it embeds nothing), or set FASHION_TUNING={built}."
        )


@contextlib.contextmanager
def _flag_errors():
    """A bad option value as a usage error naming its flag, with the message the site gives for it."""
    from .options import BadQuery

    try:
        yield
    except BadQuery as exc:
        flag = f"--{exc.field.replace('_', '-')}: " if exc.field else ""
        raise UsageError(flag + exc.message) from None


def _embedder(settings: Settings):
    from .runtimes import load_for_settings

    # tests look for this line: a command that fails or has nothing to do never logs it
    log.info("Loading the model (%s, FASHION_RUNTIME=%s)", settings.model, settings.runtime)
    _quiet_tensorflow()
    return load_for_settings(settings)


def _expected_key(settings: Settings) -> dict:
    """The model key the settings' model would give, without loading it (``plan.model_key``).

    TensorFlow and every fp32 runtime share the ``fp32`` vector space; only
    ``openvino-int8`` has its own (named by its calibration), so for it the
    vector space is left out here and checked once the model is loaded.
    """
    from .plan import key_for

    key = key_for(_weights_choice(settings))
    if settings.runtime == "openvino-int8":
        key.pop("vector_space")
    return key


def _require_same_model(settings: Settings, manifest: dict) -> None:
    """The index must hold the vectors of the settings' model and weights, or a query cannot be compared with them."""
    differ = [name for name, value in _expected_key(settings).items() if manifest.get(name) != value]
    if differ:
        built = ", ".join(f"{name} {manifest.get(name)}" for name in differ)
        raise UsageError(
            f"The index in {settings.index_dir} was built with {built}, not what FASHION_MODEL={settings.model}, "
            f"FASHION_WEIGHTS={settings.weights} and FASHION_RUNTIME={settings.runtime} give here: run python -m "
            "indexer build first, or set them as they were for that build."
        )


def _ensure_catalogue(settings: Settings) -> None:
    if settings.is_demo:
        from .demo import generate_demo_catalogue

        log.info("FASHION_CATALOGUE is not set: using the demo catalogue in %s", settings.catalogue)
        generate_demo_catalogue(settings.catalogue)


def cmd_build(args, full: bool = False) -> int:
    """Build (incrementally) or rebuild the index."""
    from .build import build_index

    settings = _settings(args)
    _require_catalogue(settings)
    _ensure_catalogue(settings)
    engine = getattr(args, "engine", "local")
    options = {"address": args.address} if engine == "ray" else None
    if engine == "ray" and args.address:
        from .engines.ray_data import check_reachable

        try:  # before anything else: Ray itself would retry an unreachable head for minutes
            check_reachable(args.address)
        except ConnectionError as exc:
            raise UsageError(str(exc)) from None
    vectors = getattr(args, "vectors", None)
    early = None
    if not full and not getattr(args, "retune", False) and not vectors and settings.runtime != "openvino-int8":
        from .build import check_before_model

        # nothing to do is decided before the model loads (seconds), from the key it would give;
        # otherwise the build goes on with what it read
        unchanged, early = check_before_model(settings, _weights_choice(settings), lock_timeout=2)
        if unchanged is not None:
            return _print_build_report(args, unchanged)
    if engine == "ray" and settings.runtime == "tensorflow":
        # the actors load the model; the driver only needs to know which weights
        from .model import resolve_weights

        model = resolve_weights(settings.weights, settings.random_seed, settings.model)
    else:
        model = _embedder(settings)
    # a short wait lets a web worker's status probe of the lock pass
    report = build_index(
        settings, model, full=full, engine=engine, engine_options=options, lock_timeout=2,
        retune=getattr(args, "retune", False), vectors=vectors, early=early,
    )
    return _print_build_report(args, report)


def _print_build_report(args, report) -> int:
    for item in report.skipped:
        log.warning("skipped %s: %s: %s", item.relpath, item.reason, item.message)
    _print_json(args, dict(report.to_dict(), summary=report.summary()))
    return 0


def cmd_search(args) -> int:
    """Search with one photo through the site's query pipeline and print the results as JSON."""
    from .models import get_spec
    from .options import from_arguments
    from .plan import key_for
    from .query import QueryPipeline, decode_photo
    from .search import Searcher

    settings = _settings(args)
    with _flag_errors():
        options = from_arguments(
            settings, k=args.k, crop=args.crop, locate=not args.no_locate, colour_weight=args.colour_weight
        )
    if not args.image.is_file():
        raise UsageError(f"{args.image} is not a file: give the path of a photo to search with.")
    manifest = _require_index(settings)
    _require_same_catalogue(settings, manifest)
    _require_same_model(settings, manifest)
    _require_same_tuning(settings, manifest)
    # decoded before the model loads (a bad photo costs no model load): the size comes from the spec
    size = get_spec(settings.model).input_size
    photo = decode_photo(args.image.read_bytes(), args.image.name, options.crop_for(0), size=size)
    embedder = _embedder(settings)
    pipeline = QueryPipeline(embedder, Searcher.for_settings(settings, expect=key_for(embedder)))
    (result,), _ = pipeline.search_photos([photo], options)
    results = []
    for ranked in result.results:
        hit = ranked.hit
        entry = dict(pipeline.searcher.describe(hit.row), distance=round(hit.distance, 6))
        score = ranked.match.score
        match = {"score": None if score is None else round(score, 2), "label": ranked.match.label}
        entry.update(similarity=round(hit.similarity, 6), match=match)
        if hit.score is not None:
            entry.update(colour_similarity=round(hit.colour_similarity, 6), score=round(hit.score, 6))
        results.append(entry)
    _print_json(args, {
        "query": str(args.image),
        "k": options.k,
        "colour_weight": options.colour_weight,
        "locate": options.locate,
        "box": [round(v, 4) for v in result.box],
        "located": result.located,
        "results": results,
    })
    return 0


def _print_json(args, payload) -> None:
    """Write ``payload`` to the real stdout (the command's own stdout goes to stderr)."""
    args.stdout.write(json.dumps(payload, indent=2) + "\n")
    args.stdout.flush()


def cmd_evaluate(args) -> int:
    """Leave-one-out precision@k by a label, and Annoy recall@k vs exact search."""
    from .evaluate import compare_indexes, evaluate
    from .options import check_colour_weight, check_k
    from .plan import key_for
    from .search import Searcher

    settings = _settings(args)
    with _flag_errors():
        k = check_k(args.k, 5, settings.max_k)
        colour_weight = check_colour_weight(args.colour_weight, settings.colour_weight)
    if args.sample < 0:
        raise UsageError(f"--sample must be 0 (every item) or more; got {args.sample}.")
    manifest = _require_index(settings)
    _require_same_catalogue(settings, manifest, verb="Evaluate")
    _require_same_tuning(settings, manifest)
    against = Path(args.against).expanduser().resolve() if args.against else None
    if against is not None:
        _require_index(settings.replace(index_dir=against))
    # no query is embedded here, so any vector space (fp32 or INT8) can be evaluated
    expect = {key: value for key, value in key_for(_weights_choice(settings)).items() if key != "vector_space"}
    # measure what the web app serves: the same Annoy effort and candidate pool
    searcher = Searcher.for_settings(settings, expect=None if args.any_weights else expect)
    columns = sorted(searcher.metadata.fields)
    if args.label not in columns:
        raise UsageError(
            f"No item has a {args.label!r} label. Labels in this catalogue's styles.csv: "
            + (", ".join(columns) if columns else "none (add a styles.csv to the catalogue folder)")
            + "."
        )
    result = evaluate(searcher, label=args.label, k=k, sample=args.sample, colour_weight=colour_weight)
    if against is not None:
        other = Searcher.for_settings(settings, against)
        result["against"] = dict(
            compare_indexes(searcher, other, k=k),
            index_dir=str(args.against),
            precision_at_k=evaluate(other, label=args.label, k=k, sample=args.sample)["precision_at_k"],
        )
    _print_json(args, result)
    return 0


def _weights_choice(settings: Settings):
    from .model import resolve_weights

    if settings.model == "resnet50" and settings.weights.strip().lower() in ("auto", "imagenet"):
        _quiet_tensorflow()  # looking for ResNet50's ImageNet weights loads Keras
    return resolve_weights(settings.weights, settings.random_seed, settings.model)


def cmd_runtime(args) -> int:
    """Prepare ``FASHION_RUNTIME`` (convert, check and cache the model if needed) and print what runs it."""
    settings = _settings(args)
    if settings.runtime == "openvino-int8":  # calibration reads catalogue photos
        _require_catalogue(settings)
        _ensure_catalogue(settings)
    embedder = _embedder(settings)
    _print_json(args, {
        "requested": settings.runtime,
        "runtime": embedder.runtime,
        "vector_space": embedder.vector_space,
        "model": embedder.choice.model,
        "weights_id": embedder.weights_id,
        "model_dir": getattr(getattr(embedder, "resolved", None), "model_dir", None),
    })
    return 0


def cmd_status(args) -> int:
    """List the index folders (catalogue, items, size, last built, in use), or remove an unused one."""
    from . import config
    from .index_dirs import IndexDirError, remove, status

    settings = _settings(args)
    try:
        if args.remove:
            payload = remove(Path(args.remove), settings, config.INDEX_ROOT)
        else:
            payload = status(settings, config.INDEX_ROOT)
    except IndexDirError as exc:
        raise UsageError(str(exc)) from None
    _print_json(args, payload)
    return 0


def cmd_demo(args) -> int:
    """Generate the demo catalogue."""
    from .demo import generate_demo_catalogue

    out = Path(args.out) if args.out else INSTANCE_DIR / "demo-catalogue"
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file: --out names the folder the demo images go in")
    count = generate_demo_catalogue(out)
    log.info("%d demo images in %s", count, out.resolve())
    _print_json(args, {"images": count, "folder": str(out.resolve())})
    return 0


def make_parser() -> argparse.ArgumentParser:
    """The argparse parser with every subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--catalogue", help="folder of product images (default: $FASHION_CATALOGUE)")
    common.add_argument(
        "--index-dir",
        help="where the artifacts live (default: $FASHION_INDEX_DIR, else the catalogue's folder in instance/index)",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    parser = argparse.ArgumentParser(
        prog="python -m indexer",
        description="Index a folder of product photos for visual search, and query the index.",
        # drawn from indexer/config.py's SETTINGS, like README.md's table
        epilog=cli_epilog(width=max(60, min(100, shutil.get_terminal_size().columns - 2))),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name, help_text in (
        ("build", "embed new or changed images and update the index (incremental, resumable)"),
        ("rebuild", "re-embed every image and rebuild the index from scratch"),
    ):
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.add_argument("--engine", choices=("local", "ray"), default="local", help="where to embed (default: local)")
        p.add_argument("--address", help="Ray cluster address (with --engine ray); default: start a local instance")
        p.add_argument(
            "--vectors", choices=("float16", "float32"),
            help="store the vectors in this dtype, publishing again if the index holds another "
            "(else the index keeps its own; FASHION_VECTORS only sets a first build's)",
        )
        if name == "build":
            p.add_argument(
                "--retune", action="store_true",
                help="learn the catalogue tuning again (else kept while under 10%% of the catalogue changed)",
            )

    p = sub.add_parser("search", parents=[common], help="print the nearest catalogue items to IMAGE as JSON")
    p.add_argument("image", type=Path, help="query image file")
    p.add_argument("--k", help="number of results (default: FASHION_TOP_K)")
    p.add_argument("--crop", metavar="X,Y,W,H", help="search this part of the photo (fractions), as the crop tool does")
    p.add_argument("--no-locate", action="store_true", help="search the whole photo; do not find the product in it")
    p.add_argument(
        "--colour-weight", metavar="W", help="share of colour in the score, 0 to 1 (default: FASHION_COLOUR_WEIGHT)"
    )

    p = sub.add_parser(
        "evaluate", parents=[common], help="leave-one-out precision@k by a styles.csv label, and Annoy recall@k (JSON)"
    )
    p.add_argument("--label", default="articleType", help="styles.csv column to judge by (default articleType)")
    p.add_argument("--k", default="5", help="neighbours per query (default 5)")
    p.add_argument("--sample", type=int, default=0, help="evaluate on this many random items (default: all)")
    p.add_argument(
        "--colour-weight",
        metavar="W",
        help="share of colour in the score, 0 to 1 (default: FASHION_COLOUR_WEIGHT, as the site ranks; 0: shape alone)",
    )
    p.add_argument("--any-weights", action="store_true", help="accept an index built with other weights")
    p.add_argument(
        "--against",
        metavar="INDEX_DIR",
        help="another index of the same catalogue (e.g. built with FASHION_RUNTIME=openvino-int8): "
        "report its precision@k and its top-k agreement with this one",
    )

    p = sub.add_parser(
        "runtime", parents=[common], help="convert, check and cache the model for FASHION_RUNTIME; print the result"
    )

    p = sub.add_parser(
        "status", parents=[common],
        help="list the index folders in instance/index: catalogue, items, size, last built, which one is in use",
    )
    p.add_argument(
        "--remove", metavar="FOLDER", help="remove this index folder (not the one in use; only inside instance/index)"
    )

    p = sub.add_parser("demo", parents=[common], help="generate the demo catalogue (deterministic, Pillow only)")
    p.add_argument("--out", help="output folder (default instance/demo-catalogue)")
    return parser


def _quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ start-up lines (oneDNN notices, CPU feature hints) unless asked for."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # absl writes "All log messages before absl::InitializeLog() ..." and the
    # oneDNN notice straight to fd 2 while TensorFlow loads, whatever the
    # level; hide fd 2 for the import only, so real errors still show.
    if "tensorflow" in sys.modules or log.isEnabledFor(logging.DEBUG):  # -v shows everything
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                import tensorflow  # noqa: F401
            finally:
                os.dup2(saved, 2)
    except ImportError:
        pass  # reported properly when the command needs the model
    finally:
        os.close(saved)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    args = make_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    args.stdout = sys.stdout
    from .build import BuildInProgress
    from .generation import ArtifactError
    from .images import ImageError
    from .runtimes import RuntimeUnavailable

    handlers = {
        "build": cmd_build,
        "rebuild": lambda a: cmd_build(a, full=True),
        "search": cmd_search,
        "evaluate": cmd_evaluate,
        "demo": cmd_demo,
        "runtime": cmd_runtime,
        "status": cmd_status,
    }
    try:
        # only the JSON answer goes to the real stdout (args.stdout)
        with contextlib.redirect_stdout(sys.stderr):
            return handlers[args.command](args)
    except (
        UsageError, WeightsError, ConfigError, RuntimeUnavailable, BuildInProgress, ArtifactError, ImageError
    ) as exc:
        log.error("%s", exc)
        return 2
    except FileNotFoundError as exc:
        missing = exc.filename if exc.filename else exc
        log.error("%s: not found. Check the path (--catalogue, --index-dir or the image).", missing)
        return 2
    except OSError as exc:  # a permission, a full disk, a file where a folder should be
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("Interrupted; finished work is checkpointed and the next build resumes from it.")
        return 130


if __name__ == "__main__":
    sys.exit(main())
