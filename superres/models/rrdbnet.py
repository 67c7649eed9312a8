"""RRDBNet: the generator of ESRGAN (Wang et al., ECCV-W 2018) and Real-ESRGAN (ICCV-W 2021).

Layout (the papers' Fig. 4 / Real-ESRGAN Fig. 5), named as BasicSR's state dicts name it so that the
published weights load with at most a renaming (:mod:`superres.community`)::

    conv_first   3x3, C_in' -> F             (C_in' = C_in * (4 / scale)^2: pixel-unshuffle below x4)
    body.i       `blocks` x RRDB: 3 residual dense blocks rdb1..rdb3, each 5 convs conv1..conv5
                 (conv k: F + (k-1)*G -> G, LeakyReLU 0.2; conv5 -> F, no activation), output
                 x + 0.2 * dense(x); the RRDB returns x + 0.2 * rdb3(rdb2(rdb1(x)))
    conv_body    3x3, F -> F, added to conv_first's output
    conv_up1/2   nearest x2 then 3x3 F -> F, LeakyReLU 0.2 (each)
    conv_hr      3x3, F -> F, LeakyReLU 0.2
    conv_last    3x3, F -> C_out

The network always upsamples by 4; Real-ESRGAN's x2 model first pixel-unshuffles the input by 2 (so
``conv_first`` takes 4 x C_in channels). An odd-sized input to the x2 model is padded to even size
(replicating the last row/column; Real-ESRGAN's own inference reflects) and the output cropped.
64 features, 23 blocks and growth 32 (the defaults) are ESRGAN's and Real-ESRGAN's x4plus/x2plus
models: 16,697,987 parameters at x4 RGB. Output is not clamped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from superres.models.contract import ModelContract

__all__ = ["RRDBNet", "ResidualDenseBlock", "RRDB"]

RRDB_SCALES = (2, 4)


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convs, each seeing the block input and all earlier outputs; scaled residual."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        for k in range(1, 5):
            setattr(self, f"conv{k}", nn.Conv2d(channels + (k - 1) * growth, growth, 3, padding=1))
        self.conv5 = nn.Conv2d(channels + 4 * growth, channels, 3, padding=1)
        for k in range(1, 6):
            conv = getattr(self, f"conv{k}")
            nn.init.kaiming_normal_(conv.weight)
            conv.weight.data.mul_(0.1)  # small residual branches: stable training from scratch
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for k in range(1, 5):
            feats.append(F.leaky_relu(getattr(self, f"conv{k}")(torch.cat(feats, 1)), 0.2))
        return x + 0.2 * self.conv5(torch.cat(feats, 1))


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks, scaled residual."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(channels, growth)
        self.rdb2 = ResidualDenseBlock(channels, growth)
        self.rdb3 = ResidualDenseBlock(channels, growth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.rdb3(self.rdb2(self.rdb1(x)))


class RRDBNet(nn.Module):
    """ESRGAN / Real-ESRGAN generator for x4 (and x2 through pixel-unshuffle); see the module docstring."""

    CONTRACT = ModelContract(
        scales=RRDB_SCALES,
        channel_counts=None,
        test_options={"channels": 8, "blocks": 1, "growth": 4},
    )

    def __init__(self, scale: int = 4, in_channels: int = 3, channels: int = 64, blocks: int = 23, growth: int = 32) -> None:
        super().__init__()
        if scale not in RRDB_SCALES:
            raise ValueError(f"scale must be one of {', '.join(map(str, RRDB_SCALES))} (x4 net, x2 by pixel-unshuffle), got {scale}")
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if channels < 1 or blocks < 1 or growth < 1:
            raise ValueError(f"channels, blocks and growth must be >= 1, got {channels}, {blocks}, {growth}")
        self.scale, self.in_channels = int(scale), int(in_channels)
        self.unshuffle = 4 // self.scale
        self.conv_first = nn.Conv2d(in_channels * self.unshuffle**2, channels, 3, padding=1)
        self.body = nn.Sequential(*[RRDB(channels, growth) for _ in range(blocks)])
        self.conv_body = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv_up1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv_up2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv_hr = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv_last = nn.Conv2d(channels, in_channels, 3, padding=1)

    def contract(self) -> ModelContract:
        return self.CONTRACT.bind(self.scale, self.in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        r = self.unshuffle
        if r > 1:
            # Pad to a multiple of r (replicate: works for any size, also 1 pixel); always called, with
            # zero padding when already even, so that a traced (ONNX) graph handles every size.
            x = F.pad(x, (0, (r - w % r) % r, 0, (r - h % r) % r), mode="replicate")
            x = F.pixel_unshuffle(x, r)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = F.leaky_relu(self.conv_up1(F.interpolate(feat, scale_factor=2.0, mode="nearest")), 0.2)
        feat = F.leaky_relu(self.conv_up2(F.interpolate(feat, scale_factor=2.0, mode="nearest")), 0.2)
        out = self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))
        if r > 1:
            out = out[..., : h * self.scale, : w * self.scale]
        return out
