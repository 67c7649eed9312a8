"""The .npz patch format: make_patch_files, load_patches, PatchDataset and `superres data patches`.

Expectations are derived independently of the code under test: patch counts by hand, patch content
by slicing the source arrays written here, LR by calling imresize on each HR patch separately.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from superres.cli import main
from superres.data import PatchDataset, load_patches, make_patch_files
from superres.data.patches import dihedral, grid_count
from superres.errors import SuperresError
from superres.resize import imresize


def _rgb(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture()
def src(tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    """Three RGB PNGs: 40x50 (6 patches of 16), 33x70 (8 patches), 10x10 (too small: skipped)."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "src"
    folder.mkdir()
    images = [_rgb(rng, 40, 50), _rgb(rng, 33, 70), _rgb(rng, 10, 10)]
    for name, image in zip(("a.png", "b.png", "c.png"), images):
        Image.fromarray(image).save(folder / name)
    return folder, images


def _grid(images: list[np.ndarray], size: int, stride: int) -> list[np.ndarray]:
    """All full patches, image by image, row-major: the reference the files must match."""
    out = []
    for image in images:
        for y in range(0, image.shape[0] - size + 1, stride):
            for x in range(0, image.shape[1] - size + 1, stride):
                out.append(image[y : y + size, x : x + size])
    return out


def test_default_grid_content_and_lr(src, tmp_path):
    folder, images = src
    out = tmp_path / "out"
    summary = make_patch_files([folder], out, hr_size=16, scale=4)
    assert summary["count"] == 6 + 8  # 2x3 on 40x50, 2x4 on 33x70, none on 10x10
    assert summary["skipped"] == 1 and summary["images"] == 3
    assert summary["stride"] == 16 and not summary["stride_reduced"]
    assert summary["hr_shape"] == (14, 16, 16, 3) and summary["lr_shape"] == (14, 4, 4, 3)
    with np.load(out / "hr_images.npz") as f:
        assert f.files == ["hr"]
        hr_only = f["hr"]
    with np.load(out / "hr_lr_images.npz") as f:
        assert sorted(f.files) == ["hr", "lr"]
        hr, lr = f["hr"], f["lr"]
    assert hr.dtype == np.uint8 and lr.dtype == np.uint8
    np.testing.assert_array_equal(hr_only, hr)
    np.testing.assert_array_equal(hr, np.stack(_grid(images, 16, 16)))
    expected_lr = np.stack([imresize(p, 0.25) for p in hr])  # one patch at a time
    np.testing.assert_array_equal(lr, expected_lr)
    assert not list(out.glob("*.tmp*")) and sorted(p.name for p in out.iterdir()) == ["hr_images.npz", "hr_lr_images.npz"]


def test_explicit_stride_and_scale3(src, tmp_path):
    folder, images = src
    summary = make_patch_files([folder], tmp_path / "o", hr_size=18, scale=3, stride=7)
    # 40x50: y in 0,7,14,21 (4), x in 0..28 step 7 (5) -> 20; 33x70: y 0,7,14 (3), x 0..49 step 7 (8) -> 24
    assert summary["count"] == 44
    hr, lr = load_patches(tmp_path / "o" / "hr_lr_images.npz")
    np.testing.assert_array_equal(hr, np.stack(_grid(images, 18, 7)))
    np.testing.assert_array_equal(lr, np.stack([imresize(p, 1 / 3) for p in hr]))
    assert lr.shape == (44, 6, 6, 3)


def test_max_patches_random_choice(src, tmp_path):
    folder, images = src
    full = np.stack(_grid(images, 16, 16))

    def chosen(seed: int, name: str) -> np.ndarray:
        make_patch_files([folder], tmp_path / name, hr_size=16, scale=4, max_patches=5, seed=seed)
        hr, _ = load_patches(tmp_path / name / "hr_lr_images.npz")
        assert hr.shape[0] == 5
        # each chosen patch is one of the grid's patches, and they keep source order
        idx = [int(np.flatnonzero((full == p).all(axis=(1, 2, 3)))[0]) for p in hr]
        assert idx == sorted(idx) and len(set(idx)) == 5
        return np.array(idx)

    a, b, c = chosen(0, "a"), chosen(0, "b"), chosen(1, "c")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    expected = np.sort(np.random.default_rng(0).choice(14, size=5, replace=False))
    np.testing.assert_array_equal(a, expected)


