"""The checks an upload passes before anything decodes it: format and declared size.

:func:`check_upload` reads only the file's header: Pillow's ``Image.open`` is lazy (it parses the
header, not the pixels), a 16-bit PNG's size is in its ``IHDR`` chunk, and tifffile gives a TIFF
series' shape from its tags. So a decompression bomb (a small file declaring a huge image) is
refused before a single pixel is allocated.

This is one small function on purpose. ``superres.io`` has a reader-level limit too
(``set_max_pixels``, checked on the declared size in every reader); ``superres serve`` sets it to
the server's ``--max-pixels`` while it runs, so a worker's ``read_image`` refuses the same sizes.
This check stays in front of it to answer 413 at once, before an upload is queued.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Declared", "UploadRefused", "check_upload", "FORMAT_SUFFIX"]

#: Formats the server accepts (the ones ``superres.io.write_image`` writes back) -> result suffix.
FORMAT_SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


class UploadRefused(Exception):
    """An upload refused on its header: ``status`` (413 too many pixels, 422 otherwise), ``code``, ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Declared:
    """What a file's header declares: ``format`` (a key of :data:`FORMAT_SUFFIX`), ``width``, ``height``."""

    format: str
    width: int
    height: int


def _too_many(width: int, height: int, max_pixels: int) -> UploadRefused:
    return UploadRefused(
        413,
        "too_many_pixels",
        f"the image declares {width} x {height} = {width * height / 1e6:.1f} MP, above this server's limit "
        f"of {max_pixels / 1e6:g} MP (nothing was decoded)",
    )


def check_upload(path: str | Path, max_pixels: int) -> Declared:
    """The declared format and size of the file at ``path``, read from its header only.

    Raises :class:`UploadRefused`: 422 ``not_an_image`` (no format recognised, or a header that
    does not parse), 422 ``unsupported_format`` (an image format the server cannot write back),
    413 ``too_many_pixels`` (declared width x height above ``max_pixels``, or for TIFF more than
    4 samples per allowed pixel in the first series).
    """
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(32)
    if not head:
        raise UploadRefused(422, "not_an_image", "the upload is empty")
    if head.startswith(_TIFF_SIGNATURES):
        return _check_tiff(path, max_pixels)
    if head.startswith(_PNG_SIGNATURE) and head[12:16] == b"IHDR" and len(head) >= 25:
        # Any PNG: the size is in IHDR, whatever follows (Pillow would not even open a file whose
        # later chunks are damaged, but the declared size is refused first, as the bomb it may be).
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        if width * height > max_pixels:
            raise _too_many(width, height, max_pixels)
        if width == 0 or height == 0:
            raise UploadRefused(422, "not_an_image", "the PNG header declares an empty image")
        if head[24] == 16:  # 16-bit: decoded by pypng, which reads the header lazily too
            return Declared("PNG", width, height)

    from PIL import Image as PILImage

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(path) as im:  # lazy: header only
                fmt, (width, height) = im.format, im.size
    except PILImage.DecompressionBombError:
        message = f"the image declares more pixels than this server's limit of {max_pixels / 1e6:g} MP (nothing was decoded)"
        raise UploadRefused(413, "too_many_pixels", message) from None
    except Exception:  # noqa: BLE001 - Pillow raises anything on garbage
        raise UploadRefused(422, "not_an_image", "the upload is not an image in a format the server reads (PNG, JPEG, WebP, BMP or TIFF)") from None
    if width * height > max_pixels:
        raise _too_many(width, height, max_pixels)
    if fmt == "MPO":  # a JPEG with extra frames (many cameras): read and written as JPEG
        fmt = "JPEG"
    if fmt not in FORMAT_SUFFIX:
        raise UploadRefused(422, "unsupported_format", f"{fmt} images are not supported; upload PNG, JPEG, WebP, BMP or TIFF")
    return Declared(fmt, width, height)


def _check_tiff(path: Path, max_pixels: int) -> Declared:
    import logging

    import tifffile

    logging.getLogger("tifffile").setLevel(logging.ERROR)
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, axes = tuple(int(n) for n in series.shape), series.axes
    except Exception:  # noqa: BLE001
        raise UploadRefused(422, "not_an_image", "the upload starts like a TIFF but its header does not parse") from None
    if "Y" not in axes or "X" not in axes:
        raise UploadRefused(422, "not_an_image", f"the TIFF's first series (axes {axes}) is not an image")
    height, width = shape[axes.index("Y")], shape[axes.index("X")]
    if width * height > max_pixels:
        raise _too_many(width, height, max_pixels)
    samples = 1
    for n in shape:
        samples *= n
    if samples > 4 * max_pixels:
        raise UploadRefused(413, "too_many_pixels", f"the TIFF declares {samples} samples, above this server's limit (nothing was decoded)")
    return Declared("TIFF", width, height)
