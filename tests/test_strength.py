"""Network interpolation (``NAME@S``, ``upscale --strength``) and the photo models (``upscale --for photo``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import superres.modelfile as modelfile
from superres.errors import SuperresError
from superres.io import Image, read_image, write_image
from superres.models import build
from superres.speed import DEFAULT_PHOTO_STRENGTH, choose_default_model, model_for

CPU = torch.device("cpu")
ARGS = {"scale": 4, "in_channels": 3, "channels": 8, "num_blocks": 1}


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = build("enhanced", **ARGS)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


@pytest.fixture()
def weights(tmp_path: Path, monkeypatch) -> Path:
    """A weights folder holding a photo pair (fid, gan -> fid), a plain benchmark model and a photo
    model without a partner."""
    folder = tmp_path / "weights"
    folder.mkdir()
    photo = {"purpose": "photo", "scores": {"Set5": {"psnr_y": 27.0}}}
    modelfile.save_model(folder / "fid.safetensors", _net(1), arch="enhanced", args=ARGS, metadata=photo)
    modelfile.save_model(folder / "gan.safetensors", _net(2), arch="enhanced", args=ARGS,
                         metadata=dict(photo, strength_partner="fid", scores={"Set5": {"psnr_y": 26.0}}))
    modelfile.save_model(folder / "clean.safetensors", _net(3), arch="enhanced", args=ARGS,
                         metadata={"scores": {"Set5": {"psnr_y": 33.0}}})
    other = dict(ARGS, channels=12)
    torch.manual_seed(4)
    modelfile.save_model(folder / "wide.safetensors", build("enhanced", **other), arch="enhanced", args=other,
                         metadata={"purpose": "photo", "strength_partner": "fid"})
    monkeypatch.setattr(modelfile, "WEIGHTS_DIR", folder)
    return folder


def test_interpolate_state_is_linear_and_exact_at_the_ends() -> None:
    a = {"w": torch.tensor([0.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([4.0, -2.0]), "n": torch.tensor(7)}
    assert torch.equal(modelfile.interpolate_state(a, b, 0.0)["w"], a["w"])
    assert torch.equal(modelfile.interpolate_state(a, b, 1.0)["w"], b["w"])
    mid = modelfile.interpolate_state(a, b, 0.25)
    assert torch.allclose(mid["w"], torch.tensor([1.0, 1.0]))
    assert int(mid["n"]) == 7  # integer tensors are the model's, not blended
    with pytest.raises(SuperresError, match="different tensors"):
        modelfile.interpolate_state(a, {"w": b["w"]}, 0.5)
    with pytest.raises(SuperresError, match="shape"):
        modelfile.interpolate_state(a, {"w": torch.zeros(3), "n": b["n"]}, 0.5)


def test_load_model_at_a_strength_blends_with_the_partner(weights: Path) -> None:
    fid, gan = modelfile.load_model("fid"), modelfile.load_model("gan")
    x = torch.rand(1, 3, 9, 7, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(modelfile.load_model("gan@0")(x), fid(x), atol=1e-6)
        assert torch.allclose(modelfile.load_model("gan@1")(x), gan(x), atol=1e-6)
    half = modelfile.load_model("gan@0.5")
    for (key, got), f, g in zip(half.state_dict().items(), fid.state_dict().values(), gan.state_dict().values()):
        assert torch.allclose(got, (f + g) / 2, atol=1e-6), key
    assert half.superres_meta["strength"] == 0.5 and half.superres_meta["name"] == "gan@0.5"
    # at 0.5 the output differs from both ends (the blend is really used)
    with torch.no_grad():
        assert not torch.allclose(half(x), fid(x), atol=1e-4) and not torch.allclose(half(x), gan(x), atol=1e-4)


@pytest.mark.parametrize("spec, message", [
    ("fid@0.5", "no partner"),
    ("gan@1.01", r"in \[0, 1\]"),
    ("gan@-0.1", r"in \[0, 1\]"),
    ("gan@nan", r"in \[0, 1\]"),
    ("gan@half", "must be a number"),
    ("wide@0.5", "different networks"),
])
def test_bad_strength_specs_are_clear_errors(weights: Path, spec: str, message: str) -> None:
    with pytest.raises(SuperresError, match=message):
        modelfile.load_model(spec)


def test_a_file_whose_name_holds_an_at_sign_is_a_file(weights: Path, tmp_path: Path) -> None:
    odd = tmp_path / "run@2.safetensors"
    odd.write_bytes((weights / "clean.safetensors").read_bytes())
    assert modelfile.split_strength(str(odd)) == (str(odd), None)
    assert modelfile.load_model(str(odd)).superres_meta["arch"] == "enhanced"


ENTRIES = [
    {"name": "clean", "shipped": True, "scale": 4, "psnr_y": 33.0},
    {"name": "fid", "shipped": True, "scale": 4, "psnr_y": 27.5, "purpose": "photo"},
    {"name": "gan", "shipped": True, "scale": 4, "psnr_y": 26.0, "purpose": "photo", "strength_partner": "fid"},
]
PROFILE = {"cpu": "Test CPU", "threads": 1, "models": {n: {"ms_per_mp": {"fp32": 100.0}} for n in ("clean", "fid", "gan")}}


def _choose(purpose: str, entries=ENTRIES) -> str:
    return choose_default_model(CPU, entries=entries, profile=PROFILE, precision_for=lambda n: "fp32", purpose=purpose)[0]


def test_photo_models_are_chosen_only_for_photos() -> None:
    assert _choose("benchmark") == "clean"
    # the tunable pair outranks the fidelity model's higher PSNR
    assert _choose("photo") == "gan"
    assert _choose("photo", ENTRIES[:2]) == "fid"
    assert _choose("benchmark", [dict(e, psnr_y=40.0) if e["name"] == "fid" else e for e in ENTRIES]) == "clean"
    with pytest.raises(SuperresError, match="no x4 model for photos"):
        _choose("photo", ENTRIES[:1])
    with pytest.raises(SuperresError, match="--for video"):
        _choose("video")


def test_the_photo_choice_quotes_the_speed_of_the_blend_that_runs() -> None:
    """The GAN alone measured slow in fp32, its default blend fast in bf16: the blend's figure decides and is quoted."""
    blend = f"gan@{DEFAULT_PHOTO_STRENGTH:g}"
    profile = {"cpu": "Test CPU", "threads": 1, "models": {
        "fid": {"ms_per_mp": {"fp32": 100.0}}, "gan": {"ms_per_mp": {"fp32": 1500.0}},
        blend: {"ms_per_mp": {"fp32": 1500.0, "bf16": 400.0}}}}
    name, why = choose_default_model(CPU, entries=ENTRIES, profile=profile, purpose="photo",
                                     precision_for=lambda n: "bf16" if "@" in n else "fp32")
    assert name == "gan" and "400 ms/MP in bf16 at strength" in why, why
    # without a profiled blend the model's own figure counts: over the 1000 ms budget, so the fidelity model
    del profile["models"][blend]
    name, why = choose_default_model(CPU, entries=ENTRIES, profile=profile, purpose="photo", precision_for=lambda n: "fp32")
    assert name == "fid" and "100 ms/MP in fp32 measured" in why, why


