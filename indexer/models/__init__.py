"""The models an index can be built with, and the one place that maps a name to one.

``FASHION_MODEL`` names an entry of ``MODELS``. Each entry says what the
manifest records (``model_id``), the vector size, the input size, the
pooling and which module builds it. A family module (``efficientnet_lite``,
``resnet50``) exposes:

* ``resolve_weights(weights, spec) -> (source, weights_id)``: what
  ``FASHION_WEIGHTS`` (``auto``/``imagenet`` or a file path) means for the
  model of ``spec``, raising ``WeightsError`` with what to do when the
  weights cannot be had;
* ``build_feature_map(keras, source, spec)``: a Keras model from float
  0-255 RGB images of the spec's ``input_size`` square to the last feature
  layer, not pooled (n x 7 x 7 x channels for 224 x 224 input, 9 x 9 for
  260; ``source`` ``None`` means the current random initialisation).
  ``model.Embedder`` pools it as the spec's ``pooling`` says and also keeps
  a small activation map of it (``indexer.locate``).

``input_size`` is the side of the square every photo is fitted on for that
model (``indexer.images``): decoding, locating, the runtimes' checks and the
catalogue tuning's scenes all take it from the spec of the model in use.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_MODEL = "efficientnet-lite0"


class WeightsError(RuntimeError):
    """The requested weights could not be obtained."""


@dataclass(frozen=True)
class ModelSpec:
    """What a ``FASHION_MODEL`` name stands for."""

    name: str  # the FASHION_MODEL value
    model_id: str  # recorded in the manifest: an index is only searched with the model that built it
    dim: int
    input_size: int
    pooling: str
    family: str  # module under indexer.models that builds it
    # a vector of two parts: the pooled last layer's first ``head_channels`` channels, and beside them
    # the pooled ``detail_layer`` (an earlier, finer layer), weighed ``detail_weight`` to the head's 1;
    # the catalogue tuning learns from the detail part weighed ``tuning_detail_weight`` instead
    detail_layer: str | None = None
    head_channels: int | None = None
    detail_weight: float = 1.0
    tuning_detail_weight: float = 1.0

    def tuning_scale(self) -> np.ndarray | None:
        """Per-dimension factors the catalogue tuning multiplies the vectors by before it learns (None: all 1).

        The detail part of every photo is much alike (the nearest other
        product's is at cosine 0.98 on fashion-dev): weighed heavily in the
        vector itself it would crowd all similarities together, and colour
        would swamp shape in an untuned search. The tuning takes out what is
        common, and weighs the detail more there.
        """
        if self.detail_layer is None or self.tuning_detail_weight == self.detail_weight:
            return None
        scale = np.ones(self.dim, dtype=np.float32)
        scale[self.head_channels :] = self.tuning_detail_weight / self.detail_weight
        return scale

    def family_module(self):
        """The module that resolves weights for and builds this model (imported on first use)."""
        return importlib.import_module(f"{__name__}.{self.family}")


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        # generalised-mean pooling (p = 3) of 608 of the last layer's channels and of the 672 of the last
        # 14 x 14 stage (weighed 0.5; 4 in the tuning): on shoppers' photos the tuned search finds more
        # of the products than with the last layer's average alone (BENCHMARKS.md, "Shopper photos")
        ModelSpec(
            "efficientnet-lite0",
            "efficientnet-lite0-gem3-detail-l2",
            1280,
            224,
            "generalised mean",
            "efficientnet_lite",
            detail_layer="blocks_11_bn0_relu6",
            head_channels=608,
            detail_weight=0.5,
            tuning_detail_weight=4.0,
        ),
        ModelSpec("resnet50", "resnet50-notop-gmp-l2", 2048, 224, "global max", "resnet50"),
        # Lite0 scaled up (width 1.1, depth 1.2, 260 px): ImageNet top-1 77.6% against 75.1%, for 2.2x the
        # multiply-adds (0.86 against 0.38 billion a photo); opt-in, see BENCHMARKS.md
        ModelSpec(
            "efficientnet-lite2", "efficientnet-lite2-gap-l2", 1280, 260, "global average", "efficientnet_lite"
        ),
    )
}
MODEL_NAMES = tuple(MODELS)
# The square photos are fitted on when no model is named (helpers, tests, benchmarks): the
# default model's. Code that knows its model takes the spec's (or the embedder's) input_size.
DEFAULT_INPUT_SIZE = MODELS[DEFAULT_MODEL].input_size


def get_spec(name: str | None) -> ModelSpec:
    """The spec for a ``FASHION_MODEL`` value (case and spaces ignored); ``ValueError`` names the choices."""
    key = (name or DEFAULT_MODEL).strip().lower()
    if key not in MODELS:
        raise ValueError(f"FASHION_MODEL must be one of {', '.join(MODEL_NAMES)}, got {name!r}")
    return MODELS[key]


def weights_file(spec: str, advice: str) -> tuple[str, str]:
    """A user's weights file named by ``FASHION_WEIGHTS``: its path and an id that follows its content.

    ``advice`` (what to do instead) ends the error when the file is missing.
    """
    path = Path(spec).expanduser()
    if not path.is_file():
        raise WeightsError(f"FASHION_WEIGHTS points at {path}, which is not a file. {advice}")
    # hashed here, not with checksums.sha256_file: this registry imports nothing of the project, so
    # any module (images, scenes, tuning) can take the default input size from it without a cycle
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    return str(path), f"file-{digest[:16]}"
