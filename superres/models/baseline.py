"""``baseline``: the project's original, deliberately small reference model.

Layers (defaults: 64 features, 4 residual blocks, pixelshuffle upsampler)::

    head   3x3 conv, in_channels -> 64                          (LR)
    body   4 x [3x3 conv -> ReLU -> 3x3 conv] + identity         (LR)
    up     feature upsampler: x2 = one stage, x3 = one stage, x4 = two x2 stages
           (pixelshuffle: 3x3 conv 64 -> 64*f^2, PixelShuffle(f))
    tail   3x3 conv, 64 -> in_channels                          (HR)

By default it learns the whole image (no global skip), so it has to reproduce the low frequencies
itself, colours included: early in training its output has a colour cast (a few levels per channel
after ~100 Adam steps) that only long training removes. ``global_skip=True`` adds the output to a
bicubic upscale of the input instead, as ``enhanced`` does, with the tail conv starting at 0.1x its
default initialisation: it starts at bicubic quality and colour (``superres demo`` trains it so).
The shipped ``baseline-x4`` has no global skip. The stages after the first
upsampling run at 2x/4x resolution, which is where most of its FLOPs go.
"""

from __future__ import annotations

import torch
from torch import nn

from superres.models.blocks import (
    MODEL_SCALES,
    TORCH_CUBIC_A,
    BicubicUpsample,
    ResidualBlock,
    UpsamplerKind,
    check_channels,
    check_scale,
    check_upsampler,
    conv3x3,
    make_upsampler,
    scale_init_,
)
from superres.models.contract import ModelContract


class Baseline(nn.Module):
    """Conv head, ``blocks`` residual blocks, staged upsampler, conv tail; output not clamped.

    Args:
        scale: upscaling factor, 2, 3 or 4.
        in_channels: image channels (1 gray, 3 RGB, N bands); the output has the same number.
        channels: feature width.
        blocks: residual blocks in the body (old name ``num_blocks``, still accepted by
            :func:`superres.models.build`).
        upsampler: ``"pixelshuffle"``, ``"deconv"``, ``"nearest"`` or ``"bicubic"``
            (see :mod:`superres.models.blocks`), used in feature mode.
        global_skip: add the output to a bicubic upscale of the input (PyTorch's cubic, as in
            ``enhanced``), the tail starting at 0.1x its default initialisation (module docstring).
    """

    #: Any channel count, scales 2, 3 and 4 (superres.models.contract).
    CONTRACT = ModelContract(scales=MODEL_SCALES, test_options={"channels": 8, "blocks": 1})

    def __init__(
        self,
        scale: int,
        in_channels: int = 3,
        channels: int = 64,
        blocks: int = 4,
        upsampler: UpsamplerKind = "pixelshuffle",
        global_skip: bool = False,
    ) -> None:
        super().__init__()
        self.scale = check_scale(scale)
        self.in_channels = check_channels(in_channels)
        check_upsampler(upsampler)
        if channels < 1 or blocks < 0:
            raise ValueError(f"channels must be >= 1 and blocks >= 0, got {channels} and {blocks}")
        self.head = conv3x3(in_channels, channels)
        self.body = nn.Sequential(*[ResidualBlock(channels) for _ in range(blocks)])
        self.up = make_upsampler(upsampler, channels, scale)
        self.tail = conv3x3(channels, in_channels)
        self.global_skip = bool(global_skip)
        if self.global_skip:
            scale_init_(self.tail, 0.1)
            self.bicubic = BicubicUpsample(self.scale, in_channels, a=TORCH_CUBIC_A)

    def contract(self) -> ModelContract:
        return self.CONTRACT.bind(self.scale, self.in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``N x C x h x w`` in [0, 1] -> ``N x C x (h*scale) x (w*scale)``."""
        out = self.tail(self.up(self.body(self.head(x))))
        return self.bicubic(x) + out if self.global_skip else out
