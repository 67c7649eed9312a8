"""``enhanced``: a residual network that learns only the detail bicubic misses, cheap enough for a CPU.

Layers (defaults: 48 features, 8 residual blocks, pixelshuffle upsampler)::

    centre     x - 0.5 (inputs in [0, 1]; a fixed shift, no parameters)           (LR)
    head       3x3 conv, in_channels -> 48                                       (LR)
    trunk      8 x [3x3 conv -> ReLU -> 3x3 conv] * res_scale + identity (short)  (LR)
               3x3 conv, then + head output (long skip)                          (LR)
    tail       projection upsampler, 48 features -> in_channels at HR in one stage
               (pixelshuffle: 3x3 conv 48 -> in_channels*s^2, PixelShuffle(s))
    output     bicubic(x) + tail                                                 (HR)
               (pixelshuffle: the bicubic phases and the tail conv are added at LR, then
               one PixelShuffle; the same values as adding after two)

Why it is fast on a CPU: every 3x3 conv with 48 inputs runs at the LR resolution; the only HR-sized
tensor is the final ``in_channels``-channel sum. Why it trains fast: the network predicts only the
residual over bicubic (global residual learning, Kim et al. 2016), so at step 0 it already scores
like bicubic; the tail's last conv starts at 0.1x its default initialisation with zero bias
(``tail_init``) so that starting point is not disturbed by noise.

Bicubic path: PyTorch's bicubic upscale, ``F.interpolate(x, scale_factor=s, mode="bicubic",
align_corners=False)`` (Keys' cubic with a = -0.75, edge pixels replicated), computed as a fixed
grouped 5x5 conv and a pixel shuffle (:class:`superres.models.blocks.BicubicUpsample`; equal to the
``F.interpolate`` call within 5e-6). It is not the MATLAB kernel (a = -0.5) that made the LR images;
the learned residual absorbs the small kernel difference, and the shipped weights were trained with
this one. The conv form is 2.5-4x faster than ``F.interpolate`` on a CPU and about 40x faster than
onnxruntime's cubic ``Resize`` (``benchmarks/ops_speed.py``), which had taken half of this model's
ONNX run time.

Upsampler choices (``upsampler``), all in projection mode from :mod:`superres.models.blocks`; the
output is always ``bicubic(x) + tail(features)`` and the kinds differ only in how the residual is
brought to HR:

* ``pixelshuffle`` (default): 3x3 conv at LR to ``C*s^2`` channels, ``PixelShuffle(s)``.
* ``deconv``: one transposed conv, stride ``s``, LR features -> ``C`` channels at HR.
* ``nearest``: nearest-neighbour resize of the 48 features to HR, then 3x3 conv to ``C``.
* ``bicubic``: bicubic resize (same ``F.interpolate`` call) of the 48 LR features to HR, then 3x3 conv
  to ``C``; so the residual is itself a learned combination of bicubic-upscaled features:
  ``y = bicubic(x) + conv3x3(bicubic(features(x)))``. The 48 -> C conv at HR has the same
  multiply-adds as pixelshuffle's 48 -> C*s^2 conv at LR, but the 48-channel HR feature map costs
  s^2 times the memory and the interpolation time (not counted as FLOPs).

Why 48 x 8: docs/BENCHMARKS.md, "Enhanced: width and depth" (a one-off experiment).
"""

from __future__ import annotations

import torch
from torch import nn

from superres.models.blocks import (
    MODEL_SCALES,
    TORCH_CUBIC_A,
    BicubicUpsample,
    PixelShuffle,
    ResidualBlock,
    UpsamplerKind,
    check_channels,
    check_scale,
    check_upsampler,
    conv3x3,
    last_conv,
    make_upsampler,
    scale_init_,
)
from superres.models.contract import ModelContract


class Enhanced(nn.Module):
    """Global-residual EDSR-style network, all heavy convs at LR; output not clamped.

    Args:
        scale: upscaling factor, 2, 3 or 4.
        in_channels: image channels (1 gray, 3 RGB, N bands); the output has the same number.
        channels: feature width of the trunk.
        blocks: residual blocks in the trunk (old name ``num_blocks``, still accepted by
            :func:`superres.models.build`).
        res_scale: factor on each block's residual branch (EDSR uses 0.1 for very deep/wide nets).
        upsampler: how the residual reaches HR (module docstring).
        tail_init: factor on the default initialisation of the last conv (0 starts exactly at bicubic
            but then the trunk receives no gradient on the first step).
    """

    #: Any channel count, scales 2, 3 and 4 (superres.models.contract).
    CONTRACT = ModelContract(scales=MODEL_SCALES, test_options={"channels": 8, "blocks": 1})

    def __init__(
        self,
        scale: int,
        in_channels: int = 3,
        channels: int = 48,
        blocks: int = 8,
        res_scale: float = 1.0,
        upsampler: UpsamplerKind = "pixelshuffle",
        tail_init: float = 0.1,
    ) -> None:
        super().__init__()
        self.scale = check_scale(scale)
        self.in_channels = check_channels(in_channels)
        check_upsampler(upsampler)
        if channels < 1 or blocks < 0:
            raise ValueError(f"channels must be >= 1 and blocks >= 0, got {channels} and {blocks}")
        self.head = conv3x3(in_channels, channels)
        self.blocks = nn.Sequential(*[ResidualBlock(channels, res_scale) for _ in range(blocks)])
        self.trunk_conv = conv3x3(channels, channels)
        self.tail = make_upsampler(upsampler, channels, scale, out_channels=in_channels)
        scale_init_(last_conv(self.tail), tail_init)
        self.bicubic = BicubicUpsample(self.scale, in_channels, a=TORCH_CUBIC_A)

    def contract(self) -> ModelContract:
        return self.CONTRACT.bind(self.scale, self.in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``N x C x h x w`` in [0, 1] -> ``N x C x (h*scale) x (w*scale)``."""
        features = self.head(x - 0.5)
        features = features + self.trunk_conv(self.blocks(features))
        if isinstance(self.tail[-1], PixelShuffle):
            # pixelshuffle: the bicubic phases and the tail's conv output share the C*s^2 channel
            # layout, so they are added before one shuffle; the same sums as shuffling each and
            # adding, without shuffling an HR-sized tensor twice
            return self.bicubic.shuffle(self.bicubic.phases(x) + self.tail[0](features))
        return self.bicubic(x) + self.tail(features)
