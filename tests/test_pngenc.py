"""superres.pngenc: PNGs that independent decoders (Pillow, pypng, zlib) read back as the samples given."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import png
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

import superres.pngenc as pngenc
from superres.pngenc import write_png, write_png_rows


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """``(type, payload)`` of every chunk, each CRC checked."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        kind, payload = data[at + 4:at + 8], data[at + 8:at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length:at + 12 + length])
        assert crc == zlib.crc32(kind + payload), kind
        chunks.append((kind, payload))
        at += 12 + length
    return chunks


def _pypng(data: bytes) -> np.ndarray:
    width, height, rows, info = png.Reader(bytes=data).read()
    planes = info["planes"]
    return np.array([np.asarray(row) for row in rows]).reshape(height, width, planes)


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 40), width=st.integers(1, 30), planes=st.integers(1, 4), sixteen=st.booleans(),
    level=st.sampled_from([0, 1, 6, 9]), threads=st.integers(1, 3), slice_bytes=st.sampled_from([1, 64, 4096]),
    seed=st.integers(0, 2**16),
)
def test_every_layout_decodes_to_the_samples_given(height, width, planes, sixteen, level, threads, slice_bytes,
                                                    seed) -> None:
    """Gray, gray + alpha, RGB, RGBA at 8 and 16 bits; one slice per row up to one slice in all; the
    stream is one valid zlib stream (zlib checks its Adler-32) holding the Up-filtered rows."""
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, 65536 if sixteen else 256, (height, width, planes)).astype(np.uint16 if sixteen else np.uint8)
    old = pngenc.SLICE_BYTES
    pngenc.SLICE_BYTES = slice_bytes
    try:
        out = io.BytesIO()
        write_png(out, samples, level=level, threads=threads)
    finally:
        pngenc.SLICE_BYTES = old
    data = out.getvalue()
    assert np.array_equal(_pypng(data), samples)
    if not sixteen:  # Pillow reads 8-bit files of every colour type as stored
        decoded = np.asarray(PILImage.open(io.BytesIO(data)))
        assert np.array_equal(decoded.reshape(samples.shape), samples)
    chunks = _chunks(data)
    assert [k for k, _ in chunks][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    lines = zlib.decompress(b"".join(p for k, p in chunks if k == b"IDAT"))
    rows = np.frombuffer(lines, np.uint8).reshape(height, -1)
    assert rows[0, 0] == 0 and (rows[1:, 0] == 2).all()  # None for the first row, Up for the others


def test_metadata_chunks_are_read_back_by_pillow_at_8_and_16_bits(tmp_path) -> None:
    from superres.io import read_raw
    from superres.metadata import read_metadata

    exif = PILImage.Exif()
    exif[0x0112] = 1
    exif[0x010F] = "superres test"
    meta = {"icc_profile": b"not a real profile but bytes" * 20, "dpi": (300.0, 150.0), "exif": exif.tobytes()}
    for depth, dtype in ((8, np.uint8), (16, np.uint16)):
        samples = np.arange(5 * 7 * 3, dtype=dtype).reshape(5, 7, 3) * (1 if depth == 8 else 257)
        path = tmp_path / f"m{depth}.png"
        with open(path, "wb") as fh:
            write_png(fh, samples, level=1, metadata=meta)
        got = read_metadata(path)
        assert got["icc_profile"] == meta["icc_profile"], depth
        assert tuple(round(v) for v in got["dpi"]) == (300, 150), depth
        carried = PILImage.Exif()
        carried.load(got["exif"])
        assert carried[0x010F] == "superres test", depth
        assert np.array_equal(read_raw(path).pixels, samples)


def test_a_photo_compresses_like_pillow_and_noise_goes_in_idat_chunks_of_bounded_size() -> None:
    from skimage import data
    from skimage.transform import resize

    photo = (resize(data.astronaut(), (1536, 1536)) * 255).round().astype(np.uint8)  # 7 MB: two slices
    ours, theirs = io.BytesIO(), io.BytesIO()
    write_png(ours, photo, level=1)
    PILImage.fromarray(photo).save(theirs, format="PNG", compress_level=1)
    assert len(ours.getvalue()) < 1.1 * len(theirs.getvalue())
    assert np.array_equal(np.asarray(PILImage.open(io.BytesIO(ours.getvalue()))), photo)
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)  # 1.5 MB that deflate cannot shrink
    out = io.BytesIO()
    write_png(out, noise, level=1)
    idat = [p for k, p in _chunks(out.getvalue()) if k == b"IDAT"]
    assert len(idat) == 2 and len(idat[0]) == pngenc.IDAT_BYTES
    assert np.array_equal(np.asarray(PILImage.open(io.BytesIO(out.getvalue()))), noise)


@pytest.mark.parametrize("samples, level", [
    (np.zeros((4, 4, 5), np.uint8), 1), (np.zeros((4, 4), np.uint8), 1), (np.zeros((4, 4, 3), np.float32), 1),
    (np.zeros((4, 4, 3), np.uint8), 10),
])
def test_what_png_cannot_hold_is_refused(samples: np.ndarray, level: int) -> None:
    with pytest.raises(ValueError, match="write_png"):
        write_png(io.BytesIO(), samples, level=level)


@pytest.mark.parametrize("sixteen", [False, True])
def test_rows_in_bands_decode_like_the_whole_image(sixteen: bool, monkeypatch) -> None:
    """Bands of 1, 0 (skipped), 7 and the rest rows: the Up filter runs across band boundaries, and
    the IDAT chunks stay bounded (a small limit here, so the image spans many)."""
    monkeypatch.setattr(pngenc, "IDAT_BYTES", 500)
    rng = np.random.default_rng(1)
    dtype = np.uint16 if sixteen else np.uint8
    samples = rng.integers(0, 65536 if sixteen else 256, (40, 23, 3)).astype(dtype)
    cuts = [0, 1, 1, 8, 40]
    out = io.BytesIO()
    write_png_rows(out, 40, 23, 3, dtype, (samples[a:b] for a, b in zip(cuts[:-1], cuts[1:])), level=1)
    assert np.array_equal(_pypng(out.getvalue()), samples)
    chunks = _chunks(out.getvalue())
    idat = [p for k, p in chunks if k == b"IDAT"]
    assert len(idat) > 1 and max(len(p) for p in idat) <= 500
    lines = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(40, -1)
    assert lines[0, 0] == 0 and (lines[1:, 0] == 2).all()
