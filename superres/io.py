"""Reading and writing image files: PNG, JPEG, BMP and TIFF, 8 and 16 bit, any channel layout.

Everything that touches an image file goes through this module, so that the rest of the package
sees one representation: :class:`Image`, ``float32`` ``H x W x C`` in ``[0, 1]`` with the colour or
band channels in ``data`` and the alpha channel, if any, apart in ``alpha``.

Decoding rules (shared by :func:`read_image`, :func:`read_array` and :func:`read_raw`):

* **Format** is recognised from the file's content, not its suffix (a ``.png`` that is really a
  JPEG still reads). TIFF goes through tifffile, 16-bit PNG through pypng (Pillow reduces 16-bit
  colour PNGs to 8 bit), everything else through Pillow.
* **Channels.** Gray images are ``H x W x 1``. Palette images become RGB, or RGB + alpha when the
  palette has transparency; a PNG ``tRNS`` colour key becomes an alpha channel too. Bilevel
  images become 8-bit gray (0 or 255). CMYK/YCbCr JPEGs are converted to RGB by Pillow.
* **Bit depth** is 8 or 16 as stored. Float TIFFs (``float16/32/64``) are read as ``float32``
  with ``bit_depth == 32``; their values are kept as stored (not clipped) so that they round-trip.
* **EXIF orientation** (JPEG, PNG ``eXIf``, TIFF ``Orientation``) is applied on read, so arrays are
  always upright; files we write carry no orientation tag, so they are never rotated twice.
* **TIFF layout rule.** The image is tifffile's first series. Its ``Y`` and ``X`` axes are height
  and width; other axes of length 1 are dropped; at most one other axis may remain, whatever
  tifffile calls it (``S`` samples per pixel, chunky ``YXS`` or planar ``SYX``; ``C`` channels;
  ``I``/``Q``/``Z`` pages), and it becomes the channel axis, moved last. So a 4-band or 8-band
  file reads as ``H x W x 4`` or ``H x W x 8`` whether it is stored chunky, planar or one band per
  page. A file with two such axes (a stack of RGB pages, a volume with channels) is refused.
  ``MinIsWhite`` is inverted, palette TIFFs go through their colour map, CMYK is refused.

Alpha. The alpha channel is kept but never fed to models: callers that change the image size
resize alpha separately (bicubic) and hand it back through :meth:`Image.with_data`, and
:func:`write_image` re-attaches it. A TIFF sample is alpha when its ``ExtraSamples`` tag says so
(associated alpha is returned as stored, not un-premultiplied).

Integer <-> float. ``x / maxval`` on read and ``round(x * maxval)`` (clipped to the range) on write,
with ``maxval`` 255 or 65535; float32 has enough precision for this to be the identity on all 65536
16-bit levels, so 16-bit files survive read -> write bit for bit.

Writes are atomic (:func:`atomic_write`): a temporary file in the same folder is renamed into place
only when it is complete, so an interrupted or failed write never leaves half a file. PNG (8 and
16 bit, with ICC profile, DPI and EXIF) is written by :mod:`superres.pngenc` (one row filter,
deflate on several threads: about 2-3x faster than Pillow for large outputs), TIFF by tifffile, the
other formats by Pillow.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import numpy as np

from superres.errors import SuperresError
from superres.pngenc import write_png, write_png_rows
from superres.metadata import pillow_options, tiff_options

__all__ = [
    "IMAGE_SUFFIXES",
    "Image",
    "PNG_LEVEL",
    "RawImage",
    "atomic_write",
    "check_png_level",
    "check_writable",
    "list_images",
    "max_pixels",
    "read_array",
    "read_image",
    "read_raw",
    "set_max_pixels",
    "to_float",
    "to_integer",
    "write_image",
    "write_image_rows",
    "write_samples",
]

#: Suffixes that :func:`list_images` collects and :func:`write_image` can write.
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")

_MAXVAL = {8: 255, 16: 65535}

#: Default for :func:`max_pixels`: the largest image (height x width, whatever the format) that the
#: readers decode. 200 MP is e.g. 16000 x 12500; its RGB float32 copy alone takes 2.4 GB.
DEFAULT_MAX_PIXELS = 200_000_000
#: The environment variable that sets the limit when :func:`set_max_pixels` has not.
MAX_PIXELS_ENV = "SUPERRES_MAX_PIXELS"
_max_pixels: int | None = None
#: Samples per block in :func:`to_integer` (16 MB of float32 temporaries).
_CONVERT_BLOCK = 1 << 22
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
_EXIF_ORIENTATION = 0x0112


# --------------------------------------------------------------------------- conversions
def to_float(array: np.ndarray) -> np.ndarray:
    """Integer samples as ``float32`` in ``[0, 1]`` (``x / 255`` or ``x / 65535``).

    Float arrays (from float TIFFs) are returned as ``float32`` unchanged. Datasets that keep
    :func:`read_array` results in RAM call this when they hand a sample to a model.
    """
    if array.dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255)
    if array.dtype == np.uint16:
        return array.astype(np.float32) / np.float32(65535)
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32, copy=False)
    raise ValueError(f"to_float expects uint8, uint16 or float samples, got {array.dtype}")


def to_integer(data: np.ndarray, bit_depth: int) -> np.ndarray:
    """Float samples in ``[0, 1]`` as the array a file of ``bit_depth`` stores.

    8 -> ``uint8``, 16 -> ``uint16``: ``round(x * maxval)`` clipped to ``[0, maxval]`` (NaN -> 0),
    the exact inverse of :func:`to_float`. 32 -> ``float32`` unchanged (float TIFF samples).
    """
    if bit_depth == 32:
        return np.asarray(data, dtype=np.float32)
    if bit_depth not in _MAXVAL:
        raise ValueError(f"bit_depth must be 8, 16 or 32, got {bit_depth}")
    import torch

    maxval = float(_MAXVAL[bit_depth])
    # torch rather than numpy: the same round-half-to-even, in one vectorised pass per step, about
    # twice as fast on large outputs (it is part of every `superres upscale`). Done in blocks of
    # rows, so that the float temporaries are a few MB, not another full-size copy of the image.
    array = np.asarray(data, dtype=np.float32)
    out = np.empty(array.shape, dtype=np.uint8 if bit_depth == 8 else np.uint16)
    if array.ndim == 0 or array.size == 0:
        blocks = [(Ellipsis, array)]
    else:
        rows = max(1, _CONVERT_BLOCK // max(1, array[0].size))
        blocks = [(slice(r, r + rows), array[r : r + rows]) for r in range(0, array.shape[0], rows)]
    for where, block in blocks:
        samples = torch.from_numpy(np.ascontiguousarray(block))
        scaled = samples.mul(maxval).nan_to_num_(0.0).clamp_(0.0, maxval).round_()
        out[where] = scaled.to(torch.uint8 if bit_depth == 8 else torch.int32).numpy()
    return out


def _bit_depth_of(dtype: np.dtype) -> int:
    if dtype == np.uint8:
        return 8
    if dtype == np.uint16:
        return 16
    if np.issubdtype(dtype, np.floating):
        return 32
    raise ValueError(f"no bit depth for samples of type {dtype}")


# --------------------------------------------------------------------------- Image
_KEEP = object()


@dataclass
class Image:
    """An image in memory: colour/band channels and alpha apart, both ``float32`` in ``[0, 1]``.

    ``bit_depth`` is the depth of the source file (8, 16, or 32 for float TIFF); outputs derived
    from the image are written back at that depth. ``data`` given as ``H x W`` is made
    ``H x W x 1``; float64 is narrowed to float32. Integer data is refused (it would be read as
    0..255 "floats"): convert with :func:`to_float` or use :meth:`from_array`.
    """

    data: np.ndarray
    alpha: np.ndarray | None = None
    bit_depth: int = 8
    path: Path | None = None

    def __post_init__(self) -> None:
        self.data = _as_float_planes(self.data, "data")
        if self.data.shape[2] < 1:
            raise ValueError("Image.data must have at least one channel")
        if self.alpha is not None:
            self.alpha = _as_float_planes(self.alpha, "alpha")
            if self.alpha.shape != self.data.shape[:2] + (1,):
                raise ValueError(
                    f"Image.alpha must be H x W x 1 = {self.data.shape[:2] + (1,)}, got {self.alpha.shape}"
                )
        if self.bit_depth not in (8, 16, 32):
            raise ValueError(f"Image.bit_depth must be 8, 16 or 32, got {self.bit_depth}")
        if self.path is not None:
            self.path = Path(self.path)

    @classmethod
    def from_array(cls, array: np.ndarray, alpha: np.ndarray | None = None, path: Path | None = None) -> "Image":
        """An image from file samples (``uint8``/``uint16``/float ``H x W [x C]``); depth from the dtype."""
        array = np.asarray(array)
        depth = _bit_depth_of(array.dtype)
        return cls(to_float(array), None if alpha is None else to_float(np.asarray(alpha)), depth, path)

    @property
    def height(self) -> int:
        return int(self.data.shape[0])

    @property
    def width(self) -> int:
        return int(self.data.shape[1])

    @property
    def channels(self) -> int:
        """Number of colour/band channels (alpha not counted)."""
        return int(self.data.shape[2])

    @property
    def mode(self) -> str:
        """``'gray'`` (1 channel), ``'rgb'`` (3) or ``'bands'`` (anything else, e.g. 4- or 8-band TIFF)."""
        return {1: "gray", 3: "rgb"}.get(self.channels, "bands")

    def to_integer(self, *, include_alpha: bool = False) -> np.ndarray:
        """The samples a file of this bit depth stores (see :func:`to_integer`), alpha last if asked."""
        planes = to_integer(self.data, self.bit_depth)
        if include_alpha and self.alpha is not None:
            planes = np.concatenate([planes, to_integer(self.alpha, self.bit_depth)], axis=2)
        return planes

    def with_data(self, data: np.ndarray, alpha: np.ndarray | None | object = _KEEP) -> "Image":
        """A new image with the same bit depth and path but new pixels (e.g. an upscaled output).

        ``alpha`` defaults to the current alpha, which is only possible when the size did not
        change; for a new size pass the resized alpha, or ``None`` to drop it. Refusing to guess
        here is what keeps alpha from silently disappearing from outputs.
        """
        if alpha is _KEEP:
            alpha = self.alpha
            data = np.asarray(data)
            if alpha is not None and data.shape[:2] != alpha.shape[:2]:
                raise ValueError(
                    f"with_data: new size {data.shape[:2]} differs from the alpha's {alpha.shape[:2]}; "
                    "pass alpha= (resized) or alpha=None"
                )
        return Image(data, alpha, self.bit_depth, self.path)  # type: ignore[arg-type]


def _as_float_planes(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"Image.{name} must be float in [0, 1], got {array.dtype} (use to_float or Image.from_array)")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"Image.{name} must be H x W x C, got shape {array.shape}")
    return array.astype(np.float32, copy=False)


# --------------------------------------------------------------------------- limits
def set_max_pixels(limit: int | None) -> None:
    """Set the pixel limit of every reader (``None``: back to ``$SUPERRES_MAX_PIXELS`` or the default).

    The CLI's ``--max-pixels`` calls this. The limit is checked on the size a file *declares*, before
    anything is decoded, so a small file that claims a huge image (a decompression bomb) costs nothing.
    """
    global _max_pixels
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise SuperresError(f"--max-pixels {limit}: must be a positive integer")
    _max_pixels = limit


def max_pixels() -> int:
    """The pixel limit in force: :func:`set_max_pixels`, else ``$SUPERRES_MAX_PIXELS``, else
    :data:`DEFAULT_MAX_PIXELS`."""
    if _max_pixels is not None:
        return _max_pixels
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(text)) if text.lower() not in ("nan", "inf", "-inf") else 0
    except ValueError:
        value = 0
    if value < 1:
        raise SuperresError(f"{MAX_PIXELS_ENV}={text}: must be a positive integer (a pixel count, e.g. 400000000)")
    return value


def _check_pixels(path: Path, height: int, width: int, samples: int | None = None) -> None:
    """Refuse, before decoding, an image whose declared size is over :func:`max_pixels`.

    ``samples`` (TIFF) is the number of values the decoder would allocate for the whole series; it is
    allowed up to 4 per pixel of the limit (RGBA at the limit), so that a file of many bands or pages
    cannot get past the check either.
    """
    limit = max_pixels()
    pixels = int(height) * int(width)
    if pixels > limit or (samples is not None and samples > 4 * limit):
        size = f"{width} x {height} = {pixels / 1e6:.1f} MP" if pixels > limit else f"{samples} samples"
        raise SuperresError(
            f"{path}: cannot read image (it declares {size}, above the limit of {limit / 1e6:g} MP; "
            f"raise it with --max-pixels N or {MAX_PIXELS_ENV}=N if the file is genuine)"
        )


# --------------------------------------------------------------------------- reading
class RawImage(NamedTuple):
    """A decoded file as stored: ``pixels`` ``H x W x C`` and ``alpha`` ``H x W x 1`` (or None),
    both ``uint8``/``uint16`` (``float32`` for float TIFFs), upright, and the ``bit_depth``."""

    pixels: np.ndarray
    alpha: np.ndarray | None
    bit_depth: int


def read_image(path: str | os.PathLike) -> Image:
    """Read an image file as an :class:`Image` (float32 in [0, 1], alpha apart, upright).

    Raises :class:`SuperresError` ``"<path>: cannot read image (<reason>)"`` for a missing,
    corrupt, truncated or unsupported file.
    """
    path = Path(path)
    raw = read_raw(path)
    alpha = None if raw.alpha is None else to_float(raw.alpha)
    return Image(to_float(raw.pixels), alpha, raw.bit_depth, path)


def read_array(path: str | os.PathLike) -> np.ndarray:
    """The colour/band samples of an image file as stored: ``H x W x C`` ``uint8`` or ``uint16``
    (``float32`` for a float TIFF), alpha dropped. Datasets keep these in RAM (2 bytes per 16-bit
    sample instead of 4) and convert with :func:`to_float` when they serve a sample."""
    return read_raw(path).pixels


def read_raw(path: str | os.PathLike) -> RawImage:
    """Decode ``path`` into a :class:`RawImage`; the one decoder behind every reader here."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(32)
    except FileNotFoundError:
        raise SuperresError(f"{path}: cannot read image (no such file)") from None
    except IsADirectoryError:
        raise SuperresError(f"{path}: cannot read image (it is a folder)") from None
    except OSError as exc:
        raise SuperresError(f"{path}: cannot read image ({exc.strerror or exc})") from None
    if not head:
        raise SuperresError(f"{path}: cannot read image (empty file)")

    if head.startswith(_TIFF_SIGNATURES):
        decode = _decode_tiff
    elif head.startswith(_PNG_SIGNATURE) and head[12:16] == b"IHDR" and len(head) > 24 and head[24] == 16:
        _check_pixels(path, int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big"))
        decode = _decode_png16
    else:
        decode = _decode_pillow
    try:
        pixels, alpha, orientation = decode(path)
    except SuperresError:
        raise
    except MemoryError:
        raise SuperresError(f"{path}: cannot read image (not enough memory to decode it)") from None
    except Exception as exc:  # noqa: BLE001 - third-party decoders raise anything on bad files
        raise SuperresError(f"{path}: cannot read image ({_short_reason(exc)})") from None

    pixels = _orient(pixels, orientation)
    alpha = None if alpha is None else _orient(alpha, orientation)
    return RawImage(pixels, alpha, _bit_depth_of(pixels.dtype))


def _short_reason(exc: BaseException) -> str:
    """A one-line reason for a decoder failure, without the decoder's own copy of the path."""
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "unknown or unsupported image format"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    if len(text) > 160:
        text = text[:157] + "..."
    return text


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF/TIFF orientation (1..8) the way ``PIL.ImageOps.exif_transpose`` does."""
    if orientation == 2:
        array = array[:, ::-1]
    elif orientation == 3:
        array = array[::-1, ::-1]
    elif orientation == 4:
        array = array[::-1]
    elif orientation == 5:
        array = array.transpose(1, 0, 2)
    elif orientation == 6:
        array = np.rot90(array, -1)
    elif orientation == 7:
        array = np.rot90(array, 2).transpose(1, 0, 2)
    elif orientation == 8:
        array = np.rot90(array, 1)
    else:  # 1, absent, or an invalid value: leave as stored (as Pillow does)
        return array
    return np.ascontiguousarray(array)


def _split_alpha(array: np.ndarray, has_alpha: bool) -> tuple[np.ndarray, np.ndarray | None]:
    if array.ndim == 2:
        array = array[:, :, None]
    if not has_alpha:
        return np.ascontiguousarray(array), None
    return np.ascontiguousarray(array[:, :, :-1]), np.ascontiguousarray(array[:, :, -1:])


def _decode_pillow(path: Path) -> tuple[np.ndarray, np.ndarray | None, int]:
    """8-bit PNG, JPEG, BMP (and whatever else Pillow opens; first frame of animations)."""
    from PIL import Image as PILImage

    # Pillow's own bomb check (warning, then error at 2x its MAX_IMAGE_PIXELS) is replaced by ours,
    # which applies to every format and follows --max-pixels; the size is known once the header is read.
    bomb_limit = PILImage.MAX_IMAGE_PIXELS
    PILImage.MAX_IMAGE_PIXELS = None
    try:
        im = PILImage.open(path)
    finally:
        PILImage.MAX_IMAGE_PIXELS = bomb_limit
    with im:
        _check_pixels(path, im.size[1], im.size[0])
        im.load()  # full decode here, so that truncation errors are raised inside our handler
        orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
        mode = im.mode
        transparent = "transparency" in im.info
        if mode in ("P", "PA"):
            im = im.convert("RGBA" if (transparent or mode == "PA") else "RGB")
        elif mode in ("L", "RGB") and transparent:
            im = im.convert(mode[0] + "A" if mode == "L" else "RGBA")
        elif mode == "1":
            im = im.convert("L")
        elif mode in ("La", "RGBa"):  # premultiplied alpha: back to straight alpha
            im = im.convert("LA" if mode == "La" else "RGBA")
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
            im = im.convert("RGB")
        elif mode in ("I;16", "I;16L", "I;16B", "I;16N"):
            return np.asarray(im).astype(np.uint16)[:, :, None], None, orientation
        elif mode == "I":
            values = np.asarray(im)
            if values.size and (values.min() < 0 or values.max() > 65535):
                raise SuperresError(f"{path}: cannot read image (32-bit integer samples outside 0..65535)")
            return values.astype(np.uint16)[:, :, None], None, orientation
        elif mode not in ("L", "LA", "RGB", "RGBA"):
            raise SuperresError(f"{path}: cannot read image (unsupported pixel mode {mode})")
        array = np.asarray(im)
    if array.dtype != np.uint8:
        raise SuperresError(f"{path}: cannot read image (unexpected {array.dtype} samples in mode {im.mode})")
    pixels, alpha = _split_alpha(array, im.mode in ("LA", "RGBA"))
    return pixels, alpha, orientation


def _decode_png16(path: Path) -> tuple[np.ndarray, np.ndarray | None, int]:
    """16-bit PNG of any colour type through pypng, which keeps all 16 bits (Pillow does not)."""
    import png

    data = path.read_bytes()
    width, height, rows, info = png.Reader(bytes=data).read()
    planes = int(info["planes"])
    # pypng yields one array('H') per row, native byte order: view them without a Python loop per value.
    array = np.stack([np.frombuffer(row, dtype=np.uint16) for row in rows]).reshape(height, width, planes)
    pixels, alpha = _split_alpha(array, bool(info["alpha"]))
    key = info.get("transparent")
    if alpha is None and key is not None:  # tRNS colour key -> alpha channel
        key_values = np.asarray(key if isinstance(key, (tuple, list)) else (key,), dtype=np.uint16)
        alpha = np.where(np.all(pixels == key_values, axis=2, keepdims=True), 0, 65535).astype(np.uint16)
    return pixels, alpha, _png_exif_orientation(data)


def _png_exif_orientation(data: bytes) -> int:
    """The orientation in a PNG's ``eXIf`` chunk (1 when there is none); pypng skips that chunk."""
    from PIL import Image as PILImage

    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"eXIf":
            exif = PILImage.Exif()
            exif.load(data[pos + 8 : pos + 8 + length])
            return int(exif.get(_EXIF_ORIENTATION, 1) or 1)
        if kind == b"IEND":
            break
        pos += 12 + length
    return 1


@contextlib.contextmanager
def _quiet_tifffile() -> Iterator[None]:
    """Silence tifffile's log lines about malformed files ("incorrect StripByteCounts ..."): a file
    that cannot be read is reported in our one error line, and one that can needs no comment."""
    import logging

    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _decode_tiff(path: Path) -> tuple[np.ndarray, np.ndarray | None, int]:
    """TIFF through tifffile, following the layout rule in the module docstring."""
    import tifffile

    with _quiet_tifffile(), tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        page = series.keyframe
        if "Y" in series.axes and "X" in series.axes:  # the declared size, before decoding
            shape = dict(zip(series.axes, series.shape))
            _check_pixels(path, shape["Y"], shape["X"], samples=int(np.prod(series.shape, dtype=np.int64)))
        array = series.asarray()
        axes = series.axes
        photometric = int(page.photometric)
        compression = int(page.compression)
        bits = int(page.bitspersample)
        extrasamples = tuple(int(e) for e in page.extrasamples)
        colormap = page.colormap
        tag = page.tags.get("Orientation")
        orientation = int(tag.value) if tag is not None else 1

    def refuse(reason: str) -> SuperresError:
        return SuperresError(f"{path}: cannot read image ({reason})")

    if "Y" not in axes or "X" not in axes:
        raise refuse(f"TIFF series with axes {axes} has no Y and X axes")
    keep = [i for i, a in enumerate(axes) if a in "YX" or array.shape[i] > 1]
    array = array.reshape([array.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    extra = [a for a in axes if a not in "YX"]
    if len(extra) > 1:
        raise refuse(f"TIFF holds a stack with axes {axes}; expected one image with bands (axes YX plus one)")
    order = [axes.index("Y"), axes.index("X")] + ([axes.index(extra[0])] if extra else [])
    array = array.transpose(order)
    if array.ndim == 2:
        array = array[:, :, None]
    samples_axis = bool(extra) and extra[0] == "S"

    if array.dtype == np.bool_ or bits == 1:
        array = array.astype(np.uint8) * np.uint8(255)
    elif array.dtype == np.uint8 or array.dtype == np.uint16:
        if bits not in (8, 16):
            raise refuse(f"unsupported TIFF sample depth of {bits} bits; use 8 or 16")
    elif np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
        finite = np.isfinite(array)
        if not finite.all():
            bad = int(array.size - np.count_nonzero(finite))
            raise refuse(
                f"{bad} of {array.size} float samples are NaN or infinite; a model would spread them over "
                "the output: replace them (e.g. with 0) before using this file"
            )
        del finite
    else:
        raise refuse(f"unsupported TIFF sample type {array.dtype}; use uint8, uint16 or float")

    if photometric == 0:  # MinIsWhite
        array = (1.0 - array if array.dtype == np.float32 else np.iinfo(array.dtype).max - array).astype(array.dtype)
    elif photometric == 3:  # palette
        if colormap is None or array.shape[2] != 1:
            raise refuse("palette TIFF without a usable colour map")
        array = _apply_colormap(np.asarray(colormap), array[:, :, 0])
    elif photometric == 6 and compression in (6, 7):  # JPEG-compressed YCbCr is decoded to RGB
        pass
    elif photometric not in (1, 2):
        names = {4: "transparency mask", 5: "CMYK/separated", 6: "YCbCr", 8: "CIELab", 32844: "LogL", 32845: "LogLuv"}
        raise refuse(f"unsupported TIFF photometric interpretation {names.get(photometric, photometric)}")

    has_alpha = samples_axis and array.shape[2] >= 2 and bool(extrasamples) and extrasamples[-1] in (1, 2)
    pixels, alpha = _split_alpha(array, has_alpha)
    return pixels, alpha, orientation


def _apply_colormap(colormap: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """RGB from a TIFF colour map (3 x 2**bits, nominally 16-bit). Writers disagree on how to store
    an 8-bit palette: ``v * 257`` (exact), ``v << 8`` (Pillow, libtiff tools) or plain ``v``
    (old software, which libtiff also detects). Those three give an 8-bit image; anything else is
    a true 16-bit palette."""
    colormap = colormap.astype(np.uint32)
    if not np.any(colormap % 257):
        colormap, dtype = colormap // 257, np.uint8
    elif not np.any(colormap % 256):
        colormap, dtype = colormap >> 8, np.uint8
    elif colormap.max() < 256:
        dtype = np.uint8
    else:
        dtype = np.uint16
    return colormap[:, indices].transpose(1, 2, 0).astype(dtype)


# --------------------------------------------------------------------------- writing
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed to ``path``.

    The temporary name is hidden (``.name.<random>.tmp<suffix>``) and keeps the suffix, so writers
    that pick a format from the suffix (matplotlib, numpy's ``.npz``) behave as for ``path``. The
    parent folders are created. If the body raises (or is interrupted), the temporary file is
    removed and ``path`` is untouched; the file is flushed to disk before the rename, so a crash
    leaves either the old file or the complete new one. Folder creation and rename failures are
    raised as :class:`SuperresError` naming the path.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SuperresError(f"{path.parent}: cannot create folder ({exc.strerror or exc})") from None
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        # Some writers (safetensors) create private 0600 files; give the result the permissions any
        # ordinary new file gets, so that a model or image is readable like its neighbours.
        os.chmod(tmp, 0o666 & ~_umask())
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise SuperresError(f"{path}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


_WRITE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
                  ".webp": "WEBP"}


#: zlib level of PNG files (0-9) unless the caller says otherwise: Pillow's default, small files.
#: ``superres upscale`` writes at 1 (``--png-level``; OpenCV's default), about 4x faster for larger files.
PNG_LEVEL = 6


def check_png_level(level: int, what: str = "PNG compression level") -> int:
    """``level`` when it is a zlib level (an integer 0-9), else a :class:`SuperresError` naming ``what``."""
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 9:
        raise SuperresError(f"{what} {level!r}: use an integer from 0 (none, fastest) to 9 (smallest)")
    return level


def write_image(path: str | os.PathLike, image: Image, *, jpeg_quality: int = 95, metadata: dict | None = None,
                png_level: int = PNG_LEVEL, png_threads: int | None = None) -> None:
    """Write ``image`` to ``path`` in the format its suffix names, atomically.

    Keeps what the file format can keep and refuses what it cannot, rather than silently losing it:
    bit depth (16-bit -> 16-bit PNG/TIFF; JPEG/BMP hold only 8 bit), channels (PNG holds gray or
    RGB, any number of bands goes to TIFF), alpha (PNG/TIFF; not JPEG/BMP). JPEG is written at
    ``jpeg_quality`` with 4:4:4 chroma, since SR outputs are about fine detail; WebP (8-bit RGB or
    RGBA; gray is stored as RGB) at the same quality, PNG at zlib level ``png_level`` (0-9; the
    pixels are the same at every level), deflated on ``png_threads`` threads (None: up to 4, one
    per usable CPU; :func:`superres.pngenc.write_png`). ``metadata``
    (:func:`superres.metadata.read_metadata` of the source) is written where the format holds it:
    ICC profile, DPI, EXIF.
    """
    path = Path(path)
    has_alpha = image.alpha is not None
    fmt = check_writable(path, image.channels, image.bit_depth, has_alpha)
    check_png_level(png_level)  # both refused before the samples are made
    _write_checked(path, fmt, image.to_integer(include_alpha=True), image.channels, has_alpha, jpeg_quality, metadata,
                   png_level, png_threads)


def write_samples(path: str | os.PathLike, samples: np.ndarray, channels: int, bit_depth: int, has_alpha: bool, *,
                  jpeg_quality: int = 95, metadata: dict | None = None, png_level: int = PNG_LEVEL,
                  png_threads: int | None = None) -> None:
    """:func:`write_image` for samples already as the file stores them: ``H x W x (channels + alpha)``
    of ``uint8`` (8), ``uint16`` (16) or ``float32`` (32), alpha last. Same formats, checks and
    atomic write; for callers that have the integer samples (``superres upscale`` through an 8-bit
    graph, :meth:`superres.export.OnnxModel.run_uint8`)."""
    path = Path(path)
    dtype = {8: np.uint8, 16: np.uint16, 32: np.float32}.get(bit_depth)
    if samples.ndim != 3 or samples.shape[2] != channels + int(has_alpha) or samples.dtype != dtype:
        raise ValueError(f"write_samples: {samples.shape} {samples.dtype} samples for {channels} channel(s)"
                         f"{' + alpha' if has_alpha else ''} at {bit_depth} bits")
    fmt = check_writable(path, channels, bit_depth, has_alpha)
    check_png_level(png_level)
    _write_checked(path, fmt, samples, channels, has_alpha, jpeg_quality, metadata, png_level, png_threads)


def _write_checked(path: Path, fmt: str, samples: np.ndarray, channels: int, has_alpha: bool, jpeg_quality: int,
                   metadata: dict | None, png_level: int, png_threads: int | None = None) -> None:
    """Write ``samples`` to ``path`` as ``fmt`` (:func:`check_writable`'s answer), atomically."""
    try:
        with atomic_write(path) as tmp:
            if fmt == "TIFF":
                _write_tiff(tmp, samples, channels, has_alpha, metadata)
            elif fmt == "PNG":
                with open(tmp, "wb") as handle:
                    write_png(handle, samples, level=png_level, metadata=metadata, threads=png_threads)
            else:
                _write_pillow(tmp, samples, fmt, jpeg_quality, metadata)
    except OSError as exc:
        raise SuperresError(f"{path}: cannot write image ({exc.strerror or exc})") from None


def check_writable(path: str | os.PathLike, channels: int, depth: int, has_alpha: bool) -> str:
    """The Pillow/tifffile format for ``path``'s suffix, or a :class:`SuperresError` saying why an
    image of ``channels`` channels at ``depth`` bits (with alpha or not) cannot be written there."""
    path = Path(path)
    fmt = _WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise SuperresError(
            f"{path}: unsupported output format {path.suffix or '(no suffix)'!r}; use .png, .jpg, .webp, .bmp or .tif"
        )
    if fmt in ("JPEG", "BMP", "WEBP"):
        if depth != 8:
            raise SuperresError(
                f"{path}: {fmt} holds only 8-bit images and this one is {depth}-bit; "
                "write it as .png or .tif to keep the bit depth"
            )
        if has_alpha and fmt != "WEBP":
            raise SuperresError(f"{path}: {fmt} cannot hold the alpha channel; write it as .png or .tif")
        if channels not in (1, 3):
            raise SuperresError(f"{path}: {fmt} holds gray or RGB and this image has {channels} bands; write it as .tif")
    elif fmt == "PNG":
        if depth == 32:
            raise SuperresError(f"{path}: PNG holds 8- or 16-bit images and this one is float; write it as .tif")
        if channels not in (1, 3):
            raise SuperresError(
                f"{path}: PNG holds gray or RGB (plus alpha) and this image has {channels} bands; write it as .tif"
            )
    return fmt


def _write_pillow(tmp: Path, samples: np.ndarray, fmt: str, jpeg_quality: int, metadata: dict | None = None) -> None:
    from PIL import Image as PILImage

    array = samples[:, :, 0] if samples.shape[2] == 1 else samples  # L, LA, RGB, RGBA inferred from shape
    im = PILImage.fromarray(np.ascontiguousarray(array))
    options: dict = {"quality": int(jpeg_quality), "subsampling": 0} if fmt == "JPEG" else {}
    if fmt == "WEBP":
        options = {"quality": int(jpeg_quality), "method": 4}
    im.save(tmp, format=fmt, **options, **pillow_options(fmt, metadata))


def _write_tiff(tmp: Path, samples: np.ndarray, channels: int, has_alpha: bool, metadata: dict | None = None) -> None:
    import tifffile

    total = samples.shape[2]
    photometric = "rgb" if channels == 3 else "minisblack"
    options: dict[str, object] = {}
    if total > 1:
        options["planarconfig"] = "contig"
        implied = 2 if photometric == "rgb" else 0  # samples the photometric already accounts for
        extra = ["unspecified"] * (total - 1 - implied)
        if has_alpha:
            extra[-1] = "unassalpha"
        if extra:
            options["extrasamples"] = extra
    data = samples[:, :, 0] if total == 1 else samples
    tifffile.imwrite(tmp, data, photometric=photometric, compression="zlib", metadata=None, **options,
                     **tiff_options(metadata))


#: Output formats :func:`write_image_rows` can write band by band.
STREAM_SUFFIXES = (".png", ".tif", ".tiff")
_STREAM_TILE = 256


def write_image_rows(
    path: str | os.PathLike, height: int, width: int, channels: int, bit_depth: int, bands: Iterable[np.ndarray],
    *, png_level: int = PNG_LEVEL, metadata: dict | None = None,
) -> None:
    """Write an image that arrives as bands of rows (``rows x width x channels`` samples as a file of
    ``bit_depth`` stores them: uint8, uint16, float32), atomically, holding one band at a time.

    For outputs too large for memory (``superres upscale`` decides). PNG (8/16-bit gray or RGB) is
    written band by band (:func:`superres.pngenc.write_png_rows`); TIFF as 256 x 256 zlib-compressed tiles, so any depth and any
    number of bands. No alpha. JPEG and BMP cannot be written this way (refused, naming the file).
    ``metadata`` (:func:`superres.metadata.read_metadata` of the source: ICC profile, DPI, EXIF) is
    written as :func:`write_image` writes it.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in STREAM_SUFFIXES:
        raise SuperresError(
            f"{path}: a {suffix or 'suffix-less'} file cannot be written in strips, and the image is too large to "
            f"write in one piece; write it as .png or .tif"
        )
    if suffix == ".png" and (bit_depth == 32 or channels not in (1, 3)):
        raise SuperresError(f"{path}: PNG holds 8- or 16-bit gray or RGB; write it as .tif")
    check_png_level(png_level)
    dtype = {8: np.uint8, 16: np.uint16, 32: np.float32}[bit_depth]

    def checked(band_iter: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        seen = 0
        for band in band_iter:
            if band.shape[1:] != (width, channels) or band.dtype != dtype:
                raise ValueError(f"write_image_rows: band of {band.shape} {band.dtype}, expected rows x {width} x {channels} {np.dtype(dtype)}")
            seen += band.shape[0]
            if seen > height:
                raise ValueError(f"write_image_rows: more than {height} rows")
            yield band
        if seen != height:
            raise ValueError(f"write_image_rows: got {seen} rows, expected {height}")

    try:
        with atomic_write(path) as tmp:
            if suffix == ".png":
                _write_png_rows(tmp, height, width, channels, bit_depth, checked(bands), png_level, metadata)
            else:
                _write_tiff_tiles(tmp, height, width, channels, dtype, checked(bands), metadata)
    except OSError as exc:
        raise SuperresError(f"{path}: cannot write image ({exc.strerror or exc})") from None


def _write_png_rows(tmp: Path, height: int, width: int, channels: int, bit_depth: int, bands: Iterator[np.ndarray],
                    png_level: int = PNG_LEVEL, metadata: dict | None = None) -> None:
    with open(tmp, "wb") as handle:
        write_png_rows(handle, height, width, channels, np.uint16 if bit_depth == 16 else np.uint8, bands, level=png_level,
                       metadata=metadata)


def _write_tiff_tiles(tmp: Path, height: int, width: int, channels: int, dtype: type, bands: Iterator[np.ndarray],
                      metadata: dict | None = None) -> None:
    import tifffile

    size = _STREAM_TILE

    def tiles() -> Iterator[np.ndarray]:
        pending: list[np.ndarray] = []
        count = 0
        for band in bands:
            pending.append(band)
            count += band.shape[0]
            while count >= size:
                block = np.concatenate(pending) if len(pending) > 1 else pending[0]
                yield from _row_of_tiles(block[:size], size)
                rest = block[size:]
                pending, count = ([rest] if rest.shape[0] else []), rest.shape[0]
        if count:
            block = np.concatenate(pending) if len(pending) > 1 else pending[0]
            yield from _row_of_tiles(block, size)

    shape = (height, width, channels) if channels > 1 else (height, width)
    options: dict[str, object] = {"planarconfig": "contig"} if channels > 1 else {}
    if channels > 1 and channels != 3:
        options["extrasamples"] = ["unspecified"] * (channels - 1)
    tifffile.imwrite(
        tmp, tiles(), shape=shape, dtype=dtype, tile=(size, size), photometric="rgb" if channels == 3 else "minisblack",
        compression="zlib", metadata=None, **options, **tiff_options(metadata),
    )


def _row_of_tiles(block: np.ndarray, size: int) -> Iterator[np.ndarray]:
    """One row of ``size x size`` tiles across ``block`` (``rows <= size``), zero-padded at the edges."""
    rows, width = block.shape[:2]
    for x in range(0, width, size):
        tile = np.zeros((size, size) + block.shape[2:], dtype=block.dtype)
        part = block[:, x : x + size]
        tile[:rows, : part.shape[1]] = part
        yield tile if block.shape[2] > 1 else tile[:, :, 0]


# --------------------------------------------------------------------------- finding files
def list_images(sources: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Image files among ``sources`` (files, or folders searched recursively), sorted, no duplicates.

    Only files with a suffix in :data:`IMAGE_SUFFIXES` (any case) are collected; hidden files and
    folders (name starting with ``.``) are skipped, which also skips the temporary files of an
    interrupted :func:`atomic_write`. A missing source, a named file that is not an image, or a
    folder without images raises :class:`SuperresError` naming it.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    found: set[Path] = set()
    for source in map(Path, sources):
        _check_link(source)
        if source.is_dir():
            in_folder = _images_in_folder(source)
            if not in_folder:
                raise SuperresError(f"{source}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            found.update(in_folder)
        elif source.is_file():
            if source.suffix.lower() not in IMAGE_SUFFIXES:
                raise SuperresError(f"{source}: not an image file (expected {', '.join(IMAGE_SUFFIXES)})")
            found.add(source)
        else:
            raise SuperresError(f"{source}: no such file or folder")
    return sorted(found)


def _images_in_folder(folder: Path) -> list[Path]:
    images = []
    # Links to folders are not followed (os.walk's default), so a link back up the tree cannot loop.
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # prune hidden folders before descending
        for name in sorted(files):  # sorted: the first bad link reported is the same on every system
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                path = Path(root) / name
                _check_link(path)
                images.append(path)
    return images


def _check_link(path: Path) -> None:
    """Refuse a symbolic link that loops (``a.png -> b.png -> a.png``) or points nowhere, naming it."""
    if not path.is_symlink():
        return
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SuperresError(f"{path}: symbolic link loop (it leads back to itself); remove or fix the link") from None
        if exc.errno == errno.ENOENT:
            raise SuperresError(f"{path}: broken symbolic link (its target {os.readlink(path)!r} does not exist)") from None
        raise SuperresError(f"{path}: cannot follow the symbolic link ({exc.strerror or exc})") from None
