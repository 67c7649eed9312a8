"""Training and evaluation data: patch archives, image-folder datasets, dataset statistics.

* :mod:`superres.data.patches`: the ``.npz`` patch format (:func:`make_patch_files`,
  :func:`load_patches`, :class:`PatchDataset`), behind ``superres data patches``.
* :mod:`superres.data.folders`: :class:`HRFolderDataset` (random crops, LR on the fly) and
  :class:`PairedFolderDataset` (benchmark ``HR`` + ``LR_bicubic/X{s}`` layout).
* :mod:`superres.data.pairs`: :class:`PairedPatchDataset` (``data.train_pairs``: aligned crops of
  your own LR/HR pairs).
* :mod:`superres.data.stats`: ``superres data stats``.

The names are resolved on first use, so ``superres.data.stats`` does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["PatchDataset", "HRFolderDataset", "PairedFolderDataset", "PairedPatchDataset", "load_patches", "make_patch_files"]

_LAZY = {
    "PatchDataset": "superres.data.patches",
    "load_patches": "superres.data.patches",
    "make_patch_files": "superres.data.patches",
    "HRFolderDataset": "superres.data.folders",
    "PairedFolderDataset": "superres.data.folders",
    "PairedPatchDataset": "superres.data.pairs",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'superres.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(__all__) | {"patches", "folders", "pairs", "stats"})
