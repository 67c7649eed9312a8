"""superres.io: formats, bit depths, layouts, orientation, errors and atomic writes.

Expected pixels come from the arrays the tests generate, and files written by superres are also
decoded with independent readers (Pillow, tifffile, pypng) so that a symmetric bug in our reader and
writer cannot hide.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import png
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage
from PIL import ImageOps

from superres.errors import SuperresError
from superres.io import (
    Image,
    atomic_write,
    list_images,
    read_array,
    read_image,
    read_raw,
    to_float,
    to_integer,
    write_image,
)

RNG = np.random.default_rng(1234)


def random_samples(shape: tuple[int, ...], depth: int) -> np.ndarray:
    dtype = np.uint8 if depth == 8 else np.uint16
    return RNG.integers(0, 2**depth, size=shape, dtype=dtype)


def stored(raw) -> np.ndarray:
    """Colour and alpha samples of a RawImage side by side, as a file stores them."""
    return raw.pixels if raw.alpha is None else np.concatenate([raw.pixels, raw.alpha], axis=2)


# --------------------------------------------------------------------------- integer <-> float
@pytest.mark.parametrize("depth", [8, 16])
def test_every_integer_level_survives_float32(depth: int) -> None:
    levels = np.arange(2**depth, dtype=np.uint8 if depth == 8 else np.uint16)
    as_float = to_float(levels)
    assert as_float.dtype == np.float32
    # within half a float32 ulp-ish of the exact value, and exactly invertible
    exact = levels.astype(np.float64) / (2**depth - 1)
    assert np.max(np.abs(as_float.astype(np.float64) - exact)) < 1e-7
    assert np.array_equal(to_integer(as_float, depth), levels)


def test_to_integer_rounds_and_clips() -> None:
    values = np.array([-0.5, 0.0, 0.49 / 255, 0.51 / 255, 1.0, 7.0, np.nan], dtype=np.float32)
    assert to_integer(values, 8).tolist() == [0, 0, 0, 1, 255, 255, 0]
    assert to_integer(np.float32([0.5]), 16).tolist() == [32768]  # 32767.5 rounds half to even


# --------------------------------------------------------------------------- round trips
ROUND_TRIPS = [
    # name, file suffix, colour channels, with alpha, bit depth
    ("gray8-png", ".png", 1, False, 8),
    ("gray16-png", ".png", 1, False, 16),
    ("rgb8-png", ".png", 3, False, 8),
    ("rgba8-png", ".png", 3, True, 8),
    ("gray-alpha8-png", ".png", 1, True, 8),
    ("rgb16-png", ".png", 3, False, 16),
    ("rgba16-png", ".png", 3, True, 16),
    ("gray-alpha16-png", ".png", 1, True, 16),
    ("rgb8-bmp", ".bmp", 3, False, 8),
    ("gray8-bmp", ".bmp", 1, False, 8),
    ("gray8-tif", ".tif", 1, False, 8),
    ("gray16-tif", ".tif", 1, False, 16),
    ("rgb16-tiff", ".tiff", 3, False, 16),
    ("rgba8-tif", ".tif", 3, True, 8),
    ("4band16-tif", ".tif", 4, False, 16),
    ("8band16-tif", ".tif", 8, False, 16),
    ("5band8-alpha-tif", ".tif", 5, True, 8),
]


@pytest.mark.parametrize("name,suffix,channels,alpha,depth", ROUND_TRIPS, ids=[r[0] for r in ROUND_TRIPS])
def test_lossless_round_trip_is_bit_exact(
    tmp_path: Path, name: str, suffix: str, channels: int, alpha: bool, depth: int
) -> None:
    colour = random_samples((13, 17, channels), depth)
    alpha_samples = random_samples((13, 17, 1), depth) if alpha else None
    path = tmp_path / "sub" / f"{name}{suffix}"  # parent folder does not exist yet
    write_image(path, Image.from_array(colour, alpha_samples))

    image = read_image(path)
    assert image.bit_depth == depth
    assert image.channels == channels
    assert image.mode == {1: "gray", 3: "rgb"}.get(channels, "bands")
    assert image.path == path
    assert image.data.dtype == np.float32 and image.data.shape == (13, 17, channels)
    assert np.array_equal(image.to_integer(), colour)
    if alpha:
        assert image.alpha is not None and np.array_equal(to_integer(image.alpha, depth), alpha_samples)
    else:
        assert image.alpha is None
    # read_array: raw samples, alpha dropped; and writing the read image back changes nothing
    assert np.array_equal(read_array(path), colour)
    again = tmp_path / f"again{suffix}"
    write_image(again, image)
    assert np.array_equal(stored(read_raw(again)), stored(read_raw(path)))
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(["sub", f"{name}{suffix}", f"again{suffix}"])


def test_written_files_decode_identically_with_other_readers(tmp_path: Path) -> None:
    gray16 = random_samples((9, 11, 1), 16)
    write_image(tmp_path / "g16.png", Image.from_array(gray16))
    with PILImage.open(tmp_path / "g16.png") as im:
        assert im.mode.startswith("I")
        assert np.array_equal(np.asarray(im).astype(np.uint16), gray16[:, :, 0])

    rgba16 = random_samples((9, 11, 4), 16)
    write_image(tmp_path / "rgba16.png", Image.from_array(rgba16[:, :, :3], rgba16[:, :, 3:]))
    width, height, rows, info = png.Reader(filename=str(tmp_path / "rgba16.png")).read_flat()
    assert (info["bitdepth"], info["planes"], info["alpha"]) == (16, 4, True)
    assert np.array_equal(np.asarray(rows, dtype=np.uint16).reshape(9, 11, 4), rgba16)

    rgb8 = random_samples((9, 11, 3), 8)
    write_image(tmp_path / "rgb8.tif", Image.from_array(rgb8))
    with PILImage.open(tmp_path / "rgb8.tif") as im:
        assert im.mode == "RGB" and np.array_equal(np.asarray(im), rgb8)

    bands = random_samples((9, 11, 8), 16)
    write_image(tmp_path / "bands.tif", Image.from_array(bands))
    assert np.array_equal(tifffile.imread(tmp_path / "bands.tif"), bands)


def test_float_tiff_round_trip(tmp_path: Path) -> None:
    data = RNG.random((6, 5, 2), dtype=np.float32) * 1.5  # values above 1 are kept as stored
    tifffile.imwrite(tmp_path / "f.tif", data, photometric="minisblack", planarconfig="contig")
    image = read_image(tmp_path / "f.tif")
    assert image.bit_depth == 32 and np.array_equal(image.data, data)
    write_image(tmp_path / "g.tif", image)
    assert np.array_equal(tifffile.imread(tmp_path / "g.tif"), data)
    with pytest.raises(SuperresError, match="g.png.*float.*tif"):
        write_image(tmp_path / "g.png", image)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    depth=st.sampled_from([8, 16]),
    layout=st.sampled_from([(".png", 1), (".png", 3), (".tif", 1), (".tif", 2), (".tif", 3), (".tif", 6)]),
    alpha=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_round_trip_property(tmp_path: Path, height, width, depth, layout, alpha, seed) -> None:
    suffix, channels = layout
    rng = np.random.default_rng(seed)
    dtype = np.uint8 if depth == 8 else np.uint16
    samples = rng.integers(0, 2**depth, size=(height, width, channels + alpha), dtype=dtype)
    image = Image.from_array(samples[:, :, :channels], samples[:, :, channels:] if alpha else None)
    path = tmp_path / f"p{suffix}"
    write_image(path, image)
    raw = read_raw(path)
    assert raw.bit_depth == depth
    assert (raw.alpha is not None) == alpha
    assert np.array_equal(stored(raw), samples)


def test_jpeg_is_approximately_preserved_and_gray_stays_gray(tmp_path: Path) -> None:
    y, x = np.mgrid[0:48, 0:64]
    smooth = np.stack([x / 63, y / 47, (x + y) / 110], axis=2).astype(np.float32)
    write_image(tmp_path / "c.jpg", Image(smooth))
    back = read_image(tmp_path / "c.jpg")
    assert back.bit_depth == 8 and back.data.shape == (48, 64, 3)
    assert np.mean(np.abs(back.data - smooth)) < 2 / 255
    write_image(tmp_path / "g.jpeg", Image(smooth[:, :, :1]))
    gray = read_image(tmp_path / "g.jpeg")
    assert gray.mode == "gray" and np.mean(np.abs(gray.data - smooth[:, :, :1])) < 2 / 255


# --------------------------------------------------------------------------- files from other writers
def test_pillow_16bit_gray_png_and_8bit_modes(tmp_path: Path) -> None:
    gray16 = random_samples((7, 5), 16)
    PILImage.fromarray(gray16).save(tmp_path / "g16.png")
    assert read_raw(tmp_path / "g16.png").bit_depth == 16
    assert np.array_equal(read_array(tmp_path / "g16.png")[:, :, 0], gray16)

    bilevel = RNG.integers(0, 2, size=(6, 9)).astype(bool)
    PILImage.fromarray(bilevel).save(tmp_path / "b.png")
    assert np.array_equal(read_array(tmp_path / "b.png")[:, :, 0], bilevel * 255)


def test_palette_png_with_and_without_transparency(tmp_path: Path) -> None:
    rgb = random_samples((10, 12, 3), 8)
    palette = PILImage.fromarray(rgb).quantize(6)
    palette.save(tmp_path / "p.png")
    expected_rgb = np.asarray(palette.convert("RGB"))
    image = read_image(tmp_path / "p.png")
    assert image.mode == "rgb" and image.alpha is None and image.bit_depth == 8
    assert np.array_equal(image.to_integer(), expected_rgb)

    palette.save(tmp_path / "pt.png", transparency=2)
    image = read_image(tmp_path / "pt.png")
    indices = np.asarray(palette)
    assert image.alpha is not None
    assert np.array_equal(to_integer(image.alpha, 8)[:, :, 0], np.where(indices == 2, 0, 255))
    assert np.array_equal(image.to_integer(), expected_rgb)
    assert read_array(tmp_path / "pt.png").shape == (10, 12, 3)  # alpha dropped


def test_png_colour_keys_become_alpha(tmp_path: Path) -> None:
    gray = random_samples((6, 7), 8)
    gray[2, 3] = 17
    PILImage.fromarray(gray).save(tmp_path / "k8.png", transparency=17)
    raw = read_raw(tmp_path / "k8.png")
    assert np.array_equal(raw.pixels[:, :, 0], gray)
    assert np.array_equal(raw.alpha[:, :, 0], np.where(gray == 17, 0, 255))

    rgb16 = random_samples((6, 7, 3), 16)
    key = (1000, 2000, 3000)
    rgb16[1, 1] = key
    with open(tmp_path / "k16.png", "wb") as handle:
        png.Writer(7, 6, greyscale=False, bitdepth=16, transparent=key).write(handle, rgb16.reshape(6, -1))
    raw = read_raw(tmp_path / "k16.png")
    assert np.array_equal(raw.pixels, rgb16)
    assert np.array_equal(raw.alpha[:, :, 0], np.where(np.all(rgb16 == key, axis=2), 0, 65535))


def test_tiff_layouts_follow_the_documented_rule(tmp_path: Path) -> None:
    bands = random_samples((5, 6, 8), 16)  # H x W x C
    planar = np.ascontiguousarray(bands.transpose(2, 0, 1))  # C x H x W
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="minisblack", planarconfig="separate")
    tifffile.imwrite(tmp_path / "pages.tif", planar, metadata=None)  # one band per page
    tifffile.imwrite(tmp_path / "chunky.tif", bands, photometric="minisblack", planarconfig="contig")
    for name in ("planar.tif", "pages.tif", "chunky.tif"):
        assert np.array_equal(read_array(tmp_path / name), bands), name

    stack = random_samples((3, 5, 6, 3), 8)  # three RGB pages: two non-spatial axes
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="rgb")
    with pytest.raises(SuperresError, match=r"stack\.tif: cannot read image \(TIFF holds a stack"):
        read_image(tmp_path / "stack.tif")

    gray = random_samples((5, 6), 8)
    tifffile.imwrite(tmp_path / "white.tif", gray, photometric="miniswhite")
    assert np.array_equal(read_array(tmp_path / "white.tif")[:, :, 0], 255 - gray)

    signed = RNG.integers(-100, 100, size=(5, 6)).astype(np.int16)
    tifffile.imwrite(tmp_path / "signed.tif", signed)
    with pytest.raises(SuperresError, match=r"signed\.tif: cannot read image \(unsupported TIFF sample type int16"):
        read_image(tmp_path / "signed.tif")


def test_palette_tiff_uses_its_colour_map(tmp_path: Path) -> None:
    rgb = random_samples((8, 9, 3), 8)
    palette = PILImage.fromarray(rgb).quantize(5)
    palette.save(tmp_path / "p.tif")
    raw = read_raw(tmp_path / "p.tif")
    assert raw.bit_depth == 8
    assert np.array_equal(raw.pixels, np.asarray(palette.convert("RGB")))


# --------------------------------------------------------------------------- orientation
def _pattern() -> np.ndarray:
    """A 2 x 3 grid of flat 8 x 8 blocks (JPEG keeps flat blocks within a few levels)."""
    levels = np.array([[0, 60, 120], [180, 240, 30]], dtype=np.uint8)
    blocks = np.kron(levels, np.ones((8, 8), dtype=np.uint8))
    return np.stack([blocks, 255 - blocks, blocks // 2], axis=2)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_exif_orientation_matches_pillow(tmp_path: Path, orientation: int) -> None:
    exif = PILImage.Exif()
    exif[0x0112] = orientation
    PILImage.fromarray(_pattern()).save(tmp_path / "o.jpg", exif=exif, quality=95)
    with PILImage.open(tmp_path / "o.jpg") as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    assert np.array_equal(read_array(tmp_path / "o.jpg"), expected)


def test_exif_orientation_6_turns_clockwise(tmp_path: Path) -> None:
    """Hand check independent of Pillow: orientation 6 = stored image rotated 90 degrees clockwise."""
    exif = PILImage.Exif()
    exif[0x0112] = 6
    PILImage.fromarray(_pattern()).save(tmp_path / "o.jpg", exif=exif, quality=95)
    upright = read_array(tmp_path / "o.jpg")
    assert upright.shape == (24, 16, 3)  # stored 16 x 24 -> displayed 24 x 16
    # the stored top-left block (level 0) is now top-right; the stored top-right (120) bottom-right
    assert abs(int(upright[2, 13, 0]) - 0) <= 4
    assert abs(int(upright[21, 13, 0]) - 120) <= 4
    assert abs(int(upright[2, 2, 0]) - 180) <= 4  # stored bottom-left


def _png_with_exif(data: bytes, orientation: int) -> bytes:
    exif = PILImage.Exif()
    exif[0x0112] = orientation
    body = exif.tobytes()
    body = body[6:] if body.startswith(b"Exif\x00\x00") else body
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body + struct.pack(">I", zlib.crc32(b"eXIf" + body))
    at = data.index(b"IDAT") - 4
    return data[:at] + chunk + data[at:]


@pytest.mark.parametrize("orientation", [3, 6, 7, 8])
def test_16bit_png_and_tiff_orientation(tmp_path: Path, orientation: int) -> None:
    rgb16 = random_samples((4, 6, 3), 16)
    write_image(tmp_path / "plain.png", Image.from_array(rgb16))
    (tmp_path / "o.png").write_bytes(_png_with_exif((tmp_path / "plain.png").read_bytes(), orientation))
    tifffile.imwrite(tmp_path / "o.tif", rgb16, photometric="rgb", extratags=[(274, "H", 1, orientation, True)])
    expected = []
    for c in range(3):  # Pillow as the reference, one 16-bit plane at a time
        plane = PILImage.fromarray(rgb16[:, :, c])
        plane.getexif()[0x0112] = orientation
        expected.append(np.asarray(ImageOps.exif_transpose(plane)))
    expected = np.stack(expected, axis=2)
    assert np.array_equal(read_array(tmp_path / "o.png"), expected)
    assert np.array_equal(read_array(tmp_path / "o.tif"), expected)


# --------------------------------------------------------------------------- errors
def _make_file(tmp_path: Path, suffix: str, depth: int = 8) -> Path:
    path = tmp_path / f"good{depth}{suffix}"
    y, x = np.mgrid[0:40, 0:50]
    data = np.stack([x / 49, y / 39, (x * y) / 1960], axis=2)
    write_image(path, Image(data.astype(np.float32), bit_depth=depth))
    return path


@pytest.mark.parametrize("suffix,depth", [(".png", 8), (".png", 16), (".jpg", 8), (".bmp", 8), (".tif", 16)])
def test_truncated_and_corrupt_files_name_the_file(tmp_path: Path, suffix: str, depth: int) -> None:
    data = _make_file(tmp_path, suffix, depth).read_bytes()
    for label, content in [
        ("half", data[: len(data) // 2]),
        ("head", data[:30]),
        ("tiny", data[:5]),
        ("empty", b""),
        ("text", b"this is not an image\n"),
    ]:
        bad = tmp_path / f"{label}{suffix}"
        bad.write_bytes(content)
        with pytest.raises(SuperresError) as err:
            read_image(bad)
        message = str(err.value)
        assert message.startswith(f"{bad}: cannot read image (") and message.endswith(")")
        assert "\n" not in message and err.value.__cause__ is None
        with pytest.raises(SuperresError):
            read_array(bad)


def test_corrupt_compressed_data_is_reported(tmp_path: Path) -> None:
    for suffix, depth in [(".png", 8), (".png", 16), (".tif", 16)]:
        data = bytearray(_make_file(tmp_path, suffix, depth).read_bytes())
        middle = len(data) // 2
        data[middle : middle + 40] = bytes(40)
        bad = tmp_path / f"bad{depth}{suffix}"
        bad.write_bytes(bytes(data))
        with pytest.raises(SuperresError, match=rf"^{bad}: cannot read image \("):
            read_image(bad)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(SuperresError, match=rf"^{tmp_path / 'nope.png'}: cannot read image \(no such file\)$"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(SuperresError, match=rf"^{tmp_path}: cannot read image \(it is a folder\)$"):
        read_image(tmp_path)


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg", ".bmp"])
def test_16bit_to_8bit_only_format_is_refused(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"out{suffix}"
    image = Image.from_array(random_samples((4, 4, 3), 16))
    with pytest.raises(SuperresError, match=rf"^{path}: .*only 8-bit.*16-bit.*\.png or \.tif"):
        write_image(path, image)
    assert list(tmp_path.iterdir()) == []


def test_what_a_format_cannot_hold_is_refused(tmp_path: Path) -> None:
    five = Image.from_array(random_samples((4, 4, 5), 8))
    with pytest.raises(SuperresError, match=r"five\.png: PNG holds gray or RGB.*5 bands.*\.tif"):
        write_image(tmp_path / "five.png", five)
    rgba = Image.from_array(random_samples((4, 4, 3), 8), random_samples((4, 4, 1), 8))
    with pytest.raises(SuperresError, match=r"a\.jpg: JPEG cannot hold the alpha"):
        write_image(tmp_path / "a.jpg", rgba)
    with pytest.raises(SuperresError, match=r"x\.heic: unsupported output format '\.heic'"):
        write_image(tmp_path / "x.heic", rgba)
    with pytest.raises(SuperresError, match=r"d\.webp: WEBP holds only 8-bit"):
        write_image(tmp_path / "d.webp", Image.from_array(random_samples((4, 4, 3), 16)))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- atomic writes
def test_atomic_write_keeps_suffix_and_replaces_on_success(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "file.npz"
    with atomic_write(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".npz" and tmp != target
        np.savez(tmp, a=np.arange(3))
        assert not target.exists()
    assert np.array_equal(np.load(target)["a"], np.arange(3))
    assert os.listdir(target.parent) == ["file.npz"]


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []

    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target) as tmp:
            tmp.write_text("new")
            raise KeyboardInterrupt
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]


@pytest.mark.parametrize("suffix, writer", [(".png", "write_png"), (".jpg", "_write_pillow")])
def test_write_image_failure_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str,
                                                    writer: str) -> None:
    import superres.io as sio

    def broken_writer(target, *args: object, **kwargs: object) -> None:  # a path (Pillow) or an open file (PNG)
        target.write(b"partial") if hasattr(target, "write") else target.write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sio, writer, broken_writer)
    target = tmp_path / f"out{suffix}"
    with pytest.raises(SuperresError, match=rf"^{target}: cannot write image \(No space left on device\)$"):
        write_image(target, Image.from_array(random_samples((4, 4, 3), 8)))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- list_images and Image
def test_list_images(tmp_path: Path) -> None:
    for name in ["b/z.PNG", "b/a.jpg", "a.tif", "c/d/e.bmp", "notes.txt", ".hidden.png", ".cache/x.png", "b/y.jpeg"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    expected = [tmp_path / n for n in ["a.tif", "b/a.jpg", "b/y.jpeg", "b/z.PNG", "c/d/e.bmp"]]
    assert list_images([tmp_path]) == expected
    assert list_images([tmp_path / "b", str(tmp_path / "a.tif"), tmp_path]) == expected  # deduplicated
    assert list_images(tmp_path / "c") == [tmp_path / "c/d/e.bmp"]

    (tmp_path / "empty").mkdir()
    with pytest.raises(SuperresError, match=rf"^{tmp_path / 'empty'}: no images"):
        list_images([tmp_path, tmp_path / "empty"])
    with pytest.raises(SuperresError, match=rf"^{tmp_path / 'missing'}: no such file or folder$"):
        list_images([tmp_path / "missing"])
    with pytest.raises(SuperresError, match=r"notes\.txt: not an image file"):
        list_images([tmp_path / "notes.txt"])


def test_image_container_rules() -> None:
    image = Image(np.zeros((4, 5), dtype=np.float64), alpha=np.ones((4, 5), dtype=np.float32), bit_depth=16)
    assert image.data.shape == (4, 5, 1) and image.data.dtype == np.float32 and image.alpha.shape == (4, 5, 1)
    assert (image.height, image.width, image.channels, image.mode) == (4, 5, 1, "gray")
    same_size = image.with_data(np.full((4, 5, 1), 0.5, dtype=np.float32))
    assert same_size.alpha is image.alpha and same_size.bit_depth == 16
    with pytest.raises(ValueError, match="alpha"):
        image.with_data(np.zeros((8, 10, 1), dtype=np.float32))
    bigger = image.with_data(np.zeros((8, 10, 1), dtype=np.float32), alpha=np.ones((8, 10, 1), dtype=np.float32))
    assert bigger.alpha.shape == (8, 10, 1)
    assert image.with_data(np.zeros((8, 10, 1), dtype=np.float32), alpha=None).alpha is None
    with pytest.raises(ValueError, match="to_float"):
        Image(np.zeros((2, 2, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="alpha"):
        Image(np.zeros((2, 2, 3), dtype=np.float32), alpha=np.zeros((3, 2, 1), dtype=np.float32))


def test_shared_benchmark_images(shared_data: Path) -> None:
    baby = read_image(shared_data / "Set5" / "HR" / "baby.png")
    assert (baby.width, baby.height, baby.mode, baby.bit_depth, baby.alpha) == (512, 512, "rgb", 8, None)
    bridge = read_array(shared_data / "Set14" / "HR" / "bridge.png")
    assert bridge.dtype == np.uint8 and bridge.ndim == 3 and bridge.shape[2] == 1
    with PILImage.open(shared_data / "Set14" / "HR" / "bridge.png") as im:
        assert np.array_equal(bridge[:, :, 0], np.asarray(im))


def test_atomic_write_gives_ordinary_file_permissions(tmp_path):
    """A writer that creates a private (0600) temp file still yields a file with the usual mode."""
    import os
    import stat

    from superres.io import atomic_write

    target = tmp_path / "model.bin"
    with atomic_write(target) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"x")
        os.close(fd)
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask


# --------------------------------------------------------------------------- PNG compression level
@pytest.mark.parametrize("depth,channels", [(8, 3), (16, 1), (8, 4)])
def test_png_level_changes_the_size_not_the_pixels(tmp_path: Path, depth: int, channels: int) -> None:
    from superres.io import write_image_rows

    # a smooth image (8-bit: with a little noise): compressible, so the levels differ in size
    yy, xx = np.mgrid[0:96, 0:128]
    base = (np.sin(xx / 9.0) + np.cos(yy / 7.0) + 2.0) / 4.0
    noise = RNG.normal(0, 0.01, (96, 128, channels)) if depth == 8 else 0.0  # 16-bit noise would not compress
    data = np.clip(np.repeat(base[:, :, None], channels, 2) + noise, 0, 1)
    image = Image(data[:, :, :3].astype(np.float32) if channels == 4 else data.astype(np.float32),
                  data[:, :, 3].astype(np.float32) if channels == 4 else None, depth)
    sizes = {}
    for level in (0, 1, 9):
        write_image(tmp_path / f"l{level}.png", image, png_level=level)
        sizes[level] = (tmp_path / f"l{level}.png").stat().st_size
        assert np.array_equal(stored(read_raw(tmp_path / f"l{level}.png")), stored(read_raw(tmp_path / "l0.png")))
    assert sizes[0] > sizes[1] > sizes[9], sizes
    if channels != 4:  # the strip writer (no alpha): the same pixels as write_image, and it takes the level too
        samples = image.to_integer()
        write_image_rows(tmp_path / "rows9.png", 96, 128, channels, depth, [samples[:50], samples[50:]], png_level=9)
        write_image_rows(tmp_path / "rows0.png", 96, 128, channels, depth, [samples], png_level=0)
        assert np.array_equal(stored(read_raw(tmp_path / "rows9.png")), stored(read_raw(tmp_path / "l0.png")))
        assert (tmp_path / "rows0.png").stat().st_size > (tmp_path / "rows9.png").stat().st_size


@pytest.mark.parametrize("level", [-1, 10, 1.5, True])
def test_png_level_out_of_range_is_refused_before_writing(tmp_path: Path, level) -> None:
    from superres.io import write_image_rows

    image = Image(np.zeros((4, 4, 3), np.float32), None, 8)
    with pytest.raises(SuperresError, match="compression level"):
        write_image(tmp_path / "a.png", image, png_level=level)
    with pytest.raises(SuperresError, match="compression level"):
        write_image_rows(tmp_path / "b.png", 4, 4, 3, 8, [np.zeros((4, 4, 3), np.uint8)], png_level=level)
    assert list(tmp_path.iterdir()) == []
