"""SRVGG: Real-ESRGAN's compact VGG-style network (``SRVGGNetCompact``; Wang et al., Real-ESRGAN 2021,
the realesr-general-x4v3 and realesr-animevideov3 models).

Layout (module indices as in the published state dicts, ``body.<i>.weight``)::

    body.0            3x3 conv, C_in -> F
    body.1            PReLU (F slopes)
    body.2k, 2k+1     `blocks` x (3x3 conv F -> F, PReLU), k = 1 .. blocks
    body.2*blocks+2   3x3 conv, F -> C_in * scale^2
    pixel shuffle by `scale`, plus the input upsampled with nearest neighbour (a residual on the
    nearest image, not on bicubic)

Published shapes: realesr-general-x4v3 is 64 features x 32 convs (1,213,296 parameters at x4 RGB),
realesr-animevideov3 64 x 16 (621,424); both counted layer by layer in ``tests/test_realesr.py``.
Output is not clamped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from superres.models.contract import ModelContract
from superres.scales import SCALES

__all__ = ["SRVGG"]


class SRVGG(nn.Module):
    """Conv + PReLU, ``blocks`` x (conv + PReLU), conv to ``C*scale^2``, pixel shuffle, + nearest input."""

    CONTRACT = ModelContract(scales=SCALES, channel_counts=None, test_options={"channels": 8, "blocks": 2})

    def __init__(self, scale: int = 4, in_channels: int = 3, channels: int = 64, blocks: int = 32) -> None:
        super().__init__()
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {', '.join(map(str, SCALES))}, got {scale}")
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if channels < 1 or blocks < 0:
            raise ValueError(f"channels must be >= 1 and blocks >= 0, got {channels}, {blocks}")
        self.scale, self.in_channels = int(scale), int(in_channels)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 3, padding=1), nn.PReLU(channels)]
        for _ in range(blocks):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.PReLU(channels)]
        layers.append(nn.Conv2d(channels, in_channels * scale * scale, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def contract(self) -> ModelContract:
        return self.CONTRACT.bind(self.scale, self.in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.pixel_shuffle(self.body(x), self.scale)
        return out + F.interpolate(x, scale_factor=float(self.scale), mode="nearest")
