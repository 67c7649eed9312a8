"""Training on your own LR/HR pairs (``data.train_pairs``, superres.data.pairs): issue 15, point 6.

The LR images here are made by a 3x3 box average (not superres's bicubic), so the test can check
that every training crop is aligned: the LR crop equals the box average of its HR crop exactly,
after the same flip/rotation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from superres.config import config_from_dict
from superres.data import PairedPatchDataset
from superres.errors import SuperresError

pytestmark = pytest.mark.usefixtures("one_thread")
SCALE = 3


def box_down(hr: np.ndarray, s: int) -> np.ndarray:
    h, w = hr.shape[0] // s * s, hr.shape[1] // s * s
    blocks = hr[:h, :w].reshape(h // s, s, w // s, s, -1).astype(np.int64)
    return blocks.sum(axis=(1, 3)) // (s * s)  # integer mean: exact, so the check below is too


@pytest.fixture()
def pairs(tmp_path: Path) -> Path:
    """HR/ and LR/ (the LR of a2 named a2x3, as DIV2K names them); HR sizes not multiples of 3."""
    rng = np.random.default_rng(0)
    root = tmp_path / "pairs"
    for name, (h, w), lr_name in [("a1", (25, 28), "a1"), ("a2", (30, 31), "a2x3"), ("a3", (24, 24), "a3")]:
        hr = (rng.integers(0, 28, (h // 3, w // 3, 3)) * 9).astype(np.uint8)
        hr = np.kron(hr, np.ones((3, 3, 1), np.uint8))  # constant 3x3 blocks: a misaligned crop mixes them
        full = np.zeros((h, w, 3), np.uint8)
        full[: hr.shape[0], : hr.shape[1]] = hr
        (root / "HR").mkdir(parents=True, exist_ok=True)
        (root / "LR").mkdir(parents=True, exist_ok=True)
        Image.fromarray(full).save(root / "HR" / f"{name}.png")
        Image.fromarray(box_down(full, SCALE).astype(np.uint8)).save(root / "LR" / f"{lr_name}.png")
    return root


def test_crops_are_aligned_at_the_scale(pairs: Path) -> None:
    ds = PairedPatchDataset(pairs, patch_size=12, scale=SCALE, augment=True, length=32, seed=5)
    assert ds.channels == 3 and len(ds.pairs) == 3
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            lr, hr = ds[i]
            assert lr.shape == (3, 4, 4) and hr.shape == (3, 12, 12)
            hr8 = np.round(hr.permute(1, 2, 0).numpy() * 255).astype(np.int64)
            assert np.array_equal(box_down(hr8, SCALE), np.round(lr.permute(1, 2, 0).numpy() * 255))
    # a pure function of (seed, epoch, index)
    ds.set_epoch(1)
    again = PairedPatchDataset(pairs, patch_size=12, scale=SCALE, augment=True, length=32, seed=5)
    again.set_epoch(1)
    assert all(torch.equal(ds[i][1], again[i][1]) for i in range(8))


def test_a_pair_of_another_scale_is_named(pairs: Path) -> None:
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(pairs / "LR" / "a3.png")
    with pytest.raises(SuperresError, match=r"a3\.png is 5x5 but .*a3\.png is 24x24: not an x3 pair"):
        PairedPatchDataset(pairs, patch_size=12, scale=SCALE)


def test_an_hr_without_lr_is_named(pairs: Path) -> None:
    (pairs / "LR" / "a1.png").unlink()
    with pytest.raises(SuperresError, match=r"a1\.png has no LR"):
        PairedPatchDataset(pairs, patch_size=12, scale=SCALE)


def _config(pairs: Path, tmp_path: Path, **data):
    return config_from_dict({
        "name": "pairs",
        "model": {"name": "espcn", "scale": SCALE, "options": {"channels": 4, "hidden": 4}},
        "data": {"train_pairs": str(pairs), "patch_size": 12, "batch_size": 4, "val": str(pairs), **data},
        "train": {"iterations": 4, "val_every": 4, "save_every": 4, "log_every": 2, "seed": 0, "device": "cpu"},
    }, source="test")


def test_train_a_few_iterations_on_pairs(pairs: Path, tmp_path: Path) -> None:
    from superres.modelfile import load_model, read_metadata
    from superres.training import train

    path = train(_config(pairs, tmp_path), run_dir=tmp_path / "run")
    meta = read_metadata(path)
    assert meta["iterations"] == 4 and meta["data"] == [str(pairs.resolve())]
    assert meta["config"]["data"]["train_pairs"] == str(pairs.resolve())
    assert load_model(path)(torch.rand(1, 3, 4, 5)).shape == (1, 3, 12, 15)


def test_train_and_train_pairs_are_exclusive(pairs: Path, tmp_path: Path) -> None:
    with pytest.raises(SuperresError, match="data.train_pairs"):
        _config(pairs, tmp_path, train=[str(pairs / "HR")])
