"""Int8 quantization-aware training (QAT) of conv chains, and the plan the ONNX export follows.

A model that runs some of its 3x3 convs in int8 trains (or fine-tunes) with *fake quantization*:
the forward pass rounds to the grids an int8 engine uses, in float, and the gradient passes
straight through the rounding. In eval mode it runs the integer pass below, and
:func:`superres.export.export_onnx` writes those convs as ``QLinearConv`` nodes that onnxruntime
runs with integer arithmetic, with the same outputs.

The scheme (what onnxruntime's ``QLinearConv`` computes, so nothing is approximated twice):

* activations entering a quantized conv: ``uint8``, per-tensor ``scale``, zero point 0 (they come
  out of a ReLU, so nothing below 0 is lost); the scale is a model buffer set by an observer
  (:func:`observe_scale`) while training and fixed in eval mode;
* weights: ``int8``, symmetric, one scale per output channel (``max |w| / 127``, range -127..127),
  recomputed from the weights, so they need no storage;
* bias: ``int32`` with scale ``input scale x weight scale`` (the accumulator's);
* the conv's output is requantized to the next quantized conv's input (ReLU fused: a zero point of
  0 clamps at 0), or for a signed output (e.g. a residual) to ``uint8`` with zero point 128.

Two forward passes implement it. While training, :func:`quant_conv` fake-quantizes (float values on
the int8 grids, straight-through gradients). In eval mode, :func:`int8_conv` computes what
onnxruntime's ``QLinearConv`` computes, step for step: the integer accumulator (exact in float
arithmetic), then ``round((x_scale * w_scale) / y_scale * acc) + zero point``, saturated, so the
PyTorch model and the exported graph give the same outputs (tested to 1e-6). The two passes differ
only where float rounding puts a value on the other side of a rounding boundary.

:class:`Int8Conv` records each quantized conv for the exporter, which takes the integer weights and
biases from :func:`int8_weight` and :func:`int32_bias`, as :func:`int8_conv` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Int8Conv",
    "ACT_QMAX",
    "WEIGHT_QMAX",
    "SIGNED_ZERO_POINT",
    "weight_scales",
    "fake_quant_weight",
    "fake_quant_bias",
    "fake_quant_act",
    "observe_scale",
    "quant_conv",
    "int8_weight",
    "int32_bias",
    "quantize",
    "int8_conv",
]

#: uint8 activations: 0..255.
ACT_QMAX = 255
#: int8 weights, symmetric: -127..127 (not -128, so that w and -w quantize alike).
WEIGHT_QMAX = 127
#: Zero point of a signed uint8 output (e.g. a residual): values -128..127 steps.
SIGNED_ZERO_POINT = 128
_INT32 = (-(2**31), 2**31 - 1)
#: Smallest scale used, so that an all-zero channel or tensor quantizes to 0 instead of dividing by 0.
_TINY = 1e-12


@dataclass(frozen=True)
class Int8Conv:
    """One conv that the ONNX export writes as ``QLinearConv``.

    ``module`` is its path in the model (``body.2``; its weight is ``body.2.weight``), ``in_scale``
    the uint8 scale of its input (zero point 0), ``out_scale``/``out_zero_point`` those of its
    uint8 output, and ``relu`` whether a ReLU follows it that the output quantization absorbs.
    """

    module: str
    in_scale: float
    out_scale: float
    out_zero_point: int
    relu: bool


def weight_scales(weight: torch.Tensor) -> torch.Tensor:
    """Per-output-channel int8 scales of a conv weight ``out x in x k x k``: ``max |w| / 127``."""
    return (weight.detach().abs().amax(dim=(1, 2, 3)) / WEIGHT_QMAX).clamp_min(_TINY).float()


def fake_quant_weight(weight: torch.Tensor, scales: torch.Tensor | None = None) -> torch.Tensor:
    """``weight`` rounded to its int8 grid (``scales``, by default :func:`weight_scales`); the
    gradient passes straight through."""
    scales = weight_scales(weight) if scales is None else scales
    zeros = torch.zeros_like(scales, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(weight.float(), scales, zeros, 0, -WEIGHT_QMAX, WEIGHT_QMAX)


def _bias_grid(in_scale: torch.Tensor, w_scales: torch.Tensor) -> torch.Tensor:
    """The int32 accumulator's per-channel scales: ``in_scale x`` the weight's channel scales."""
    return (in_scale.detach().float() * w_scales).clamp_min(_TINY)


def fake_quant_bias(bias: torch.Tensor, in_scale: torch.Tensor, w_scales: torch.Tensor) -> torch.Tensor:
    """``bias`` rounded to the int32 accumulator's grid (``in_scale x w_scales``, the weight's
    :func:`weight_scales`)."""
    scales = _bias_grid(in_scale, w_scales)
    zeros = torch.zeros_like(scales, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(bias.float(), scales, zeros, 0, *_INT32)


def fake_quant_act(x: torch.Tensor, scale: torch.Tensor, zero_point: int = 0) -> torch.Tensor:
    """``x`` rounded to the uint8 grid ``(q - zero_point) * scale``, ``q`` in 0..255, saturating."""
    scale = scale.detach().float().clamp_min(_TINY).reshape(())
    zp = torch.tensor(zero_point, dtype=torch.int32, device=x.device)
    return torch.fake_quantize_per_tensor_affine(x.float(), scale, zp, 0, ACT_QMAX)


@torch.no_grad()
def observe_scale(scales: torch.Tensor, index: int, x: torch.Tensor, *, signed: bool, momentum: float) -> None:
    """Move ``scales[index]`` towards the scale that just covers ``x``'s range in this batch.

    Unsigned (zero point 0): ``max(x) / 255``; signed (zero point 128): ``max |x| / 127``. The first
    observation sets the scale; later ones move it by ``momentum`` (an exponential moving average of
    the batch maxima, as in PyTorch's moving-average observers).
    """
    top = x.detach().abs().amax() / (SIGNED_ZERO_POINT - 1) if signed else x.detach().amax() / ACT_QMAX
    top = top.float().clamp_min(_TINY)
    if scales[index] <= 0:
        scales[index] = top
    else:
        scales[index].lerp_(top, momentum)


def quant_conv(conv: nn.Conv2d, x_q: torch.Tensor, in_scale: torch.Tensor) -> torch.Tensor:
    """``conv`` on an already fake-quantized input ``x_q`` with int8 weights and an int32 bias."""
    w_scales = weight_scales(conv.weight)  # once for the weight and the bias grid
    bias = None if conv.bias is None else fake_quant_bias(conv.bias, in_scale, w_scales)
    return F.conv2d(x_q, fake_quant_weight(conv.weight, w_scales), bias, conv.stride, conv.padding, conv.dilation,
                    conv.groups)


# --------------------------------------------------------------------------- the integer pass (eval)
def int8_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q, scales)``: the int8 steps of ``weight`` (as float, -127..127) and its per-channel scales."""
    scales = weight_scales(weight)
    steps = torch.round(fake_quant_weight(weight.detach(), scales) / scales.view(-1, 1, 1, 1))
    return steps, scales


def int32_bias(bias: torch.Tensor, in_scale: torch.Tensor, w_scales: torch.Tensor) -> torch.Tensor:
    """The int32 steps of ``bias`` (as float) on the accumulator's grid ``in_scale x w_scales``."""
    return torch.round(bias.detach().float() / _bias_grid(in_scale, w_scales)).clamp(*_INT32)


def quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: int = 0) -> torch.Tensor:
    """``QuantizeLinear`` to uint8: ``round(x / scale) + zero_point`` saturated to 0..255 (as float)."""
    return torch.clamp(torch.round(x.float() / scale.float()) + zero_point, 0, ACT_QMAX)


