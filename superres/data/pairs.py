"""Training on your own LR/HR pairs (``data.train_pairs``): LR images that superres did not make.

A folder with ``HR/`` and ``LR/`` (or the benchmark layout ``HR/`` + ``LR_bicubic/X{scale}/``): each
HR is paired with the LR of the same base name (an ``x{scale}`` suffix on the LR name, as DIV2K's
``0001x4.png``, is accepted). Each LR must be ``HR / scale`` after the HR is cropped top-left to a
multiple of the scale; the LR may come from any degradation (camera pairs, JPEG, noise, another
resizer). Training crops are aligned: an LR crop of ``patch_size / scale`` at ``(y, x)`` and the HR
crop of ``patch_size`` at ``(scale*y, scale*x)``, with the same flip/rotation on both.

The draw is :class:`~superres.data.folders.HRFolderDataset`'s (:func:`~superres.data.folders.draw_crops`
over the LR images: item ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)``), so a seeded
run is deterministic. The images are kept in memory as integers.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from superres.data.folders import _BIT_DEPTHS, _read, crop_tables, draw_one_crop
from superres.data.patches import dihedral, to_tensor
from superres.errors import SuperresError
from superres.io import list_images

__all__ = ["PairedPatchDataset", "find_pairs"]


def find_pairs(root: str | os.PathLike[str], scale: int) -> list[tuple[Path, Path]]:
    """``(hr, lr)`` paths of a pairs folder, sorted by HR name; an error names the first HR without an LR."""
    root = Path(root)
    hr_dir = root / "HR"
    candidates = [root / "LR", root / "LR_bicubic" / f"X{scale}"]
    lr_dir = next((d for d in candidates if d.is_dir()), None)
    if not hr_dir.is_dir() or lr_dir is None:
        raise SuperresError(f"data.train_pairs: {root}: expected {root}/HR and {root}/LR (or {root}/LR_bicubic/X{scale})")
    lrs: dict[str, Path] = {}
    for p in list_images([lr_dir]):
        lrs.setdefault(p.stem, p)
    pairs = []
    for hr in sorted(list_images([hr_dir]), key=lambda p: p.stem):
        lr = lrs.get(hr.stem) or lrs.get(f"{hr.stem}x{scale}")
        if lr is None:
            raise SuperresError(f"data.train_pairs: {hr} has no LR in {lr_dir} ({hr.stem}.* or {hr.stem}x{scale}.*)")
        pairs.append((hr, lr))
    return pairs


class PairedPatchDataset(Dataset):
    """Aligned random crops of LR/HR pairs (module docstring). Items: ``(lr, hr)`` float32 ``C x h x w``."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        patch_size: int,
        scale: int,
        augment: bool = True,
        length: int | None = None,
        seed: int | None = None,
    ) -> None:
        if scale <= 0 or patch_size <= 0 or patch_size % scale:
            raise SuperresError(f"patch size {patch_size} is not a positive multiple of the scale {scale}")
        self.scale, self.patch_size, self.lr_patch = int(scale), int(patch_size), int(patch_size) // int(scale)
        self.augment, self.seed, self.epoch = augment, seed, 0
        self.pairs: list[tuple[Path, Path]] = []
        self.skipped: list[Path] = []
        self._hr: list[np.ndarray] = []
        self._lr: list[np.ndarray] = []
        first: np.ndarray | None = None
        for hr_path, lr_path in find_pairs(root, self.scale):
            hr, lr = _read(hr_path), _read(lr_path)
            s = self.scale
            if (hr.shape[0] // s, hr.shape[1] // s) != lr.shape[:2]:
                raise SuperresError(
                    f"data.train_pairs: {lr_path} is {lr.shape[1]}x{lr.shape[0]} but {hr_path} is {hr.shape[1]}x{hr.shape[0]}: "
                    f"not an x{s} pair (the LR must be the HR cropped to a multiple of {s}, divided by {s})"
                )
            if hr.shape[2] != lr.shape[2] or hr.dtype != lr.dtype:
                raise SuperresError(f"data.train_pairs: {lr_path} and {hr_path} differ in channels or bit depth")
            if first is not None and (hr.shape[2] != first.shape[2] or hr.dtype != first.dtype):
                raise SuperresError(f"data.train_pairs: {hr_path} has {hr.shape[2]} channel(s) of {hr.dtype}, "
                                    f"{self.pairs[0][0]} {first.shape[2]} of {first.dtype}; all pairs must agree")
            if lr.shape[0] < self.lr_patch or lr.shape[1] < self.lr_patch:
                self.skipped.append(hr_path)
                continue
            first = hr if first is None else first
            self.pairs.append((hr_path, lr_path))
            self._hr.append(hr[: lr.shape[0] * s, : lr.shape[1] * s])
            self._lr.append(lr)
        if first is None:
            raise SuperresError(f"data.train_pairs: {root}: no pair whose LR is at least {self.lr_patch}x{self.lr_patch} "
                                f"(data.patch_size / scale)")
        self.channels = int(first.shape[2])
        self.bit_depth = _BIT_DEPTHS[first.dtype]
        self.shapes = [(a.shape[0], a.shape[1]) for a in self._lr]
        self._cdf, self._heights, self._widths = crop_tables(self.shapes, self.lr_patch)
        tiles = sum((h // self.lr_patch) * (w // self.lr_patch) for h, w in self.shapes)
        self.length = int(length) if length is not None else max(tiles, len(self.pairs))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        i, y, x, code = draw_one_crop(self.seed, self.epoch, index, cdf=self._cdf, heights=self._heights,
                                      widths=self._widths, patch_size=self.lr_patch, augment=self.augment)
        p, s = self.lr_patch, self.scale
        lr = self._lr[i][y : y + p, x : x + p]
        hr = self._hr[i][y * s : (y + p) * s, x * s : (x + p) * s]
        if self.augment:
            lr, hr = dihedral(lr, code), dihedral(hr, code)
        return to_tensor(np.ascontiguousarray(lr)), to_tensor(np.ascontiguousarray(hr))
