"""The embedder: the chosen model (``FASHION_MODEL``), pooled and L2-normalised.

Resolves which weights to use (``FASHION_WEIGHTS``), builds the Keras model
once, and exposes a compiled batched forward pass. Each model's
preprocessing runs inside the compiled graph, so callers hand over plain
uint8 RGB arrays. ``indexer.models`` says which models exist.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .models import DEFAULT_MODEL, WeightsError, get_spec

log = logging.getLogger(__name__)

__all__ = ["WeightsChoice", "WeightsError", "Embedder", "resolve_weights", "load_embedder", "configure_threads"]


@dataclass(frozen=True)
class WeightsChoice:
    """A model and its weights: where they come from, plus a stable id recorded in the manifest."""

    source: str | None  # a weights file, or None for seeded random weights
    weights_id: str
    model: str = DEFAULT_MODEL  # a FASHION_MODEL name

    @property
    def spec(self):
        """The ``ModelSpec`` of ``model``."""
        return get_spec(self.model)

    @property
    def random(self) -> bool:
        """True for seeded random weights (``FASHION_WEIGHTS=none``)."""
        return self.source is None


def resolve_weights(spec: str, seed: int = 1234, model: str = DEFAULT_MODEL) -> WeightsChoice:
    """Turn ``FASHION_WEIGHTS`` (auto|imagenet|none|<path>) into a choice for ``model``.

    ``auto`` means the model's real pretrained weights and never silently
    anything else: when they cannot be had, ``WeightsError`` says what to do.
    ``none`` means seeded random weights (tests).
    """
    spec = (spec or "auto").strip() or "auto"
    model_spec = get_spec(model)
    if spec.lower() == "none":
        return WeightsChoice(None, f"random-seed{seed}", model_spec.name)
    source, weights_id = model_spec.family_module().resolve_weights(spec, model_spec)
    return WeightsChoice(source, weights_id, model_spec.name)


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


GEM_POWER = 3.0  # generalised mean: p = 1 is the average, p -> infinity the maximum


def _generalised_mean(tf, feature_map):
    """GeM pooling: the strong activations weigh more than in an average, a region's background less."""
    cubed = tf.pow(tf.maximum(feature_map, 0.0), GEM_POWER)
    return tf.pow(tf.math.reduce_mean(cubed, axis=[1, 2]), 1.0 / GEM_POWER)


# ModelSpec.pooling -> the pooling over the feature map's height and width
POOLINGS = {
    "global average": lambda tf, feature_map: tf.math.reduce_mean(feature_map, axis=[1, 2]),
    "global max": lambda tf, feature_map: tf.math.reduce_max(feature_map, axis=[1, 2]),
    "generalised mean": _generalised_mean,
}


def _pooled_vector(tf, spec):
    """The function from the last feature map (and the detail layer's, if any) to the spec's unit vector.

    With a detail layer the vector is two unit parts side by side, then made
    unit again: the pooled last layer's first ``head_channels`` channels,
    which say what the object is, and the pooled detail layer, finer and
    earlier, which keeps the texture, pattern and colour that the last layer
    has abstracted away, weighed ``detail_weight``.
    """
    pool = POOLINGS[spec.pooling]

    def unit(vectors):
        return tf.math.l2_normalize(vectors, axis=1, epsilon=1e-12)

    def pooled(feature_map, detail_map=None):
        if detail_map is None:
            return unit(pool(tf, feature_map))
        head = unit(pool(tf, feature_map)[:, : spec.head_channels])
        return unit(tf.concat([head, unit(pool(tf, detail_map)) * spec.detail_weight], axis=1))

    return pooled


