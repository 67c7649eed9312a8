"""Model files: save/load round trip, metadata, shipped-model lookup, listing, and every error path."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from superres import modelfile
from superres.errors import SuperresError
from superres.modelfile import format_models, list_models, load_model, read_metadata, save_model
from superres.models import build, names

torch.set_num_threads(min(2, torch.get_num_threads()))

ARGS = {"scale": 3, "in_channels": 1, "channels": 8, "num_blocks": 2, "upsampler": "deconv"}


def _trained_like(name: str = "enhanced", **args: object) -> torch.nn.Module:
    """A model whose weights differ from a fresh build (so a load that silently re-initialises fails)."""
    torch.manual_seed(123)
    model = build(name, **(args or ARGS))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


def _header(path: Path) -> dict:
    """Parse the safetensors header by hand: u64 little-endian length, then that many bytes of JSON."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + length])


def test_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    model = _trained_like()
    path = save_model(tmp_path / "sub" / "m.safetensors", model, arch="enhanced", args=ARGS,
                      metadata={"iterations": 10, "scores": {"Set5": {"psnr_y": 30.1, "ssim_y": 0.85}}})
    loaded = load_model(path)
    assert not loaded.training
    assert loaded.scale == 3 and loaded.in_channels == 1
    x = torch.rand(2, 1, 9, 7)
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    meta = loaded.superres_meta
    assert meta["arch"] == "enhanced" and meta["args"] == ARGS
    assert meta["iterations"] == 10 and meta["scores"]["Set5"]["psnr_y"] == 30.1


def test_float16_storage_halves_the_file_and_keeps_buffers_exact(tmp_path: Path) -> None:
    """weights_dtype="float16": parameters stored as float16, buffers as they are, loaded as float32."""
    from safetensors.torch import load_file

    model = _trained_like()
    model.register_buffer("mean", torch.tensor([0.4488, 0.4371, 0.4040]))  # a persistent fixed buffer
    wide = save_model(tmp_path / "f32.safetensors", model, arch="enhanced", args=ARGS)
    half = save_model(tmp_path / "f16.safetensors", model, arch="enhanced", args=ARGS, weights_dtype="float16")
    stored = load_file(str(half))
    assert stored["mean"].dtype == torch.float32 and torch.equal(stored["mean"], model.mean)
    for name, p in model.named_parameters():
        assert stored[name].dtype == torch.float16 and torch.equal(stored[name], p.detach().half())
    assert half.stat().st_size < 0.55 * wide.stat().st_size
    assert read_metadata(half)["weights_dtype"] == "float16"
    del model.mean
    plain = save_model(tmp_path / "p16.safetensors", model, arch="enhanced", args=ARGS, weights_dtype="float16")
    loaded = load_model(plain)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.rand(1, 1, 8, 8)
    with torch.no_grad():
        assert (loaded(x) - model.eval()(x)).abs().max().item() < 1e-2
    with pytest.raises(SuperresError, match="weights_dtype"):
        save_model(tmp_path / "x.safetensors", model, arch="enhanced", args=ARGS, weights_dtype="bfloat16")


def test_file_is_plain_safetensors_with_superres_json(tmp_path: Path) -> None:
    model = _trained_like("baseline", scale=2, in_channels=3, channels=4, num_blocks=1)
    path = save_model(tmp_path / "b.safetensors", model, arch="baseline", args={"channels": 4, "num_blocks": 1})
    header = _header(path)
    meta = json.loads(header["__metadata__"]["superres"])
    expected_params = sum(p.numel() for p in model.parameters())
    assert meta == {
        "format": 1,
        "arch": "baseline",
        "args": {"channels": 4, "num_blocks": 1, "scale": 2, "in_channels": 3},  # filled in from the model
        "scale": 2,
        "in_channels": 3,
        "value_range": [0, 1],
        "params": expected_params,
        "weights_dtype": "float32",
    }
    tensor_keys = {k for k in header if k != "__metadata__"}
    assert tensor_keys == set(model.state_dict())
    assert read_metadata(path) == meta
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left no temporary file behind