def test_model_for_applies_the_default_strength_and_refuses_mixed_options(weights: Path) -> None:
    assert model_for(None, CPU) == (None, [])
    spec, notes = model_for(None, CPU, purpose="photo", entries=ENTRIES, profile=PROFILE)
    assert spec == f"gan@{DEFAULT_PHOTO_STRENGTH:g}"
    assert notes[0].startswith("model: gan ") and "0: fid" in notes[1]
    assert model_for(None, CPU, purpose="photo", strength=0.0, entries=ENTRIES, profile=PROFILE)[0] == "gan@0"
    assert model_for("gan", CPU, strength=1.0)[0] == "gan@1"
    assert model_for("gan", CPU, purpose="benchmark") == ("gan", [])
    with pytest.raises(SuperresError, match="--for photo chooses the model"):
        model_for("gan", CPU, purpose="photo")
    with pytest.raises(SuperresError, match="clean has no partner"):
        model_for("clean", CPU, strength=0.5)


def test_cli_upscale_strength_ends_match_the_two_models(weights: Path, tmp_path: Path, capsys) -> None:
    from superres.cli import main

    rng = np.random.default_rng(0)
    src = tmp_path / "in.png"
    write_image(src, Image(rng.random((12, 10, 3)).astype(np.float32)))
    outs = {}
    for name, extra in [("fid", ["--model", "fid"]), ("gan", ["--model", "gan"]),
                        ("s0", ["--model", "gan", "--strength", "0"]), ("s1", ["--model", "gan", "--strength", "1"]),
                        ("s05", ["--model", "gan", "--strength", "0.5"])]:
        code = main(["upscale", str(src), *extra, "--out", str(tmp_path / name), "--precision", "fp32", "--quiet"])
        assert code == 0, capsys.readouterr().err
        outs[name] = read_image(tmp_path / name / "in.png").data
    assert np.array_equal(outs["s0"], outs["fid"]) and np.array_equal(outs["s1"], outs["gan"])
    assert not np.array_equal(outs["s05"], outs["fid"]) and not np.array_equal(outs["s05"], outs["gan"])
    assert outs["s05"].shape == (48, 40, 3)


@pytest.mark.parametrize("extra, message", [
    (["--model", "clean", "--strength", "0.5"], "clean has no partner"),
    (["--model", "gan", "--for", "photo"], "--for photo chooses the model"),
])
def test_cli_strength_errors_are_one_line(weights: Path, tmp_path: Path, capsys, extra, message) -> None:
    from superres.cli import main

    src = tmp_path / "in.png"
    write_image(src, Image(np.zeros((8, 8, 3), np.float32)))
    code = main(["upscale", str(src), *extra, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]
    assert not (tmp_path / "o" / "in.png").exists()


@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan", "x"])
def test_cli_strength_out_of_range_is_a_usage_error(tmp_path: Path, capsys, value: str) -> None:
    from superres.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["upscale", str(tmp_path / "in.png"), "--strength", value])
    assert exc.value.code == 2 and "--strength" in capsys.readouterr().err


def test_cli_for_photo_runs_the_pair_at_the_default_strength_and_says_so(weights: Path, tmp_path: Path, capsys) -> None:
    from superres.cli import main

    src = tmp_path / "in.png"
    write_image(src, Image(np.random.default_rng(1).random((10, 10, 3)).astype(np.float32)))
    assert main(["upscale", str(src), "--for", "photo", "--out", str(tmp_path / "p"), "--precision", "fp32",
                 "--threads", "1"]) == 0
    err = capsys.readouterr().err
    assert "model: gan " in err and f"strength: {DEFAULT_PHOTO_STRENGTH:g} (0: fid" in err
    assert main(["upscale", str(src), "--model", f"gan@{DEFAULT_PHOTO_STRENGTH:g}", "--out", str(tmp_path / "q"),
                 "--precision", "fp32", "--quiet"]) == 0
    assert np.array_equal(read_image(tmp_path / "p" / "in.png").data, read_image(tmp_path / "q" / "in.png").data)
