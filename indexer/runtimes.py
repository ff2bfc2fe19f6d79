"""Which engine executes the Keras model: TensorFlow, or OpenVINO (fp32 or INT8).

Keras (``model.Embedder``) stays the definition of the model. OpenVINO runs
a conversion of its exact compiled forward function (uint8 input, the
model's preprocessing, the backbone, its pooling and the L2 step, and the
activation map beside the vectors), faster on a CPU and without TensorFlow
in memory.

A converted model is cached in ``<index dir>/models/<variant>-<key>/``, keyed
by the model's whole spec (id, pooling, detail layer), the weights id and the SHA-256 of the weights file, the
preprocessing version and the OpenVINO version, so later starts load it
without building the Keras model (web workers then never import
TensorFlow). Every conversion is checked against TensorFlow on a few fixed
images, and so is every load from the cache; a model that fails falls back
to TensorFlow with a warning. The entry's ``meta.json`` names the weights it
was made from and the SHA-256 of each of its files: an entry whose files
were swapped for another conversion (which would pass the load check
against its own stored vectors) is refused and converted again.

``FASHION_RUNTIME``:

* ``auto``: OpenVINO fp32 when it is installed and its check passes,
  TensorFlow otherwise;
* ``tensorflow``; ``openvino`` (fp32);
* ``openvino-int8``: post-training INT8 quantisation (NNCF) calibrated on
  images drawn deterministically from the catalogue. Its vectors are close
  to, not equal to, fp32 ones, so an INT8 index is its own vector space.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
from filelock import FileLock

from .checksums import sha256_file
from .config import RUNTIMES
from .embedder import Embedder
from .images import INPUT_SIZE, PREPROCESS_VERSION
from .model import WeightsChoice

log = logging.getLogger(__name__)

TENSORFLOW, OPENVINO, OPENVINO_INT8 = "tensorflow", "openvino", "openvino-int8"
FP32 = "fp32"  # the vector space of TensorFlow and every fp32 runtime
CACHE_DIR = "models"  # under the index dir
FP32_TOLERANCE = 1e-5  # max abs difference from TensorFlow, per vector component
INT8_NORM_TOLERANCE = 1e-3  # INT8 vectors must still be unit vectors
# and point where TensorFlow's do, typically: EfficientNet-Lite's depthwise convolutions
# quantise less exactly than ResNet50 (median cosine 0.98 on catalogue photos, a few
# near 0.85) while retrieval keeps its precision (BENCHMARKS.md); a broken model is far below
INT8_MIN_MEDIAN_COSINE = 0.95
# and no image far off; the median is what tells a broken model: other images' vectors sit near 0.5
# (median over fashion-dev pairs), a few of the most alike above 0.85
INT8_MIN_COSINE = 0.75
# part of the cache key: entries judged by an older check, or with other outputs, are converted and judged again
# 5: the second output is the whole last feature layer, not its mean over channels;
# 6: the second is the map layer (Lite0's detail layer), the third the last layer's mean over channels
CHECK_VERSION = 6
INT8_CHECK_PHOTOS = 16  # catalogue photos (from the calibration sample) checked beside the fixed images
CALIBRATION_IMAGES = 300
# the converted forward function's outputs, as model.Embedder's forward function returns them
VECTORS_OUTPUT, FEATURES_OUTPUT, MAP_OUTPUT = 0, 1, 2
META = "meta.json"
MODEL_XML = "model.xml"
REFERENCE = "reference.npy"  # TensorFlow's vectors of the check images
CHECK_BATCH = "check_images.npy"  # INT8: the fixed images and the catalogue photos it was checked on


class RuntimeUnavailable(RuntimeError):
    """An explicitly requested runtime is not installed or cannot be prepared."""


@dataclass(frozen=True)
class ResolvedRuntime:
    """The runtime a process actually uses (plain values: shipped to Ray actors)."""

    name: str  # tensorflow | openvino | openvino-int8
    vector_space: str = FP32  # fp32, or int8-<calibration id>
    model_dir: str | None = None  # the cache entry of a converted model

    @property
    def converted(self) -> bool:
        """True for an OpenVINO model loaded from the cache."""
        return self.model_dir is not None


TENSORFLOW_RUNTIME = ResolvedRuntime(TENSORFLOW)


def openvino_version() -> str | None:
    """The installed OpenVINO version, without importing it; ``None`` when absent."""
    if importlib.util.find_spec("openvino") is None:
        return None
    try:
        return metadata.version("openvino")
    except metadata.PackageNotFoundError:
        return None


def validate(runtime: str) -> str:
    """Normalise a ``FASHION_RUNTIME`` value; raises ``ValueError`` for unknown ones."""
    value = (runtime or "auto").strip().lower()
    if value not in RUNTIMES:
        raise ValueError(f"FASHION_RUNTIME must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    return value


def cache_root(index_dir: Path) -> Path:
    """Where converted models are kept: next to the index they serve."""
    return Path(index_dir) / CACHE_DIR


def weights_digest(choice: WeightsChoice) -> str:
    """SHA-256 of the weights file ``choice`` builds its model from (its weights id for random weights).

    The weights id alone says ``imagenet`` whatever file Keras has cached;
    the digest follows the bytes.
    """
    if choice.source is None:
        return choice.weights_id
    path = Path(choice.source)
    stat = path.stat()
    return _file_digest(str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)


@functools.lru_cache(maxsize=8)
def _file_digest(path: str, size: int, mtime_ns: int, inode: int) -> str:
    # keyed by the file's identity, so a replaced file is hashed again
    return sha256_file(Path(path))


def cache_entry(root: Path, choice: WeightsChoice, variant: str, version: str) -> Path:
    """The cache folder of one converted model: weights, preprocessing, model and runtime version.

    The model is keyed by its whole spec, not its id alone: its pooling, detail
    layer and weights are in the converted graph.
    """
    parts = [
        dataclasses.asdict(choice.spec),
        choice.weights_id,
        weights_digest(choice),
        PREPROCESS_VERSION,
        "openvino",
        version,
        variant,
        CHECK_VERSION,
    ]
    key = json.dumps(parts)
    return Path(root) / f"{variant}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def check_images(size: int = INPUT_SIZE) -> np.ndarray:
    """Four fixed uint8 images: two seeded noise images and two smooth gradients.

    ``size`` x ``size``, the model's input size. The same images for a given
    size, so vectors stored beside a converted model can be compared again
    on every load.
    """
    rng = np.random.default_rng(20240611)
    noise = rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    first = np.stack([ramp[None, :].repeat(size, 0), ramp[:, None].repeat(size, 1), 255 - ramp[None, :]
                      .repeat(size, 0)], axis=-1)
    second = np.full((size, size, 3), 245.0, dtype=np.float32)  # a dark square on white, like a product
    # in 224ths of the side: rows 56-168, columns 70-154 at 224, as the check was recorded
    second[round(size * 56 / 224) : round(size * 168 / 224), round(size * 70 / 224) : round(size * 154 / 224)] = (
        40, 60, 120
    )
    return np.concatenate([noise, np.stack([first, second]).astype(np.uint8)])


@dataclass(frozen=True)
class CheckResult:
    """How a converted model's vectors compare with TensorFlow's on the check images."""

    max_abs_diff: float
    min_cosine: float
    max_norm_error: float
    passed: bool
    median_cosine: float = float("nan")  # absent from entries cached before it was recorded

    def describe(self) -> str:
        """One line for the log."""
        return (
            f"max abs diff {self.max_abs_diff:.2e}, cosine min {self.min_cosine:.6f} median {self.median_cosine:.6f}, "
            f"norm error {self.max_norm_error:.2e}"
        )


def compare(vectors: np.ndarray, reference: np.ndarray, int8: bool) -> CheckResult:
    """Judge ``vectors`` against TensorFlow's: within 1e-5 for fp32; unit length and aligned for INT8."""
    diff = float(np.abs(vectors - reference).max())
    cosines = (vectors * reference).sum(axis=1)
    norm_error = float(np.abs(np.linalg.norm(vectors, axis=1) - 1.0).max())
    if int8:
        passed = (
            norm_error <= INT8_NORM_TOLERANCE
            and float(np.median(cosines)) >= INT8_MIN_MEDIAN_COSINE
            and float(cosines.min()) >= INT8_MIN_COSINE
        )
    else:
        passed = diff <= FP32_TOLERANCE
    finite = bool(np.isfinite(vectors).all())
    return CheckResult(diff, float(cosines.min()), norm_error, finite and passed, float(np.median(cosines)))


