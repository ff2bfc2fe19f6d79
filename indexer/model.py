"""The embedder: ResNet50 (no top) + global max pooling + L2 normalisation.

Resolves which weights to use (``FASHION_WEIGHTS``), builds the Keras model
once, and exposes a compiled batched forward pass. Preprocessing
(``preprocess_input``) runs inside the compiled graph so callers hand over
plain uint8 RGB arrays.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .artifacts import sha256_file

log = logging.getLogger(__name__)

EMBEDDING_DIM = 2048
MODEL_ID = "resnet50-notop-gmp-l2"
IMAGENET_NOTOP_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"


class WeightsError(RuntimeError):
    """The requested weights could not be obtained."""


@dataclass(frozen=True)
class WeightsChoice:
    """What to pass to Keras, plus a stable id recorded in the manifest."""

    keras_arg: str | None  # "imagenet", a file path, or None for random
    weights_id: str
    fallback: bool = False  # True when "auto" fell back to random weights


def keras_cache_dir() -> Path:
    """Where Keras keeps downloaded weights (``$KERAS_HOME/models``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def _imagenet_help(reason: str) -> str:
    return (
        f"ImageNet weights for ResNet50 are not available ({reason}). "
        f"Keras looks for {IMAGENET_NOTOP_FILE} in {keras_cache_dir()} and otherwise downloads it. "
        f"Copy that file there, or set FASHION_WEIGHTS=/path/to/{IMAGENET_NOTOP_FILE}, "
        "or set FASHION_WEIGHTS=none to run with random weights (results will not be meaningful)."
    )


def _fetch_imagenet() -> Path:
    """Return the cached ImageNet file, downloading it through Keras if needed."""
    cached = keras_cache_dir() / IMAGENET_NOTOP_FILE
    if cached.is_file():
        return cached
    import keras

    url = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + IMAGENET_NOTOP_FILE
    try:
        # Keras reads KERAS_HOME once, at import; pass the folder explicitly so
        # the download goes where the error message says Keras looks.
        path = keras.utils.get_file(
            IMAGENET_NOTOP_FILE,
            url,
            cache_dir=str(keras_cache_dir().parent),
            cache_subdir="models",
            file_hash="4d473c1dd8becc155b73f8504c6f6626",
        )
    except Exception as exc:  # noqa: BLE001 - any download failure means the same to the user
        raise WeightsError(_imagenet_help(f"download failed: {str(exc)[:200] or type(exc).__name__}")) from None
    return Path(path)


def resolve_weights(spec: str, seed: int = 1234) -> WeightsChoice:
    """Turn ``FASHION_WEIGHTS`` (auto|imagenet|none|<path>) into a choice.

    Raises ``WeightsError`` with a message naming the expected file, the
    cache folder and the variable to set when imagenet cannot be had.
    """
    spec = (spec or "auto").strip()
    lowered = spec.lower()
    if lowered == "none":
        return WeightsChoice(None, f"random-seed{seed}")
    if lowered == "imagenet":
        path = _fetch_imagenet()
        return WeightsChoice(str(path), "imagenet")
    if lowered == "auto":
        try:
            path = _fetch_imagenet()
        except WeightsError as exc:
            log.warning("%s Falling back to RANDOM weights: similarity results are not meaningful.", exc)
            return WeightsChoice(None, f"random-seed{seed}", fallback=True)
        return WeightsChoice(str(path), "imagenet")
    path = Path(spec).expanduser()
    if not path.is_file():
        raise WeightsError(f"FASHION_WEIGHTS points at {path}, which is not a file. " + _imagenet_help("no such file"))
    return WeightsChoice(str(path), f"file-{sha256_file(path)[:16]}")


def configure_threads(threads: int) -> None:
    """Size TensorFlow's thread pools; must run before TF does any work."""
    if threads <= 0:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
    except RuntimeError:
        log.debug("TensorFlow already initialised; thread settings unchanged")


class Embedder:
    """A loaded model with a compiled, thread-safe batched forward pass (TensorFlow)."""

    runtime = "tensorflow"
    vector_space = "fp32"  # see runtimes.py: fp32 runtimes share it, INT8 has its own

    def __init__(self, choice: WeightsChoice, seed: int = 1234):
        import keras
        import tensorflow as tf

        self.choice = choice
        self.weights_id = choice.weights_id
        self.dim = EMBEDDING_DIM
        if choice.keras_arg is None:
            keras.utils.set_random_seed(seed)  # same random weights in every process
        try:
            base = keras.applications.ResNet50(
                weights=choice.keras_arg, include_top=False, input_shape=(224, 224, 3)
            )
        except (OSError, ValueError) as exc:
            raise WeightsError(f"Could not load weights from {choice.keras_arg}: {exc}") from None
        inputs = keras.Input((224, 224, 3), dtype="float32")
        # caffe-style preprocessing (RGB->BGR, mean subtraction) in the graph
        x = keras.applications.resnet50.preprocess_input(inputs)
        x = keras.layers.GlobalMaxPooling2D()(base(x))
        self.model = keras.Model(inputs, x, name=MODEL_ID)

        @tf.function(input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.uint8)])
        def forward(batch):
            feats = self.model(tf.cast(batch, tf.float32), training=False)
            return tf.math.l2_normalize(feats, axis=1, epsilon=1e-12)

        self._forward = forward
        self.forward_function = forward  # what runtimes.convert hands to OpenVINO
        self._warm_lock = threading.Lock()
        self._warm = False

    def warm_up(self) -> None:
        """Trace the graph once so the first real request is not slow."""
        with self._warm_lock:
            if not self._warm:
                self.embed(np.full((1, 224, 224, 3), 255, dtype=np.uint8))
                self._warm = True

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Embed ``(n, 224, 224, 3)`` uint8 images to ``(n, 2048)`` float32 unit vectors."""
        if batch.ndim == 3:
            batch = batch[None]
        return np.asarray(self._forward(batch), dtype=np.float32)

    def embed_one(self, image: np.ndarray) -> np.ndarray:
        """Embed one ``(224, 224, 3)`` uint8 image to a ``(2048,)`` unit vector."""
        return self.embed(image[None])[0]


_cache: dict[tuple[str, int], Embedder] = {}
_cache_lock = threading.Lock()


def load_embedder(spec: str, seed: int = 1234, threads: int = 0) -> Embedder:
    """Resolve weights and return a process-wide cached TensorFlow ``Embedder``.

    ``indexer.runtimes.load_for_settings`` picks the runtime (``FASHION_RUNTIME``).
    """
    with _cache_lock:
        key = (spec, seed)
        if key not in _cache:
            configure_threads(threads)
            choice = resolve_weights(spec, seed)
            log.info("Loading ResNet50 embedder (weights: %s)", choice.weights_id)
            _cache[key] = Embedder(choice, seed)
        return _cache[key]