def test_save_refuses_inconsistent_or_unserialisable_metadata(tmp_path: Path) -> None:
    model = _trained_like()
    with pytest.raises(SuperresError, match="scale"):
        save_model(tmp_path / "a.safetensors", model, arch="enhanced", args={**ARGS, "scale": 4})
    with pytest.raises(SuperresError, match="'params'"):
        save_model(tmp_path / "a.safetensors", model, arch="enhanced", args=ARGS, metadata={"params": 1})
    with pytest.raises(SuperresError, match="JSON"):
        save_model(tmp_path / "a.safetensors", model, arch="enhanced", args=ARGS, metadata={"x": object()})
    assert not list(tmp_path.iterdir())


def test_load_by_shipped_name_and_list_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modelfile, "WEIGHTS_DIR", tmp_path)
    model = _trained_like()
    save_model(tmp_path / "tiny-x3.safetensors", model, arch="enhanced", args=ARGS,
               metadata={"scores": {"Set5": {"psnr_y": 31.25, "ssim_y": 0.8812}}})
    loaded = load_model("tiny-x3")
    assert loaded.superres_meta["args"] == ARGS

    entries = list_models()
    shipped = [e for e in entries if e["shipped"]]
    assert [e["name"] for e in shipped] == ["tiny-x3"]
    assert shipped[0]["arch"] == "enhanced" and shipped[0]["scale"] == 3
    assert shipped[0]["params"] == sum(p.numel() for p in model.parameters())
    assert shipped[0]["psnr_y"] == 31.25
    archs = [e for e in entries if e["kind"] == "architecture"]
    assert [e["name"] for e in archs] == names()
    assert all(e["kind"] == "architecture" for e in archs)

    text = format_models(entries)
    assert "tiny-x3" in text and "31.25" in text and "0.8812" in text
    for name in names():
        assert name in text
    json.dumps(entries)  # `superres models --json` prints this list


def test_list_models_without_shipped_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modelfile, "WEIGHTS_DIR", tmp_path / "absent")
    entries = list_models()
    assert all(not e["shipped"] for e in entries)
    assert "none yet" in format_models(entries)


def test_unknown_name_lists_available(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modelfile, "WEIGHTS_DIR", tmp_path)
    save_model(tmp_path / "one.safetensors", _trained_like(), arch="enhanced", args=ARGS)
    with pytest.raises(SuperresError, match=r"'nope'.*available: one"):
        load_model("nope")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SuperresError, match="missing.safetensors.*not found"):
        load_model(tmp_path / "missing.safetensors")


def test_not_a_safetensors_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(SuperresError, match="junk.safetensors.*not a superres model file"):
        load_model(path)


def test_safetensors_without_superres_metadata(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "pt"})
    with pytest.raises(SuperresError, match="other.safetensors.*not a superres model file"):
        load_model(path)


def _rewrite_meta(path: Path, **changes: object) -> None:
    """Re-save ``path``'s tensors with edited superres metadata (simulates other writers/versions)."""
    from safetensors.torch import load_file, save_file

    meta = read_metadata(path)
    meta.update(changes)
    save_file(load_file(str(path)), str(path), metadata={"superres": json.dumps(meta)})


def test_weights_that_do_not_match_the_arch(tmp_path: Path) -> None:
    path = save_model(tmp_path / "m.safetensors", _trained_like(), arch="enhanced", args=ARGS)
    _rewrite_meta(path, args={**ARGS, "num_blocks": 3})  # strict=True: an extra block has no weights
    with pytest.raises(SuperresError, match="m.safetensors.*do not match"):
        load_model(path)


def test_unknown_arch_and_newer_format(tmp_path: Path) -> None:
    path = save_model(tmp_path / "m.safetensors", _trained_like(), arch="enhanced", args=ARGS)
    _rewrite_meta(path, arch="hypernet")
    with pytest.raises(SuperresError, match="m.safetensors.*'hypernet'"):
        load_model(path)
    _rewrite_meta(path, arch="enhanced", format=2)
    with pytest.raises(SuperresError, match="format 2"):
        load_model(path)


def test_load_onto_device_string(tmp_path: Path) -> None:
    path = save_model(tmp_path / "m.safetensors", _trained_like(), arch="enhanced", args=ARGS)
    model = load_model(str(path), device="cpu")
    assert next(model.parameters()).device.type == "cpu"


