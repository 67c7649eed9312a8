"""Training batches as a pure function of ``(seed, iteration)``.

Exact resume and rank-independent results rest on one rule: the batch of iteration ``i`` depends on
nothing but the seed and ``i``. It does not depend on how many iterations ran in this process, on
DataLoader worker scheduling, or on the global RNG. This module applies the rule to both training sources:

* **Image folders** (:class:`superres.data.HRFolderDataset`): item ``j`` of epoch ``e`` is the crop
  :func:`superres.data.folders.draw_crops` gives for ``(seed, e, j)``. The trainer treats each iteration as an "epoch" of
  ``batch_size`` items: slot ``j`` of iteration ``i`` is item ``j`` of epoch ``i``.
* **A patch file** (:class:`superres.data.PatchDataset`): the patches are visited in a random order
  that is new each pass over the file (sampling without replacement). Global slot position
  ``p = (i - 1) * batch_size + j`` is patch ``perm_k[p mod N]`` with ``k = p div N`` and
  ``perm_k`` drawn from ``(seed, k)``. Augmentation draws come from ``(seed, i, index)``.

Under DDP each rank computes the slots :func:`superres.training.distributed.shard` gives it: the
ranks together compute the same global batch that a single process would.

Both datasets keep their images in RAM as integers and crop there. No iteration reads the disk.

Two paths deliver these batches (:func:`training_batches`): a DataLoader over :class:`IterationItems`
(host-side, optionally in worker processes), or, for 8-bit image folders, the device-resident path
of :mod:`superres.training.device_data`, which keeps the images on the training device and cuts the
same batches there (``data.device_resident``). Both give identical batches for each (seed, iteration).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from superres.config import DataConfig
from superres.data import HRFolderDataset, PairedPatchDataset, PatchDataset
from superres.degrade import Degrader
from superres.errors import SuperresError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from superres.training.device_data import DeviceBatches

#: Mixed into the patch-order seed so that it never coincides with a dataset's own (seed, e, j) draws.
_ORDER_TAG = 0x5EED


def build_train_dataset(data: DataConfig, *, scale: int, in_channels: int, seed: int) -> Dataset:
    """The training dataset that ``data.train`` names: an image-folder dataset, or one ``.npz`` patch file.

    Checks that the sources exist, that a patch file matches ``data.patch_size`` and ``scale``,
    and that the channel count matches ``model.in_channels``.
    """
    if data.train_pairs is not None:
        root = Path(data.train_pairs)
        if not root.is_dir():
            raise SuperresError(f"data.train_pairs: {root} is not a folder")
        pairs = PairedPatchDataset(root, patch_size=data.patch_size, scale=scale, augment=data.augment,
                                   length=data.batch_size, seed=seed)
        if pairs.channels != in_channels:
            raise SuperresError(f"model.in_channels={in_channels} but the pairs in {root} have {pairs.channels} "
                                f"channel(s); set model.in_channels: {pairs.channels}")
        return pairs
    paths = [Path(p) for p in data.train]
    for p in paths:
        if not p.exists():
            raise SuperresError(f"data.train: {p} does not exist")
    npz = [p for p in paths if p.suffix.lower() == ".npz"]
    if npz:
        if len(paths) != 1:
            raise SuperresError(f"data.train: a .npz patch file ({npz[0]}) must be the only training source")
        dataset: Dataset = PatchDataset(paths[0], scale=scale, augment=data.augment, seed=seed)
        side = int(dataset.hr.shape[1])  # type: ignore[attr-defined]
        if side != data.patch_size:
            raise SuperresError(
                f"data.patch_size={data.patch_size} but the HR patches in {paths[0]} are {side}x{side}; "
                f"set data.patch_size: {side}"
            )
    else:
        dataset = HRFolderDataset(
            paths,
            patch_size=data.patch_size,
            scale=scale,
            augment=data.augment,
            length=data.batch_size,
            seed=seed,
            in_memory=data.in_memory,
        )
    channels = int(dataset.channels)  # type: ignore[attr-defined]
    if channels != in_channels:
        raise SuperresError(
            f"model.in_channels={in_channels} but the training data in {', '.join(map(str, paths))} has "
            f"{channels} channel(s); set model.in_channels: {channels}"
        )
    if data.degradation.kind == "realworld":
        # Both data paths read it here: IterationItems.__getitems__ and DeviceBatches.batch.
        dataset.degrader = Degrader(data.degradation, scale=scale, seed=seed)  # type: ignore[attr-defined]
    return dataset


class IterationItems(Dataset):
    """Item ``key = iteration * batch_size + slot`` is slot ``slot`` of the batch of ``iteration``.

    A flat integer key, rather than a tuple, keeps it an ordinary map-style dataset that any DataLoader
    (with or without worker processes) can index. Each key is computed from ``(seed, iteration, slot)``
    alone, so the worker that computes it and the order of computation make no difference.
    """

    def __init__(self, dataset: Dataset, *, batch_size: int, seed: int) -> None:
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.is_patch_file = hasattr(dataset, "hr") and not hasattr(dataset, "images")
        self._order_epoch = -1
        self._order: np.ndarray | None = None

    def __len__(self) -> int:  # not used for sampling; DataLoader only needs indexing
        return 2**62

    def _patch_index(self, position: int) -> int:
        n = len(self.dataset)  # type: ignore[arg-type]
        epoch, offset = divmod(position, n)
        if epoch != self._order_epoch:
            self._order = np.random.default_rng((self.seed % 2**63, _ORDER_TAG, epoch)).permutation(n)
            self._order_epoch = epoch
        assert self._order is not None
        return int(self._order[offset])

    def __getitem__(self, key: int) -> tuple[torch.Tensor, torch.Tensor]:
        iteration, slot = divmod(int(key), self.batch_size)
        self.dataset.set_epoch(iteration)  # type: ignore[attr-defined]
        if self.is_patch_file:
            return self.dataset[self._patch_index((iteration - 1) * self.batch_size + slot)]
        return self.dataset[slot]

    def __getitems__(self, keys: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The items of ``keys`` (one iteration's slots; the DataLoader fetches a batch through this).

        With ``data.degradation.kind: realworld`` (a ``degrader`` on the dataset, set by
        :func:`build_train_dataset`) the LR of the batch is remade from its HR crops by
        :class:`superres.degrade.Degrader` for ``(seed, iteration, slots)``, in the worker."""
        items = [self[key] for key in keys]
        degrader = getattr(self.dataset, "degrader", None)
        if degrader is None or not items:
            return items
        iteration = int(keys[0]) // self.batch_size
        lr, hr = degrader(torch.stack([hr for _, hr in items]), iteration, [int(k) % self.batch_size for k in keys])
        return list(zip(lr.unbind(0), hr.unbind(0)))


