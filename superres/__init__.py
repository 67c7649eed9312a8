"""superres: single-image super-resolution that gets the numbers right.

The public API is small on purpose:

- :func:`superres.imresize` / :func:`superres.modcrop`: MATLAB-exact bicubic resizing.
- :mod:`superres.metrics`: PSNR/SSIM under the paper protocol.
- :func:`superres.load_model`: a trained or shipped model by name or path.
- :func:`superres.upscale`: tiled, memory-bounded upscaling of an image.
- :mod:`superres.models`: the registry of architectures.

Heavy modules (torch) are imported on first use, so ``import superres`` and ``superres --help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = ["imresize", "modcrop", "metrics", "models", "load_model", "upscale", "SuperresError", "__version__"]

_LAZY = {
    "imresize": ("superres.resize", "imresize"),
    "modcrop": ("superres.resize", "modcrop"),
    "load_model": ("superres.modelfile", "load_model"),
    "upscale": ("superres.inference", "upscale"),
    "SuperresError": ("superres.errors", "SuperresError"),
}
_SUBMODULES = {"metrics", "models", "io", "data", "losses", "training", "inference", "resize", "evaluate"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name in _SUBMODULES:
        return importlib.import_module(f"superres.{name}")
    raise AttributeError(f"module 'superres' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(__all__) | _SUBMODULES)