def int8_conv(conv: nn.Conv2d, x_q: torch.Tensor, in_scale: torch.Tensor, out_scale: torch.Tensor,
              out_zero_point: int) -> torch.Tensor:
    """``QLinearConv`` on uint8 steps ``x_q`` (zero point 0, as float): the uint8 steps of the output.

    The accumulator ``sum x_q * w_q + b_q`` holds integers; it is computed in float32 when they stay
    below 2^24 (exact), else in float64. The requantization multiplies by the float32
    ``(in_scale * w_scale) / out_scale`` and rounds half to even, as onnxruntime does.
    """
    w_q, w_scales = int8_weight(conv.weight)
    b_q = None if conv.bias is None else int32_bias(conv.bias, in_scale, w_scales)
    fan_in = w_q[0].numel()
    bound = fan_in * ACT_QMAX * WEIGHT_QMAX + (0.0 if b_q is None else float(b_q.abs().max()))
    dtype = torch.float32 if bound < 2**24 else torch.float64
    acc = F.conv2d(x_q.to(dtype), w_q.to(dtype), None if b_q is None else b_q.to(dtype),
                   conv.stride, conv.padding, conv.dilation, conv.groups)
    multiplier = (in_scale.float() * w_scales) / out_scale.float()
    out = torch.round(acc * multiplier.to(dtype).view(1, -1, 1, 1))
    return torch.clamp(out + out_zero_point, 0, ACT_QMAX).float()
