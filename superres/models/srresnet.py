"""SRResNet: the generator of SRGAN, trained alone with a pixel loss.

Paper: C. Ledig, L. Theis, F. Huszar, J. Caballero, A. Cunningham, A. Acosta, A. Aitken, A. Tejani,
J. Totz, Z. Wang and W. Shi, "Photo-Realistic Single Image Super-Resolution Using a Generative
Adversarial Network", CVPR 2017.

Why it matters: a deep ResNet (16 residual blocks, a long skip, sub-pixel upsampling) for
SR at x4; with an MSE loss it is the "SRResNet" PSNR baseline, with the adversarial and VGG losses
the same network is the SRGAN generator (see :mod:`superres.models.discriminators`).

Layer configuration (Figure 4 of the paper; B = 16 blocks, 64 channels):

    head      conv 9x9, C -> 64, PReLU
    body      B x [conv 3x3 -> BN -> PReLU -> conv 3x3 -> BN] + identity   (short skips)
              conv 3x3 -> BN, + head output                                 (long skip)
    upsample  per x2 stage: conv 3x3 64 -> 256, PixelShuffle(2), PReLU
              (x2: one stage, x4: two, x8: three; x3: one stage conv 64 -> 576, PixelShuffle(3), PReLU)
    tail      conv 9x9, 64 -> C

Choices the paper leaves open: PReLU has one slope per channel (He et al.'s default), and the
convolutions followed by BN have no bias (BN's shift makes it redundant). Batch norm behaves
differently in ``train()`` and ``eval()``: evaluate in ``eval()`` mode (running statistics).
"""

from __future__ import annotations

import torch
from torch import nn

from superres.models.blocks import check_channels, check_scale, conv3x3, make_upsampler, upsample_stages
from superres.models.contract import ModelContract
from superres.scales import SCALES



class BNResidualBlock(nn.Module):
    """SRResNet's block: ``x + BN(conv(PReLU(BN(conv(x)))))``.

    Unlike EDSR's :class:`~superres.models.blocks.ResidualBlock` it keeps batch norm (EDSR later
    showed that dropping it helps PSNR; SRResNet predates that finding).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(channels, channels, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.act = nn.PReLU(channels)
        self.conv2 = conv3x3(channels, channels, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))


class SRResNet(nn.Module):
    """Ledig et al.'s SRResNet (the SRGAN generator).

    Args:
        scale: upscaling factor, one of 2, 3, 4, 8.
        in_channels: image channels (1, 3 or N bands); the output has the same number.
        channels: feature width (64 in the paper).
        blocks: number of BN residual blocks (16 in the paper).
    """

    #: Any channel count, scales 2, 3, 4 and 8 (superres.models.contract).
    CONTRACT = ModelContract(scales=SCALES, test_options={"channels": 8, "blocks": 1})

    def __init__(self, scale: int = 4, in_channels: int = 3, channels: int = 64, blocks: int = 16) -> None:
        super().__init__()
        self.scale = check_scale(scale, SCALES)
        self.in_channels = check_channels(in_channels)
        if channels < 1 or blocks < 0:
            raise ValueError(f"channels must be >= 1 and blocks >= 0, got {channels} and {blocks}")
        self.head = nn.Sequential(nn.Conv2d(in_channels, channels, 9, padding=4), nn.PReLU(channels))
        self.body = nn.Sequential(*[BNResidualBlock(channels) for _ in range(blocks)])
        self.body_end = nn.Sequential(conv3x3(channels, channels, bias=False), nn.BatchNorm2d(channels))
        # Each sub-pixel stage (shared block: conv to C*f^2 + PixelShuffle(f)) is followed by a PReLU,
        # which is specific to SRResNet (EDSR's upsampler has no activation).
        stages: list[nn.Module] = []
        for factor in upsample_stages(scale):
            stages += [make_upsampler("pixelshuffle", channels, factor), nn.PReLU(channels)]
        self.upsample = nn.Sequential(*stages)
        self.tail = nn.Conv2d(channels, in_channels, 9, padding=4)

    def contract(self) -> ModelContract:
        return self.CONTRACT.bind(self.scale, self.in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x C x h x w in [0, 1] -> N x C x (r*h) x (r*w), not clamped."""
        features = self.head(x)
        features = features + self.body_end(self.body(features))
        return self.tail(self.upsample(features))
