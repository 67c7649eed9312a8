"""`superres demo` end to end with a tiny training budget (the full few-minute run is not a test).

The checks are each derived independently of the demo's code: the shipped models' scores again with
:func:`superres.evaluate.evaluate` (not :mod:`superres.compare`, which the demo uses), the selection
of shipped models from :func:`superres.modelfile.list_models`, the bars' figures from the budget and
the trainer's own record in the model file, colours from the model's output, file layouts from the
protocol (LR = mod-cropped HR / 4), no test photo among the training photos, and no network access.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from superres.errors import SuperresError

BUDGET = 2.0  # seconds of training per live model: the whole run stays well under a minute


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from superres.demo import run_demo

    out = tmp_path_factory.mktemp("demo")
    monkeypatch = pytest.MonkeyPatch()

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("superres demo tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    stdout, bars = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout):
            result = run_demo(out, seconds=BUDGET, stream=bars)
    finally:
        monkeypatch.undo()
    return {"out": out, "metrics": result, "stdout": stdout.getvalue(), "bars": bars.getvalue()}


def _shipped_x4() -> list[dict[str, Any]]:
    from superres.modelfile import list_models

    return [e for e in list_models() if e.get("shipped") and e.get("scale") == 4]


@pytest.mark.slow
def test_metrics_json_is_what_run_demo_returned_and_names_the_right_models(demo_run: dict[str, Any]) -> None:
    import torch

    from superres.speed import choose_default_model

    out, result = demo_run["out"], demo_run["metrics"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result))
    shipped = _shipped_x4()
    default = choose_default_model(torch.device("cpu"), scale=4)[0]
    photo = {e["name"] for e in shipped if e["purpose"] == "photo"}  # discovered, whichever are installed
    assert metrics["shipped"][0] == default
    assert photo <= set(metrics["shipped"]) <= {e["name"] for e in shipped}
    for condition in ("clean", "degraded"):
        models = metrics[condition]["models"]
        assert list(models) == ["bicubic", *metrics["shipped"]]
        for m in models.values():
            assert m["gain_db"] == pytest.approx(m["psnr_y"] - models["bicubic"]["psnr_y"])
            assert set(m["images"]) == set(metrics["test_photos"])
            assert m["psnr_y"] == pytest.approx(np.mean([im["psnr_y"] for im in m["images"].values()]))


@pytest.mark.slow
def test_shipped_models_beat_bicubic_on_clean_input_scored_independently(demo_run: dict[str, Any]) -> None:
    from superres.evaluate import evaluate

    out, metrics = demo_run["out"], demo_run["metrics"]
    bench = out / "test"
    bicubic = evaluate("bicubic", bench, scale=4)["psnr_y"]
    assert metrics["clean"]["models"]["bicubic"]["psnr_y"] == pytest.approx(bicubic, abs=1e-6)
    for name in metrics["shipped"]:
        psnr = evaluate(name, bench, scale=4)["psnr_y"]
        assert metrics["clean"]["models"][name]["psnr_y"] == pytest.approx(psnr, abs=1e-3)
        if _purpose(name) == "benchmark":  # trained on bicubic LR: must beat bicubic on it
            assert psnr > bicubic + 0.3, name
    default = metrics["shipped"][0]
    degraded = evaluate(default, bench, scale=4, lr="LR_medium", perceptual=metrics["perceptual"])
    assert metrics["degraded"]["models"][default]["psnr_y"] == pytest.approx(degraded["psnr_y"], abs=1e-3)
    if metrics["perceptual"] is None:
        assert "effdist" in (metrics["perceptual_note"] or "")
    else:
        assert metrics["degraded"]["models"][default]["effdist"] == pytest.approx(degraded["effdist"], rel=1e-3)


def _purpose(name: str) -> str:
    return next(e["purpose"] for e in _shipped_x4() if e["name"] == name)


@pytest.mark.slow
def test_training_lines_and_bars_tell_the_truth(demo_run: dict[str, Any]) -> None:
    from superres.modelfile import load_model
    from superres.models import build

    metrics, stdout, bars = demo_run["metrics"], demo_run["stdout"], demo_run["bars"]
    for name, run in metrics["live"]["runs"].items():
        line = next(ln for ln in stdout.splitlines() if ln.startswith(f"[3/4] Training {name} "))
        assert f"for {BUDGET:g} s" in line
        meta = load_model(run["model_file"]).superres_meta
        params = sum(p.numel() for p in build(name, scale=4, **meta["args"].get("options", {})).parameters())
        assert f"{meta['params']:,} parameters" in line and meta["params"] == run["params"]
        states = [ln for ln in bars.splitlines() if ln.split()[:1] == [name]]
        assert states, f"no bar for {name}"
        shown = []
        for state in states[:-1]:
            done, total, steps, left = re.search(r"([\d.]+)/([\d.]+) s, (\d+) steps, (\d+) s left", state).groups()
            assert float(total) == BUDGET  # done is shown rounded to 0.1 s
            assert int(left) in {math.ceil(BUDGET - float(done) - 0.05), math.ceil(BUDGET - float(done) + 0.05)}
            shown.append((float(done), int(steps)))
        assert shown == sorted(shown) and all(0 <= d <= BUDGET for d, _ in shown)
        done, total, steps, seconds = re.search(r"([\d.]+)/([\d.]+) s, done: (\d+) steps in ([\d.]+) s", states[-1]).groups()
        assert float(total) == BUDGET and int(steps) == meta["iterations"] == run["steps"]
        assert float(seconds) == pytest.approx(meta["wall_time_s"], abs=0.05)
        assert meta["wall_time_s"] >= BUDGET  # the trainer stops at its first check past the budget
        assert params == meta["params"]


@pytest.mark.slow
def test_no_internal_jargon_on_screen(demo_run: dict[str, Any]) -> None:
    from superres.demo import JARGON

    shown = demo_run["stdout"] + demo_run["bars"]
    for word in {*JARGON, "data path", "DataLoader", "data.workers"}:
        assert word not in shown
    log = (demo_run["out"] / "runs" / "baseline" / "train.log").read_text()
    assert "data path" in log  # the trainer's notes are kept, in the run's log


@pytest.mark.slow
def test_live_baseline_keeps_the_input_colours(demo_run: dict[str, Any]) -> None:
    """No colour cast: per channel, the mean of the live baseline's output is within one 8-bit
    level of the mean of its input (upscaling does not change the mean colour of a photo)."""
    from superres.inference import upscale
    from superres.io import list_images, read_array
    from superres.modelfile import load_model

    out, metrics = demo_run["out"], demo_run["metrics"]
    net = load_model(metrics["live"]["runs"]["baseline"]["model_file"])
    for path in list_images([out / "test" / "LR_bicubic" / "X4"]):
        lr = read_array(path).astype(np.float32) / 255.0
        sr = upscale(net, lr, tile=0, device="cpu")
        shift = (sr.reshape(-1, 3).mean(0) - lr.reshape(-1, 3).mean(0)) * 255
        assert np.abs(shift).max() < 1.0, (path.name, shift)


@pytest.mark.slow
def test_page_shows_every_sheet_and_table(demo_run: dict[str, Any]) -> None:
    from PIL import Image

    out, metrics = demo_run["out"], demo_run["metrics"]
    page = out / "index.html"
    assert metrics["page"] == str(page) and str(page.resolve()) in demo_run["stdout"]
    text = page.read_text()
    for key in ("clean", "degraded", "live"):
        assert len(metrics[key]["sheets"]) == len(metrics["test_photos"])
        for sheet in metrics[key]["sheets"]:
            assert f"src='{Path(sheet).relative_to(out).as_posix()}'" in text
            with Image.open(sheet) as im:
                assert im.format == "PNG" and im.width > 500 and im.height > 500
        for name, m in metrics[key]["models"].items():
            assert f"<td>{m['psnr_y']:.2f}</td>" in text
    assert metrics["live"]["note"] in text


@pytest.mark.slow
def test_layout_and_held_out_images(demo_run: dict[str, Any]) -> None:
    from superres.io import read_array

    out, metrics = demo_run["out"], demo_run["metrics"]
    train_names = {p.stem for p in (out / "images" / "train").glob("*.png")}
    test_names = {p.stem for p in (out / "test" / "HR").glob("*.png")}
    assert train_names == set(metrics["train_photos"]) and test_names == set(metrics["test_photos"])
    assert train_names.isdisjoint(test_names) and len(test_names) >= 2
    for name in test_names:
        hr = read_array(out / "test" / "HR" / f"{name}.png")
        for lr_dir in ("LR_bicubic", "LR_medium"):
            lr = read_array(out / "test" / lr_dir / "X4" / f"{name}.png")
            assert lr.shape == (hr.shape[0] // 4, hr.shape[1] // 4, 3) and lr.dtype == np.uint8
    with np.load(out / "patches" / "hr_lr_images.npz") as z:
        assert z["hr"].shape[1:] == (128, 128, 3) and z["lr"].shape[1:] == (32, 32, 3)
        assert z["hr"].shape[0] == metrics["patches"]["count"]


def test_shipped_selection_discovers_photo_models() -> None:
    from superres.demo import shipped_selection
    from superres.modelfile import list_models

    entries = list_models()
    fake = {"shipped": True, "kind": "shipped", "purpose": "photo", "params": 1, "scores": {}, "psnr_y": None}
    with_photo = entries + [{**fake, "name": "photo-x4", "scale": 4}, {**fake, "name": "photo-x2", "scale": 2}]
    chosen = shipped_selection(with_photo)
    assert "photo-x4" in chosen and "photo-x2" not in chosen
    assert len(chosen) == len(set(chosen))
    assert "photo-x4" not in shipped_selection(entries)


def test_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    from superres.demo import run_demo

    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(SuperresError, match="not written by superres demo"):
        run_demo(tmp_path, seconds=1)
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    with pytest.raises(SuperresError, match="--seconds"):
        run_demo(tmp_path / "new", seconds=0)
