"""HRFolderDataset (random crops, LR on the fly) and PairedFolderDataset (benchmark layout).

Expectations come from outside the code under test: crops are located in the source arrays written
here, LR is recomputed with imresize from the returned HR, Set5 sizes are the ones SOURCES.md lists,
and the official LR files are read with Pillow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from superres.data import HRFolderDataset, PairedFolderDataset
from superres.data.patches import dihedral
from superres.errors import SuperresError
from superres.resize import imresize


def _to_int(t: torch.Tensor, maximum: int, dtype: type) -> np.ndarray:
    """float32 C x H x W in [0, 1] back to H x W x C integers (exact for values k / maximum)."""
    return np.round(t.numpy().transpose(1, 2, 0).astype(np.float64) * maximum).astype(dtype)


def _find(crop: np.ndarray, images: list[np.ndarray]) -> bool:
    """Is ``crop`` a flip/rotation of some window of some image? Brute force."""
    p = crop.shape[0]
    for code in range(8):
        # the dihedral codes are their own inverses except the two rotations (5 and 6 swap)
        undone = dihedral(crop, {5: 6, 6: 5}.get(code, code))
        for image in images:
            for y in range(image.shape[0] - p + 1):
                for x in range(image.shape[1] - p + 1):
                    if np.array_equal(image[y : y + p, x : x + p], undone):
                        return True
    return False


@pytest.fixture()
def rgb_folder(tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    rng = np.random.default_rng(7)
    folder = tmp_path / "hr"
    (folder / "sub").mkdir(parents=True)
    images = [rng.integers(0, 256, s, dtype=np.uint8) for s in ((20, 30, 3), (17, 16, 3))]
    Image.fromarray(images[0]).save(folder / "a.png")
    Image.fromarray(images[1]).save(folder / "sub" / "b.png")
    Image.fromarray(rng.integers(0, 256, (8, 40, 3), dtype=np.uint8)).save(folder / "small.png")
    return folder, images


def test_dihedral_inverse_table():
    a = np.arange(12).reshape(3, 4)
    for code in range(8):
        assert np.array_equal(dihedral(dihedral(a, code), {5: 6, 6: 5}.get(code, code)), a)
    assert len({dihedral(a, c).tobytes() + bytes(dihedral(a, c).shape) for c in range(8)}) == 8


def test_hr_folder_items(rgb_folder):
    folder, images = rgb_folder
    ds = HRFolderDataset([folder], patch_size=12, scale=4, seed=0)
    assert ds.channels == 3 and ds.bit_depth == 8 and len(ds.images) == 2
    assert [p.name for p in ds.skipped] == ["small.png"]
    assert len(ds) == 2 * 1 + 1 * 1  # non-overlapping 12-px tiles: 20x30 -> 1x2, 17x16 -> 1x1
    for i in range(len(ds)):
        lr, hr = ds[i]
        assert lr.dtype == torch.float32 and lr.shape == (3, 3, 3) and hr.shape == (3, 12, 12)
        hr8, lr8 = _to_int(hr, 255, np.uint8), _to_int(lr, 255, np.uint8)
        assert _find(hr8, images)
        np.testing.assert_array_equal(lr8, imresize(hr8, 0.25))  # aligned after augmentation
    assert len(HRFolderDataset(folder, patch_size=12, scale=4, length=50)) == 50


def test_hr_folder_determinism(rgb_folder):
    folder, _ = rgb_folder

    def items(seed: int | None, epoch: int = 0, in_memory: bool = True) -> list[torch.Tensor]:
        ds = HRFolderDataset(folder, patch_size=8, scale=2, seed=seed, length=6, in_memory=in_memory)
        ds.set_epoch(epoch)
        return [ds[i][1] for i in range(len(ds))]

    a = items(5)
    for x, y in zip(a, items(5)):
        torch.testing.assert_close(x, y)
    for x, y in zip(a, items(5, in_memory=False)):
        torch.testing.assert_close(x, y)
    assert any(not torch.equal(x, y) for x, y in zip(a, items(6)))
    assert any(not torch.equal(x, y) for x, y in zip(a, items(5, epoch=1)))
    # fetch order does not matter: item 4 alone equals item 4 of the sweep
    ds = HRFolderDataset(folder, patch_size=8, scale=2, seed=5, length=6)
    torch.testing.assert_close(ds[4][1], a[4])
    # unseeded draws follow torch's generator
    torch.manual_seed(3)
    b = items(None)
    torch.manual_seed(3)
    for x, y in zip(b, items(None)):
        torch.testing.assert_close(x, y)


def test_hr_folder_sixteen_bit_gray_and_four_band(tmp_path):
    rng = np.random.default_rng(8)
    gray = rng.integers(0, 65536, (18, 22), dtype=np.uint16)
    bands = rng.integers(0, 65536, (16, 16, 4), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "gray.tif", gray)
    tifffile.imwrite(tmp_path / "bands.tif", bands, photometric="minisblack", planarconfig="contig")
    for path, image, channels in ((tmp_path / "gray.tif", gray[:, :, None], 1), (tmp_path / "bands.tif", bands, 4)):
        ds = HRFolderDataset([path], patch_size=6, scale=3, seed=1, length=4)
        assert ds.bit_depth == 16 and ds.channels == channels and ds.images[0].dtype == np.uint16
        np.testing.assert_array_equal(ds.images[0], image)
        for i in range(4):
            lr, hr = ds[i]
            assert hr.shape == (channels, 6, 6) and lr.shape == (channels, 2, 2)
            hr16, lr16 = _to_int(hr, 65535, np.uint16), _to_int(lr, 65535, np.uint16)
            assert _find(hr16, [image])
            np.testing.assert_array_equal(lr16, imresize(hr16, 1 / 3))


def test_hr_folder_errors(rgb_folder, tmp_path):
    folder, _ = rgb_folder
    with pytest.raises(SuperresError, match="patch size 10 is not a positive multiple of the scale 4"):
        HRFolderDataset(folder, patch_size=10, scale=4)
    with pytest.raises(SuperresError, match="no image is at least 24x24"):
        HRFolderDataset(folder, patch_size=24, scale=4)
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(folder / "z_gray.png")
    with pytest.raises(SuperresError, match=r"z_gray\.png: 1 channel\(s\) of uint8, but .*a\.png has 3"):
        HRFolderDataset(folder, patch_size=12, scale=4)


# --------------------------------------------------------------------------- paired benchmark
# W x H of the Set5 HR images, from ../shared/data/SOURCES.md
SET5 = {"baby": (512, 512), "bird": (288, 288), "butterfly": (256, 256), "head": (280, 280), "woman": (228, 344)}


@pytest.mark.shared_data
@pytest.mark.parametrize("scale", [3, 4])
def test_paired_set5(shared_data, scale):
    ds = PairedFolderDataset(shared_data / "Set5", scale)
    assert len(ds) == 5 and [ds[i]["name"] for i in range(5)] == sorted(SET5)
    for i in range(5):
        item = ds[i]
        w, h = SET5[item["name"]]
        hh, ww = h - h % scale, w - w % scale
        assert item["hr"].shape == (3, hh, ww) and item["lr"].shape == (3, hh // scale, ww // scale)
        assert item["bit_depth"] == 8 and item["hr"].dtype == torch.float32
        official = np.asarray(Image.open(shared_data / "Set5" / "LR_bicubic" / f"X{scale}" / f"{item['name']}.png"))
        np.testing.assert_array_equal(_to_int(item["lr"], 255, np.uint8), official)
        hr_file = np.asarray(Image.open(shared_data / "Set5" / "HR" / f"{item['name']}.png"))
        np.testing.assert_array_equal(_to_int(item["hr"], 255, np.uint8), hr_file[:hh, :ww])


def _bench(root: Path, hr: dict[str, np.ndarray], lr: dict[str, np.ndarray] | None, scale: int) -> Path:
    (root / "HR").mkdir(parents=True)
    for name, a in hr.items():
        Image.fromarray(a).save(root / "HR" / f"{name}.png")
    if lr is not None:
        d = root / "LR_bicubic" / f"X{scale}"
        d.mkdir(parents=True)
        for name, a in lr.items():
            Image.fromarray(a).save(d / f"{name}.png")
    return root


def test_paired_without_lr_folder_mixed_channels(tmp_path):
    rng = np.random.default_rng(9)
    hr = {"zeta": rng.integers(0, 256, (14, 11, 3), dtype=np.uint8), "alpha": rng.integers(0, 256, (10, 13), dtype=np.uint8)}
    ds = PairedFolderDataset(_bench(tmp_path / "b", hr, None, 3), 3)
    first, second = ds[0], ds[1]
    assert (first["name"], second["name"]) == ("alpha", "zeta")
    assert first["hr"].shape == (1, 9, 12) and first["lr"].shape == (1, 3, 4)
    assert second["hr"].shape == (3, 12, 9) and second["lr"].shape == (3, 4, 3)
    np.testing.assert_array_equal(_to_int(first["lr"], 255, np.uint8)[:, :, 0], imresize(hr["alpha"][:9, :12], 1 / 3))
    np.testing.assert_array_equal(_to_int(second["lr"], 255, np.uint8), imresize(hr["zeta"][:12, :9], 1 / 3))


def test_paired_errors(tmp_path):
    rng = np.random.default_rng(10)
    hr = {"img": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), "other": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)}
    root = _bench(tmp_path / "mismatch", hr, {"img": np.zeros((5, 4, 3), np.uint8), "other": np.zeros((4, 4, 3), np.uint8)}, 2)
    with pytest.raises(SuperresError, match=r"img\.png: LR is 4x5 but .*img\.png cropped .* is 16x16, which needs 8x8"):
        PairedFolderDataset(root, 2)
    root = _bench(tmp_path / "missing", hr, {"img": np.zeros((8, 8, 3), np.uint8)}, 2)
    with pytest.raises(SuperresError, match=r"other\.png: no LR file named other\.\* in .*X2"):
        PairedFolderDataset(root, 2)
    with pytest.raises(SuperresError, match=r"no HR/ folder"):
        PairedFolderDataset(tmp_path / "nowhere", 2)


# --------------------------------------------------------------------------- the counter-based draw
@given(seed=st.integers(0, 2**63 - 1), epoch=st.integers(0, 10**9),
       indices=st.lists(st.integers(0, 10**6), min_size=1, max_size=20))
@settings(max_examples=50, deadline=None)
def test_draws_are_a_pure_function_of_seed_epoch_and_index(seed, epoch, indices):
    from superres.data.folders import draw_uniforms

    batch = draw_uniforms(seed, epoch, np.array(indices), 4)
    assert batch.shape == (len(indices), 4) and ((0 <= batch) & (batch < 1)).all()
    for row, index in zip(batch, indices):  # alone or in any batch, in any order: the same values
        assert np.array_equal(row, draw_uniforms(seed, epoch, np.array([index]), 4)[0])


def test_draws_look_independent_and_uniform():
    """Neighbouring seeds, epochs and indices give unrelated streams: each column is uniform
    (Kolmogorov-Smirnov distance), and columns, neighbouring indices and neighbouring seeds are
    uncorrelated."""
    from superres.data.folders import draw_uniforms

    n = 20000
    u = draw_uniforms(0, 0, np.arange(n), 4)
    for column in u.T:
        ecdf = np.sort(column)
        ks = np.abs(ecdf - (np.arange(n) + 0.5) / n).max()
        assert ks < 1.95 / np.sqrt(n), ks  # the 0.1% critical value is 1.95/sqrt(n)
    pairs = [u[:, 0], u[:, 1], u[:, 3], draw_uniforms(1, 0, np.arange(n), 1)[:, 0],
             draw_uniforms(0, 1, np.arange(n), 1)[:, 0]]
    corr = np.corrcoef(np.stack(pairs))
    assert np.abs(corr[np.triu_indices(len(pairs), 1)]).max() < 4 / np.sqrt(n)
    assert abs(np.corrcoef(u[1:, 0], u[:-1, 0])[0, 1]) < 4 / np.sqrt(n)  # index i against i + 1
