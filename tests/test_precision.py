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
