"""Validation during training, under the paper protocol, next to the bicubic baseline.

Each validation image goes through the model one at a time (benchmark images differ in size). The SR
output is clamped to ``[0, 1]`` and quantised to the image's bit depth (``round(x * (2^b - 1))``).
This is what saving it as an 8/16-bit file does, so the figures are those ``superres eval`` reports for
the exported model. It is then scored with :func:`superres.metrics.psnr_torch` /
:func:`~superres.metrics.ssim_torch`: PSNR-Y / SSIM-Y of BT.601 for colour, intensity for gray, all
bands for other channel counts, ``shave = scale``, values in ``[0, 1]`` with ``data_range = 1``.
Because values are in ``[0, 1]`` whatever the bit depth, a 16-bit image is scored on its 65535 levels
exactly as on the 0..65535 scale (PSNR and SSIM do not change when the values and the peak are
scaled together).

The bicubic baseline is computed once when the validator is built. It is ``imresize(LR, scale)`` on
the integer LR, rounded after each pass (MATLAB on uint8), which is how the published bicubic rows
and ``superres eval --model bicubic`` are made. Logs can then show the model's gain over bicubic.

With ``perceptual=True`` (``train.val_perceptual``) every score also has ``effdist``
(:mod:`superres.perceptual`, the default of ``superres eval --perceptual``), computed on the same
quantised output with the same shave, RGB or gray replicated; the bicubic baseline gets it too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from superres.data import PairedFolderDataset
from superres.data.patches import to_tensor
from superres.errors import SuperresError
from superres.metrics import mean_psnr, psnr_torch, ssim_torch
from superres.perceptual import DEFAULT_PERCEPTUAL, build_perceptual
from superres.resize import imresize


def quantise(x: torch.Tensor, bit_depth: int) -> torch.Tensor:
    """Clamp to ``[0, 1]`` and round to the ``2**bit_depth`` levels a saved file holds.

    Rounding is to nearest, ties to even, in float32, as :func:`superres.io.to_integer` writes files.
    """
    levels = float(2**bit_depth - 1)
    return x.clamp(0.0, 1.0).mul(levels).round().div(levels)


def check_val_folder(root: str | Path, scale: int, key: str = "data.val") -> None:
    """Raise a :class:`SuperresError` naming ``key`` unless ``root`` is a benchmark folder (has ``HR/``)."""
    root = Path(root)
    if not (root / "HR").is_dir():
        what = "is not a folder" if not root.is_dir() else "has no HR/ folder"
        raise SuperresError(f"{key}: {root} {what} (expected DIR/HR and DIR/LR_bicubic/X{scale})")


def _scores(sr: torch.Tensor, hr: torch.Tensor, scale: int) -> tuple[float, float]:
    p = psnr_torch(sr, hr, shave=scale, channels="y", data_range=1.0)
    s = ssim_torch(sr, hr, shave=scale, channels="y", data_range=1.0)
    return float(p[0]), float(s[0])


class Validator:
    """Scores a model on a benchmark folder (``HR/`` + ``LR_bicubic/X{s}/``); holds the bicubic figures."""

    def __init__(self, root: str | Path, *, scale: int, in_channels: int, limit: int | None, device: torch.device,
                 perceptual: bool = False) -> None:

        root = Path(root)
        check_val_folder(root, scale)
        dataset = PairedFolderDataset(root, scale)
        items = dataset.items[:limit] if limit is not None else dataset.items
        for item in items:
            channels = item["hr"].shape[2]
            if channels != in_channels and not (channels == 1 and in_channels == 3):
                raise SuperresError(
                    f"data.val: {root}/HR/{item['name']} has {channels} channel(s) but model.in_channels is {in_channels}"
                )
        self.root = root
        self.scale = scale
        self.in_channels = in_channels
        self.device = device
        self.names = [item["name"] for item in items]
        self.bit_depths = [int(item["bit_depth"]) for item in items]
        self._lr = [to_tensor(item["lr"]).unsqueeze(0) for item in items]
        self._hr = [to_tensor(item["hr"]).unsqueeze(0) for item in items]
        self.metric: nn.Module | None = None
        if perceptual:
            if in_channels not in (1, 3):
                raise SuperresError(f"train.val_perceptual: needs RGB or gray images, model.in_channels is {in_channels}")

            self.metric = build_perceptual(DEFAULT_PERCEPTUAL)

        psnrs, ssims, dists = [], [], []
        for item, hr in zip(items, self._hr):
            bicubic = to_tensor(np.asarray(imresize(item["lr"], scale))).unsqueeze(0)  # integer in and out (MATLAB)
            p, s = _scores(bicubic, hr, scale)
            psnrs.append(p)
            ssims.append(s)
            if self.metric is not None:
                dists.append(self._distance(bicubic, hr))
        self.bicubic = {"psnr_y": mean_psnr(psnrs), "ssim_y": float(np.mean(ssims))}
        if self.metric is not None:
            self.bicubic[self.metric.metric_name] = float(np.mean(dists))

    @torch.no_grad()
    def _distance(self, sr: torch.Tensor, hr: torch.Tensor) -> float:
        """The perceptual metric on the CPU, ``scale`` pixels shaved as for PSNR."""
        s = self.scale
        return float(self.metric(sr[..., s:-s, s:-s].float(), hr[..., s:-s, s:-s].float())[0])

    @torch.no_grad()
    def score(self, model: nn.Module) -> dict[str, Any]:
        """Mean PSNR-Y / SSIM-Y of ``model`` (an unwrapped module; left in the mode it was in)."""
        was_training = model.training
        model.eval()
        psnrs, ssims, dists = [], [], []
        try:
            for lr, hr, bits in zip(self._lr, self._hr, self.bit_depths):
                if lr.shape[1] == 1 and self.in_channels == 3:
                    # a gray image (Set14's bridge, say) as `superres eval` runs it: replicated to RGB,
                    # the output averaged back to one channel (superres.inference)
                    sr = model(lr.expand(-1, 3, -1, -1).to(self.device)).float().cpu().mean(dim=1, keepdim=True)
                else:
                    sr = model(lr.to(self.device)).float().cpu()
                if sr.shape != hr.shape:
                    raise SuperresError(
                        f"data.val: the model maps {tuple(lr.shape[-2:])} to {tuple(sr.shape[-2:])}, "
                        f"expected {tuple(hr.shape[-2:])}"
                    )
                p, s = _scores(quantise(sr, bits), hr, self.scale)
                psnrs.append(p)
                ssims.append(s)
                if self.metric is not None:
                    dists.append(self._distance(quantise(sr, bits), hr))
        finally:
            model.train(was_training)
        out = {"psnr_y": mean_psnr(psnrs), "ssim_y": float(np.mean(ssims))}
        if self.metric is not None:
            out[self.metric.metric_name] = float(np.mean(dists))
        return out
