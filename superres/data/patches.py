"""The ``.npz`` patch format and ``superres data patches``.

The project's training data started as two NumPy archives of aligned patch pairs:

* ``hr_images.npz``: array ``hr``, ``N x H x H x C`` (``uint8``, or ``uint16`` for 16-bit sources);
* ``hr_lr_images.npz``: arrays ``hr`` and ``lr``, with ``lr`` of shape ``N x H/s x H/s x C``.

They are written uncompressed (``np.savez``) because a training run loads them whole at start-up and
decompressing a gigabyte of patches costs more than reading it. The LR patch is made from each HR
patch on its own with MATLAB-exact bicubic (``superres.resize.imresize``, rounded to ``uint8`` after
each pass for 8-bit data), exactly like the official benchmark LR files, so that the training input
has the distribution the model meets at test time.

:func:`load_patches` reads this format and a few common variants; :class:`PatchDataset` serves the
pairs to a training loop as ``float32`` tensors while the arrays stay integers in memory.
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from superres.errors import SuperresError
from superres.io import atomic_write, list_images, read_array
from superres.progress import progress_bar
from superres.resize import imresize

HR_FILE = "hr_images.npz"
PAIR_FILE = "hr_lr_images.npz"
#: Files at least this large (MB) get a "writing ..." line under ``progress`` (about a second or more to write).
WRITE_LINE_MB = 50

#: Array names accepted for the HR patches, in order of preference. ``hr`` is what superres writes;
#: the others are used by common SR patch-making scripts (``y``/``x`` as in "target"/"input").
HR_KEYS: tuple[str, ...] = ("hr", "HR", "high", "hr_images", "y")
#: Array names accepted for the LR patches, in order of preference.
LR_KEYS: tuple[str, ...] = ("lr", "LR", "low", "lr_images", "x")

#: How many patches go through one ``imresize`` call when the LR patches are made. The patches of a
#: chunk are stacked along the channel axis (bicubic resizing treats channels independently), so one
#: vectorised call replaces many small ones; the chunk bounds the temporary float64 memory (about
#: 25 MB for 64 patches of 128 x 128 x 3) and keeps it cache-friendly (larger chunks measured slower).
_LR_CHUNK = 64


# --------------------------------------------------------------------------- augmentation
def dihedral(array: np.ndarray, code: int) -> np.ndarray:
    """Apply one of the 8 flips/rotations of the square to an ``H x W (x C)`` array (a view).

    ``code`` in ``0..7``: bit 2 transposes (swaps H and W), then bit 0 flips left-right, then bit 1
    flips top-bottom. The 8 codes give the 8 distinct elements of the dihedral group (identity, three
    rotations by 90-degree multiples, four mirrors), so one uniform draw in ``0..7`` is the usual
    "random flips and 90-degree rotations" augmentation. Applying the same code to an LR patch and
    its HR patch keeps them aligned: the bicubic kernel and its sampling grid are symmetric, so these
    transforms commute with integer-factor downscaling (up to the +-1 of a rounding tie).
    """
    if not 0 <= code < 8:
        raise ValueError(f"dihedral code must be in 0..7, got {code}")
    if code & 4:
        array = array.swapaxes(0, 1)
    if code & 1:
        array = array[:, ::-1]
    if code & 2:
        array = array[::-1]
    return array


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """``H x W x C`` (or ``H x W``) ``uint8``/``uint16``/float array -> ``float32`` ``C x H x W`` in ``[0, 1]``.

    Integers are scaled by the maximum of their type (``/255``, ``/65535``), as ``superres.io`` does;
    float arrays are taken to be in ``[0, 1]`` already.
    """
    if array.ndim == 2:
        array = array[:, :, None]
    planes = np.ascontiguousarray(array.transpose(2, 0, 1))
    if not planes.flags.writeable:  # e.g. a read-only memory map: torch tensors must own writable memory
        planes = planes.copy()
    chw = torch.from_numpy(planes)
    if array.dtype == np.uint8:
        return chw.to(torch.float32).div_(255.0)
    if array.dtype == np.uint16:
        return chw.to(torch.float32).div_(65535.0)
    return chw.to(torch.float32)


def downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """LR of one ``H x W x C`` patch (or a channel-stacked batch): MATLAB bicubic by ``1/scale``.

    ``uint8``/``uint16`` input stays integer, rounded and saturated after each pass as MATLAB does
    (this reproduces the official LR files); float input stays float. Returns ``h x w x C``.
    """
    lr = np.asarray(imresize(hr, 1.0 / scale))
    return lr[:, :, None] if lr.ndim == 2 else lr


def downscale_many(hr: np.ndarray, scale: int, *, progress: bool = False) -> np.ndarray:
    """LR patches of an ``N x H x W x C`` stack, each resized on its own (no bleeding across patches).

    Bicubic resizing works on each channel independently, so the ``N`` patches are laid side by side
    along the channel axis (``H x W x N*C``) and resized in one call per chunk of ``_LR_CHUNK``: the
    same numbers as ``N`` separate calls (about 0.35 ms per 128 x 128 x 3 patch at x4 on one core).
    ``progress``: a bar over the patches on stderr.
    """
    n, h, w, c = hr.shape
    if h % scale or w % scale:
        raise SuperresError(f"patch size {h}x{w} is not divisible by the scale {scale}")
    out = np.empty((n, h // scale, w // scale, c), dtype=hr.dtype)
    with progress_bar(total=n, enabled=progress, desc=f"LR x{scale}", unit="patch") as bar:
        for start in range(0, n, _LR_CHUNK):
            block = hr[start : start + _LR_CHUNK]
            b = block.shape[0]
            stacked = np.ascontiguousarray(block.transpose(1, 2, 0, 3)).reshape(h, w, b * c)
            lr = downscale(stacked, scale)
            out[start : start + b] = lr.reshape(h // scale, w // scale, b, c).transpose(2, 0, 1, 3)
            bar.update(b)
    return out


# --------------------------------------------------------------------------- making patch files
def grid_count(shapes: Sequence[tuple[int, int]], hr_size: int, stride: int) -> int:
    """Number of full ``hr_size`` patches on a grid with step ``stride`` (top-left origin) over images of these ``(H, W)``."""
    total = 0
    for h, w in shapes:
        if h >= hr_size and w >= hr_size:
            total += ((h - hr_size) // stride + 1) * ((w - hr_size) // stride + 1)
    return total


def largest_sufficient_stride(shapes: Sequence[tuple[int, int]], hr_size: int, needed: int) -> int | None:
    """The largest stride in ``1..hr_size`` whose grid gives at least ``needed`` patches, or ``None``.

    The grid count only grows as the stride shrinks, so the answer is found by bisection.
    """
    if grid_count(shapes, hr_size, 1) < needed:
        return None
    lo, hi = 1, hr_size  # invariant: grid(lo) >= needed
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if grid_count(shapes, hr_size, mid) >= needed:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _describe(sources: Sequence[Path]) -> str:
    return ", ".join(str(s) for s in sources)


def _read_sources(sources: Sequence[Path], progress: bool = False) -> tuple[list[Path], list[np.ndarray]]:
    """Read every image of ``sources`` as native integers; all must share dtype and channel count.
    ``progress``: a bar over the files on stderr."""
    paths = list(list_images(list(sources)))
    if not paths:
        raise SuperresError(f"{_describe(sources)}: no image files found")
    arrays: list[np.ndarray] = []
    for path in progress_bar(paths, enabled=progress, desc="read", unit="image"):
        array = np.asarray(read_array(path))
        if array.ndim == 2:
            array = array[:, :, None]
        if array.dtype not in (np.uint8, np.uint16):
            raise SuperresError(f"{path}: unsupported pixel type {array.dtype} (expected 8- or 16-bit integers)")
        if arrays:
            first = arrays[0]
            if array.dtype != first.dtype or array.shape[2] != first.shape[2]:
                raise SuperresError(
                    f"{path}: {array.shape[2]} channel(s) of {array.dtype}, but {paths[0]} has "
                    f"{first.shape[2]} channel(s) of {first.dtype}; all images of a patch set must agree"
                )
        arrays.append(array)
    return paths, arrays


def make_patch_files(
    sources: list[Path],
    out: Path,
    *,
    hr_size: int = 128,
    scale: int = 4,
    stride: int | None = None,
    max_patches: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Cut HR patches from image files/folders and write ``out/hr_images.npz`` and ``out/hr_lr_images.npz``.

    Patches lie on a regular grid with step ``stride`` (default ``hr_size``, i.e. non-overlapping)
    starting at the top-left corner of each image; only full patches are taken, so the right and
    bottom margins narrower than a patch are not used. Images smaller than ``hr_size`` in either
    direction are skipped (their number is reported as ``skipped``). Patches keep the source's type
    (``uint8``/``uint16``) and all its channels; all images must agree on both. Each LR patch is
    ``imresize(hr_patch, 1/scale)`` (MATLAB bicubic, per-pass ``uint8`` rounding for 8-bit data).

    ``max_patches=N`` writes **exactly** ``N`` patches, chosen uniformly at random without
    replacement among the grid's patches (``np.random.default_rng(seed)``) and kept in source order
    (image by image, rows top to bottom, left to right). When the grid has fewer than ``N`` patches:

    * without an explicit ``stride``, the stride is reduced to the largest step whose grid gives at
      least ``N`` patches (the densest sampling needed and no denser, so the patches overlap as little
      as possible); ``stride`` and ``stride_reduced`` in the summary report it. On T91 + BSD200 +
      General100 at 128 px, the default stride 128 gives 2,216 patches and 17,354 need stride 39;
    * with an explicit ``stride``, nothing is written and :class:`SuperresError` names the largest
      stride that would suffice: an explicit choice is not silently overridden, and the caller never
      gets fewer patches than asked for.

    Returns a summary: ``count``, ``hr_shape``, ``lr_shape``, ``hr_file``, ``pair_file``, ``stride``,
    ``stride_reduced``, ``grid_count`` (patches on the grid used, before the random choice),
    ``images`` (files read), ``skipped`` (files smaller than a patch) and ``dtype``.

    All checks run before anything is written; the two files are written atomically.
    ``progress``: bars on stderr for reading the images and making the LR patches (drawn after
    :data:`superres.progress.DELAY_S`), and a line before each file of :data:`WRITE_LINE_MB` or more
    is written (a smaller one takes well under a second).
    """
    sources = [Path(s) for s in sources]
    out = Path(out)
    if hr_size <= 0:
        raise SuperresError(f"--hr-size must be positive, got {hr_size}")
    if scale <= 0:
        raise SuperresError(f"--scale must be positive, got {scale}")
    if hr_size % scale:
        raise SuperresError(f"--hr-size {hr_size} is not divisible by --scale {scale}")
    if stride is not None and stride <= 0:
        raise SuperresError(f"--stride must be positive, got {stride}")
    if max_patches is not None and max_patches <= 0:
        raise SuperresError(f"--max-patches must be positive, got {max_patches}")

    paths, arrays = _read_sources(sources, progress)
    shapes = [(a.shape[0], a.shape[1]) for a in arrays]
    usable = [i for i, (h, w) in enumerate(shapes) if h >= hr_size and w >= hr_size]
    if not usable:
        raise SuperresError(
            f"{_describe(sources)}: no image is at least {hr_size}x{hr_size} pixels "
            f"(the --hr-size); all {len(paths)} are smaller"
        )

    step = hr_size if stride is None else stride
    total = grid_count(shapes, hr_size, step)
    reduced = False
    if max_patches is not None and total < max_patches:
        best = largest_sufficient_stride(shapes, hr_size, max_patches)
        if best is None:
            raise SuperresError(
                f"--max-patches {max_patches}: {_describe(sources)} gives only "
                f"{grid_count(shapes, hr_size, 1)} patches of {hr_size}x{hr_size} even with --stride 1"
            )
        if stride is not None:
            raise SuperresError(
                f"--max-patches {max_patches}: --stride {stride} gives only {total} patches of "
                f"{hr_size}x{hr_size}; use --stride {best} or smaller, or leave --stride out to pick it automatically"
            )
        step, reduced = best, True
        total = grid_count(shapes, hr_size, step)

    # Patch origins in source order: (image index, y, x).
    origins = np.empty((total, 3), dtype=np.int64)
    pos = 0
    for i in usable:
        h, w = shapes[i]
        ys = np.arange(0, h - hr_size + 1, step)
        xs = np.arange(0, w - hr_size + 1, step)
        k = len(ys) * len(xs)
        origins[pos : pos + k, 0] = i
        origins[pos : pos + k, 1] = np.repeat(ys, len(xs))
        origins[pos : pos + k, 2] = np.tile(xs, len(ys))
        pos += k
    assert pos == total

    if max_patches is not None:
        chosen = np.sort(np.random.default_rng(seed).choice(total, size=max_patches, replace=False))
        origins = origins[chosen]

    channels, dtype = arrays[0].shape[2], arrays[0].dtype
    hr = np.empty((len(origins), hr_size, hr_size, channels), dtype=dtype)
    for n, (i, y, x) in enumerate(origins):
        hr[n] = arrays[i][y : y + hr_size, x : x + hr_size]
    del arrays
    lr = downscale_many(hr, scale, progress=progress)

    hr_file, pair_file = out / HR_FILE, out / PAIR_FILE
    out.mkdir(parents=True, exist_ok=True)
    for path, arrays_out in ((hr_file, {"hr": hr}), (pair_file, {"hr": hr, "lr": lr})):
        mb = sum(a.nbytes for a in arrays_out.values()) / 1e6
        if progress and mb >= WRITE_LINE_MB:
            print(f"writing {path} ({mb:.0f} MB)", file=sys.stderr, flush=True)
        _save_npz(path, **arrays_out)
    return {
        "count": int(hr.shape[0]),
        "hr_shape": tuple(hr.shape),
        "lr_shape": tuple(lr.shape),
        "hr_file": str(hr_file),
        "pair_file": str(pair_file),
        "stride": int(step),
        "stride_reduced": reduced,
        "grid_count": int(total),
        "images": len(paths),
        "skipped": len(paths) - len(usable),
        "dtype": str(dtype),
    }


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez`` (uncompressed) through an atomic temp file.

    The archive is written to an open file object: given a file *name* without the ``.npz`` suffix,
    ``np.savez`` would append one and miss the temporary path.
    """
    try:
        with atomic_write(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    except OSError as exc:  # a full disk or a quota: atomic_write has removed the partial file
        raise SuperresError(f"{path}: cannot write the patch file ({exc.strerror or exc}); nothing was written") from None


# --------------------------------------------------------------------------- loading
def _pick(path: Path, found: Sequence[str], candidates: Sequence[str], role: str) -> str | None:
    present = [k for k in candidates if k in found]
    if len(present) > 1:
        raise SuperresError(
            f"{path}: ambiguous {role} arrays {', '.join(repr(k) for k in present)}; keep only one of them"
        )
    return present[0] if present else None


def _as_nhwc(path: Path, key: str, array: np.ndarray) -> np.ndarray:
    """Normalise a patch stack to ``N x H x W x C``; accepts ``N x H x W`` (gray) and ``N x C x H x W``.

    ``N x C x H x W`` is recognised only where it cannot be read as ``N x H x W x C``: patches are
    square, so a stack whose axes 2 and 3 are equal, axis 1 differs from them and is at most 4 is
    channels-first.
    """
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4:
        raise SuperresError(
            f"{path}: array {key!r} has shape {array.shape}; expected N x H x W x C or N x H x W patches"
        )
    n, a, b, c = array.shape
    if a != b and b == c and a <= 4:
        array = array.transpose(0, 2, 3, 1)
        n, a, b, c = array.shape
    if a != b:
        raise SuperresError(f"{path}: array {key!r} has non-square patches of {a}x{b} (shape {array.shape})")
    if n == 0 or a == 0:
        raise SuperresError(f"{path}: array {key!r} is empty (shape {array.shape})")
    if array.dtype not in (np.uint8, np.uint16) and not np.issubdtype(array.dtype, np.floating):
        raise SuperresError(
            f"{path}: array {key!r} has type {array.dtype}; expected uint8, uint16 or float in [0, 1]"
        )
    if np.issubdtype(array.dtype, np.floating):
        low, high = float(array.min()), float(array.max())
        if not (0.0 <= low and high <= 1.0):
            raise SuperresError(f"{path}: float array {key!r} has values in [{low:g}, {high:g}]; expected [0, 1]")
    return array


def load_patches(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a patch archive: ``(hr, lr)`` with ``lr`` ``None`` when the file has HR patches only.

    Accepted array names: HR ``hr``, ``HR``, ``high``, ``hr_images``, ``y``; LR ``lr``, ``LR``,
    ``low``, ``lr_images``, ``x`` (one of each at most). Layouts: ``N x H x W x C`` (any channel
    count), ``N x H x W`` (gray, returned with ``C = 1``) and, where unambiguous, ``N x C x H x W``;
    the result is always ``N x H x W x C`` with square patches. Types: ``uint8``, ``uint16``, or float
    in ``[0, 1]``. With LR, both arrays must have the same count, type and channels, and the HR side
    must be an integer multiple (the scale) of the LR side.
    """
    path = Path(path)
    if not path.is_file():
        raise SuperresError(f"{path}: no such patch file")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise SuperresError(f"{path}: cannot read as a NumPy .npz archive ({exc})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise SuperresError(f"{path}: not an .npz archive of named arrays (a single .npy array?)")
    try:
        with archive:
            found = list(archive.files)
            hr_key = _pick(path, found, HR_KEYS, "HR")
            lr_key = _pick(path, found, LR_KEYS, "LR")
            if hr_key is None:
                raise SuperresError(
                    f"{path}: no HR patch array (looked for {', '.join(HR_KEYS)}; found "
                    f"{', '.join(found) if found else 'no arrays'})"
                )
            hr = archive[hr_key]
            lr = archive[lr_key] if lr_key is not None else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise SuperresError(f"{path}: cannot read the arrays of the .npz archive ({exc})") from None

    hr = _as_nhwc(path, hr_key, hr)
    if lr is None:
        return hr, None
    lr = _as_nhwc(path, lr_key, lr)
    if lr.shape[0] != hr.shape[0]:
        raise SuperresError(f"{path}: {hr.shape[0]} HR patches ({hr_key!r}) but {lr.shape[0]} LR patches ({lr_key!r})")
    if lr.shape[3] != hr.shape[3]:
        raise SuperresError(f"{path}: HR patches have {hr.shape[3]} channel(s), LR patches {lr.shape[3]}")
    if lr.dtype != hr.dtype:
        raise SuperresError(f"{path}: HR patches are {hr.dtype}, LR patches {lr.dtype}")
    if hr.shape[1] % lr.shape[1] or hr.shape[1] < 2 * lr.shape[1]:
        raise SuperresError(
            f"{path}: HR patches of {hr.shape[1]}x{hr.shape[2]} are not an integer multiple (>= 2) "
            f"of the LR patches of {lr.shape[1]}x{lr.shape[2]}"
        )
    return hr, lr


# --------------------------------------------------------------------------- dataset
class PatchDataset(Dataset):
    """``(lr, hr)`` pairs from a patch archive, as ``float32`` ``C x h x w`` tensors in ``[0, 1]``.

    The arrays stay in memory with their file's integer type (a 17k x 128 x 128 x 3 set is 850 MB as
    ``uint8`` and would be 3.4 GB as float); each item is converted when it is fetched. When the file
    has only HR patches, the LR patch is made on the fly with MATLAB bicubic (``scale`` required),
    rounded like the LR that ``make_patch_files`` writes. When it has both, ``scale`` is read from the
    shapes and, if given, must agree.

    ``augment=True`` applies one of the 8 flips/90-degree rotations, the same one to LR and HR. The
    draw comes from ``np.random.default_rng((seed, epoch, index))`` when ``seed`` is given (reproducible
    and resumable: call :meth:`set_epoch` each epoch), else from torch's global generator, which
    ``torch.manual_seed`` and the DataLoader's per-worker seeding control.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        scale: int | None = None,
        augment: bool = False,
        *,
        seed: int | None = None,
    ) -> None:
        self.path = Path(path)
        hr, lr = load_patches(self.path)
        if lr is not None:
            found = hr.shape[1] // lr.shape[1]
            if scale is not None and scale != found:
                raise SuperresError(f"{self.path}: the patches are for scale {found}, not {scale}")
            scale = found
        elif scale is None:
            raise SuperresError(f"{self.path}: has HR patches only; give the scale to make the LR patches")
        elif scale <= 0 or hr.shape[1] % scale:
            raise SuperresError(f"{self.path}: HR patches of {hr.shape[1]} px are not divisible by the scale {scale}")
        self.hr = hr
        self.lr = lr
        self.scale = int(scale)
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.channels = int(hr.shape[3])
        #: 8 or 16 for integer patches, ``None`` for float patches.
        self.bit_depth: int | None = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}.get(hr.dtype)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentation draws ``__getitem__`` reproduces (seeded datasets)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self.hr.shape[0])

    def _code(self, index: int) -> int:
        if self.seed is None:
            return int(torch.randint(0, 8, ()).item())
        return int(np.random.default_rng((self.seed % 2**63, self.epoch, index)).integers(0, 8))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        hr = self.hr[index]
        lr = self.lr[index] if self.lr is not None else downscale(np.ascontiguousarray(hr), self.scale)
        if self.augment:
            code = self._code(index)
            hr, lr = dihedral(hr, code), dihedral(lr, code)
        return to_tensor(lr), to_tensor(hr)
