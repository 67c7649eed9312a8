"""scripts/make_distill_patches.py: LR patches of the training images paired with a teacher's output."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from superres.data.patches import PatchDataset, downscale, load_patches
from superres.models import build as build_model
from superres.modelfile import save_model
from superres.resize import imresize

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "make_distill_patches.py"


def _script():
    spec = importlib.util.spec_from_file_location("make_distill_patches", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_grid_is_aligned_and_reaches_the_far_border():
    script = _script()
    assert script.grid(100, 48, 24, 4) == [0, 24, 48, 52]  # 52: the last multiple of 4 that still fits
    assert script.grid(96, 48, 24, 4) == [0, 24, 48]
    assert script.grid(40, 48, 24, 4) == []


def test_patches_pair_the_lr_with_the_teachers_output(tmp_path, one_thread):
    """With a teacher whose output is MATLAB bicubic (lumanet with its last conv zeroed: the luma
    residual is 0), each target patch must be the same window of imresize(LR, 4), and each LR patch
    the matching window of the downscaled image: this pins the alignment of the two grids."""
    rng = np.random.default_rng(3)
    data = tmp_path / "train"
    data.mkdir()
    y, x = np.mgrid[0:70, 0:83]
    hr = np.stack([np.sin(0.2 * y + 0.13 * x + c) for c in range(3)], axis=2)
    hr = np.round((0.8 * (hr + 1) / 2 + 0.2 * rng.random(hr.shape)) * 255).astype(np.uint8)
    Image.fromarray(hr).save(data / "a.png")
    Image.fromarray(hr[:20, :20]).save(data / "small.png")  # under one patch: skipped
    args = {"scale": 4, "in_channels": 3, "channels": 4, "num_convs": 1}
    teacher = build_model("lumanet", **args)
    with torch.no_grad():
        last = [m for m in teacher.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        last.weight.zero_()
        last.bias.zero_()
    teacher_path = save_model(tmp_path / "teacher.safetensors", teacher, arch="lumanet", args=args)

    out = tmp_path / "d.npz"
    assert _script().main(["--teacher", str(teacher_path), "--data", str(data), "--patch", "32",
                           "--stride", "24", "--out", str(out)]) == 0
    targets, lrs = load_patches(out)
    crop = hr[:68, :80]  # mod-cropped to 4
    lr = downscale(crop, 4)
    bicubic = np.clip(np.round(np.asarray(imresize(lr.astype(np.float64) / 255, 4)) * 255), 0, 255)
    positions = [(py, px) for py in (0, 24, 36) for px in (0, 24, 48)]
    assert len(targets) == len(positions) == len(lrs)
    for (py, px), t, low in zip(positions, targets, lrs):
        assert np.array_equal(low, lr[py // 4:py // 4 + 8, px // 4:px // 4 + 8])
        assert np.abs(t.astype(int) - bicubic[py:py + 32, px:px + 32]).max() <= 1  # float32 vs float64 rounding
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["patches"] == 9 and info["images"] == [str(data / "a.png")]
    assert info["skipped"] == [f"{data / 'small.png'}: smaller than 32 px"]
    # the trainer's patch dataset takes it as given pairs
    pair = PatchDataset(out, scale=4)[0]
    assert pair[0].shape == (3, 8, 8) and pair[1].shape == (3, 32, 32)


def test_bad_patch_size_is_one_error_line(tmp_path, capsys):
    assert _script().main(["--teacher", "lumanet-x4", "--patch", "30", "--out", str(tmp_path / "x.npz")]) == 2
    assert capsys.readouterr().err.strip() == "error: --patch 30 is not a multiple of the teacher's scale 4"
    assert not (tmp_path / "x.npz").exists()
