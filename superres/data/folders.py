"""Datasets read straight from image folders.

* :class:`HRFolderDataset`: training from HR images only. Each item is a random HR crop with a random
  flip/rotation; its LR is made on the fly with MATLAB-exact bicubic, so one folder serves any scale
  and every epoch sees new crops.
* :class:`PairedFolderDataset`: a benchmark in the ``DIR/HR`` + ``DIR/LR_bicubic/X{s}`` layout, whole
  images, for validation and evaluation.

Both keep images as their native integers (``uint8``/``uint16``) and hand out ``float32`` ``C x H x W``
tensors in ``[0, 1]``, the project's convention.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from superres.data.patches import dihedral, downscale, to_tensor
from superres.errors import SuperresError
from superres.io import list_images, read_array
from superres.resize import modcrop

#: Integer types the datasets keep in memory, with the bit depth they stand for.
_BIT_DEPTHS = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}


def _read(path: Path) -> np.ndarray:
    """``H x W x C`` native integers of one file (``superres.io.read_array``; alpha is not part of it)."""
    array = np.asarray(read_array(path))
    if array.ndim == 2:
        array = array[:, :, None]
    if array.dtype not in _BIT_DEPTHS:
        raise SuperresError(f"{path}: unsupported pixel type {array.dtype} (expected 8- or 16-bit integers)")
    return array


# --------------------------------------------------------------------------- the crop draw
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on a ``uint64`` array (wrapping arithmetic): a bijection that spreads
    every input bit over every output bit."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def draw_uniforms(seed: int, epoch: int, indices: np.ndarray, count: int) -> np.ndarray:
    """``len(indices) x count`` floats in ``[0, 1)``: a pure function of ``(seed, epoch, index, k)``.

    A counter-based generator: each value is the 53 top bits of a SplitMix64 hash chain over the
    four integers. It needs no generator object per item, so a whole batch is drawn in a few numpy
    operations (``np.random.default_rng((seed, epoch, index))`` per item cost about 30 us each), and
    every item is the same whether it is drawn alone or in a batch, in any order, in any process.
    """
    with np.errstate(over="ignore"):
        key = _mix64(np.asarray([seed % 2**64], dtype=np.uint64) + _GOLDEN)
        key = _mix64((key ^ np.uint64(epoch % 2**64)) + _GOLDEN)
        idx = np.asarray(indices, dtype=np.int64).astype(np.uint64).reshape(-1, 1)
        item = _mix64((key ^ idx) + _GOLDEN)
        k = np.arange(count, dtype=np.uint64).reshape(1, -1)
        bits = _mix64((item ^ k) * _GOLDEN + _GOLDEN)
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


def draw_crops(
    seed: int, epoch: int, indices: np.ndarray, *, cdf: np.ndarray, heights: np.ndarray, widths: np.ndarray,
    patch_size: int, augment: bool,
) -> np.ndarray:
    """``len(indices) x 4`` int64: image, top row, left column and dihedral code of each item.

    The image is picked with the probabilities whose cumulative sum is ``cdf`` (so, weighted by the
    number of crop positions, every position of every image is equally likely); then a top row and a
    left column, each uniform over the image's positions; then one of the 8 flips/rotations (0
    without ``augment``). :class:`HRFolderDataset` draws its items and
    :class:`superres.training.device_data.DeviceBatches` its batches with this one function, so both
    paths cut the same crops.
    """
    u = draw_uniforms(seed, epoch, indices, 4)
    k = np.minimum(np.searchsorted(cdf, u[:, 0], side="right"), len(cdf) - 1)
    rows = heights[k] - patch_size + 1
    cols = widths[k] - patch_size + 1
    y = np.minimum((u[:, 1] * rows).astype(np.int64), rows - 1)
    x = np.minimum((u[:, 2] * cols).astype(np.int64), cols - 1)
    code = np.minimum((u[:, 3] * 8).astype(np.int64), 7) if augment else np.zeros(len(k), dtype=np.int64)
    return np.stack([k.astype(np.int64), y, x, code], axis=1)


def draw_one_crop(
    seed: int | None, epoch: int, index: int, *, cdf: np.ndarray, heights: np.ndarray, widths: np.ndarray,
    patch_size: int, augment: bool,
) -> tuple[int, int, int, int]:
    """:func:`draw_crops` for one item: ``(image, top row, left column, dihedral code)``. With
    ``seed=None`` (a dataset used without the trainer's seed) the draw is fresh from torch's generator."""
    if seed is None:
        seed, epoch = int(torch.randint(0, 2**62, ()).item()), 0
    i, y, x, code = (int(v) for v in draw_crops(
        seed, epoch, np.array([index]), cdf=cdf, heights=heights, widths=widths, patch_size=patch_size,
        augment=augment)[0])
    return i, y, x, code


def crop_tables(shapes: Sequence[tuple[int, int]], patch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(cdf, heights, widths)`` for :func:`draw_crops` from the images' ``(height, width)``."""
    heights = np.array([h for h, _ in shapes], dtype=np.int64)
    widths = np.array([w for _, w in shapes], dtype=np.int64)
    positions = ((heights - patch_size + 1) * (widths - patch_size + 1)).astype(np.float64)
    cdf = np.cumsum(positions / positions.sum())
    cdf /= cdf[-1]
    return cdf, heights, widths


def _as_paths(sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Path]:
    if isinstance(sources, (str, os.PathLike)):
        return [Path(sources)]
    return [Path(s) for s in sources]


class HRFolderDataset(Dataset):
    """Random ``patch_size`` HR crops from image files/folders, with their LR made on the fly.

    Sampling: every item picks one crop uniformly among *all* crop positions of all images (an image
    is chosen with probability proportional to its number of positions), so large images are not
    under-sampled next to small ones. With ``augment`` the crop then gets one of the 8 flips/
    90-degree rotations. The LR is ``imresize(hr_crop, 1/scale)`` computed on the integer crop and
    kept at the source's bit depth: for 8-bit data it is rounded to ``uint8`` after each pass, which is
    how the official benchmark LR files were made, so training sees the test-time input distribution;
    16-bit data is rounded to the ``uint16`` grid the same way. Since the LR is computed from the
    returned (augmented) HR, ``lr == imresize(hr)`` holds exactly for every pair.

    Randomness: with ``seed`` given, item ``i`` of epoch ``e`` is :func:`draw_crops` of
    ``(seed, e, i)``, a pure function of the three: a seeded run is deterministic whatever the number
    of DataLoader workers or the order items are fetched in, and resumes exactly (call
    :meth:`set_epoch`). With ``seed=None`` each item's seed comes from torch's global generator
    (``torch.manual_seed`` and the DataLoader's per-worker seeds control it).

    ``length`` is the epoch length (the trainer samples by iteration); by default it is the number of
    non-overlapping ``patch_size`` tiles the images hold (at least one per image), so an epoch covers
    about as many pixels as the data has.

    With ``in_memory=True`` (default) every image is read once and kept as integers (``self.images``);
    with ``False`` only the file list and sizes are kept and each item reads its file again. Images
    smaller than a patch are skipped (``self.skipped``); all others must agree on channel count and
    type. ``self.images`` (list of ``H x W x C`` integer arrays), ``bit_depth`` and ``channels`` let a
    GPU-resident trainer take the data as it is.
    """

    def __init__(
        self,
        sources: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        patch_size: int,
        scale: int,
        augment: bool = True,
        length: int | None = None,
        seed: int | None = None,
        in_memory: bool = True,
    ) -> None:
        sources = _as_paths(sources)
        where = ", ".join(str(s) for s in sources)
        if scale <= 0:
            raise SuperresError(f"scale must be positive, got {scale}")
        if patch_size <= 0 or patch_size % scale:
            raise SuperresError(f"patch size {patch_size} is not a positive multiple of the scale {scale}")
        if length is not None and length <= 0:
            raise SuperresError(f"epoch length must be positive, got {length}")
        paths = list(list_images(sources))
        if not paths:
            raise SuperresError(f"{where}: no image files found")

        kept: list[Path] = []
        arrays: list[np.ndarray] = []
        shapes: list[tuple[int, int]] = []
        self.skipped: list[Path] = []
        first: np.ndarray | None = None
        for path in paths:
            array = _read(path)
            if first is not None and (array.dtype != first.dtype or array.shape[2] != first.shape[2]):
                raise SuperresError(
                    f"{path}: {array.shape[2]} channel(s) of {array.dtype}, but {kept[0]} has "
                    f"{first.shape[2]} channel(s) of {first.dtype}; all training images must agree"
                )
            if array.shape[0] < patch_size or array.shape[1] < patch_size:
                self.skipped.append(path)
                continue
            if first is None:
                first = array
            kept.append(path)
            shapes.append((array.shape[0], array.shape[1]))
            if in_memory:
                arrays.append(array)
        if first is None:
            raise SuperresError(f"{where}: no image is at least {patch_size}x{patch_size} pixels (the patch size)")

        self.paths = kept
        self.shapes = shapes
        self.patch_size = int(patch_size)
        self.scale = int(scale)
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.in_memory = in_memory
        self.channels = int(first.shape[2])
        self.bit_depth = _BIT_DEPTHS[first.dtype]
        self.dtype = first.dtype
        self._images = arrays if in_memory else None
        self._cdf, self._heights, self._widths = crop_tables(shapes, self.patch_size)
        tiles = sum((h // patch_size) * (w // patch_size) for h, w in shapes)
        self.length = int(length) if length is not None else max(tiles, len(kept))

    @property
    def images(self) -> list[np.ndarray]:
        """The training images as ``H x W x C`` integer arrays (read from disk now if not in memory)."""
        if self._images is not None:
            return self._images
        return [_read(p) for p in self.paths]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draws ``__getitem__`` reproduces (seeded datasets)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def crop(self, index: int) -> np.ndarray:
        """The (augmented) integer HR crop of item ``index``: ``patch_size x patch_size x C``."""
        i, y, x, code = draw_one_crop(self.seed, self.epoch, index, cdf=self._cdf, heights=self._heights,
                                      widths=self._widths, patch_size=self.patch_size, augment=self.augment)
        image = self._images[i] if self._images is not None else _read(self.paths[i])
        hr = image[y : y + self.patch_size, x : x + self.patch_size]
        if self.augment:
            hr = dihedral(hr, code)
        return np.ascontiguousarray(hr)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        hr = self.crop(index)
        lr = downscale(hr, self.scale)
        return to_tensor(lr), to_tensor(hr)


class PairedFolderDataset(Dataset):
    """A benchmark folder: ``root/HR/*`` with ``root/LR_bicubic/X{scale}/*`` of the same base names.

    Each HR is cropped top-left to a multiple of ``scale`` (``modcrop``), the convention the official
    LR files were made with. When ``LR_bicubic/X{scale}`` is absent, the LR is made as the official
    files were: ``imresize(HR_crop, 1/scale)`` rounded to the source bit depth. Items, sorted by name:
    ``{"name": str, "lr": float32 C x h x w, "hr": float32 C x H x W, "bit_depth": int}``; gray and
    colour images may be mixed (each keeps its own channel count). All pairs are read and checked
    when the dataset is made (a missing LR, or an LR that is not ``HR_crop / scale``, is an error
    naming the pair), and kept as integers.
    """

    def __init__(self, root: str | os.PathLike[str], scale: int) -> None:
        self.root = Path(root)
        self.scale = int(scale)
        if self.scale <= 0:
            raise SuperresError(f"scale must be positive, got {scale}")
        hr_dir = self.root / "HR"
        if not hr_dir.is_dir():
            raise SuperresError(f"{self.root}: no HR/ folder (expected DIR/HR and DIR/LR_bicubic/X{self.scale})")
        lr_dir = self.root / "LR_bicubic" / f"X{self.scale}"
        self.lr_dir: Path | None = lr_dir if lr_dir.is_dir() else None
        lr_by_name: dict[str, Path] = {}
        if self.lr_dir is not None:
            for p in list_images([self.lr_dir]):
                lr_by_name.setdefault(p.stem, p)

        hr_paths = sorted(list_images([hr_dir]), key=lambda p: p.stem)
        self.items: list[dict[str, Any]] = []
        seen: dict[str, Path] = {}
        for hr_path in hr_paths:
            name = hr_path.stem
            if name in seen:
                raise SuperresError(f"{hr_path}: two HR files are named {name!r} ({seen[name]})")
            seen[name] = hr_path
            hr = _read(hr_path)
            if hr.shape[0] < self.scale or hr.shape[1] < self.scale:
                raise SuperresError(f"{hr_path}: {hr.shape[1]}x{hr.shape[0]} is smaller than the scale {self.scale}")
            hr = np.ascontiguousarray(modcrop(hr, self.scale))
            if hr.ndim == 2:
                hr = hr[:, :, None]
            want = (hr.shape[0] // self.scale, hr.shape[1] // self.scale)
            if self.lr_dir is None:
                lr = downscale(hr, self.scale)
            else:
                lr_path = lr_by_name.get(name)
                if lr_path is None:
                    raise SuperresError(f"{hr_path}: no LR file named {name}.* in {self.lr_dir}")
                lr = _read(lr_path)
                if lr.shape[:2] != want:
                    raise SuperresError(
                        f"{lr_path}: LR is {lr.shape[1]}x{lr.shape[0]} but {hr_path} cropped to a multiple of "
                        f"{self.scale} is {hr.shape[1]}x{hr.shape[0]}, which needs {want[1]}x{want[0]}"
                    )
                if lr.shape[2] != hr.shape[2] or lr.dtype != hr.dtype:
                    raise SuperresError(
                        f"{lr_path}: {lr.shape[2]} channel(s) of {lr.dtype}, but {hr_path} has "
                        f"{hr.shape[2]} channel(s) of {hr.dtype}"
                    )
            self.items.append({"name": name, "lr": lr, "hr": hr, "bit_depth": _BIT_DEPTHS[hr.dtype]})
        if not self.items:
            raise SuperresError(f"{hr_dir}: no image files found")

    @property
    def names(self) -> list[str]:
        return [item["name"] for item in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        return {
            "name": item["name"],
            "lr": to_tensor(item["lr"]),
            "hr": to_tensor(item["hr"]),
            "bit_depth": item["bit_depth"],
        }