# --------------------------------------------------------------------------- scripts/ship_model.py
@pytest.mark.shared_data
@pytest.mark.slow
def test_ship_model_scores_now_and_records_the_warm_start(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from safetensors.torch import load_file

    from superres.evaluate import evaluate

    spec = importlib.util.spec_from_file_location("ship_model", Path(__file__).parent.parent / "scripts" / "ship_model.py")
    ship = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship)
    weights = tmp_path / "weights"
    monkeypatch.setattr(modelfile, "WEIGHTS_DIR", weights)

    args = {"scale": 4, "in_channels": 3, "channels": 4, "num_convs": 1}
    parent = save_model(tmp_path / "stage1.safetensors", _trained_like("lumanet", **args), arch="lumanet", args=args,
                        metadata={"name": "stage1", "iterations": 5, "wall_time_s": 2.0})
    child = save_model(tmp_path / "stage2.safetensors", _trained_like("lumanet", **args), arch="lumanet", args=args,
                       metadata={"name": "stage2", "iterations": 3, "wall_time_s": 1.5,
                                 "config": {"model": {"init_from": str(parent)}},
                                 "scores": {"Set5": {"psnr_y": 1.0, "ssim_y": 0.1}}})
    assert ship.main([str(child), "tiny-x4", "--sets", "Set5", "--data-root", str(shared_data),
                      "--data", "train/T91", "train/BSD200"]) == 0

    shipped = weights / "tiny-x4.safetensors"
    meta = read_metadata(shipped)
    report = evaluate(str(shipped), shared_data / "Set5", scale=4)  # scored as stored (float16)
    assert meta["scores"]["Set5"]["psnr_y"] == report["psnr_y"] and meta["scores"]["Set5"]["ssim_y"] == report["ssim_y"]
    assert meta["weights_dtype"] == "float16"
    assert meta["scores"]["Set5"]["psnr_y"] == pytest.approx(evaluate(str(child), shared_data / "Set5", scale=4)["psnr_y"], abs=1e-3)
    assert meta["training_scores"] == {"Set5": {"psnr_y": 1.0, "ssim_y": 0.1}}
    assert meta["name"] == "tiny-x4" and meta["shipped_from"] == str(child)
    assert meta["data"] == ["train/T91", "train/BSD200"] and meta["data_as_trained"] is None  # child had none
    assert meta["init_from"]["name"] == "stage1" and meta["init_from"]["iterations"] == 5
    assert meta["total_iterations"] == 8 and meta["total_wall_time_s"] == 3.5
    want, got = load_file(str(child)), load_file(str(shipped))
    params = {name for name, _ in load_model(str(child)).named_parameters()}
    assert want.keys() == got.keys() == params
    assert all(got[k].dtype == torch.float16 and torch.equal(want[k].half(), got[k]) for k in params)
    assert [e["name"] for e in list_models() if e["shipped"]] == ["tiny-x4"]

    # a missing set is one error line and exit code 2, and nothing is written
    assert ship.main([str(child), "other-x4", "--sets", "Nope", "--data-root", str(shared_data)]) == 2
    assert not (weights / "other-x4.safetensors").exists()

    # --reship re-stores a shipped file: its training metadata stays, the scores are measured again
    assert ship.main([str(shipped), "tiny-x4", "--sets", "Set5", "--data-root", str(shared_data), "--reship",
                      "--weights-dtype", "float32"]) == 0
    again = read_metadata(shipped)
    assert again["weights_dtype"] == "float32" and again["reshipped"][-1]["weights_dtype"] == "float32"
    assert {k: again[k] for k in ("training_scores", "shipped_from", "init_from", "data")} == \
        {k: meta[k] for k in ("training_scores", "shipped_from", "init_from", "data")}
    assert again["scores"]["Set5"]["psnr_y"] == evaluate(str(shipped), shared_data / "Set5", scale=4)["psnr_y"]

    # a model trained in expanded form ships folded: the plain lumanet, scoring what the run's file scores
    wide = {**args, "expand": 12}
    trained = save_model(tmp_path / "wide.safetensors", _trained_like("lumanet", **wide), arch="lumanet", args=wide)
    assert ship.main([str(trained), "wide-x4", "--sets", "Set5", "--data-root", str(shared_data)]) == 0
    meta = read_metadata(weights / "wide-x4.safetensors")
    assert meta["args"] == args and meta["trained_as"] == {"arch": "lumanet", "args": wide}
    assert meta["params"] == sum(p.numel() for p in load_model(str(child)).parameters())
    folded_report = evaluate(str(weights / "wide-x4.safetensors"), shared_data / "Set5", scale=4)
    assert folded_report["psnr_y"] == pytest.approx(meta["scores"]["Set5"]["psnr_y"], abs=1e-4)

    # a photo model: scores on a degraded set made as `superres data degrade` makes it, purpose, partner
    from superres.degrade import make_degraded_set

    assert ship.main([str(child), "photo-x4", "--sets", "Set5", "--data-root", str(shared_data), "--degraded",
                      "Set5/HR:light", "--purpose", "photo", "--strength-partner", "tiny-x4"]) == 0
    meta = read_metadata(weights / "photo-x4.safetensors")
    assert meta["purpose"] == "photo" and meta["strength_partner"] == "tiny-x4"
    recorded = meta["scores"]["Set5-light"]
    assert recorded["degraded"] == {"source": "Set5/HR", "preset": "light", "seed": 0}
    make_degraded_set([str(shared_data / "Set5" / "HR")], str(tmp_path / "deg"), scale=4, preset="light", seed=0)
    report = evaluate(str(weights / "photo-x4.safetensors"), tmp_path / "deg", scale=4, lr="LR_light")
    assert recorded["psnr_y"] == report["psnr_y"] and recorded["psnr_y"] != meta["scores"]["Set5"]["psnr_y"]
    assert [e["purpose"] for e in list_models() if e["name"] == "photo-x4"] == ["photo"]
    # a partner of another network is refused (interpolation needs equal networks), nothing written
    other = {**args, "channels": 6}
    save_model(weights / "other-x4.safetensors", _trained_like("lumanet", **other), arch="lumanet", args=other)
    assert ship.main([str(child), "pair-x4", "--sets", "Set5", "--data-root", str(shared_data),
                      "--strength-partner", "other-x4"]) == 2
    assert not (weights / "pair-x4.safetensors").exists()


