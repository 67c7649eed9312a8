"""`superres benchmark` on a tiny generated benchmark folder: every row must be what `superres eval`
gives for the same method, and the cost columns must match independent counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from superres.benchmark import run_benchmark
from superres.errors import SuperresError
from superres.evaluate import evaluate
from superres.models import build


@pytest.fixture()
def bench_root(tmp_path: Path) -> Path:
    """root/Tiny/HR with two RGB images and one gray image (no LR folder: evaluate makes the LR)."""
    from superres.io import Image, write_image

    rng = np.random.default_rng(0)
    hr = tmp_path / "data" / "Tiny" / "HR"
    yy, xx = np.mgrid[0:26, 0:30] / 30.0
    smooth = np.stack([0.2 + 0.6 * xx, 0.3 + 0.4 * yy, 0.7 - 0.5 * xx * yy], axis=2)
    write_image(hr / "a.png", Image(smooth.astype(np.float32), None, 8))
    noisy = np.clip(smooth + 0.05 * rng.standard_normal(smooth.shape), 0, 1)
    write_image(hr / "b.png", Image(noisy.astype(np.float32), None, 8))
    write_image(hr / "c.png", Image(smooth[:, :, :1].astype(np.float32), None, 8))
    return tmp_path / "data"


@pytest.fixture()
def model_file(tmp_path: Path) -> Path:
    from superres.modelfile import save_model

    torch.manual_seed(0)
    net = build("enhanced", scale=2, in_channels=3, channels=8, num_blocks=1)
    return save_model(tmp_path / "tiny_x2.safetensors", net, arch="enhanced", args={"channels": 8, "num_blocks": 1})


@pytest.mark.slow
def test_rows_equal_evaluate_and_files_are_written(bench_root: Path, model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    doc = run_benchmark(sets=["Tiny"], scales=[2, 3], models=[str(model_file)], peers=False,
                        data_root=bench_root, out=out, threads=1, command="superres benchmark ...")
    rows = {(r["method"], r["scale"]): r for r in doc["rows"]}
    # bicubic at both scales, every shipped model at its own scale, and the x2 model only at x2
    from superres.modelfile import list_models

    shipped = {(e["name"], e["scale"]) for e in list_models() if e.get("shipped") and e["scale"] in (2, 3)}
    assert set(rows) == {("bicubic", 2), ("bicubic", 3), ("tiny_x2", 2)} | shipped
    for scale in (2, 3):
        ref = evaluate("bicubic", bench_root / "Tiny", scale=scale)
        assert rows[("bicubic", scale)]["psnr_y"] == ref["psnr_y"]
        assert rows[("bicubic", scale)]["ssim_y"] == ref["ssim_y"]
    ref = evaluate(str(model_file), bench_root / "Tiny", scale=2)
    mine = rows[("tiny_x2", 2)]
    assert mine["psnr_y"] == ref["psnr_y"] and mine["ssim_y"] == ref["ssim_y"]

    # Costs: parameters as counted by hand from the state dict; GFLOPs of a real 256x256 -> 512x512
    # pass (counted directly, not scaled from the 64x64 probe the benchmark uses).
    from superres.modelfile import load_model
    from superres.models.complexity import count_flops

    net = load_model(model_file)
    assert mine["params"] == sum(v.numel() for v in net.state_dict().values())
    assert mine["gflops_512"] == pytest.approx(count_flops(net, (1, 3, 256, 256)) / 1e9, rel=1e-9)
    assert mine["ms_per_mp"] > 0 and mine["output_pixels"] == 3 * 26 * 30  # 3 images, mod-cropped at x2: 26x30

    saved = json.loads((out / "benchmark.json").read_text())
    assert saved["context"]["threads"] == 1 and saved["command"] == "superres benchmark ..."
    md = (out / "benchmark.md").read_text()
    assert "| tiny_x2 |" in md and "**x3**" in md and f"{mine['psnr_y']:.2f} / {mine['ssim_y']:.4f}" in md
    assert [p.name for p in out.iterdir()] and not [p for p in out.iterdir() if p.name.startswith(".")]


def test_cli_benchmark_shows_a_line_per_row_and_a_bar_per_set(bench_root: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --quiet: one line per finished row, and each row's images as a bar while it runs
    (the shipped models are left out here: bicubic is the one row)."""
    import superres.benchmark
    import superres.progress
    from superres.cli import main

    monkeypatch.setattr(superres.benchmark, "_our_models", lambda models, scale: iter(()))
    monkeypatch.setattr(superres.progress, "DELAY_S", 0)
    assert main(["benchmark", "--sets", "Tiny", "--scales", "4", "--no-peers", "--data-root", str(bench_root),
                 "--out", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert "Tiny x4:" in err and "/3 [" in err and "image/s" in err
    rows = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("x4 Tiny")]
    assert len(rows) == 1 and "bicubic" in rows[0] and " dB / " in rows[0]
    assert main(["benchmark", "--sets", "Tiny", "--scales", "4", "--no-peers", "--data-root", str(bench_root),
                 "--out", str(tmp_path / "q"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_cli_benchmark_and_errors(bench_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from superres.cli import main

    out = tmp_path / "cli"
    code = main(["benchmark", "--sets", "Tiny", "--scales", "4", "--no-peers", "--data-root", str(bench_root),
                 "--out", str(out), "--quiet"])
    assert code == 0
    doc = json.loads((out / "benchmark.json").read_text())
    from superres.modelfile import list_models

    shipped_x4 = sorted(e["name"] for e in list_models() if e.get("shipped") and e["scale"] == 4)
    assert [r["method"] for r in doc["rows"]] == ["bicubic", *shipped_x4]  # every shipped x4 model, no other scale
    assert doc["command"].startswith("superres benchmark --sets Tiny --scales 4 --no-peers")
    assert main(["benchmark", "--sets", "Nope", "--no-peers", "--data-root", str(bench_root), "--out", str(out)]) == 2
    assert "Nope" in capsys.readouterr().err
    with pytest.raises(SuperresError, match="peers folder"):
        run_benchmark(sets=["Tiny"], scales=[2], peers=True, data_root=bench_root, peers_dir=tmp_path / "none", out=out)
    with pytest.raises(SuperresError, match="--models"):
        run_benchmark(sets=["Tiny"], scales=[2], models=["no-such"], peers=False, data_root=bench_root, out=out)


def test_cli_benchmark_device_auto_is_the_default_and_printed_once(
    bench_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import superres.benchmark
    import superres.devices
    from superres.cli import main

    # auto resolves through superres.devices.auto_device; the device it picks (a GPU here, pretended:
    # the spy records it and runs the model on the CPU) must reach every model's upscaler
    picked = torch.device("cuda")
    monkeypatch.setattr(superres.devices, "auto_device", lambda: picked)
    real, devices_used = superres.benchmark.make_upscaler, []

    def spy(model, scale, **kwargs):
        devices_used.append((model, kwargs.get("device")))
        return real(model, scale, **{**kwargs, "device": "cpu"})

    monkeypatch.setattr(superres.benchmark, "make_upscaler", spy)
    out = tmp_path / "auto"
    code = main(["benchmark", "--sets", "Tiny", "--scales", "2", "--no-peers", "--data-root", str(bench_root),
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert err.count("(--device auto)") == 1 and "superres: device cuda (--device auto)" in err
    models = [d for m, d in devices_used if m != "bicubic"]
    assert models and set(models) == {"cuda"}
    doc = json.loads((out / "benchmark.json").read_text())
    assert doc["device"] == "cuda" and "--device" not in doc["command"]
    assert "| cuda ms/MP |" in (out / "benchmark.md").read_text()
    devices_used.clear()

    # an explicit device is not announced, and is in the recorded command
    code = main(["benchmark", "--sets", "Tiny", "--scales", "2", "--no-peers", "--data-root", str(bench_root),
                 "--out", str(out), "--device", "cpu", "--quiet"])
    assert code == 0 and "(--device auto)" not in capsys.readouterr().err
    assert {d for m, d in devices_used if m != "bicubic"} == {"cpu"}
    assert json.loads((out / "benchmark.json").read_text())["command"].endswith("--device cpu --out " + str(out))

    # an absent device: one line, exit 2, before any work
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main(["benchmark", "--sets", "Tiny", "--scales", "2", "--no-peers", "--data-root", str(bench_root),
                 "--out", str(tmp_path / "none"), "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--device cuda: CUDA is not available" in err
    assert not (tmp_path / "none").exists()