def _largest_stride(shapes: list[tuple[int, int]], size: int, needed: int) -> int:
    """Brute force, from the largest step down."""
    for s in range(size, 0, -1):
        if sum(((h - size) // s + 1) * ((w - size) // s + 1) for h, w in shapes if h >= size and w >= size) >= needed:
            return s
    raise AssertionError("not enough even at stride 1")


def test_max_patches_reduces_default_stride(src, tmp_path):
    folder, images = src
    shapes = [im.shape[:2] for im in images]
    stride = _largest_stride(shapes, 16, 40)
    assert stride < 16
    summary = make_patch_files([folder], tmp_path / "o", hr_size=16, scale=4, max_patches=40, seed=3)
    assert summary["count"] == 40 and summary["stride"] == stride and summary["stride_reduced"]
    assert summary["grid_count"] == len(_grid(images, 16, stride)) >= 40
    hr, lr = load_patches(tmp_path / "o" / "hr_lr_images.npz")
    full = np.stack(_grid(images, 16, stride))
    pick = np.sort(np.random.default_rng(3).choice(len(full), size=40, replace=False))
    np.testing.assert_array_equal(hr, full[pick])


def test_max_patches_explicit_stride_too_coarse(src, tmp_path):
    folder, images = src
    best = _largest_stride([im.shape[:2] for im in images], 16, 40)
    with pytest.raises(SuperresError, match=rf"--stride 16 gives only 14 patches.*--stride {best} or smaller"):
        make_patch_files([folder], tmp_path / "o", hr_size=16, scale=4, stride=16, max_patches=40)
    # 40x50 at stride 1: 25*35, 33x70: 18*55
    with pytest.raises(SuperresError, match=r"only 1865 patches .* even with --stride 1"):
        make_patch_files([folder], tmp_path / "o", hr_size=16, scale=4, max_patches=1866)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "shape, stride, count",
    [
        ((16, 16), 1, 1),  # a side equal to the patch: exactly one position along it
        ((16, 16), 16, 1),
        ((15, 16), 1, 0),  # one pixel short on either side: none
        ((16, 15), 1, 0),
        ((17, 16), 1, 2),  # one more: two positions along that side (y = 0, 1)
        ((16, 17), 1, 2),
        ((17, 17), 1, 4),
        ((16, 40), 8, 4),  # x = 0, 8, 16, 24
        ((40, 16), 8, 4),
    ],
)
def test_grid_count_at_the_patch_size_boundary(shape, stride, count):
    assert grid_count([shape], 16, stride) == count
    assert grid_count([shape, (10, 10), shape], 16, stride) == 2 * count


def test_images_exactly_one_patch_in_size_are_used(tmp_path):
    """Sides equal to hr_size (the fixture's images are all larger or smaller): 16x16 gives one patch,
    16x17 two at stride 1, 15x16 none (skipped); with --max-patches the stride search counts them too."""
    rng = np.random.default_rng(4)
    images = [_rgb(rng, 16, 16), _rgb(rng, 15, 16), _rgb(rng, 16, 17)]
    folder = tmp_path / "src"
    folder.mkdir()
    for name, image in zip(("a.png", "b.png", "c.png"), images):
        Image.fromarray(image).save(folder / name)
    summary = make_patch_files([folder], tmp_path / "o", hr_size=16, scale=4, stride=1)
    assert summary["count"] == summary["grid_count"] == 3 and summary["skipped"] == 1
    hr, _ = load_patches(tmp_path / "o" / "hr_lr_images.npz")
    np.testing.assert_array_equal(hr, np.stack([images[0], images[2][:, :16], images[2][:, 1:]]))

    # 16x16 and 16x24: 1 + 1 patches at stride 16; 4 need stride 4 (1 + 3: x = 0, 4, 8 on the second)
    wide = tmp_path / "wide"
    wide.mkdir()
    pair = [_rgb(rng, 16, 16), _rgb(rng, 16, 24)]
    for name, image in zip(("a.png", "b.png"), pair):
        Image.fromarray(image).save(wide / name)
    summary = make_patch_files([wide], tmp_path / "w", hr_size=16, scale=4, max_patches=4)
    assert summary["stride"] == 4 and summary["stride_reduced"] and summary["count"] == 4
    hr, _ = load_patches(tmp_path / "w" / "hr_lr_images.npz")
    np.testing.assert_array_equal(hr, np.stack([pair[0], pair[1][:, 0:16], pair[1][:, 4:20], pair[1][:, 8:24]]))


def test_sixteen_bit_gray_tiff(tmp_path):
    rng = np.random.default_rng(2)
    image = rng.integers(0, 65536, (24, 36), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "g.tif", image)
    summary = make_patch_files([tmp_path / "g.tif"], tmp_path / "o", hr_size=12, scale=2)
    assert summary["count"] == 6 and summary["dtype"] == "uint16"
    hr, lr = load_patches(tmp_path / "o" / "hr_lr_images.npz")
    assert hr.dtype == np.uint16 and hr.shape == (6, 12, 12, 1) and lr.shape == (6, 6, 6, 1)
    np.testing.assert_array_equal(hr[4, :, :, 0], image[12:24, 12:24])
    np.testing.assert_array_equal(lr[4, :, :, 0], imresize(image[12:24, 12:24], 0.5))


def test_input_errors(src, tmp_path):
    folder, _ = src
    with pytest.raises(SuperresError, match=r"--hr-size 18 is not divisible by --scale 4"):
        make_patch_files([folder], tmp_path / "o", hr_size=18, scale=4)
    with pytest.raises(SuperresError, match=r"no image is at least 64x64"):
        make_patch_files([folder], tmp_path / "o", hr_size=64, scale=4)
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(folder / "d_gray.png")
    with pytest.raises(SuperresError, match=r"d_gray\.png: 1 channel\(s\) of uint8, but .*a\.png has 3"):
        make_patch_files([folder], tmp_path / "o", hr_size=16, scale=4)
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- load_patches
def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_load_patches_alternative_keys_and_layouts(tmp_path):
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    lr = rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    for hk, lk in (("HR", "LR"), ("high", "low"), ("hr_images", "lr_images"), ("y", "x")):
        got_hr, got_lr = load_patches(_npz(tmp_path / f"{hk}.npz", **{hk: hr, lk: lr}))
        np.testing.assert_array_equal(got_hr, hr)
        np.testing.assert_array_equal(got_lr, lr)
    got_hr, got_lr = load_patches(_npz(tmp_path / "only.npz", hr=hr))
    assert got_lr is None and got_hr.shape == (3, 8, 8, 3)
    gray_hr, gray_lr = load_patches(_npz(tmp_path / "gray.npz", hr=hr[..., 0], lr=lr[..., 0]))
    assert gray_hr.shape == (3, 8, 8, 1) and gray_lr.shape == (3, 4, 4, 1)
    np.testing.assert_array_equal(gray_hr[..., 0], hr[..., 0])
    nchw_hr, nchw_lr = load_patches(_npz(tmp_path / "nchw.npz", hr=hr.transpose(0, 3, 1, 2), lr=lr.transpose(0, 3, 1, 2)))
    np.testing.assert_array_equal(nchw_hr, hr)
    np.testing.assert_array_equal(nchw_lr, lr)


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"images": np.zeros((2, 8, 8, 3), np.uint8)}, r"no HR patch array \(looked for hr, HR.*found images\)"),
        ({"hr": np.zeros((2, 8, 8, 3), np.uint8), "lr": np.zeros((3, 4, 4, 3), np.uint8)}, r"2 HR patches .* but 3 LR"),
        ({"hr": np.zeros((2, 8, 6, 3), np.uint8)}, r"non-square patches of 8x6"),
        ({"hr": np.zeros((2, 8, 8, 3), np.uint8), "lr": np.zeros((2, 3, 3, 3), np.uint8)}, r"8x8 are not an integer multiple .* 3x3"),
        ({"hr": np.zeros((2, 8, 8, 3), np.uint8), "lr": np.zeros((2, 4, 4, 1), np.uint8)}, r"3 channel\(s\), LR patches 1"),
        ({"hr": np.zeros((2, 8, 8, 3), np.uint8), "lr": np.zeros((2, 4, 4, 3), np.uint16)}, r"uint8, LR patches uint16"),
        ({"hr": np.zeros((2, 8, 8, 3), np.uint8), "y": np.zeros((2, 8, 8, 3), np.uint8)}, r"ambiguous HR arrays 'hr', 'y'"),
        ({"hr": np.zeros((8, 8), np.uint8)}, r"shape \(8, 8\); expected N x H x W x C"),
        ({"hr": np.zeros((2, 8, 8, 3), np.int32)}, r"type int32"),
        ({"hr": np.full((2, 8, 8, 3), 2.0, np.float32)}, r"values in \[2, 2\]; expected \[0, 1\]"),
    ],
)
def test_load_patches_errors(tmp_path, arrays, message):
    path = _npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(SuperresError, match=message) as info:
        load_patches(path)
    assert str(path) in str(info.value)


