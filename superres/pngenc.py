"""A PNG encoder for large 8/16-bit images: numpy filtering and deflate spread over threads.

Writing the PNG of an upscaled photo is a large part of ``superres upscale`` (a 16 MP result is a
48 MB RGB array): with Pillow at zlib level 1, about 0.7 s, of which roughly half is its adaptive
row filtering in one thread. This encoder (docs/BENCHMARKS.md, "Writing PNGs") does:

* **one filter for every row**: ``Up`` (the difference to the row above; the first row ``None``),
  one vectorised numpy subtraction over the whole image instead of five trial filters per row;
* **deflate in slices on several threads**, the way pigz makes a single zlib stream: each slice of
  filtered rows is compressed on its own (Python's zlib releases the GIL), every slice but the last
  ends with a sync flush (a byte-aligned empty stored block), and the raw deflate data of the slices
  follow each other under one zlib header and the Adler-32 of the whole filtered data, so any PNG
  decoder reads one ordinary stream. Slices do not share a dictionary; at a few MB each that costs
  a fraction of a percent of the size.

Chunks written: ``IHDR``, then ``iCCP`` (ICC profile), ``pHYs`` (DPI) and ``eXIf`` (EXIF, orientation
as given) where ``metadata`` has them, as Pillow writes them, the ``IDAT`` data in chunks of at most
:data:`IDAT_BYTES`, and ``IEND``. Gray, gray + alpha, RGB and RGBA at 8 or 16 bits (16-bit samples
big-endian, as PNG stores them). The pixels decode to exactly the samples given (tested against
Pillow's and pypng's decoders).
"""

from __future__ import annotations

import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, Iterable

import numpy as np

__all__ = ["SLICE_BYTES", "IDAT_BYTES", "usable_cpus", "write_png", "write_png_rows"]

#: Filtered bytes per deflate slice (at least one row): slices are compressed in parallel.
SLICE_BYTES = 4 << 20
#: Largest IDAT chunk written.
IDAT_BYTES = 1 << 20
_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # planes -> gray, gray + alpha, RGB, RGBA


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, else the machine's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _chunk(out: BinaryIO, kind: bytes, data: bytes | memoryview) -> None:
    out.write(struct.pack(">I", len(data)))
    out.write(kind)
    out.write(data)
    out.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind))))


def _row_bytes(samples: np.ndarray) -> np.ndarray:
    """``samples`` (``H x W x planes`` uint8/uint16) as ``H`` rows of the bytes PNG stores (16 bits big-endian)."""
    rows = np.ascontiguousarray(samples, dtype=">u2" if samples.dtype == np.uint16 else np.uint8)
    return rows.reshape(samples.shape[0], -1).view(np.uint8)


def _filtered(rows: np.ndarray, above: np.ndarray | None = None) -> np.ndarray:
    """The PNG scanlines of ``rows`` (:func:`_row_bytes`), each a filter byte and the row's bytes:
    ``Up`` (2, the byte-wise difference modulo 256 to the row above) for every row with a row above,
    ``None`` (0) for the image's first row (``above`` None: ``rows`` starts the image; else the last
    row of the previous band)."""
    lines = np.empty((rows.shape[0], rows.shape[1] + 1), np.uint8)
    lines[:, 0] = 2
    if above is None:
        lines[0, 0] = 0
        lines[0, 1:] = rows[0]
    else:
        np.subtract(rows[0], above, out=lines[0, 1:])
    np.subtract(rows[1:], rows[:-1], out=lines[1:, 1:])  # uint8 arithmetic wraps modulo 256, as Up asks
    return lines


