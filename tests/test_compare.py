"""superres compare: the sheet, the crop it zooms, and the scores it prints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from superres.cli import main
from superres.compare import Crop, auto_crop, parse_crop
from superres.io import read_array, to_float
from superres.metrics import score
from superres.resize import imresize, modcrop


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(0.21 * y + 0.13 * x + c) for c in range(3)], axis=2)
    return np.round((0.7 * (base + 1) / 2 + 0.3 * rng.random((h, w, 3))) * 255).astype(np.uint8)


def test_parse_crop_accepts_auto_and_four_integers_and_refuses_the_rest() -> None:
    assert parse_crop("auto") is None
    assert parse_crop("0,0,1,1") == Crop(0, 0, 1, 1)  # the smallest window there is
    for bad in ("1,2,3", "a,b,c,d", "0,0,0,5", "-1,0,5,5"):
        with pytest.raises(Exception, match="--crop"):
            parse_crop(bad)


def test_auto_crop_finds_where_the_outputs_differ() -> None:
    a = np.full((60, 80, 3), 0.5, np.float32)
    a[0:10, 0:10] = 1.0  # brighter than anything else, the same in both: not where they differ
    b = a.copy()
    b[30:40, 50:60] += 0.3  # the only place the two "models" disagree
    crop = auto_crop([a, b], side=10)
    assert (crop.x, crop.y, crop.w, crop.h) == (50, 30, 10, 10)
    # a window larger than the image is clipped to it
    assert auto_crop([a, b], side=500) == Crop(0, 0, 80, 60)


def test_cli_sheet_and_scores_for_hr_inputs(tmp_path: Path) -> None:
    from skimage.data import astronaut

    hr_file = tmp_path / "photo.png"
    Image.fromarray(astronaut()[60:110, 180:246]).save(hr_file)  # 66 is not a multiple of 4: mod-crop to 64
    out = tmp_path / "out"
    assert main(["compare", str(hr_file), "--lr-from-hr", "--models", "bicubic", "lumanet-x4", "--out", str(out)]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["scale"] == 4 and report["models"] == ["bicubic", "lumanet-x4"]
    entry = report["images"]["photo.png"]
    # the bicubic figure is the protocol's score of MATLAB bicubic on the mod-cropped HR
    hr = modcrop(read_array(hr_file), 4)
    expected = score(imresize(imresize(hr, 1 / 4), 4), hr, 4)
    assert entry["scores"]["bicubic"]["psnr_y"] == pytest.approx(expected["psnr_y"], abs=1e-9)
    assert entry["scores"]["lumanet-x4"]["psnr_y"] > entry["scores"]["bicubic"]["psnr_y"]
    sheet = Image.open(out / entry["sheet"])
    assert sheet.mode == "RGB" and sheet.width > 4 * 100  # LR, two models, HR side by side
    x, y, w, h = entry["crop"]
    assert 0 <= x and x + w <= 64 and 0 <= y and y + h <= 48


def test_cli_lr_input_with_an_hr_folder_and_an_explicit_crop(tmp_path: Path) -> None:
    hr = _photo(48, 64)
    (tmp_path / "HR").mkdir()
    Image.fromarray(hr).save(tmp_path / "HR" / "a.png")
    lr = imresize(hr, 1 / 4)
    Image.fromarray(lr).save(tmp_path / "a.png")
    out = tmp_path / "out"
    assert main(["compare", str(tmp_path / "a.png"), "--hr", str(tmp_path / "HR"), "--models", "lumanet-x4",
                 "--crop", "8,4,32,16", "--out", str(out)]) == 0
    entry = json.loads((out / "metrics.json").read_text())["images"]["a.png"]
    assert entry["crop"] == [8, 4, 32, 16]
    assert set(entry["scores"]) == {"lumanet-x4"}


def test_cli_refuses_a_crop_outside_the_output_and_mixed_scales(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lr = tmp_path / "a.png"
    Image.fromarray(_photo(12, 16)).save(lr)
    # 16 x 4 = 64 output columns: a window ending at column 64 fits, one ending at 65 does not
    assert main(["compare", str(lr), "--models", "lumanet-x4", "--crop", "32,0,32,8", "--out", str(tmp_path / "ok")]) == 0
    assert main(["compare", str(lr), "--models", "lumanet-x4", "--crop", "33,0,32,8", "--out", str(tmp_path / "o")]) == 2
    assert "outside the 64x48 output" in capsys.readouterr().err
    assert not (tmp_path / "o" / "a_compare.png").exists()
    assert main(["compare", str(lr), "--models", "lumanet-x4", "lumanet-x2", "--out", str(tmp_path / "o2")]) == 2
    assert "different factors" in capsys.readouterr().err