# ---------------------------------------------------------------- the OpenVINO embedder


def compile_config(threads: int) -> dict:
    """OpenVINO CPU settings for a shared machine: one stream, no pinning, fp32 arithmetic.

    The fp32 hint matters: on CPUs with bf16 support OpenVINO would otherwise
    compute in bf16 (about 6e-4 away from TensorFlow instead of 2e-7).
    """
    return {
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "INFERENCE_NUM_THREADS": threads if threads > 0 else (os.cpu_count() or 1),
        "ENABLE_CPU_PINNING": False,
        "INFERENCE_PRECISION_HINT": "f32",
    }


class OpenVinoEmbedder:
    """A converted model with the ``indexer.embedder.Embedder`` interface, no TensorFlow needed."""

    def __init__(self, choice: WeightsChoice, resolved: ResolvedRuntime, threads: int = 0):
        import openvino as ov

        self.choice = choice
        self.weights_id = choice.weights_id
        self.spec = choice.spec
        self.name = self.spec.name
        self.model_id = self.spec.model_id
        self.dim = self.spec.dim
        self.input_size = self.spec.input_size  # the converted graph's input shape: the Keras model's
        self.resolved = resolved
        self.runtime = resolved.name
        self.vector_space = resolved.vector_space
        core = ov.Core()
        self._compiled = core.compile_model(Path(resolved.model_dir) / MODEL_XML, "CPU", compile_config(threads))
        # one infer request per thread: a request is not thread-safe, and the
        # web app's build thread embeds while request threads search
        self._local = threading.local()
        self._warm_lock = threading.Lock()
        self._warm = False

    def _request(self):
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        return request

    def warm_up(self) -> None:
        """Run one image so that the first real request is not slow."""
        with self._warm_lock:
            if not self._warm:
                size = self.input_size
                self.embed(np.full((1, size, size, 3), 255, dtype=np.uint8))
                self._warm = True

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Embed ``(n, size, size, 3)`` uint8 images to ``(n, dim)`` float32 unit vectors."""
        return self._infer(batch, VECTORS_OUTPUT)[0]

    def embed_with_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectors as ``embed`` gives them, and each image's activation map, from the same pass.

        The same outputs as ``model.Embedder.embed_with_maps``: the map is the
        last feature layer's mean over channels, computed in the converted model.
        """
        return self._infer(batch, VECTORS_OUTPUT, MAP_OUTPUT)

    def embed_with_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectors and the map layer (``(n, h, w, channels)``), as ``model.Embedder`` gives them."""
        return self._infer(batch, VECTORS_OUTPUT, FEATURES_OUTPUT)

    def _infer(self, batch: np.ndarray, *outputs: int) -> tuple[np.ndarray, ...]:
        if batch.ndim == 3:
            batch = batch[None]
        request = self._request()
        request.infer({0: np.ascontiguousarray(batch, dtype=np.uint8)})
        return tuple(np.array(request.get_output_tensor(i).data, dtype=np.float32, copy=True) for i in outputs)

    def embed_one(self, image: np.ndarray) -> np.ndarray:
        """Embed one ``(size, size, 3)`` uint8 image to a ``(dim,)`` unit vector."""
        return self.embed(image[None])[0]


# ---------------------------------------------------------------- conversion and the cache


# ops that only move or retype a tensor: the converted feature layer output may pass through them
_LAYOUT_OPS = ("Transpose", "Convert", "Reshape")
# the activations the backbone's layers end in (ReLU6, ReLU): a pooled layer's own last op
_ACTIVATIONS = ("Clamp", "Relu")


def _feature_layer_names(model) -> set[str]:
    """The feature layer output's source op (the backbone's) and any layout ops between it and the output."""
    names: set[str] = set()
    op = model.get_results()[FEATURES_OUTPUT].input_value(0).get_node()
    while True:
        names.add(op.get_friendly_name())
        if op.get_type_name() not in _LAYOUT_OPS:
            return names
        op = op.input_value(0).get_node()


def _map_layout_op_names(model) -> list[str]:
    """The layout ops around the feature layer output: kept in float for INT8.

    When that layer is also an inner layer (Lite0's detail layer), the
    converted graph turns it to the output's layout and back for the next
    layer; a quantizer placed between the two would meet the wrong axis.
    """
    ops = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    layout = [name for name in _feature_layer_names(model) if ops[name].get_type_name() in _LAYOUT_OPS]
    turned_back = [
        target.get_node().get_friendly_name()
        for name in layout
        for target in ops[name].output(0).get_target_inputs()
        if target.get_node().get_type_name() in _LAYOUT_OPS
    ]
    return sorted(set(layout + turned_back))


def _head_op_names(model) -> list[str]:
    """Names of the ops between the pooled feature layers and each output: kept in float for INT8.

    For the vectors that is the global pooling (with a generalised mean, the
    powers on either side of its reduction; with a detail layer, both
    layers' pooling and the join) and the L2 steps, found by walking up from
    the output to the layers pooled (the feature layer, or an activation
    the backbone ends a layer with), so the order OpenVINO lists ops in
    does not matter. The feature layer output has no head: it is one of
    the network's own layers (the map layer).
    """
    stop = _feature_layer_names(model)
    names: list[str] = []
    for number, result in enumerate(model.get_results()):
        if number == FEATURES_OUTPUT:
            continue
        pending = [result.input_value(0).get_node()]
        while pending:
            op = pending.pop()
            kind, name = op.get_type_name(), op.get_friendly_name()
            if kind in ("Constant", *_ACTIVATIONS) or name in names or name in stop:
                continue
            if kind == "Parameter":
                raise ValueError(f"output {result.get_friendly_name()} is not computed from a pooled feature map")
            names.append(name)
            pending.extend(value.get_node() for value in op.input_values())
    return names


def calibration_sample(
    catalogue: Path, count: int = CALIBRATION_IMAGES, size: int = INPUT_SIZE
) -> tuple[list[np.ndarray], str]:
    """Up to ``count`` decodable catalogue images, evenly spaced in path order, and an id of the set.

    Each is decoded for a model whose input size is ``size``. Deterministic:
    the same catalogue always gives the same images.
    """
    from .catalogue import scan
    from .images import ImageError, load_for_model

    files = scan(catalogue)
    if not files:
        raise RuntimeUnavailable(f"INT8 calibration needs catalogue images; {catalogue} has none")
    picks = np.unique(np.linspace(0, len(files) - 1, min(count, len(files))).round().astype(int))
    images, used = [], []
    for row in picks:
        item = files[int(row)]
        try:
            images.append(load_for_model(Path(catalogue) / item.relpath, size))
        except (ImageError, OSError):
            continue  # a corrupt file is skipped by the build too
        used.append(f"{item.relpath}\0{item.size}")
    digest = hashlib.sha256("\n".join(used).encode()).hexdigest()[:12]
    return images, digest


def _quantize(model, images: list[np.ndarray]):
    """NNCF post-training INT8 quantisation, with the head after pooling (and the map layer's layout) in float."""
    import nncf

    dataset = nncf.Dataset(images, lambda image: image[None])
    return nncf.quantize(
        model,
        dataset,
        subset_size=len(images),
        ignored_scope=nncf.IgnoredScope(names=_head_op_names(model) + _map_layout_op_names(model)),
    )


def convert(reference, *, calibration: list[np.ndarray] | None = None):
    """Convert a TensorFlow ``model.Embedder``'s forward function to an OpenVINO model (INT8 with ``calibration``).

    The function's input signature is the model's ``input_size`` square, so
    the converted model takes the same shape.
    """
    import openvino as ov

    model = ov.convert_model(reference.forward_function)
    if calibration is not None:
        model = _quantize(model, calibration)
    return model


def _write_entry(
    entry: Path, model, meta: dict, reference_vectors: np.ndarray, images: np.ndarray | None
) -> dict[str, str]:
    """Save model, meta, reference vectors (and INT8's check images) into ``entry`` atomically (one folder rename).

    Returns the SHA-256 of each file, as ``meta.json`` records them.
    """
    import openvino as ov

    for stale in entry.parent.glob(f".{entry.name}.*.tmp"):  # left by a killed process; we hold the lock
        shutil.rmtree(stale, ignore_errors=True)
    tmp = entry.parent / f".{entry.name}.{os.getpid()}.tmp"
    tmp.mkdir(parents=True)
    try:
        if model is not None:
            ov.save_model(model, tmp / MODEL_XML, compress_to_fp16=False)
        np.save(tmp / REFERENCE, reference_vectors)
        if images is not None:
            np.save(tmp / CHECK_BATCH, images)
        files = {path.name: sha256_file(path) for path in sorted(tmp.iterdir())}
        (tmp / META).write_text(json.dumps(dict(meta, files=files), indent=2))
        shutil.rmtree(entry, ignore_errors=True)
        os.rename(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return files


def _create_entry(entry: Path, variant: str, version: str, reference, catalogue, calibration_images: int) -> dict:
    """Convert, check against TensorFlow and cache; returns the entry's meta."""
    import openvino as ov

    int8 = variant == "int8"
    calibration, calibration_id = (None, None)
    if int8:
        if catalogue is None:
            raise RuntimeUnavailable("FASHION_RUNTIME=openvino-int8 needs a catalogue to calibrate on")
        calibration, calibration_id = calibration_sample(catalogue, calibration_images, reference.input_size)
        log.info("Quantising to INT8 with NNCF on %d catalogue images (once; cached)", len(calibration))
    else:
        log.info("Converting the Keras model to OpenVINO (once; cached)")
    model = convert(reference, calibration=calibration)
    images = check_images(reference.input_size)
    if int8:  # fixed images alone are far from what INT8 was calibrated for: add catalogue photos
        step = max(1, len(calibration) // INT8_CHECK_PHOTOS)
        images = np.concatenate([images, np.stack(calibration[::step][:INT8_CHECK_PHOTOS])])
    reference_vectors = reference.embed(images)
    compiled = ov.Core().compile_model(model, "CPU", compile_config(0))
    result = compare(np.asarray(compiled(images)[VECTORS_OUTPUT], dtype=np.float32), reference_vectors, int8)
    meta = {
        "model": reference.model_id,
        "weights_id": reference.weights_id,
        "weights_sha256": weights_digest(reference.choice),
        "preprocess_version": PREPROCESS_VERSION,
        "runtime": "openvino",
        "runtime_version": version,
        "variant": variant,
        "vector_space": f"int8-{calibration_id}" if int8 else FP32,
        "calibration_images": len(calibration) if int8 else 0,
        "check": dict(vars(result)),
    }
    # a failed check is cached too (without the model), so later starts do not convert again
    meta["files"] = _write_entry(
        entry, model if result.passed else None, meta, reference_vectors, images if int8 else None
    )
    return meta


def _load_checked(entry: Path, meta: dict, choice: WeightsChoice, name: str, threads: int) -> OpenVinoEmbedder | None:
    """Load a cached model and re-run the check against the stored TensorFlow vectors.

    The files must first be the ones ``meta.json`` lists, byte for byte:
    the check only compares the model with the vectors stored beside it, so
    a model and vectors both swapped for another conversion would pass it.
    """
    resolved = ResolvedRuntime(name, meta["vector_space"], str(entry))
    try:
        changed = sorted(file for file, digest in meta["files"].items() if sha256_file(entry / file) != digest)
        if changed:
            log.warning(
                "Cached OpenVINO model in %s does not match its meta.json (%s changed); converting again",
                entry,
                ", ".join(changed),
            )
            return None
        embedder = OpenVinoEmbedder(choice, resolved, threads)
        reference_vectors = np.load(entry / REFERENCE)
        stored = entry / CHECK_BATCH
        images = np.load(stored) if stored.is_file() else check_images(embedder.input_size)
        result = compare(embedder.embed(images), reference_vectors, meta["variant"] == "int8")
    except (OSError, RuntimeError, ValueError) as exc:  # a damaged cache entry; OpenVINO raises RuntimeError
        log.warning("Cached OpenVINO model in %s is unusable (%s); converting again", entry, exc)
        return None
    if not result.passed:
        log.warning("Cached OpenVINO model in %s fails its check (%s); converting again", entry, result.describe())
        return None
    embedder._warm = True  # the check just ran the model
    return embedder


def _tensorflow_reference(choice: WeightsChoice, seed: int, threads: int):
    from .model import Embedder, configure_threads

    configure_threads(threads)
    return Embedder(choice, seed)


def _fallback(name: str, why: str) -> None:
    log.warning("FASHION_RUNTIME=%s: %s; using TensorFlow instead", name, why)


def load_runtime(
    choice: WeightsChoice,
    runtime: str,
    *,
    cache_dir: Path,
    seed: int = 1234,
    threads: int = 0,
    catalogue: Path | None = None,
    calibration_images: int = CALIBRATION_IMAGES,
    reference=None,
) -> Embedder:
    """Return an embedder for ``runtime``: a checked OpenVINO model, or TensorFlow.

    Loads the converted model from ``cache_dir`` when it is there (no
    TensorFlow import); otherwise converts ``reference`` (a TensorFlow
    ``model.Embedder``, built here when not given), checks and caches it.
    ``auto`` quietly means TensorFlow when OpenVINO is not installed; an
    explicit ``openvino*`` then raises ``RuntimeUnavailable``. A failed check
    falls back to TensorFlow with a warning.
    """
    runtime = validate(runtime)
    if runtime == TENSORFLOW:
        return reference or _tensorflow_reference(choice, seed, threads)
    version = openvino_version()
    if version is None:
        if runtime != "auto":
            raise RuntimeUnavailable(
                f"FASHION_RUNTIME={runtime} needs OpenVINO: pip install -r requirements.txt, or set it to auto"
            )
        log.info("OpenVINO is not installed; the model runs on TensorFlow")
        return reference or _tensorflow_reference(choice, seed, threads)
    if runtime == OPENVINO_INT8 and importlib.util.find_spec("nncf") is None:
        raise RuntimeUnavailable("FASHION_RUNTIME=openvino-int8 needs NNCF: pip install -r requirements.txt")
    name = OPENVINO_INT8 if runtime == OPENVINO_INT8 else OPENVINO
    variant = "int8" if name == OPENVINO_INT8 else FP32
    entry = cache_entry(cache_dir, choice, variant, version)
    entry.parent.mkdir(parents=True, exist_ok=True)
    # one process converts; the others (gunicorn workers) wait and load its result
    with FileLock(str(entry) + ".lock"):
        for attempt in (1, 2):
            meta = _read_meta(entry, choice, variant)
            if meta is None or attempt == 2:
                reference = reference or _tensorflow_reference(choice, seed, threads)
                meta = _create_entry(entry, variant, version, reference, catalogue, calibration_images)
                log.info("OpenVINO %s model check: %s", variant, CheckResult(**meta["check"]).describe())
            if not meta["check"]["passed"]:
                _fallback(runtime, f"the converted model failed its check ({CheckResult(**meta['check']).describe()})")
                return reference or _tensorflow_reference(choice, seed, threads)
            embedder = _load_checked(entry, meta, choice, name, threads)
            if embedder is not None:
                log.info("Model runs on OpenVINO %s (%s, vector space %s)", version, variant, meta["vector_space"])
                return embedder
    _fallback(runtime, "a freshly converted model could not be loaded back")
    return reference or _tensorflow_reference(choice, seed, threads)


_CHECK_NUMBERS = ("max_abs_diff", "min_cosine", "max_norm_error")


def _read_meta(entry: Path, choice: WeightsChoice, variant: str) -> dict | None:
    """The entry's meta when every field is there, of its type, and made for these weights; else ``None``.

    ``None`` means "convert again": a damaged or foreign entry is never fatal.
    """
    try:
        text = (entry / META).read_text()
    except OSError:
        return None  # not converted yet
    try:
        meta = json.loads(text)
    except ValueError:
        meta = None
    check = meta.get("check") if isinstance(meta, dict) else None
    expected = {
        "model": choice.spec.model_id,
        "weights_id": choice.weights_id,
        "weights_sha256": weights_digest(choice),
        "variant": variant,
    }
    files = meta.get("files") if isinstance(meta, dict) else None
    needed = set()  # the files a passed entry must list, so that each is hashed before use
    if isinstance(check, dict) and check.get("passed") is True:
        needed = {MODEL_XML, MODEL_XML.replace(".xml", ".bin"), REFERENCE}
        if variant == "int8":
            needed.add(CHECK_BATCH)
    well_formed = (
        isinstance(check, dict)
        and set(check) <= {*_CHECK_NUMBERS, "passed", "median_cosine"}
        and isinstance(check.get("passed"), bool)
        and all(isinstance(check.get(name), int | float) for name in _CHECK_NUMBERS)
        and isinstance(check.get("median_cosine", 0.0), int | float)
        and isinstance(meta.get("vector_space"), str)
        and all(meta.get(key) == value for key, value in expected.items())
        and isinstance(files, dict)
        and needed <= set(files)
        and all(_plain_name(name) and isinstance(digest, str) for name, digest in files.items())
    )
    if not well_formed:
        log.warning("Cached OpenVINO model in %s has a damaged or foreign meta.json; converting again", entry)
        return None
    return meta


def _plain_name(name) -> bool:
    # a file directly inside the entry: meta.json must not send the hash check elsewhere
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


def open_embedder(choice: WeightsChoice, resolved: ResolvedRuntime, seed: int = 1234, threads: int = 0) -> Embedder:
    """The embedder for a runtime another process already resolved (a Ray actor): no conversion, no check."""
    if resolved.converted:
        return OpenVinoEmbedder(choice, resolved, threads)
    return _tensorflow_reference(choice, seed, threads)


_loaded: dict[tuple, Embedder] = {}
_loaded_lock = threading.Lock()


def load_for_settings(settings) -> Embedder:
    """The process-wide embedder ``settings`` ask for: model, weights, ``FASHION_RUNTIME``, threads.

    Converted models are cached under the index dir; INT8 calibrates on the
    catalogue. Whatever runs it, the result is an ``indexer.embedder.Embedder``.
    """
    from .model import load_embedder, resolve_weights

    with _loaded_lock:
        key = (settings.model, settings.weights, settings.random_seed, settings.runtime, str(settings.index_dir))
        if key not in _loaded:
            if settings.runtime == TENSORFLOW:
                _loaded[key] = load_embedder(
                    settings.weights, settings.random_seed, settings.tf_threads, settings.model
                )
            else:
                _loaded[key] = load_runtime(
                    resolve_weights(settings.weights, settings.random_seed, settings.model),
                    settings.runtime,
                    cache_dir=cache_root(settings.index_dir),
                    seed=settings.random_seed,
                    threads=settings.tf_threads,
                    catalogue=settings.catalogue,
                )
        return _loaded[key]
