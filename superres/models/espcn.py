"""ESPCN: the efficient sub-pixel convolutional network.

Paper: W. Shi, J. Caballero, F. Huszar, J. Totz, A. P. Aitken, R. Bishop, D. Rueckert and Z. Wang,
"Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel Convolutional
Neural Network", CVPR 2016.

Why it matters: every layer runs at the low resolution and a single sub-pixel convolution
(convolution to ``C * r^2`` channels followed by a periodic shuffle, ``nn.PixelShuffle``) produces
the high-resolution image at the very end, so it costs ``r^2`` times less than networks that work on
a bicubic-upscaled input.

Layer configuration (the paper's ``(f1, n1) = (5, 64), (f2, n2) = (3, 32), f3 = 3``):

    conv 5x5, C -> 64, tanh
    conv 3x3, 64 -> 32, tanh
    conv 3x3, 32 -> C * r^2
    PixelShuffle(r)

The paper uses tanh (not ReLU) and we keep it. Convolutions use zero "same" padding so the output
is exactly ``r*h x r*w``. One shuffle stage of factor ``r`` for every scale, as in the paper (not a
cascade of x2 stages), which is why x8 works as well.
"""

from __future__ import annotations

import torch
from torch import nn

from superres.models.blocks import check_channels, check_scale, last_conv, make_upsampler
from superres.models.contract import ModelContract
from superres.scales import SCALES



class ESPCN(nn.Module):
    """Shi et al.'s ESPCN: three low-resolution convolutions and one sub-pixel shuffle.

    Args:
        scale: upscaling factor, one of 2, 3, 4, 8.
        in_channels: image channels (1 for Y only, 3 for RGB, or any number of bands); the output
            has the same number of channels.
        channels: width of the first layer (64 in the paper; old name ``features``, still accepted
            by :func:`superres.models.build`).
        hidden: width of the second layer (32 in the paper).
    """

    #: Any channel count, scales 2, 3, 4 and 8 (superres.models.contract).
    CONTRACT = ModelContract(scales=SCALES, test_options={"channels": 8, "hidden": 4})

    def __init__(self, scale: int = 4, in_channels: int = 1, channels: int = 64, hidden: int = 32) -> None:
        super().__init__()
        self.scale = check_scale(scale, SCALES)
        self.in_channels = check_channels(in_channels)
        if channels < 1 or hidden < 1:
            raise ValueError(f"channels and hidden must be >= 1, got {channels} and {hidden}")
        self.conv1 = nn.Conv2d(in_channels, channels, 5, padding=2)
        self.conv2 = nn.Conv2d(channels, hidden, 3, padding=1)
        # Projection-mode sub-pixel layer: 3x3 conv hidden -> C*r^2, PixelShuffle(r), one stage.
        self.up = make_upsampler("pixelshuffle", hidden, scale, out_channels=in_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        """Xavier (Glorot) init, the variance-preserving choice for tanh (gain 5/3), gain 1 for the
        linear output layer; zero biases.

        The paper does not state its initialisation; PyTorch's default (Kaiming-uniform with
        a = sqrt(5)) under-scales tanh layers, which slows the first epochs.
        """
        for conv in (self.conv1, self.conv2):
            nn.init.xavier_uniform_(conv.weight, gain=nn.init.calculate_gain("tanh"))
            nn.init.zeros_(conv.bias)
        out = last_conv(self.up)
        nn.init.xavier_uniform_(out.weight)
        nn.init.zeros_(out.bias)

    def contract(self) -> ModelContract:
        return self.CONTRACT.bind(self.scale, self.in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x C x h x w in [0, 1] -> N x C x (r*h) x (r*w), not clamped."""
        x = torch.tanh(self.conv1(x))
        x = torch.tanh(self.conv2(x))
        return self.up(x)
