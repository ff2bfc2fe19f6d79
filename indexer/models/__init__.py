"""The models an index can be built with, and the one place that maps a name to one.

``FASHION_MODEL`` names an entry of ``MODELS``. Each entry says what the
manifest records (``model_id``), the vector size, the input size, the
pooling and which module builds it. A family module (``efficientnet_lite``,
``resnet50``) exposes:

* ``resolve_weights(spec) -> (source, weights_id)``: what ``FASHION_WEIGHTS``
  (``auto``/``imagenet`` or a file path) means for that model, raising
  ``WeightsError`` with what to do when the weights cannot be had;
* ``build_feature_map(keras, source)``: a Keras model from float 0-255 RGB
  images to the last feature layer, not pooled (n x 7 x 7 x channels for
  224 x 224 input; ``source`` ``None`` means the current random
  initialisation). ``model.Embedder`` pools it as the spec's ``pooling``
  says and also keeps a small activation map of it (``indexer.locate``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

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

    def family_module(self):
        """The module that resolves weights for and builds this model (imported on first use)."""
        return importlib.import_module(f"{__name__}.{self.family}")


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "efficientnet-lite0", "efficientnet-lite0-gap-l2", 1280, 224, "global average", "efficientnet_lite"
        ),
        ModelSpec("resnet50", "resnet50-notop-gmp-l2", 2048, 224, "global max", "resnet50"),
    )
}
MODEL_NAMES = tuple(MODELS)


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
    from ..artifacts import sha256_file

    path = Path(spec).expanduser()
    if not path.is_file():
        raise WeightsError(f"FASHION_WEIGHTS points at {path}, which is not a file. {advice}")
    return str(path), f"file-{sha256_file(path)[:16]}"