class IterationSampler:
    """Yields, for each iteration ``start..stop``, the keys of this rank's ``slots`` of its batch."""

    def __init__(self, start: int, stop: int, batch_size: int, slots: Sequence[int]) -> None:
        self.start, self.stop, self.batch_size, self.slots = start, stop, batch_size, list(slots)

    def __iter__(self) -> Iterator[list[int]]:
        for iteration in range(self.start, self.stop + 1):
            yield [iteration * self.batch_size + s for s in self.slots]

    def __len__(self) -> int:
        return max(0, self.stop - self.start + 1)


def batch_loader(
    items: IterationItems, *, start: int, stop: int, slots: Sequence[int], workers: int, pin_memory: bool
) -> DataLoader:
    """A DataLoader over iterations ``start..stop`` (inclusive) giving ``(lr, hr)`` batches of ``slots``.

    The loader gets its own generator so that creating it draws nothing from torch's global RNG
    (a resumed run creates it at a different point than an uninterrupted one).
    """
    return DataLoader(
        items,
        batch_sampler=IterationSampler(start, stop, items.batch_size, slots),
        num_workers=workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(items.seed),
    )


def training_batches(
    items: IterationItems,
    device_batches: DeviceBatches | None,
    *,
    start: int,
    stop: int,
    slots: Sequence[int],
    workers: int,
    pin_memory: bool,
    descriptors: bool = False,
) -> Iterable[tuple[torch.Tensor, ...]]:
    """The ``(lr, hr)`` batches of iterations ``start..stop`` for ``slots``, from the device-resident
    source when one was selected (:func:`superres.training.device_data.select_device_batches`), else
    from :func:`batch_loader`. Both give the same batches; the first already on the device.

    ``descriptors=True`` makes the device-resident source yield ``(meta,)``, the crop descriptors
    that :meth:`~superres.training.device_data.DeviceBatches.batch_from` turns into that batch, for
    a step that makes its own batch (``train.cuda_graph``); the DataLoader path is unchanged."""
    if device_batches is not None:
        if descriptors:
            return device_batches.descriptor_batches(start, stop, slots)
        return device_batches.batches(start, stop, slots)
    return batch_loader(items, start=start, stop=stop, slots=slots, workers=workers, pin_memory=pin_memory)
