"""Keras ResNet50 (ImageNet, no top), pooled by global max pooling: the original model.

Its ImageNet weights are not in any package: Keras downloads them once
into its cache (``$KERAS_HOME/models``). Without network access they can be
copied there by hand or named with ``FASHION_WEIGHTS``.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import WeightsError, weights_file

IMAGENET_NOTOP_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + IMAGENET_NOTOP_FILE
IMAGENET_MD5 = "4d473c1dd8becc155b73f8504c6f6626"


def keras_cache_dir() -> Path:
    """Where Keras keeps downloaded weights (``$KERAS_HOME/models``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def imagenet_help(reason: str) -> str:
    """What to do when ResNet50's ImageNet weights cannot be had."""
    return (
        f"ImageNet weights for ResNet50 are not available ({reason}). "
        f"Keras looks for {IMAGENET_NOTOP_FILE} in {keras_cache_dir()} and otherwise downloads it. "
        f"Copy that file there, or set FASHION_WEIGHTS=/path/to/{IMAGENET_NOTOP_FILE}, "
        "or use the default model (unset FASHION_MODEL, or FASHION_MODEL=efficientnet-lite0), "
        "whose weights come with the install."
    )


def fetch_imagenet() -> Path:
    """Return the cached ImageNet file, downloading it through Keras if needed."""
    cached = keras_cache_dir() / IMAGENET_NOTOP_FILE
    if cached.is_file():
        return cached
    import keras

    try:
        # Keras reads KERAS_HOME once, at import; pass the folder explicitly so
        # the download goes where the error message says Keras looks.
        path = keras.utils.get_file(
            IMAGENET_NOTOP_FILE,
            IMAGENET_URL,
            cache_dir=str(keras_cache_dir().parent),
            cache_subdir="models",
            file_hash=IMAGENET_MD5,
        )
    except Exception as exc:  # noqa: BLE001 - any download failure means the same to the user
        raise WeightsError(imagenet_help(f"download failed: {str(exc)[:200] or type(exc).__name__}")) from None
    return Path(path)


def resolve_weights(weights: str, spec=None) -> tuple[str, str]:
    """``auto``/``imagenet``: the ImageNet file (cached or downloaded); else ``weights`` is a weights file.

    ``spec`` (the model's ``ModelSpec``) is not needed: there is one ResNet50.
    """
    if weights.lower() in ("auto", "imagenet"):
        return str(fetch_imagenet()), "imagenet"
    return weights_file(weights, imagenet_help("no such file"))


def build_feature_map(keras, source: str | None, spec=None):
    """ResNet50 from float 0-255 RGB (caffe preprocessing in the graph) to its last feature map.

    The input is the spec's ``input_size`` square (n x 7 x 7 x 2048 out for
    224); without a spec, the ``resnet50`` entry's.
    """
    from . import get_spec

    size = (spec or get_spec("resnet50")).input_size
    try:
        base = keras.applications.ResNet50(weights=source, include_top=False, input_shape=(size, size, 3))
    except (OSError, ValueError) as exc:
        raise WeightsError(f"Could not load ResNet50 weights from {source}: {exc}") from None
    inputs = keras.Input((size, size, 3), dtype="float32")
    x = keras.applications.resnet50.preprocess_input(inputs)  # RGB->BGR, ImageNet mean subtraction
    return keras.Model(inputs, base(x), name="resnet50_features")
