"""Training batches cut on the training device from images that stay there (``data.device_resident``).

Why. The DataLoader path (:mod:`superres.training.batches`) makes every patch on the host: a numpy
crop, a flip, a MATLAB-bicubic downscale, a float conversion, one item at a time, then a float32 copy
of the whole batch to the GPU. A GPU step of an SR network of ordinary size takes a few
milliseconds, so that host work, not the GPU, sets the pace. Here the training images are copied to
the device once, as ``uint8``, and each batch is made there by a handful of batched kernels. The only
per-step transfer is a ``3 x B`` int64 tensor of crop descriptors.

The draw. Slot ``j`` of iteration ``i`` is :func:`superres.data.folders.draw_crops` of
``(seed, i, j)`` on the CPU, the function :class:`superres.data.HRFolderDataset` uses for item ``j``
of epoch ``i``: an image (weighted by its number of crop positions), the crop's top row and left
column, then the dihedral code (when augmenting). It is a counter-based hash, drawn for the whole
batch in a few numpy operations. The draw is therefore identical on every device, and the batch of
an iteration is *the same batch* on both paths, byte for byte: switching paths, or resuming a run
on the other path, changes nothing but speed (``tests/test_device_data.py``).

Crop and augmentation in one gather. All images live in one flat ``(pixels, C)`` buffer; image
``k`` starts at row ``offset[k]``, and its pixel ``(y, x)`` is row ``offset[k] + y * width[k] + x``.
For each of the 8 dihedral codes a ``patch x patch`` table gives the source row and column of every
output pixel (made by applying :func:`superres.data.patches.dihedral` to a grid of coordinates, so
it is the reference transform by construction). One ``index_select`` of ``B * patch * patch`` rows
then yields the cropped, flipped and rotated batch for the whole batch at once.

LR. :func:`superres.resize.imresize` on the ``uint8`` batch: MATLAB's per-pass rounding, the same
bytes as the numpy reference (on CUDA through the float64 op-for-op torch path, on the CPU through
numpy itself). Both tensors are then converted to float32 in ``[0, 1]`` with the same arithmetic as
:func:`superres.data.patches.to_tensor`.

Degradation. With ``data.degradation.kind: realworld`` the LR is instead made from the float HR
crops by :class:`superres.degrade.Degrader` on the device (its JPEG on the host), with the same
draws as the DataLoader path; the batches of the two paths are then equal on the CPU.

Scope. 8-bit image folders only: ``imresize`` has no bit-exact 16-bit tensor path, and ``.npz``
patch files are already compact patches that the DataLoader path serves cheaply.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from superres.config import DataConfig
from superres.data import HRFolderDataset
from superres.data.folders import crop_tables, draw_crops
from superres.data.patches import dihedral
from superres.errors import SuperresError
from superres.resize import imresize

#: ``auto`` keeps the images on a CUDA device when they take less than this share of its free memory
#: (the rest is left to activations, the optimizer and cuDNN workspaces).
FREE_MEMORY_FRACTION = 0.5

#: Names of the two data paths, as logged and as the benchmark reports them.
DEVICE_PATH = "device-resident"
LOADER_PATH = "DataLoader"


class DeviceBatches:
    """The training images of an 8-bit :class:`~superres.data.HRFolderDataset` on ``device``,
    and the batches of any ``(iteration, slots)`` cut from them (module docstring).

    ``seed`` must be the dataset's seed for the batches to equal the dataset's items. The images
    are read through ``dataset.images`` (from disk now when the dataset is not ``in_memory``) and
    copied to the device one by one, so the host never holds a second, concatenated copy.
    """

    def __init__(self, dataset: Dataset, *, seed: int, device: torch.device | str) -> None:
        reason = unsupported_reason(dataset)
        if reason is not None:
            raise SuperresError(f"data.device_resident: {reason}")
        self.device = torch.device(device)
        self.seed = int(seed)
        self.patch_size = int(dataset.patch_size)  # type: ignore[attr-defined]
        self.scale = int(dataset.scale)  # type: ignore[attr-defined]
        self.augment = bool(dataset.augment)  # type: ignore[attr-defined]
        self.degrader = getattr(dataset, "degrader", None)  # data.degradation.kind: realworld
        self.channels = int(dataset.channels)  # type: ignore[attr-defined]
        shapes: list[tuple[int, int]] = list(dataset.shapes)  # type: ignore[attr-defined]
        p = self.patch_size

        # Host-side tables for the draw: the same as HRFolderDataset's.

        self._cdf, heights, widths = crop_tables(shapes, p)
        self._heights, self._widths = heights, widths
        self._offsets = np.concatenate([[0], np.cumsum(heights * widths)[:-1]]).astype(np.int64)
        self.pixels = int((heights * widths).sum())

        # The images, back to back in one (pixels, C) uint8 buffer on the device.
        self.buffer = torch.empty((self.pixels, self.channels), dtype=torch.uint8, device=self.device)
        for k, image in enumerate(dataset.images):  # type: ignore[attr-defined]
            # np.require: a writable C-ordered array (torch warns on read-only ones; copies only then)
            rows = torch.from_numpy(np.require(image, requirements=("C", "W")).reshape(-1, self.channels))
            start = int(self._offsets[k])
            self.buffer[start : start + rows.shape[0]].copy_(rows)

        # Source row/column of each output pixel under each dihedral code: 8 x p x p tables.

        grid = np.stack(np.indices((p, p)), axis=-1)  # p x p x 2: (row, column)
        tables = np.stack([np.ascontiguousarray(dihedral(grid, code)) for code in range(8)])
        self._rows = torch.from_numpy(tables[..., 0].astype(np.int64)).to(self.device)
        self._cols = torch.from_numpy(tables[..., 1].astype(np.int64)).to(self.device)

    @property
    def nbytes(self) -> int:
        """Device memory taken by the images (the buffer; the small tables are not counted)."""
        return self.pixels * self.channels

    @property
    def num_images(self) -> int:
        return int(self._offsets.shape[0])

    # ----------------------------------------------------------------- the draw (host)
    def draws(self, iteration: int, slots: Sequence[int]) -> np.ndarray:
        """``len(slots) x 4`` int64: image index, top row, left column and dihedral code of each slot.

        The same draws, in the same order, as ``HRFolderDataset.crop`` for item ``slot`` of epoch
        ``iteration`` with this seed (module docstring). The code is 0 without augmentation.
        """
        return draw_crops(self.seed, int(iteration), np.asarray(slots, dtype=np.int64), cdf=self._cdf,
                          heights=self._heights, widths=self._widths, patch_size=self.patch_size, augment=self.augment)

    # ----------------------------------------------------------------- the batch (device)
    def descriptors(self, draws: np.ndarray) -> torch.Tensor:
        """The ``3 x B`` int64 crop descriptors of ``draws`` on the device: each crop's first row in
        the buffer, its image's width and its dihedral code. The only per-step host-to-device copy."""
        k, y, x, code = (draws[:, i] for i in range(4))
        meta = torch.from_numpy(np.stack([self._offsets[k] + y * self._widths[k] + x, self._widths[k], code]))
        if self.device.type == "cuda":
            # From pinned memory the copy is asynchronous, so the host can queue the next step;
            # the caching host allocator keeps the block alive until the copy is done.
            meta = meta.pin_memory()
        return meta.to(self.device, non_blocking=True)

    def crops_from(self, meta: torch.Tensor) -> torch.Tensor:
        """The ``uint8`` ``B x C x p x p`` HR crops (augmented) of descriptors ``meta``
        (:meth:`descriptors`): device work only, so it can run inside a CUDA graph."""
        base, width, codes = meta[0, :, None, None], meta[1, :, None, None], meta[2]
        index = base + self._rows[codes] * width + self._cols[codes]  # B x p x p rows of the buffer
        b, p = meta.shape[1], self.patch_size
        hr = self.buffer.index_select(0, index.reshape(-1)).view(b, p, p, self.channels)
        return hr.permute(0, 3, 1, 2).contiguous()

    def crops(self, draws: np.ndarray) -> torch.Tensor:
        """The ``uint8`` ``B x C x p x p`` HR crops (augmented) of ``draws`` (see :meth:`draws`)."""
        return self.crops_from(self.descriptors(draws))

    def batch(self, iteration: int, slots: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lr, hr)`` float32 ``B x C x h x w`` in ``[0, 1]`` on the device: slots ``slots`` of
        ``iteration``, equal to the DataLoader path's batch. With a ``degrader`` (``data.degradation``)
        the LR is the degraded HR crop, made on the device (the JPEG on the host)."""
        meta = self.descriptors(self.draws(iteration, slots))
        if self.degrader is not None:
            return self.degrader(self._to_float(self.crops_from(meta)), iteration, slots)
        return self.batch_from(meta)

    def batch_from(self, meta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`batch` from crop descriptors already on the device (:meth:`descriptors`): the
        crops, the MATLAB-bicubic downscale and the conversion, all device work (a CUDA graph can
        hold it; the cached resize taps and the conversion table must exist before a capture)."""
        hr = self.crops_from(meta)
        lr = imresize(hr, 1.0 / self.scale)
        return self._to_float(lr), self._to_float(hr)

    def _to_float(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 -> float32 ``x / 255`` through a 256-entry table divided on the CPU. Dividing on CUDA
        by a Python scalar is computed as ``x * (1/255)``, which differs from the DataLoader path's
        true division in the last bit for some values; the table keeps every device bit-identical."""
        if getattr(self, "_levels", None) is None or self._levels.device != x.device:
            self._levels = (torch.arange(256, dtype=torch.float32) / 255.0).to(x.device)
        return self._levels[x.long()]

    def batches(self, start: int, stop: int, slots: Sequence[int]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of iterations ``start..stop`` (inclusive), like :func:`~superres.training.batches.batch_loader`."""
        for iteration in range(start, stop + 1):
            yield self.batch(iteration, slots)

    def descriptor_batches(self, start: int, stop: int, slots: Sequence[int]) -> Iterator[tuple[torch.Tensor]]:
        """``(meta,)`` for iterations ``start..stop``: the crop descriptors only, for a step that makes
        the batch itself with :meth:`batch_from` (``train.cuda_graph``)."""
        for iteration in range(start, stop + 1):
            yield (self.descriptors(self.draws(iteration, slots)),)


def unsupported_reason(dataset: Dataset) -> str | None:
    """Why ``dataset`` cannot be kept on the device (``None`` when it can)."""
    if type(dataset).__name__ == "PairedPatchDataset":
        return "your own pairs (data.train_pairs) are served by the DataLoader path; device-resident data needs image folders"
    if not isinstance(dataset, HRFolderDataset):
        return "a .npz patch file is served by the DataLoader path; device-resident data needs image folders"
    if dataset.bit_depth != 8:
        return f"the training images are {dataset.bit_depth}-bit; device-resident data needs 8-bit images"
    return None


def image_bytes(dataset: Dataset) -> int:
    """Bytes the training images of an image-folder dataset take as integers (without reading them)."""
    itemsize = np.dtype(dataset.dtype).itemsize  # type: ignore[attr-defined]
    return sum(h * w for h, w in dataset.shapes) * int(dataset.channels) * itemsize  # type: ignore[attr-defined]


def select_device_batches(
    data: DataConfig, dataset: Dataset, *, seed: int, device: torch.device
) -> tuple[DeviceBatches | None, str]:
    """Apply ``data.device_resident``: the :class:`DeviceBatches` to train from, or ``None`` for the
    DataLoader path, and one line for the log that says which path was chosen and why.

    ``auto`` keeps the data on the device on CUDA when it is eligible and takes less than
    :data:`FREE_MEMORY_FRACTION` of the free memory; elsewhere it keeps the DataLoader path, which
    can spread the work over worker processes. ``true`` insists (an error when the data is not
    eligible or does not fit in the free memory); ``false`` never.
    """
    setting = data.device_resident
    loader = f"data path: {LOADER_PATH} (data.workers={data.workers}"
    if setting is False:
        return None, f"{loader}; data.device_resident: false)"
    reason = unsupported_reason(dataset)
    if reason is not None:
        if setting is True:
            raise SuperresError(f"data.device_resident: true, but {reason} (set it to auto or false)")
        return None, f"{loader}; {reason})"
    nbytes = image_bytes(dataset)
    size = f"{nbytes / 2**20:.1f} MiB"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if setting == "auto" and nbytes >= FREE_MEMORY_FRACTION * free:
            return None, (
                f"{loader}; the training images take {size}, over {FREE_MEMORY_FRACTION:.0%} of the "
                f"{free / 2**20:.0f} MiB free on {device})"
            )
        if nbytes >= free:
            raise SuperresError(
                f"data.device_resident: true, but the training images take {size} and {device} has "
                f"{free / 2**20:.0f} MiB free (set it to auto or false)"
            )
    elif setting == "auto":
        return None, f"{loader}; data.device_resident: auto keeps the data on the host on {device.type})"
    batches = DeviceBatches(dataset, seed=seed, device=device)
    return batches, (
        f"data path: {DEVICE_PATH} ({batches.num_images} images, {size} of uint8 on {device}; "
        "data.workers unused)"
    )
