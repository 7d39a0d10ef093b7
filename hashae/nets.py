"""Network bodies described as plain layer specs, built into torch modules.

A spec is a list of dicts such as {"op": "linear", "in": 784, "out": 512}. The same list is saved in
the checkpoint so that hashae.inference can run the encoder with numpy alone (no torch import on the
query path). Supported ops: linear, conv, deconv, relu, sigmoid, flatten, unflatten.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from hashae.errors import ConfigError

LayerSpec = dict[str, Any]


def mlp_specs(sizes: list[int], *, final_activation: bool) -> list[LayerSpec]:
    """Linear layers between consecutive sizes, ReLU between them (and after the last if asked)."""
    specs: list[LayerSpec] = []
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        specs.append({"op": "linear", "in": d_in, "out": d_out})
        if final_activation or i < len(sizes) - 2:
            specs.append({"op": "relu"})
    return specs


def conv_encoder_specs(input_shape: tuple[int, ...], channels: tuple[int, ...], dense: int, out: int) -> list[LayerSpec]:
    """Strided 4x4 convolutions (each halves H and W), then a dense layer and the code head."""
    c, h, w = conv_input_shape(input_shape, len(channels))
    specs: list[LayerSpec] = []
    for c_out in channels:
        specs += [{"op": "conv", "in": c, "out": c_out, "kernel": 4, "stride": 2, "padding": 1}, {"op": "relu"}]
        c, h, w = c_out, h // 2, w // 2
    specs.append({"op": "flatten"})
    return specs + mlp_specs([c * h * w, dense, out], final_activation=False)


def conv_decoder_specs(input_shape: tuple[int, ...], channels: tuple[int, ...], dense: int, code: int) -> list[LayerSpec]:
    """Mirror of conv_encoder_specs: dense layers, unflatten, transposed convolutions back to the input."""
    c_in, h, w = conv_input_shape(input_shape, len(channels))
    scale = 2 ** len(channels)
    c, h, w = channels[-1], h // scale, w // scale
    specs = mlp_specs([code, dense, c * h * w], final_activation=True)
    specs.append({"op": "unflatten", "shape": [c, h, w]})
    outs = list(reversed(channels[:-1])) + [c_in]
    for i, c_out in enumerate(outs):
        specs.append({"op": "deconv", "in": c, "out": c_out, "kernel": 4, "stride": 2, "padding": 1})
        if i < len(outs) - 1:
            specs.append({"op": "relu"})
        c = c_out
    return specs


def conv_input_shape(input_shape: tuple[int, ...], n_halvings: int) -> tuple[int, int, int]:
    """(C, H, W) of an input shape the conv body can take (n_halvings strided layers); else ConfigError."""
    if len(input_shape) != 3:
        raise ConfigError(f"the conv architecture needs image input (C, H, W), got shape {input_shape}")
    c, h, w = input_shape
    if h % 2**n_halvings or w % 2**n_halvings:
        raise ConfigError(f"the conv architecture needs H and W divisible by {2**n_halvings}, got {h}x{w}")
    return c, h, w


def build(specs: list[LayerSpec]) -> nn.Sequential:
    """A torch nn.Sequential from layer specs."""
    return nn.Sequential(*(_module(spec) for spec in specs))


def _module(spec: LayerSpec) -> nn.Module:
    op = spec["op"]
    if op == "linear":
        return nn.Linear(spec["in"], spec["out"])
    if op == "conv":
        return nn.Conv2d(spec["in"], spec["out"], spec["kernel"], spec["stride"], spec["padding"])
    if op == "deconv":
        return nn.ConvTranspose2d(spec["in"], spec["out"], spec["kernel"], spec["stride"], spec["padding"])
    if op == "relu":
        return nn.ReLU()
    if op == "sigmoid":
        return nn.Sigmoid()
    if op == "flatten":
        return nn.Flatten()
    if op == "unflatten":
        return nn.Unflatten(1, tuple(spec["shape"]))
    raise ConfigError(f"unknown layer op {op!r}")


def flat_size(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def to_model_input(x: torch.Tensor, specs: list[LayerSpec]) -> torch.Tensor:
    """Flatten images for an MLP body, keep (B, C, H, W) for a conv body."""
    if specs and specs[0]["op"] == "linear":
        return x.reshape(x.shape[0], -1)
    return x