def test_load_patches_not_an_archive(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(SuperresError, match=r"junk\.npz: cannot read"):
        load_patches(tmp_path / "junk.npz")
    np.save(tmp_path / "plain.npy", np.zeros(3))
    with pytest.raises(SuperresError, match=r"not an \.npz archive"):
        load_patches(tmp_path / "plain.npy")
    with pytest.raises(SuperresError, match=r"missing\.npz: no such patch file"):
        load_patches(tmp_path / "missing.npz")


# --------------------------------------------------------------------------- PatchDataset
def test_patch_dataset_items(tmp_path):
    rng = np.random.default_rng(4)
    hr = rng.integers(0, 256, (5, 12, 12, 3), dtype=np.uint8)
    lr = rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    ds = PatchDataset(_npz(tmp_path / "p.npz", hr=hr, lr=lr))
    assert len(ds) == 5 and ds.scale == 3 and ds.channels == 3 and ds.bit_depth == 8
    assert ds.hr.dtype == np.uint8  # kept as integers
    x, y = ds[2]
    assert x.dtype == torch.float32 and x.shape == (3, 4, 4) and y.shape == (3, 12, 12)
    torch.testing.assert_close(x, torch.from_numpy(lr[2].transpose(2, 0, 1).astype(np.float32) / 255))
    torch.testing.assert_close(y, torch.from_numpy(hr[2].transpose(2, 0, 1).astype(np.float32) / 255))
    with pytest.raises(SuperresError, match="for scale 3, not 2"):
        PatchDataset(tmp_path / "p.npz", scale=2)


def test_patch_dataset_hr_only_makes_lr(tmp_path):
    rng = np.random.default_rng(5)
    hr = rng.integers(0, 65536, (4, 8, 8), dtype=np.uint16)
    path = _npz(tmp_path / "h.npz", hr=hr)
    with pytest.raises(SuperresError, match="HR patches only; give the scale"):
        PatchDataset(path)
    with pytest.raises(SuperresError, match="not divisible by the scale 3"):
        PatchDataset(path, scale=3)
    ds = PatchDataset(path, scale=2)
    assert ds.bit_depth == 16 and ds.channels == 1
    x, y = ds[1]
    assert x.shape == (1, 4, 4) and y.shape == (1, 8, 8)
    expected = imresize(hr[1], 0.5).astype(np.float32) / 65535
    torch.testing.assert_close(x[0], torch.from_numpy(expected))


def test_patch_dataset_augment_aligned_and_seeded(tmp_path):
    rng = np.random.default_rng(6)
    # smooth-ish content so that a misaligned LR would differ by far more than rounding
    base = rng.integers(0, 256, (6, 4, 4, 3)).astype(np.float64)
    hr = np.stack([imresize(b, size=(16, 16)) for b in base]).clip(0, 255).round().astype(np.uint8)
    path = _npz(tmp_path / "h.npz", hr=hr, lr=np.stack([imresize(p, 0.25) for p in hr]))
    ds = PatchDataset(path, augment=True, seed=11)
    seen = set()
    for i in range(len(ds)):
        for epoch in range(4):
            ds.set_epoch(epoch)
            x, y = ds[i]
            y8 = (y.numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)
            x8 = (x.numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)
            codes = [c for c in range(8) if np.array_equal(dihedral(hr[i], c), y8)]
            assert codes, "HR item is not a flip/rotation of the stored patch"
            seen.add(codes[0])
            # the LR is the same transform of the stored LR, hence imresize of the HR up to ties
            assert np.abs(imresize(y8, 0.25).astype(int) - x8.astype(int)).max() <= 1
    assert len(seen) >= 5  # the draws vary
    again = PatchDataset(path, augment=True, seed=11)
    again.set_epoch(3)
    torch.testing.assert_close(again[2][1], ds[2][1])  # ds is at epoch 3 too


# --------------------------------------------------------------------------- CLI
def test_cli_writes_both_files(src, tmp_path, capsys):
    folder, _ = src
    out = tmp_path / "cli"
    assert main(["data", "patches", str(folder), "--out", str(out), "--hr-size", "16", "--scale", "2"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 14 patch pairs" in printed and "1 image(s) smaller than 16x16 skipped" in printed
    hr, lr = load_patches(out / "hr_lr_images.npz")
    assert hr.shape == (14, 16, 16, 3) and lr.shape == (14, 8, 8, 3)
    assert load_patches(out / "hr_images.npz")[1] is None


def test_cli_shows_progress(src, tmp_path, capsys, monkeypatch):
    """`superres data patches` shows bars for reading and for the LR patches, and a line per large file
    written (every file is large here)."""
    import superres.data.patches
    import superres.progress

    monkeypatch.setattr(superres.progress, "DELAY_S", 0)
    monkeypatch.setattr(superres.data.patches, "WRITE_LINE_MB", 0)
    folder, _ = src
    assert main(["data", "patches", str(folder), "--out", str(tmp_path / "p"), "--hr-size", "16", "--scale", "2"]) == 0
    err = capsys.readouterr().err
    assert "read: 100%" in err and "3/3" in err and "LR x2: 100%" in err and "14/14" in err
    assert f"writing {tmp_path / 'p' / 'hr_images.npz'}" in err and f"writing {tmp_path / 'p' / 'hr_lr_images.npz'}" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["EMPTY"], r"EMPTY|no image"),
        (["SRC", "--hr-size", "64"], r"no image is at least 64x64"),
        (["SRC", "--hr-size", "18", "--scale", "4"], r"--hr-size 18 is not divisible by --scale 4"),
        (["SRC", "--hr-size", "16", "--stride", "16", "--max-patches", "100"], r"--stride 16 gives only 14 patches"),
    ],
)
def test_cli_bad_input(src, tmp_path, capsys, args, message):
    folder, _ = src
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "never"
    argv = ["data", "patches"] + [str(folder) if a == "SRC" else str(empty) if a == "EMPTY" else a for a in args]
    assert main(argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("superres: error: ")
    assert re.search(message.replace("EMPTY", re.escape(str(empty))), lines[0])
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.shared_data
def test_seed_dataset_size_on_shared_train(shared_data, tmp_path, capsys):
    """--max-patches 17354 on T91+BSD200+General100 gives exactly the seed set's 17,354 pairs."""
    train = shared_data / "train"
    shapes = []
    for p in sorted(train.rglob("*")):
        if p.suffix.lower() in (".png", ".bmp"):
            with Image.open(p) as im:
                shapes.append((im.size[1], im.size[0]))
    assert len(shapes) == 391
    expected_stride = _largest_stride(shapes, 128, 17354)
    out = tmp_path / "seed"
    start = time.perf_counter()
    assert main(["data", "patches", str(train), "--out", str(out), "--max-patches", "17354"]) == 0
    elapsed = time.perf_counter() - start
    printed = capsys.readouterr().out
    assert "wrote 17354 patch pairs" in printed and f"stride reduced to {expected_stride}" in printed
    with np.load(out / "hr_lr_images.npz") as f:
        lr = f["lr"]
        hr = f["hr"]
    assert hr.shape == (17354, 128, 128, 3) and hr.dtype == np.uint8
    assert lr.shape == (17354, 32, 32, 3) and lr.dtype == np.uint8
    for k in (0, 9999, 17353):
        np.testing.assert_array_equal(lr[k], imresize(hr[k], 0.25))
    print(f"17354 patches at stride {expected_stride} in {elapsed:.1f} s")
