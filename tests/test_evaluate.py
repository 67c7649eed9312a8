"""`superres eval`: the published bicubic figures, the report/CLI contract, and bad-input errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from superres.cli import main
from superres.errors import SuperresError
from superres.evaluate import evaluate, format_report

# Bicubic rows of the VDSR/LapSRN/RCAN tables (PROTOCOL.md), (PSNR dB, SSIM) on Y.
PUBLISHED_BICUBIC = {
    ("Set5", 2): (33.66, 0.9299),
    ("Set5", 3): (30.39, 0.8682),
    ("Set5", 4): (28.42, 0.8104),
    ("Set14", 2): (30.24, 0.8688),
    ("Set14", 3): (27.55, 0.7742),
    ("Set14", 4): (26.00, 0.7027),
}
SET14 = ["baboon", "barbara", "bridge", "coastguard", "comic", "face", "flowers", "foreman", "lenna",
         "man", "monarch", "pepper", "ppt3", "zebra"]


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(array).save(path)


def _smooth(h: int, w: int, seed: int, channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / 16.0
    planes = [127 + 90 * np.sin(xx * rng.uniform(0.5, 1.5) + yy * rng.uniform(0.5, 1.5) + rng.uniform(0, 6))
              for _ in range(channels)]
    a = np.clip(np.round(np.stack(planes, -1) + rng.normal(0, 8, (h, w, channels))), 0, 255).astype(np.uint8)
    return a if channels > 1 else a[:, :, 0]


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _assert_user_error(code: int, out: str, err: str, *fragments: str) -> None:
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


# --------------------------------------------------------------------------- conformance
@pytest.mark.shared_data
@pytest.mark.parametrize(("set_name", "scale"), sorted(PUBLISHED_BICUBIC))
def test_bicubic_reproduces_published_figures(shared_data: Path, set_name: str, scale: int) -> None:
    report = evaluate("bicubic", shared_data / set_name, scale=scale)
    psnr_pub, ssim_pub = PUBLISHED_BICUBIC[(set_name, scale)]
    assert abs(report["psnr_y"] - psnr_pub) <= 0.02, report["psnr_y"]
    assert abs(report["ssim_y"] - ssim_pub) <= 0.002, report["ssim_y"]
    assert report["dataset"] == set_name and report["scale"] == scale and report["model"] == "bicubic"
    assert report["count"] == len(report["images"]) == (5 if set_name == "Set5" else 14)
    assert report["lr_source"] == f"LR_bicubic/X{scale}"
    # The set figure is the plain mean of the per-image figures.
    assert report["psnr_y"] == pytest.approx(np.mean([im["psnr_y"] for im in report["images"]]), abs=1e-12)
    assert report["ssim_y"] == pytest.approx(np.mean([im["ssim_y"] for im in report["images"]]), abs=1e-12)


@pytest.mark.shared_data
def test_cli_json_set14(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run_cli(["eval", "--model", "bicubic", "--data", str(shared_data / "Set14"), "--scale", "4", "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)  # exactly one JSON document: json.loads rejects trailing data
    assert isinstance(report, dict)
    assert {"dataset", "scale", "model", "psnr_y", "ssim_y", "images"} <= report.keys()
    assert report["dataset"] == "Set14" and report["scale"] == 4 and report["model"] == "bicubic"
    assert [im["name"] for im in report["images"]] == SET14
    assert abs(report["psnr_y"] - 26.00) <= 0.02 and abs(report["ssim_y"] - 0.7027) <= 0.002
    # mod-cropped sizes: comic is 250x361 -> 248x360 at x4
    comic = report["images"][SET14.index("comic")]
    assert comic["size"] == [248, 360]


@pytest.mark.shared_data
def test_cli_table(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run_cli(["eval", "--data", str(shared_data / "Set5"), "--scale", "4"], capsys)
    assert code == 0, err
    for name in ("baby", "bird", "butterfly", "head", "woman", "mean", "Set5", "x4"):
        assert name in out
    mean_line = next(line for line in out.splitlines() if line.startswith("mean"))
    psnr_text, ssim_text = mean_line.split()[1:3]
    assert abs(float(psnr_text) - 28.42) <= 0.02 and abs(float(ssim_text) - 0.8104) <= 0.002


@pytest.mark.shared_data
def test_generated_lr_matches_official_x3(shared_data: Path, tmp_path: Path) -> None:
    """Without LR_bicubic the LR is made with MATLAB-exact imresize; the official X3 files are
    reproduced bit for bit (SOURCES.md), so the scores must be identical to the official-LR ones."""
    hr_dir = tmp_path / "Set5" / "HR"
    hr_dir.mkdir(parents=True)
    for p in sorted((shared_data / "Set5" / "HR").glob("*.png")):
        (hr_dir / p.name).symlink_to(p)
    generated = evaluate("bicubic", tmp_path / "Set5", scale=3)
    official = evaluate("bicubic", shared_data / "Set5", scale=3)
    assert "generated" in generated["lr_source"]
    assert generated["images"] == official["images"]


# --------------------------------------------------------------------------- synthetic folders
def _bench(root: Path, names: dict[str, tuple[int, int]], scale: int, channels: int = 3) -> Path:
    """A benchmark folder with smooth random HR images and LR made by block-averaging the mod-crop."""
    for i, (name, (h, w)) in enumerate(names.items()):
        hr = _smooth(h, w, seed=i, channels=channels)
        _write_png(root / "HR" / f"{name}.png", hr)
        crop = hr[: h - h % scale, : w - w % scale].astype(np.float64)
        lr = crop.reshape(h // scale, scale, w // scale, scale, *crop.shape[2:]).mean(axis=(1, 3))
        _write_png(root / "LR_bicubic" / f"X{scale}" / f"{name}.png", np.round(lr).astype(np.uint8))
    return root


def test_report_contract_and_gray(tmp_path: Path) -> None:
    root = _bench(tmp_path / "Mini", {"a": (50, 46), "b": (61, 53)}, 2, channels=1)
    report = evaluate("bicubic", root, scale=2)
    assert report["dataset"] == "Mini"
    assert [im["name"] for im in report["images"]] == ["a", "b"]
    assert report["images"][1]["size"] == [52, 60]
    json.dumps(report, allow_nan=False)  # strictly valid JSON
    assert all(math.isfinite(im["psnr_y"]) and 0 < im["ssim_y"] <= 1 for im in report["images"])
    text = format_report(report)
    assert "a" in text and "mean" in text and f"{report['psnr_y']:.3f}" in text


def test_identical_images_are_capped(tmp_path: Path) -> None:
    # A constant image: bicubic reproduces it exactly, PSNR = inf -> reported as the 100 dB cap.
    root = tmp_path / "Flat"
    _write_png(root / "HR" / "flat.png", np.full((40, 40, 3), 77, np.uint8))
    _write_png(root / "LR_bicubic" / "X4" / "flat.png", np.full((10, 10, 3), 77, np.uint8))
    report = evaluate("bicubic", root, scale=4)
    assert report["images"][0]["psnr_y"] == 100.0 == report["psnr_y"] == report["psnr_cap_db"]
    assert report["ssim_y"] == pytest.approx(1.0)
    json.dumps(report, allow_nan=False)


def test_lr_with_scale_suffix_is_found(tmp_path: Path) -> None:
    root = _bench(tmp_path / "B", {"img": (48, 48)}, 4)
    lr = root / "LR_bicubic" / "X4" / "img.png"
    lr.rename(lr.with_name("imgx4.png"))
    assert evaluate("bicubic", root, scale=4)["count"] == 1


def test_model_branch_quantises_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in model whose float output is bicubic/255 must score exactly like bicubic once the
    output is rounded back to 8 bits; a model of the wrong scale is refused."""
    from superres.resize import imresize

    class Net:
        scale = 2

    calls: dict[str, object] = {}

    def load_model(name: str, device: str = "cpu") -> Net:
        calls["load"] = (name, device)
        return Net()

    def upscale(net: Net, image: np.ndarray, tile: int = 0, device: str = "cpu") -> np.ndarray:
        calls["upscale"] = (image.dtype, tile, device)
        assert image.dtype == np.float32 and image.max() <= 1.0
        lr8 = np.round(image * 255).astype(np.uint8)
        return (imresize(lr8, net.scale).astype(np.float32) / 255) + np.float32(0.3 / 255)  # rounds away

    import superres.evaluate  # the names evaluate calls (imported at its top)

    monkeypatch.setattr(superres.evaluate, "load_model", load_model)
    monkeypatch.setattr(superres.evaluate, "upscale", upscale)
    root = _bench(tmp_path / "M", {"p": (40, 36), "q": (33, 47)}, 2)
    got = evaluate("my.safetensors", root, scale=2, tile=64, device="cpu")
    ref = evaluate("bicubic", root, scale=2)
    assert calls["load"] == ("my.safetensors", "cpu") and calls["upscale"] == (np.float32, 64, "cpu")
    assert got["model"] == "my.safetensors"
    assert got["images"] == ref["images"]
    with pytest.raises(SuperresError, match="x2, not x3"):
        evaluate("my.safetensors", _bench(tmp_path / "M3", {"p": (39, 36)}, 3), scale=3)