def _deflate(lines: np.ndarray, level: int, threads: int) -> list[bytes]:
    """One zlib stream (header, raw deflate of the slices, Adler-32) of the filtered ``lines``, as a
    list of byte strings to write one after the other (module docstring)."""
    data = lines.reshape(-1)
    rows_per_slice = max(1, SLICE_BYTES // lines.shape[1])
    cuts = list(range(0, lines.shape[0], rows_per_slice)) + [lines.shape[0]]
    slices = [data[a * lines.shape[1]:b * lines.shape[1]] for a, b in zip(cuts[:-1], cuts[1:])]

    def deflate(k: int) -> bytes:
        packer = zlib.compressobj(level, zlib.DEFLATED, -15)
        body = packer.compress(slices[k])
        return body + packer.flush(zlib.Z_FINISH if k == len(slices) - 1 else zlib.Z_SYNC_FLUSH)

    if threads > 1 and len(slices) > 1:
        with ThreadPoolExecutor(min(threads, len(slices)), thread_name_prefix="superres-png") as pool:
            bodies = list(pool.map(deflate, range(len(slices))))
    else:
        bodies = [deflate(k) for k in range(len(slices))]
    # The zlib header: deflate with a 32 KB window (0x78) and the level class of FLEVEL, FCHECK
    # making the 16-bit header a multiple of 31 (RFC 1950).
    flevel = 0 if level <= 1 else 1 if level <= 5 else 2 if level == 6 else 3
    cmf, flg = 0x78, flevel << 6
    flg |= 31 - (cmf * 256 + flg) % 31
    adler = 1
    for piece in slices:
        adler = zlib.adler32(piece, adler)
    return [bytes((cmf, flg)), *bodies, struct.pack(">I", adler)]


def _header(out: BinaryIO, height: int, width: int, planes: int, depth: int, metadata: dict[str, Any] | None) -> None:
    """The signature, ``IHDR`` and the metadata chunks (module docstring)."""
    out.write(b"\x89PNG\r\n\x1a\n")
    _chunk(out, b"IHDR", struct.pack(">IIBBBBB", width, height, depth, _COLOR_TYPES[planes], 0, 0, 0))
    meta = metadata or {}
    if meta.get("icc_profile"):
        _chunk(out, b"iCCP", b"ICC Profile\0\0" + zlib.compress(bytes(meta["icc_profile"])))
    if meta.get("dpi"):
        x, y = (int(float(v) / 0.0254 + 0.5) for v in meta["dpi"])
        _chunk(out, b"pHYs", struct.pack(">IIB", x, y, 1))
    if meta.get("exif"):
        exif = bytes(meta["exif"])
        _chunk(out, b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif)


def _check(planes: int, dtype: Any, level: int) -> None:
    if planes not in _COLOR_TYPES or dtype not in (np.uint8, np.uint16):
        raise ValueError(f"write_png: expected 1-4 planes of uint8/uint16 samples, got {planes} of {np.dtype(dtype)}")
    if not 0 <= level <= 9:
        raise ValueError(f"write_png: zlib level {level} is not 0-9")


def write_png_rows(out: BinaryIO, height: int, width: int, planes: int, dtype: Any, bands: Iterable[np.ndarray], *,
                   level: int = 6, metadata: dict[str, Any] | None = None) -> None:
    """:func:`write_png` for an image that arrives as bands of rows (``rows x width x planes`` of
    ``dtype``), holding one band (and its compressed bytes, at most :data:`IDAT_BYTES` more) at a time:
    the same filter, one deflate stream on the calling thread. The caller checks that the bands add
    up to ``height`` rows of the right shape (``superres.io.write_image_rows`` does)."""
    _check(planes, np.dtype(dtype), level)
    _header(out, height, width, planes, 16 if np.dtype(dtype) == np.uint16 else 8, metadata)
    packer = zlib.compressobj(level)
    pending = bytearray()
    above = None
    for band in bands:
        if not len(band):
            continue
        rows = _row_bytes(band)
        pending += packer.compress(_filtered(rows, above))
        above = rows[-1].copy()
        while len(pending) >= IDAT_BYTES:
            _chunk(out, b"IDAT", bytes(pending[:IDAT_BYTES]))
            del pending[:IDAT_BYTES]
    pending += packer.flush()
    for start in range(0, len(pending), IDAT_BYTES):
        _chunk(out, b"IDAT", bytes(pending[start:start + IDAT_BYTES]))
    _chunk(out, b"IEND", b"")


def write_png(out: BinaryIO, samples: np.ndarray, *, level: int = 6, metadata: dict[str, Any] | None = None,
              threads: int | None = None) -> None:
    """Write ``samples`` (``H x W x planes``, uint8 or uint16; 1-4 planes: gray, gray + alpha, RGB,
    RGBA) to ``out`` as a PNG at zlib ``level`` (0-9), with ``metadata``'s ``icc_profile``, ``dpi``
    and ``exif`` (:func:`superres.metadata.read_metadata`'s keys). ``threads`` deflate slices at
    once (None: the CPUs this process may use, at most 4)."""
    if samples.ndim != 3:
        raise ValueError(f"write_png: expected H x W x planes samples, got shape {samples.shape}")
    _check(samples.shape[2], samples.dtype, level)
    height, width, planes = samples.shape
    threads = min(4, usable_cpus()) if threads is None else max(1, int(threads))
    _header(out, height, width, planes, 16 if samples.dtype == np.uint16 else 8, metadata)
    stream = b"".join(_deflate(_filtered(_row_bytes(samples)), level, threads))
    view = memoryview(stream)
    for start in range(0, len(view), IDAT_BYTES):
        _chunk(out, b"IDAT", view[start:start + IDAT_BYTES])
    _chunk(out, b"IEND", b"")