class Embedder:
    """A loaded model with a compiled, thread-safe batched forward pass (TensorFlow).

    Has every member of the ``indexer.embedder.Embedder`` interface.
    """

    runtime = "tensorflow"
    vector_space = "fp32"  # see runtimes.py: fp32 runtimes share it, INT8 has its own

    def __init__(self, choice: WeightsChoice, seed: int = 1234):
        import keras
        import tensorflow as tf

        self.choice = choice
        self.spec = choice.spec
        self.name = self.spec.name
        self.model_id = self.spec.model_id
        self.weights_id = choice.weights_id
        self.dim = self.spec.dim
        self.input_size = size = self.spec.input_size
        source = choice.source
        if source is None:
            keras.utils.set_random_seed(seed)  # same random weights in every process
        elif choice.weights_id == "imagenet" and not Path(source).is_file():
            # a Ray worker on another machine: the package or Keras cache lives elsewhere there
            source = resolve_weights("auto", seed, choice.model).source
        self.model = self.spec.family_module().build_feature_map(keras, source, self.spec)
        pooled = _pooled_vector(tf, self.spec)
        # the layers the vector is pooled from: the last, and the spec's detail layer when it has one
        layers = self.model
        if self.spec.detail_layer is not None:
            layers = keras.Model(
                self.model.input, [self.model.output, self.model.get_layer(self.spec.detail_layer).output]
            )

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)])
        def forward(batch):
            outputs = layers(tf.cast(batch, tf.float32), training=False)
            feature_map, detail_map = outputs if self.spec.detail_layer is not None else (outputs, None)
            vectors = pooled(feature_map, detail_map)
            # the map layer, whole: a catalogue's learned objectness finds its products in it
            # (indexer.locate). The detail layer when there is one: its cells are finer (14 x 14 for
            # Lite0, against 7 x 7), but their mean answers edges, not objects, so the map without
            # objectness stays the last layer's mean over channels
            map_layer = feature_map if detail_map is None else detail_map
            return vectors, map_layer, tf.math.reduce_mean(feature_map, axis=3)

        self._forward = forward
        self.forward_function = forward  # what runtimes.convert hands to OpenVINO: (vectors, features, map)
        self._warm_lock = threading.Lock()
        self._warm = False

    def warm_up(self) -> None:
        """Trace the graph once so the first real request is not slow."""
        with self._warm_lock:
            if not self._warm:
                size = self.input_size
                self.embed(np.full((1, size, size, 3), 255, dtype=np.uint8))
                self._warm = True

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Embed ``(n, size, size, 3)`` uint8 images to ``(n, dim)`` float32 unit vectors."""
        return self.embed_with_maps(batch)[0]

    def embed_with_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectors as ``embed`` gives them, and each image's activation map (``(n, h, w)`` float32).

        ``h`` and ``w`` are the last feature layer's: 7 x 7 for 224 input, 9 x 9 for 260.

        The map is the mean over channels of the last feature layer, before
        pooling: high where the network sees an object. The same pass makes both.
        """
        vectors, _, maps = self._outputs(batch)
        return vectors, maps

    def embed_with_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectors as ``embed`` gives them, and each image's map layer (``(n, h, w, channels)`` float32).

        The map layer is the spec's detail layer when it has one (Lite0's
        block 11 expansion, 14 x 14 x 672), else the last feature layer.
        """
        vectors, features, _ = self._outputs(batch)
        return vectors, features

    def _outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if batch.ndim == 3:
            batch = batch[None]
        return tuple(np.asarray(output, dtype=np.float32) for output in self._forward(batch))

    def embed_one(self, image: np.ndarray) -> np.ndarray:
        """Embed one ``(size, size, 3)`` uint8 image to a ``(dim,)`` unit vector."""
        return self.embed(image[None])[0]


_cache: dict[tuple[str, int, str], Embedder] = {}
_cache_lock = threading.Lock()


def load_embedder(spec: str, seed: int = 1234, threads: int = 0, model: str = DEFAULT_MODEL) -> Embedder:
    """Resolve weights and return a process-wide cached TensorFlow ``Embedder`` for ``model``.

    ``indexer.runtimes.load_for_settings`` picks the runtime (``FASHION_RUNTIME``).
    """
    with _cache_lock:
        key = (spec, seed, get_spec(model).name)
        if key not in _cache:
            configure_threads(threads)
            choice = resolve_weights(spec, seed, model)
            log.info("Loading %s embedder (weights: %s)", choice.model, choice.weights_id)
            _cache[key] = Embedder(choice, seed)
        return _cache[key]