def test_unsupported_scale_api() -> None:
    with pytest.raises(SuperresError, match="unsupported scale"):
        evaluate("bicubic", Path("."), scale=5)


def test_cli_shows_a_bar_over_the_images(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`superres eval` draws a bar over the images on stderr (stdout stays the one JSON document);
    a run shorter than superres.progress.DELAY_S draws nothing, so the delay is 0 here."""
    import superres.progress

    _bench(tmp_path / "B", {"a": (48, 52), "b": (40, 44), "c": (44, 40)}, 4)
    monkeypatch.setattr(superres.progress, "DELAY_S", 0)
    code, out, err = _run_cli(["eval", "--data", str(tmp_path / "B"), "--scale", "4", "--json"], capsys)
    assert code == 0 and json.loads(out)["count"] == 3
    assert "B x4:" in err and "/3 [" in err and "image/s" in err


# --------------------------------------------------------------------------- CLI errors
def test_cli_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope"
    code, out, err = _run_cli(["eval", "--data", str(missing), "--scale", "4"], capsys)
    _assert_user_error(code, out, err, str(missing), "not found")


def test_cli_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run_cli(["eval", "--data", str(tmp_path), "--scale", "4"], capsys)
    _assert_user_error(code, out, err, str(tmp_path / "HR"))
    (tmp_path / "HR").mkdir()
    code, out, err = _run_cli(["eval", "--data", str(tmp_path), "--scale", "4"], capsys)
    _assert_user_error(code, out, err, str(tmp_path / "HR"), "no images")


def test_cli_size_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _bench(tmp_path / "Bad", {"x": (42, 40)}, 4)  # 40x42 (WxH) -> crop 40x40 -> LR 10x10
    lr = root / "LR_bicubic" / "X4" / "x.png"
    _write_png(lr, np.zeros((10, 9, 3), np.uint8))  # 9x10 (WxH)
    code, out, err = _run_cli(["eval", "--data", str(root), "--scale", "4"], capsys)
    _assert_user_error(code, out, err, str(lr), str(root / "HR" / "x.png"), "9x10", "40x42", "10x10")


def test_cli_missing_lr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _bench(tmp_path / "B", {"one": (40, 40), "two": (40, 40)}, 4)
    (root / "LR_bicubic" / "X4" / "two.png").unlink()
    code, out, err = _run_cli(["eval", "--data", str(root), "--scale", "4"], capsys)
    _assert_user_error(code, out, err, str(root / "LR_bicubic" / "X4"), "two.png")


def test_cli_corrupt_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _bench(tmp_path / "C", {"good": (40, 40)}, 4)
    bad = root / "HR" / "zz_bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"this is not a png body" * 4)
    code, out, err = _run_cli(["eval", "--data", str(root), "--scale", "4"], capsys)
    _assert_user_error(code, out, err, str(bad))


def test_cli_unsupported_scale(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run_cli(["eval", "--data", str(tmp_path), "--scale", "5"], capsys)
    assert code == 2 and out == ""
    assert "unsupported scale 5" in err and "Traceback" not in err
