"""Fuzzing the image reader (issue 20): mutated files (truncations, flipped bytes, huge declared
sizes) either decode or raise :class:`SuperresError`, never anything else, within a time and memory
bound. Seeds are small valid files of every format the reader decodes.
"""

from __future__ import annotations

import io
import resource
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from superres.errors import SuperresError
from superres.io import read_image, set_max_pixels

#: The pixel limit during the fuzzing: every "huge declared size" must be refused by it.
FUZZ_MAX_PIXELS = 4_000_000
#: Per-file bounds: a decoder that tried to honour a huge declared size would break both.
SECONDS_PER_FILE = 5.0
RSS_GROWTH_MB = 400


def _seeds() -> dict[str, tuple[bytes, dict[str, list[int]]]]:
    """name -> (file bytes, offsets of the declared width/height fields, big-endian 4-byte unless noted)."""
    import png
    import tifffile
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    seeds: dict[str, tuple[bytes, dict[str, list[int]]]] = {}

    def pil(fmt: str, array: np.ndarray, **options) -> bytes:
        buf = io.BytesIO()
        PILImage.fromarray(array).save(buf, format=fmt, **options)
        return buf.getvalue()

    seeds["png8"] = (pil("PNG", rgb), {"be32": [16, 20]})
    seeds["png8_rgba"] = (pil("PNG", np.dstack([rgb, rgb[:, :, :1]])), {"be32": [16, 20]})
    seeds["bmp"] = (pil("BMP", rgb), {"le32": [18, 22]})
    jpeg = pil("JPEG", rgb, quality=90)
    sof = jpeg.find(b"\xff\xc0")
    seeds["jpeg"] = (jpeg, {"be16": [sof + 5, sof + 7]})
    seeds["webp"] = (pil("WEBP", rgb), {})
    buf = io.BytesIO()
    png.Writer(10, 12, greyscale=False, bitdepth=16).write(buf, rng.integers(0, 65536, (12, 30)).tolist())
    seeds["png16"] = (buf.getvalue(), {"be32": [16, 20]})
    for name, array, options in [
        ("tiff16", rng.integers(0, 65536, (12, 10), dtype=np.uint16), {}),
        ("tiff_rgb", rgb, {"photometric": "rgb"}),
        ("tiff_float", rng.random((12, 10)).astype(np.float32), {}),
        ("tiff_zlib", rgb, {"photometric": "rgb", "compression": "zlib"}),
    ]:
        buf = io.BytesIO()
        tifffile.imwrite(buf, array, **options)
        data = buf.getvalue()
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            tags = tif.pages[0].tags
            # in a little-endian classic TIFF, a SHORT/LONG tag value sits in the entry's value field
            offsets = [tags[name].valueoffset for name in ("ImageWidth", "ImageLength")]
            kinds = [tags[name].dtype for name in ("ImageWidth", "ImageLength")]
        key = "le16" if all(int(k) == 3 for k in kinds) else "le32"
        seeds[name] = (data, {key: offsets})
    return seeds


SEEDS = _seeds()
_FORMATS = {"be32": ">I", "le32": "<I", "be16": ">H", "le16": "<H"}


def _mutate(data: bytes, fields: dict[str, list[int]], ops: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, where, value in ops:
        if not buf:
            break
        if kind == "truncate":
            del buf[where % len(buf):]
        elif kind == "flip":
            buf[where % len(buf)] ^= 1 << (value % 8)
        elif kind == "byte":
            buf[where % len(buf)] = value % 256
        elif kind == "huge" and fields:
            key = sorted(fields)[where % len(fields)]
            fmt = _FORMATS[key]
            limit = 0xFFFF if fmt.endswith("H") else 0xFFFFFFFF
            for offset in fields[key]:
                if offset + struct.calcsize(fmt) <= len(buf):
                    struct.pack_into(fmt, buf, offset, max(1, min(limit, value)))
            if buf[:8] == b"\x89PNG\r\n\x1a\n" and len(buf) >= 33:  # keep the IHDR's CRC valid
                struct.pack_into(">I", buf, 29, zlib.crc32(bytes(buf[12:29])) & 0xFFFFFFFF)
    return bytes(buf)


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["truncate", "flip", "byte", "huge", "huge"]),
        st.integers(0, 1 << 16),
        st.one_of(st.integers(0, 255), st.integers(2_000, 1 << 32)),
    ),
    min_size=1,
    max_size=4,
)


@pytest.fixture(scope="module")
def low_pixel_limit():
    set_max_pixels(FUZZ_MAX_PIXELS)
    yield
    set_max_pixels(None)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.usefixtures("low_pixel_limit")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.sampled_from(sorted(SEEDS)), ops=_OPS, suffix=st.sampled_from([".png", ".tif", ".jpg"]))
def test_mutated_files_decode_or_raise_superres_error(tmp_path_factory, seed, ops, suffix):
    data, fields = SEEDS[seed]
    path = tmp_path_factory.mktemp("fuzz") / f"mutant{suffix}"
    path.write_bytes(_mutate(data, fields, ops))
    rss_before = _peak_rss_mb()
    started = time.monotonic()
    try:
        image = read_image(path)
    except SuperresError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: ") and "\n" not in message
    else:
        assert image.data.dtype == np.float32 and image.data.ndim == 3
        assert image.height * image.width <= FUZZ_MAX_PIXELS
        if image.bit_depth == 32:
            assert np.isfinite(image.data).all()
    assert time.monotonic() - started < SECONDS_PER_FILE
    assert _peak_rss_mb() - rss_before < RSS_GROWTH_MB


@pytest.mark.usefixtures("low_pixel_limit")
@pytest.mark.parametrize("seed", sorted(name for name in SEEDS if SEEDS[name][1]))
def test_every_seed_reads_and_its_huge_variant_is_refused(tmp_path, seed):
    data, fields = SEEDS[seed]
    path = tmp_path / "seed.bin"
    path.write_bytes(data)
    assert read_image(path).height == 12
    path.write_bytes(_mutate(data, fields, [("huge", 0, 40_000)]))
    with pytest.raises(SuperresError, match="above the limit of 4 MP; raise it with --max-pixels"):
        read_image(path)
