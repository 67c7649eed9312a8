"""EDSR: enhanced deep residual networks (and the EDSR-baseline preset).

Paper: B. Lim, S. Son, H. Kim, S. Nah and K. M. Lee, "Enhanced Deep Residual Networks for Single
Image Super-Resolution", CVPR Workshops (NTIRE) 2017.

Why it matters: SRResNet without batch norm (BN normalises away the intensity range SR must keep
and costs memory), wider and deeper, with residual scaling (``res_scale`` = 0.1) so that a
256-channel, 32-block network trains stably. It set the template (head, residual body, global
skip, sub-pixel upsampler, tail) that RCAN and later models refine.

Layer configuration, EDSR(blocks B, channels F, res_scale):

    mean shift  x - mean                                        (no parameters)
    head        conv 3x3, C -> F
    body        B x ResidualBlock(F, res_scale)                 (conv 3x3, ReLU, conv 3x3, * res_scale, + x)
                conv 3x3, F -> F, + head output                 (global skip)
    upsample    sub-pixel stages: x2 and x3 one stage, x4 two x2 stages, x8 three
                (each conv 3x3 F -> F*f^2, PixelShuffle(f), no activation)
    tail        conv 3x3, F -> C
    mean shift  + mean

Presets: ``edsr-baseline`` (B=16, F=64, res_scale 1.0) and ``edsr`` (B=32, F=256, res_scale 0.1).

Mean shift: the paper subtracts the training set's RGB mean (DIV2K: 0.4488, 0.4371, 0.4040 on a
[0, 1] scale) so the network works on roughly zero-centred data. That mean is only meaningful for
RGB, so for 1 or N channels we subtract the constant 0.5 per channel (the middle of [0, 1]). It is a
fixed buffer, not a learned parameter, and not stored in state dicts (it follows from
``in_channels``).
"""

from __future__ import annotations

import torch
from torch import nn

from superres.models.blocks import ResidualBlock, check_channels, check_scale, conv3x3, make_upsampler
from superres.models.contract import ModelContract
from superres.scales import SCALES


#: Mean RGB of the DIV2K training images on a [0, 1] scale, as used by EDSR and RCAN.
DIV2K_RGB_MEAN: tuple[float, float, float] = (0.4488, 0.4371, 0.4040)


def image_mean(in_channels: int) -> torch.Tensor:
    """The ``1 x C x 1 x 1`` mean that EDSR/RCAN subtract: DIV2K's RGB mean for 3 channels, else 0.5.

    Any constant that roughly centres the data works; the DIV2K mean is the paper's choice for RGB,
    and 0.5 (the middle of [0, 1]) is the neutral choice for gray or multi-band images whose
    statistics we do not know.
    """
    values = DIV2K_RGB_MEAN if in_channels == 3 else (0.5,) * in_channels
    return torch.tensor(values, dtype=torch.float32).view(1, in_channels, 1, 1)


class EDSR(nn.Module):
    """Lim et al.'s EDSR; see the module docstring for the layout and presets.

    Args:
        scale: upscaling factor, one of 2, 3, 4, 8.
        in_channels: image channels (1, 3 or N bands); the output has the same number.
        blocks: residual blocks in the body (16 baseline, 32 full).
        channels: feature width (64 baseline, 256 full).
        res_scale: factor on each block's residual branch (1.0 baseline, 0.1 full).
    """

    #: Any channel count, scales 2, 3, 4 and 8 (superres.models.contract).
    CONTRACT = ModelContract(scales=SCALES, test_options={"blocks": 1, "channels": 8})

    def __init__(
        self, scale: int = 4, in_channels: int = 3, blocks: int = 16, channels: int = 64, res_scale: float = 1.0
    ) -> None:
        super().__init__()
        self.scale = check_scale(scale, SCALES)
        self.in_channels = check_channels(in_channels)
        if channels < 1 or blocks < 0:
            raise ValueError(f"channels must be >= 1 and blocks >= 0, got {channels} and {blocks}")
        self.register_buffer("mean", image_mean(in_channels), persistent=False)
        self.head = conv3x3(in_channels, channels)
        self.body = nn.Sequential(*[ResidualBlock(channels, res_scale) for _ in range(blocks)])
        self.body_end = conv3x3(channels, channels)
        self.upsample = make_upsampler("pixelshuffle", channels, scale)
        self.tail = conv3x3(channels, in_channels)

    def contract(self) -> ModelContract:
        return self.CONTRACT.bind(self.scale, self.in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x C x h x w in [0, 1] -> N x C x (r*h) x (r*w), not clamped."""
        features = self.head(x - self.mean)
        features = features + self.body_end(self.body(features))
        return self.tail(self.upsample(features)) + self.mean