# --------------------------------------------------------------------------- `superres models`
def test_cli_models_json_lists_every_shipped_model(capsys: pytest.CaptureFixture[str]) -> None:
    from superres.cli import main

    assert main(["models", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    shipped = [e for e in entries if e["shipped"]]
    assert sorted(e["name"] for e in shipped) == modelfile.shipped_names()
    for e in shipped:
        assert {"name", "arch", "scale", "params", "scores"} <= set(e)
        meta = read_metadata(modelfile.WEIGHTS_DIR / f"{e['name']}.safetensors")
        assert e["params"] == meta["params"] and e["scale"] == meta["scale"] and e["arch"] == meta["arch"]
        for scores in e["scores"].values():  # as measured when shipped (scripts/ship_model.py)
            assert 20 < scores["psnr_y"] < 45 and 0 < scores["ssim_y"] < 1


@pytest.mark.shared_data
@pytest.mark.slow
def test_shipped_names_work_as_model_in_eval(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every shipped lumanet (fast enough for a test) scores on Set5 what its metadata says."""
    from superres.cli import main

    for name in [n for n in modelfile.shipped_names() if n.startswith("lumanet")]:
        scale = read_metadata(modelfile.WEIGHTS_DIR / f"{name}.safetensors")["scale"]
        assert main(["eval", "--model", name, "--data", str(shared_data / "Set5"), "--scale", str(scale), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        recorded = load_model(name).superres_meta["scores"]["Set5"]
        assert report["psnr_y"] == pytest.approx(recorded["psnr_y"], abs=1e-6)


@pytest.mark.slow
def test_cli_output_into_a_closed_pipe_is_quiet() -> None:
    """`superres models | true`: the reader is gone before the first write (the child needs a second
    to import torch), so the write fails with EPIPE; that must end quietly with status 0."""
    import subprocess
    import sys

    code = "import sys; from superres.cli import main; sys.exit(main(['models']))"
    proc = subprocess.run(["bash", "-c", f'set -o pipefail; "{sys.executable}" -c "{code}" | true'],
                          capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.returncode == 0
