"""Colour profile, resolution and EXIF carried from an input image to its upscaled output.

:func:`read_metadata` reads, without decoding pixels, what a later :func:`superres.io.write_image`
can put back: the ICC profile, the DPI and the EXIF block. The pixels superres reads are already
upright (EXIF orientation applied), so the EXIF written back says orientation 1 (top-left);
otherwise a viewer would rotate the result a second time. Which output formats hold what:

========  ===  ===  ====
format    ICC  DPI  EXIF
========  ===  ===  ====
PNG       yes  yes  yes   (8- and 16-bit)
JPEG      yes  yes  yes
WebP      yes  no   yes
TIFF      yes  yes  no
BMP       no   no   no
========  ===  ===  ====

Not carried: by an image too large for memory (written in strips by ``superres upscale``), and by
video (the container's own metadata is not copied; the audio is).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["read_metadata", "pillow_options", "tiff_options"]

_ORIENTATION = 0x0112
_ICC_TIFF_TAG = 34675


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """``{"icc_profile": bytes, "dpi": (x, y), "exif": bytes}`` of ``path``, the keys it has; ``{}``
    for a file Pillow cannot open (the pixel reader reports such files, not this)."""
    from PIL import Image as PILImage

    limit = PILImage.MAX_IMAGE_PIXELS
    PILImage.MAX_IMAGE_PIXELS = None  # header only: superres.io's pixel limit applies to the pixels
    try:
        with PILImage.open(Path(path)) as im:
            meta: dict[str, Any] = {}
            icc = im.info.get("icc_profile")
            if icc:
                meta["icc_profile"] = bytes(icc)
            dpi = im.info.get("dpi")
            if dpi and len(dpi) == 2 and all(float(v) > 0 for v in dpi):
                meta["dpi"] = (float(dpi[0]), float(dpi[1]))
            if im.format != "TIFF":  # a TIFF's tags are its own structure, not an EXIF block to copy
                exif = im.getexif()
                if len(exif):
                    if _ORIENTATION in exif:
                        exif[_ORIENTATION] = 1
                    meta["exif"] = exif.tobytes()
            return meta
    except Exception:  # noqa: BLE001 - metadata is best effort; the pixel reader names bad files
        return {}
    finally:
        PILImage.MAX_IMAGE_PIXELS = limit


def pillow_options(fmt: str, meta: dict[str, Any] | None) -> dict[str, Any]:
    """The keyword arguments of Pillow's ``save`` for ``fmt`` that write ``meta``."""
    if not meta:
        return {}
    keys = {"PNG": ("icc_profile", "dpi", "exif"), "JPEG": ("icc_profile", "dpi", "exif"),
            "WEBP": ("icc_profile", "exif")}.get(fmt, ())
    return {k: meta[k] for k in keys if k in meta}


def tiff_options(meta: dict[str, Any] | None) -> dict[str, Any]:
    """The keyword arguments of ``tifffile.imwrite`` that write ``meta`` (ICC profile, DPI)."""
    if not meta:
        return {}
    options: dict[str, Any] = {}
    if "dpi" in meta:
        options["resolution"] = tuple(meta["dpi"])
        options["resolutionunit"] = "INCH"
    if "icc_profile" in meta:
        options["iccprofile"] = meta["icc_profile"]
    return options
