"""`superres demo` end to end with a tiny training budget (the full 5-minute run is not a test).

The checks are about the demo's wiring, each derived independently of its code: parameter counts
from the registry, gains from the reported PSNRs, file layouts from the protocol (LR = mod-cropped
HR / 4), no test photo among the training photos, and no network access at all.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest

from superres.errors import SuperresError


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from superres.demo import run_demo

    out = tmp_path_factory.mktemp("demo")
    monkeypatch = pytest.MonkeyPatch()

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("superres demo tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    try:
        result = run_demo(out, seconds=2)
    finally:
        monkeypatch.undo()
    return out, result


@pytest.mark.slow
def test_metrics_json_has_the_three_models(demo_run: tuple[Path, dict]) -> None:
    from superres.models import build

    out, result = demo_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result))  # the file is what run_demo returned
    assert set(metrics["models"]) == {"bicubic", "baseline", "enhanced"}
    bicubic = metrics["models"]["bicubic"]["psnr_y"]
    assert 20 < bicubic < 40  # x4 bicubic on natural photos
    for name in ("baseline", "enhanced"):
        m = metrics["models"][name]
        assert m["params"] == sum(p.numel() for p in build(name, scale=4).parameters())
        assert m["gain_db"] == pytest.approx(m["psnr_y"] - bicubic)
        assert m["iterations"] >= 1 and m["train_seconds"] > 0
        assert set(m["images"]) == set(metrics["test_photos"])
        assert Path(m["model_file"]).is_file()
        assert (Path(m["model_file"]).parent / "config.yaml").is_file()  # a superres.training run folder


@pytest.mark.slow
def test_comparison_figure_is_written(demo_run: tuple[Path, dict]) -> None:
    from PIL import Image

    out, _ = demo_run
    with Image.open(out / "comparison.png") as im:
        assert im.format == "PNG" and im.width > 500 and im.height > 500


@pytest.mark.slow
def test_layout_and_held_out_images(demo_run: tuple[Path, dict]) -> None:
    from superres.io import read_array

    out, metrics = demo_run
    train_names = {p.stem for p in (out / "images" / "train").glob("*.png")}
    test_names = {p.stem for p in (out / "test" / "HR").glob("*.png")}
    assert train_names == set(metrics["train_photos"]) and test_names == set(metrics["test_photos"])
    assert train_names.isdisjoint(test_names) and len(test_names) >= 2
    for name in test_names:
        hr = read_array(out / "test" / "HR" / f"{name}.png")
        lr = read_array(out / "test" / "LR_bicubic" / "X4" / f"{name}.png")
        assert lr.shape == (hr.shape[0] // 4, hr.shape[1] // 4, 3) and lr.dtype == np.uint8
    with np.load(out / "patches" / "hr_lr_images.npz") as z:
        assert z["hr"].shape[1:] == (128, 128, 3) and z["lr"].shape[1:] == (32, 32, 3)
        assert z["hr"].shape[0] == metrics["patches"]["count"]


def test_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    from superres.demo import run_demo

    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(SuperresError, match="not written by superres demo"):
        run_demo(tmp_path, seconds=1)
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    with pytest.raises(SuperresError, match="--seconds"):
        run_demo(tmp_path / "new", seconds=0)
