"""RCAN: the residual channel attention network.

Paper: Y. Zhang, K. Li, K. Li, L. Wang, B. Zhong and Y. Fu, "Image Super-Resolution Using Very Deep
Residual Channel Attention Networks", ECCV 2018.

Why it matters: a residual-in-residual structure (long skip around G residual groups, a short skip
around each group) lets a network with over 400 layers train, and channel attention re-weights the
feature maps so the abundant low-frequency information is bypassed and the capacity goes to the
high-frequency detail.

Layer configuration, RCAN(groups G, blocks B, channels F, reduction r):

    mean shift   x - mean                          (no parameters; see superres.models.edsr)
    head         conv 3x3, C -> F
    body         G x ResidualGroup:
                     B x RCAB: x + CA(conv 3x3(ReLU(conv 3x3(x))))
                     conv 3x3, + group input                          (short skip)
                 conv 3x3, + head output                              (long skip)
    upsample     sub-pixel stages as EDSR (conv 3x3 F -> F*f^2, PixelShuffle(f); x4 = two x2)
    tail         conv 3x3, F -> C
    mean shift   + mean
    CA(x)        x * sigmoid(conv 1x1 F/r -> F (ReLU(conv 1x1 F -> F/r (global average pool(x)))))

Presets:

* ``rcan``: G=10, B=20, F=64, r=16, the paper's configuration.
* ``rcan-small``: G=3, B=6, F=32, r=16. Our choice: the same structure (long, short and block
  skips, channel attention) at 1/11 of the depth and half the width (F/r = 2 attention channels),
  for experiments that must train in minutes. 0.45M parameters at x4, between FSRCNN and
  EDSR-baseline.

The mean shift is EDSR's (DIV2K RGB mean for 3 channels, 0.5 per channel otherwise).
"""

from __future__ import annotations

import torch
from torch import nn

from superres.models.blocks import check_channels, check_scale, conv3x3, make_upsampler
from superres.models.edsr import image_mean
from superres.models.contract import ModelContract
from superres.scales import SCALES



class ChannelAttention(nn.Module):
    """Squeeze-and-excitation style channel attention: per-channel weights in (0, 1) from global pooling.

    The squeeze to ``channels // reduction`` (at least 1) keeps it cheap; 1x1 convolutions on the
    pooled ``N x F x 1 x 1`` tensor are the two dense layers.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        squeezed = max(1, channels // reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.squeeze = nn.Conv2d(channels, squeezed, 1)
        self.act = nn.ReLU(inplace=True)
        self.excite = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.sigmoid(self.excite(self.act(self.squeeze(self.pool(x)))))
        return x * weights


class RCAB(nn.Module):
    """Residual channel attention block: ``x + CA(conv(ReLU(conv(x))))`` (no batch norm, no res scaling)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(channels, channels)
        self.attention = ChannelAttention(channels, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attention(self.conv2(self.act(self.conv1(x))))


class ResidualGroup(nn.Module):
    """``blocks`` RCABs and a conv, wrapped in a short skip connection."""

    def __init__(self, channels: int, blocks: int, reduction: int = 16) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[RCAB(channels, reduction) for _ in range(blocks)])
        self.conv = conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(self.blocks(x))


class RCAN(nn.Module):
    """Zhang et al.'s RCAN; see the module docstring for the layout and presets.

    Args:
        scale: upscaling factor, one of 2, 3, 4, 8.
        in_channels: image channels (1, 3 or N bands); the output has the same number.
        groups: residual groups G (10 in the paper).
        blocks: RCABs per group B (20 in the paper).
        channels: feature width F (64 in the paper).
        reduction: channel attention reduction r (16 in the paper).
    """

    #: Any channel count, scales 2, 3, 4 and 8 (superres.models.contract).
    CONTRACT = ModelContract(scales=SCALES, test_options={"groups": 1, "blocks": 1, "channels": 8, "reduction": 4})

    def __init__(
        self,
        scale: int = 4,
        in_channels: int = 3,
        groups: int = 10,
        blocks: int = 20,
        channels: int = 64,
        reduction: int = 16,
    ) -> None:
        super().__init__()
        self.scale = check_scale(scale, SCALES)
        self.in_channels = check_channels(in_channels)
        if channels < 1 or groups < 0 or blocks < 0 or reduction < 1:
            raise ValueError(
                f"need channels, reduction >= 1 and groups, blocks >= 0, got channels={channels}, "
                f"reduction={reduction}, groups={groups}, blocks={blocks}"
            )
        self.register_buffer("mean", image_mean(in_channels), persistent=False)
        self.head = conv3x3(in_channels, channels)
        self.body = nn.Sequential(*[ResidualGroup(channels, blocks, reduction) for _ in range(groups)])
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
