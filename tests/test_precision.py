"""``--precision``: bf16 autocast against fp32, the ``auto`` policy, and its refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import superres.devices
import superres.precision
from superres.errors import SuperresError
from superres.precision import TOLERANCE_DB, autocast_for, model_key, resolve_precision

CPU = torch.device("cpu")
#: Largest per-pixel difference bf16 autocast may make against fp32 (values in [0, 1]); measured on
#: the shipped models: 0.013-0.014 (docs/BENCHMARKS.md, "CPU inference precision").
BF16_PIXEL_TOLERANCE = 0.03

PROFILE = {
    "models": {
        "good": {"delta_db": {"bf16": {"Set5": -0.004, "Set14": 0.003}}},
        "edge": {"delta_db": {"bf16": {"Set5": -0.01, "Set14": 0.01}}},
        "bad": {"delta_db": {"bf16": {"Set5": -0.002, "Set14": -0.0101}}},
        "half": {"delta_db": {"bf16": {"Set5": -0.002}}},
    }
}


@pytest.fixture()
def native(monkeypatch):
    def set_native(bf16: bool, fp16: bool = False) -> None:
        monkeypatch.setattr(superres.devices, "cpu_has_native_bf16", lambda: bf16)
        monkeypatch.setattr(superres.precision, "cpu_has_native_fp16", lambda: fp16)

    return set_native


@pytest.mark.parametrize("name, want", [("good", "bf16"), ("edge", "bf16"), ("bad", "fp32"), ("half", "fp32"), ("none", "fp32")])
def test_auto_picks_bf16_only_within_the_tolerance_on_both_sets(native, name: str, want: str) -> None:
    native(True)
    got, note = resolve_precision("auto", CPU, name, profile=PROFILE)
    assert got == want
    assert note is not None and note.startswith(f"precision auto: {want}")


def test_auto_is_fp32_without_native_bf16_with_a_one_line_note(native) -> None:
    native(False)
    got, note = resolve_precision("auto", CPU, "good", profile=PROFILE)
    assert got == "fp32"
    assert "no native bf16" in note and "\n" not in note


def test_explicit_choices(native) -> None:
    native(False)
    assert resolve_precision("fp32", CPU, "bad", profile=PROFILE) == ("fp32", None)
    got, note = resolve_precision("bf16", CPU, "bad", profile=PROFILE)  # runs, emulated, with a note
    assert got == "bf16" and "emulates" in note
    with pytest.raises(SuperresError, match="--precision fp16: this CPU has no native fp16"):
        resolve_precision("fp16", CPU, "good", profile=PROFILE)
    native(True, fp16=True)
    assert resolve_precision("fp16", CPU, "good", profile=PROFILE) == ("fp16", None)
    with pytest.raises(SuperresError, match="the onnx backend runs fp32"):
        resolve_precision("bf16", CPU, "good", backend="onnx", profile=PROFILE)
    assert resolve_precision("auto", CPU, "good", backend="onnx", profile=PROFILE) == ("fp32", None)
    with pytest.raises(SuperresError, match="unknown"):
        resolve_precision("int4", CPU)


def test_model_key_names_shipped_models_only() -> None:
    from superres.modelfile import WEIGHTS_DIR

    assert model_key("lumanet-x4") == "lumanet-x4"
    assert model_key(str(WEIGHTS_DIR / "lumanet-x4.safetensors")) == "lumanet-x4"
    assert model_key("/tmp/elsewhere/my.safetensors") is None
    assert model_key(torch.nn.Conv2d(1, 1, 1)) is None


def test_the_shipped_profile_covers_every_shipped_model() -> None:
    from superres.modelfile import shipped_names

    models = superres.precision.load_profile()["models"]
    for name in shipped_names():
        deltas = models[name]["delta_db"]["bf16"]
        assert set(deltas) >= {"Set5", "Set14"}, name
        assert models[name]["ms_per_mp"]["fp32"] > 0, name


@pytest.mark.skipif(not superres.devices.cpu_has_native_bf16(), reason="bf16 is emulated on this CPU")
@pytest.mark.parametrize("name", ["lumanet-x4", "enhanced-x4"])
def test_bf16_output_stays_close_to_fp32(name: str) -> None:
    from skimage import data as samples

    from superres.inference import upscale

    image = samples.astronaut()[200:264, 180:244].astype(np.float32) / 255.0
    fp32 = upscale(name, image, tile=0, precision="fp32")
    bf16 = upscale(name, image, tile=0, precision="bf16")
    diff = np.abs(fp32 - bf16)
    assert diff.max() < BF16_PIXEL_TOLERANCE
    assert diff.mean() < 2e-3
    assert not np.array_equal(fp32, bf16)  # bf16 really ran


def test_autocast_for_maps_precisions() -> None:
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.rand(1, 3, 8, 8)
    with autocast_for(CPU, "bf16"):
        assert conv(x).dtype == torch.bfloat16
    with autocast_for(CPU, "fp32"):
        assert conv(x).dtype == torch.float32
    with pytest.raises(SuperresError, match="resolve 'auto'"):
        autocast_for(CPU, "auto")


def test_upscale_tensor_precision_on_the_onnx_model_is_refused() -> None:
    from superres.inference import upscale_tensor

    class Fake:  # the callable shape of an OnnxModel, not an nn.Module
        scale, in_channels = 2, 1

        def __call__(self, x):
            return torch.nn.functional.interpolate(x, scale_factor=2)

    with pytest.raises(SuperresError, match="onnx backend runs fp32"):
        upscale_tensor(Fake(), torch.rand(1, 1, 8, 8), precision="bf16")


def test_tolerance_is_the_issue_s() -> None:
    assert TOLERANCE_DB == 0.01


# --------------------------------------------------------------------------- --bf16 (issue 18)
def _cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    from superres.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _tiny_set(root):
    """root/Tiny/HR: two 48x40 RGB photo crops (evaluate makes the LR)."""
    from skimage import data as samples

    from superres.io import Image, write_image

    for k, (y, x) in enumerate([(180, 200), (100, 300)]):
        crop = samples.astronaut()[y:y + 48, x:x + 40].astype(np.float32) / 255.0
        write_image(root / "Tiny" / "HR" / f"{k}.png", Image(crop, None, 8))
    return root


def test_bf16_option_is_precision_bf16_on_upscale_eval_and_benchmark(tmp_path, capsys, shared_data) -> None:
    import json

    from skimage import data as samples

    from superres.io import Image, read_raw, write_image

    src = tmp_path / "a.png"
    write_image(src, Image(samples.astronaut()[200:264, 180:244].astype(np.float32) / 255.0, None, 8))
    outs = {}
    for label, flags in [("bf16", ["--bf16"]), ("precision", ["--precision", "bf16"]), ("fp32", ["--precision", "fp32"])]:
        code, _, err = _cli(capsys, ["upscale", str(src), "--model", "lumanet-x4", "--device", "cpu", "--tile", "0",
                                     "--out", str(tmp_path / label), *flags])
        assert code == 0, err
        outs[label] = read_raw(tmp_path / label / "a.png").pixels.astype(np.float32) / 255.0
    assert np.array_equal(outs["bf16"], outs["precision"])
    diff = np.abs(outs["bf16"] - outs["fp32"])
    assert diff.max() < BF16_PIXEL_TOLERANCE and not np.array_equal(outs["bf16"], outs["fp32"])  # bf16 ran, close

    scores = {}
    for label, flags in [("bf16", ["--bf16"]), ("precision", ["--precision", "bf16"]), ("fp32", [])]:
        code, out, err = _cli(capsys, ["eval", "--model", "lumanet-x4", "--data", str(shared_data / "Set5"),
                                       "--scale", "4", "--device", "cpu", "--json", *flags])
        assert code == 0, err
        scores[label] = json.loads(out)["psnr_y"]
    assert scores["bf16"] == scores["precision"] and scores["bf16"] != scores["fp32"]
    # within the tolerance auto accepts, as the shipped profile measured for this model
    assert abs(scores["bf16"] - scores["fp32"]) <= TOLERANCE_DB

    root = _tiny_set(tmp_path / "data")
    code, _, err = _cli(capsys, ["benchmark", "--sets", "Tiny", "--scales", "4", "--no-peers", "--data-root", str(root),
                                 "--models", "lumanet-x4", "--out", str(tmp_path / "bench"), "--quiet", "--bf16"])
    assert code == 0, err
    doc = json.loads((tmp_path / "bench" / "benchmark.json").read_text())
    assert doc["precision"] == "bf16" and "--precision bf16" in doc["command"]


def test_bf16_conflicts_and_devices_without_bf16_are_one_line_errors(tmp_path, capsys, monkeypatch) -> None:
    from superres.io import Image, write_image

    src = tmp_path / "a.png"
    write_image(src, Image(np.full((8, 8, 3), 0.5, np.float32), None, 8))
    root = _tiny_set(tmp_path / "data")
    commands = {
        "upscale": ["upscale", str(src), "--model", "lumanet-x4", "--out", str(tmp_path / "out")],
        "eval": ["eval", "--model", "lumanet-x4", "--data", str(root / "Tiny"), "--scale", "4"],
        "benchmark": ["benchmark", "--sets", "Tiny", "--scales", "4", "--no-peers", "--data-root", str(root),
                      "--out", str(tmp_path / "out")],
    }
    for name, argv in commands.items():
        code, _, err = _cli(capsys, [*argv, "--bf16", "--precision", "fp32"])
        assert code == 2 and err == "superres: error: --bf16 and --precision fp32 conflict: give one of them\n", name
    code, _, err = _cli(capsys, [*commands["eval"], "--bf16", "--backend", "onnx"])
    assert code == 2 and err.count("\n") == 1 and err.startswith("superres: error: --bf16: the onnx backend runs fp32")

    # a GPU without bf16 (pretended: nothing reaches it, the refusal comes before any work)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    for name, argv in commands.items():
        code, _, err = _cli(capsys, [*argv, "--bf16", "--device", "cuda"])
        assert code == 2 and err == "superres: error: --bf16: this GPU has no bf16; use fp16 or fp32\n", (name, err)
    assert not (tmp_path / "out").exists()
