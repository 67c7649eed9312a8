"""The training engine: schedule, EMA, batches, run folder, determinism, resume after SIGKILL.

Everything runs on tiny generated images and a tiny ``baseline`` model on one CPU thread (the machine
is shared), so each run takes a second or two. Expected values are computed by hand (schedule, EMA,
quantisation) or by an independent path: ``superres.evaluate`` for the bicubic baseline,
``superres.load_model`` for the exported file, and an uninterrupted run for the resumed one.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import assert_same_weights, model_weights, train_until_killed
import tifffile
import torch
from PIL import Image

from superres.config import Config, OptimConfig, ScheduleConfig, config_from_dict, load_config, resolve_paths
from superres.errors import SuperresError
from superres.training import train
from superres.training.batches import IterationItems, build_train_dataset
from superres.training.ema import EMA
from superres.training.optim import learning_rate
from superres.training.validation import quantise

REPO = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_thread")


def _smooth_image(rng: np.random.Generator, h: int, w: int, c: int, peak: int) -> np.ndarray:
    """A learnable image: a few random sinusoids plus a little noise, as integers in 0..peak."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.zeros((h, w, c))
    for ch in range(c):
        for _ in range(3):
            fy, fx, ph = rng.uniform(0.05, 0.4), rng.uniform(0.05, 0.4), rng.uniform(0, 6.3)
            out[:, :, ch] += np.sin(fy * y + fx * x + ph)
    out = (out - out.min()) / (out.max() - out.min() + 1e-9)
    out = 0.9 * out + 0.1 * rng.random((h, w, c))
    return np.round(out * peak)


def _write(path: Path, array: np.ndarray, peak: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = np.uint8 if peak == 255 else np.uint16
    a = array.astype(dtype)
    if path.suffix == ".tif":
        # bands, not RGBA: no alpha ExtraSamples tag
        tifffile.imwrite(path, a, photometric="minisblack", planarconfig="contig")
    else:
        Image.fromarray(a if a.shape[2] == 3 else a[:, :, 0]).save(path)


@pytest.fixture()
def data(tmp_path: Path) -> dict[str, Path]:
    """3 RGB training images (24x28, 30x26, 20x20) and a 2-image validation folder without LR files."""
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(24, 28), (30, 26), (20, 20)]):
        _write(tmp_path / "train" / f"t{i}.png", _smooth_image(rng, h, w, 3, 255), 255)
    for i in range(2):
        _write(tmp_path / "val" / "HR" / f"v{i}.png", _smooth_image(rng, 32, 36, 3, 255), 255)
    return {"train": tmp_path / "train", "val": tmp_path / "val", "root": tmp_path}


def _config(paths: dict[str, Path], **sections: Any) -> Config:
    raw: dict[str, Any] = {
        "name": "tiny",
        "model": {"name": "baseline", "scale": 2, "options": {"channels": 4, "num_blocks": 1}},
        "data": {"train": [str(paths["train"])], "patch_size": 8, "batch_size": 4, "val": str(paths["val"])},
        "optim": {"lr": 2e-3},
        "schedule": {"name": "cosine", "warmup": 2, "min_lr": 1e-5},
        "train": {"iterations": 12, "val_every": 6, "save_every": 4, "log_every": 3, "seed": 0, "device": "cpu"},
    }
    for key, values in sections.items():
        raw[key] = {**raw.get(key, {}), **values} if isinstance(values, dict) else values
    return config_from_dict(raw, source="test")



def _metrics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- pure functions
def test_learning_rate_hand_computed():
    optim = OptimConfig(lr=1.0)
    cosine = ScheduleConfig(name="cosine", warmup=0, min_lr=0.0)
    # p = t / 4 over 5 steps: (1 + cos(pi p)) / 2
    expected = [1.0, (1 + math.sqrt(0.5)) / 2, 0.5, (1 - math.sqrt(0.5)) / 2, 0.0]
    assert [learning_rate(optim, cosine, t, 5) for t in range(5)] == pytest.approx(expected, abs=1e-12)

    warm = ScheduleConfig(name="cosine", warmup=2, min_lr=0.0)
    # warm-up steps 0, 1 at 1/2 and 2/2 of the (not yet decayed) rate; then p = (t - 2) / 2
    assert [learning_rate(optim, warm, t, 5) for t in range(5)] == pytest.approx([0.5, 1.0, 1.0, 0.5, 0.0], abs=1e-12)

    steps = ScheduleConfig(name="multistep", warmup=0, milestones=[2, 4], gamma=0.1)
    assert [learning_rate(optim, steps, t, 6) for t in range(6)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    assert learning_rate(optim, ScheduleConfig(name="constant", warmup=4), 1, 10) == pytest.approx(0.5)


def test_learning_rate_follows_a_time_budget():
    optim = OptimConfig(lr=1.0)
    cosine = ScheduleConfig(name="cosine", warmup=0, min_lr=0.0)
    # half the time spent at step 10 of 101: the schedule is at its middle, cos(pi/2) = 0
    assert learning_rate(optim, cosine, 10, 101, time_fraction=0.5) == pytest.approx(0.5)
    assert learning_rate(optim, cosine, 10, 101, time_fraction=1.0) == pytest.approx(0.0, abs=1e-12)
    # the step still rules when it is further along than the clock
    assert learning_rate(optim, cosine, 50, 101, time_fraction=0.1) == pytest.approx(0.5)


def test_ema_hand_computed():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # decay min(0.5, 2/11) = 2/11: 2/11 * 0 + 9/11 * 1
    assert ema.module.weight.item() == pytest.approx(9 / 11)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model)  # decay min(0.5, 3/12) = 1/4
    assert ema.module.weight.item() == pytest.approx(0.25 * 9 / 11 + 0.75 * 3)
    assert not ema.module.weight.requires_grad


def test_quantise_rounds_to_the_file_levels():
    x = torch.tensor([-0.2, 0.0, 0.6 / 255, 0.4 / 255, 1.7 / 255, 1.3])
    assert torch.equal(quantise(x, 8) * 255, torch.tensor([0.0, 0.0, 1.0, 0.0, 2.0, 255.0]))
    # the same integers as superres.io writes to 8- and 16-bit files
    from superres.io import to_integer

    y = torch.rand(1000, generator=torch.Generator().manual_seed(0)) * 1.2 - 0.1
    for bits, peak in ((8, 255), (16, 65535)):
        ints = torch.from_numpy(to_integer(y.numpy(), bits).astype(np.int64))
        assert torch.equal(torch.round(quantise(y, bits) * peak).long(), ints)


def test_batches_are_a_pure_function_of_seed_and_iteration(data, tmp_path):
    config = _config(data)
    make = lambda seed: IterationItems(  # noqa: E731
        build_train_dataset(config.data, scale=2, in_channels=3, seed=seed), batch_size=4, seed=seed
    )
    a, b, other = make(0), make(0), make(1)
    keys = [7 * 4 + 0, 7 * 4 + 3, 3 * 4 + 1]
    forward = [a[k] for k in keys]
    backward = [b[k] for k in reversed(keys)][::-1]  # another instance, other order
    for (lr1, hr1), (lr2, hr2) in zip(forward, backward):
        assert torch.equal(lr1, lr2) and torch.equal(hr1, hr2)
    assert hr1.shape == (3, 8, 8) and lr1.shape == (3, 4, 4)
    assert not torch.equal(a[8 * 4][1], a[9 * 4][1])  # next iteration, new crop
    assert not torch.equal(a[7 * 4][1], other[7 * 4][1])  # other seed, other crop


def test_patch_file_is_visited_without_replacement(tmp_path):
    rng = np.random.default_rng(1)
    hr = rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    hr[:, 0, 0, 0] = np.arange(10)  # a tag to recognise each patch (augmentation off)
    np.savez(tmp_path / "p.npz", hr=hr)
    config = config_from_dict(
        {"data": {"train": [str(tmp_path / "p.npz")], "patch_size": 8, "batch_size": 4, "augment": False},
         "model": {"name": "baseline", "scale": 2}},
        source="test",
    )
    items = IterationItems(build_train_dataset(config.data, scale=2, in_channels=3, seed=3), batch_size=4, seed=3)
    tags = [int(round(items[it * 4 + s][1][0, 0, 0].item() * 255)) for it in range(1, 6) for s in range(4)]
    assert sorted(tags[:10]) == list(range(10)) and sorted(tags[10:20]) == list(range(10))
    assert tags[:10] != tags[10:20]  # a new order each pass


# --------------------------------------------------------------------------- a whole run
def test_tiny_run_writes_the_run_folder(data, tmp_path):
    from superres.evaluate import evaluate
    from superres.modelfile import load_model, read_metadata

    config = _config(data, train={"ema": 0.9, "grad_clip": 1.0})
    run = tmp_path / "run"
    model_path = train(config, run_dir=run)
    assert model_path == run / "model.safetensors"
    for name in ("config.yaml", "last.pt", "metrics.csv", "curves.png", "model.safetensors", "best.safetensors"):
        assert (run / name).is_file(), name
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp") or ".tmp." in p.name]

    saved = load_config(run / "config.yaml")  # the resolved config: absolute paths, out = the run folder
    assert saved == resolve_paths(dataclasses.replace(config, out=str(run)))
    assert saved.out == str(run.resolve()) and saved.data.train == [str(data["train"].resolve())]

    state = torch.load(run / "last.pt", weights_only=True)
    assert state["iteration"] == 12
    assert {"model", "optimizer", "ema", "scaler", "rng", "elapsed"} <= state.keys()

    rows = _metrics(run / "metrics.csv")
    assert [int(r["iteration"]) for r in rows] == [3, 6, 9, 12]
    assert list(rows[0])[:5] == ["iteration", "elapsed_s", "lr", "loss", "loss_l1"]
    assert rows[1]["val_psnr_y"] and rows[3]["val_psnr_y"] and not rows[0]["val_psnr_y"]
    assert float(rows[-1]["lr"]) == pytest.approx(1e-5)  # cosine ends at min_lr
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the exported file is the EMA copy and loads through the public API
    model = load_model(model_path)
    assert_same_weights({k: v for k, v in model.state_dict().items()}, state["ema"]["weights"])
    lr = torch.rand(1, 3, 5, 6)
    assert model(lr).shape == (1, 3, 10, 12)

    meta = read_metadata(model_path)
    assert meta["arch"] == "baseline" and meta["args"] == {"scale": 2, "in_channels": 3, "channels": 4, "num_blocks": 1}
    assert meta["iterations"] == 12 and meta["data"] == [str(data["train"].resolve())]
    assert meta["config"]["train"]["iterations"] == 12
    assert meta["hardware"].endswith(f"{torch.get_num_threads()} torch thread(s)")  # where it trained
    scores = meta["scores"]["val"]
    assert float(rows[-1]["val_psnr_y"]) == pytest.approx(scores["psnr_y"])
    # the validator's bicubic figure agrees with `superres eval --model bicubic`
    reference = evaluate("bicubic", data["val"], scale=2)
    assert scores["bicubic_psnr_y"] == pytest.approx(reference["psnr_y"], abs=1e-6)
    assert scores["bicubic_ssim_y"] == pytest.approx(reference["ssim_y"], abs=1e-6)
    # and the model figure agrees with scoring the exported file the same way
    scored = evaluate(str(model_path), data["val"], scale=2)
    assert scores["psnr_y"] == pytest.approx(scored["psnr_y"], abs=1e-4)


def test_extra_validation_sets_are_scored_beside_val(data, tmp_path):
    """data.val_extra: each set gets its own metrics columns at every validation and its own entry in
    the model's scores, equal to `superres eval` on the exported file; best.safetensors still follows
    data.val alone."""
    from superres.evaluate import evaluate
    from superres.modelfile import read_metadata

    rng = np.random.default_rng(5)
    other = tmp_path / "Other-Set"  # '-' is kept; a second, different set
    for i in range(3):
        _write(other / "HR" / f"o{i}.png", _smooth_image(rng, 28, 24, 3, 255), 255)
    config = _config(data, data={"val_extra": [str(other)]})
    run = tmp_path / "run"
    model_path = train(config, run_dir=run)

    rows = _metrics(run / "metrics.csv")
    validated = [r for r in rows if r["val_psnr_y"]]
    assert [int(r["iteration"]) for r in validated] == [6, 12]
    assert all(r["val_Other-Set_psnr_y"] and r["val_Other-Set_ssim_y"] for r in validated)
    assert not any(r["val_Other-Set_psnr_y"] for r in rows if not r["val_psnr_y"])
    assert validated[-1]["val_Other-Set_psnr_y"] != validated[-1]["val_psnr_y"]  # scored on its own images

    scores = read_metadata(model_path)["scores"]
    assert sorted(scores) == ["Other-Set", "val"]
    assert scores["Other-Set"]["images"] == 3 and scores["val"]["images"] == 2
    assert scores["Other-Set"]["psnr_y"] == pytest.approx(float(validated[-1]["val_Other-Set_psnr_y"]))
    scored = evaluate(str(model_path), other, scale=2)
    assert scores["Other-Set"]["psnr_y"] == pytest.approx(scored["psnr_y"], abs=1e-4)
    assert scores["Other-Set"]["bicubic_psnr_y"] == pytest.approx(evaluate("bicubic", other, scale=2)["psnr_y"], abs=1e-6)

    best_row = max(validated, key=lambda r: float(r["val_psnr_y"]))
    assert read_metadata(run / "best.safetensors")["scores"]["val"]["iteration"] == int(best_row["iteration"])


@pytest.mark.parametrize(
    "data_section, message",
    [
        ({"val": None, "val_extra": ["x"]}, "'data.val_extra' needs data.val"),
        ({"val_extra": ["elsewhere/val"]}, "'data.val_extra' needs folders with distinct names"),
    ],
)
def test_val_extra_config_errors(data, data_section, message):
    with pytest.raises(SuperresError, match=message):
        _config(data, data=data_section)


def test_loss_falls_on_a_tiny_overfit(tmp_path):
    rng = np.random.default_rng(5)
    _write(tmp_path / "one" / "a.png", _smooth_image(rng, 16, 16, 3, 255), 255)
    config = _config(
        {"train": tmp_path / "one", "val": tmp_path / "none"},
        data={"val": None, "batch_size": 8},
        model={"options": {"channels": 8, "num_blocks": 1}},
        optim={"lr": 5e-3},
        schedule={"name": "constant", "warmup": 0},
        train={"iterations": 60, "log_every": 10, "save_every": 60},
    )
    train(config, run_dir=tmp_path / "run")
    losses = [float(r["loss"]) for r in _metrics(tmp_path / "run" / "metrics.csv")]
    assert len(losses) == 6
    assert losses[-1] < 0.35 * losses[0], losses


def test_seeded_runs_are_bit_identical(data, tmp_path):
    config = _config(data, data={"val": None}, train={"iterations": 6, "ema": 0.9})
    a = model_weights(train(config, run_dir=tmp_path / "a"))
    b = model_weights(train(config, run_dir=tmp_path / "b"))
    assert_same_weights(a, b)
    other = model_weights(train(_config(data, data={"val": None}, train={"iterations": 6, "ema": 0.9, "seed": 1}),
                           run_dir=tmp_path / "c"))
    assert not all(torch.equal(a[k], other[k]) for k in a)


@pytest.mark.slow
def test_compiled_step_trains_the_same_weights(data, tmp_path):
    """train.compile (here a CUDA-graph mode, which on the CPU compiles without graphs) changes how
    the step runs, not what it computes: the same weights as eager, up to float reassociation."""
    config = _config(data, data={"val": None}, train={"iterations": 4, "ema": 0.9})
    eager = model_weights(train(config, run_dir=tmp_path / "eager"))
    compiled_config = _config(data, data={"val": None}, train={"iterations": 4, "ema": 0.9, "compile": "reduce-overhead"})
    compiled = model_weights(train(compiled_config, run_dir=tmp_path / "compiled"))
    assert eager.keys() == compiled.keys()  # the module is saved, not the compiled wrapper
    for k in eager:
        torch.testing.assert_close(compiled[k], eager[k], rtol=1e-4, atol=1e-5)
    assert not all(torch.equal(eager[k], model_weights(train(_config(data, data={"val": None}, train={"iterations": 2}),
                   run_dir=tmp_path / "short"))[k]) for k in eager)  # 4 steps differ from 2: the check can fail


@pytest.mark.parametrize(
    ("device", "amp", "native_bf16", "channels_last", "expected"),
    [
        # CUDA: the requested autocast dtype; fp16 with its gradient scaler; channels_last on by "auto"
        ("cuda", "none", None, "auto", (None, True, False, ())),
        ("cuda", "bf16", None, "auto", (torch.bfloat16, True, False, ())),
        ("cuda", "fp16", None, "auto", (torch.float16, True, True, ())),
        ("cuda", "fp16", None, False, (torch.float16, False, True, ())),
        # the CPU: bf16 where it computes bf16 natively (then channels_last too), else a note
        ("cpu", "none", None, "auto", (None, False, False, ())),
        ("cpu", "none", None, True, (None, True, False, ())),
        ("cpu", "bf16", True, "auto", (torch.bfloat16, True, False, ())),
        ("cpu", "bf16", True, False, (torch.bfloat16, False, False, ())),
        ("cpu", "bf16", False, "auto",
         (None, False, False, ("train.amp=bf16 ignored on cpu: this CPU has no native bf16 (AVX512-BF16 or AMX)",))),
        ("cpu", "fp16", True, "auto",
         (None, False, False,
          ("train.amp=fp16 ignored on cpu: fp16 autocast is CUDA only (bf16 runs on CPUs with native bf16)",))),
        # other devices: no autocast
        ("mps", "bf16", None, "auto",
         (None, False, False, ("train.amp=bf16 ignored on mps: autocast is used on CUDA and the CPU only",))),
        ("mps", "none", None, True, (None, True, False, ())),
    ],
)
def test_precision_policy(monkeypatch, device, amp, native_bf16, channels_last, expected):
    """precision_policy: autocast dtype, channels_last, gradient scaler and notes for each device and
    train.amp; pure (the CPU's bf16 support is asked only where it matters; nothing global changes)."""
    from superres.config import TrainConfig
    from superres.training import trainer as trainer_module
    from superres.training.trainer import PrecisionPolicy, precision_policy

    def native() -> bool:
        assert native_bf16 is not None, "cpu_has_native_bf16 asked where it does not matter"
        return native_bf16

    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", native)
    train_cfg = TrainConfig(amp=amp, channels_last=channels_last)
    before = (dataclasses.asdict(train_cfg), torch.get_default_dtype(), torch.is_autocast_enabled())
    policy = precision_policy(train_cfg, torch.device(device))
    assert isinstance(policy, PrecisionPolicy)
    assert (policy.autocast_dtype, policy.channels_last, policy.grad_scaler, policy.notes) == expected
    assert precision_policy(train_cfg, torch.device(device)) == policy  # same inputs, same policy
    assert (dataclasses.asdict(train_cfg), torch.get_default_dtype(), torch.is_autocast_enabled()) == before
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.channels_last = not policy.channels_last  # type: ignore[misc]


@pytest.mark.slow
def test_cpu_bf16_autocast_where_the_cpu_has_it(data, tmp_path, monkeypatch, capsys):
    """train.amp=bf16 on the CPU: without native bf16 it is ignored with a note (the run is then the
    fp32 run, bit for bit); with it, the step runs under bf16 autocast (other weights than fp32,
    close to them) and validation/export stay fp32."""
    from superres.training import trainer as trainer_module

    base = {"iterations": 4, "ema": 0.9}
    fp32 = model_weights(train(_config(data, data={"val": None}, train=base), run_dir=tmp_path / "fp32"))
    capsys.readouterr()

    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", lambda: False)
    emulated = model_weights(train(_config(data, data={"val": None}, train={**base, "amp": "bf16"}),
                                   run_dir=tmp_path / "emulated"))
    out = capsys.readouterr()
    assert "train.amp=bf16 ignored on cpu: this CPU has no native bf16 (AVX512-BF16 or AMX)" in out.out + out.err
    assert_same_weights(emulated, fp32)
    train(_config(data, data={"val": None}, train={**base, "amp": "fp16"}), run_dir=tmp_path / "fp16")
    out = capsys.readouterr()
    assert "train.amp=fp16 ignored on cpu: fp16 autocast is CUDA only" in out.out + out.err
    monkeypatch.undo()

    if not trainer_module.cpu_has_native_bf16():
        pytest.skip("this CPU has no native bf16 (AVX512-BF16 or AMX); the bf16 run itself is not tested here")
    run = tmp_path / "bf16"
    bf16 = model_weights(train(_config(data, train={**base, "amp": "bf16"}), run_dir=run))
    assert "ignored" not in capsys.readouterr().out
    assert not all(torch.equal(bf16[k], fp32[k]) for k in fp32)  # autocast changed the arithmetic
    for k in fp32:  # 4 Adam steps of lr <= 2e-3 move a weight by at most 8e-3: bf16 stays within half of that
        torch.testing.assert_close(bf16[k], fp32[k], rtol=0, atol=4e-3)
    assert all(v.dtype == torch.float32 for v in bf16.values())  # weights and export stay fp32
    assert float(_metrics(run / "metrics.csv")[-1]["val_psnr_y"]) > 0


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_same_weights(data, tmp_path):
    from superres.config import save_config

    # 20 iterations, checkpoints every 5, rows every 3, validation every 8, EMA and clipping on
    config = _config(data, train={"iterations": 20, "save_every": 5, "log_every": 3, "val_every": 8,
                                  "ema": 0.9, "grad_clip": 0.5})
    full = tmp_path / "full"
    train(config, run_dir=full)

    config_file = tmp_path / "tiny.yaml"
    save_config(config, config_file)
    killed = tmp_path / "killed"
    train_until_killed(config_file, killed, 13, tmp_path)
    assert torch.load(killed / "last.pt", weights_only=True)["iteration"] == 10
    assert not (killed / "model.safetensors").exists()
    assert int(_metrics(killed / "metrics.csv")[-1]["iteration"]) == 12  # logged past the checkpoint

    train(load_config(config_file), run_dir=killed, resume=True)
    assert_same_weights(model_weights(full / "model.safetensors"), model_weights(killed / "model.safetensors"))
    assert_same_weights(model_weights(full / "best.safetensors"), model_weights(killed / "best.safetensors"))
    a = torch.load(full / "last.pt", weights_only=True)
    b = torch.load(killed / "last.pt", weights_only=True)
    for k, v in a["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg_sq"], b["optimizer"]["state"][k]["exp_avg_sq"])
    # the metrics agree row for row (the rows after the checkpoint were dropped and redone)
    rows_a, rows_b = _metrics(full / "metrics.csv"), _metrics(killed / "metrics.csv")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]  # noqa: E731
    assert strip(rows_a) == strip(rows_b)


class _Interrupted(Exception):
    pass


def _draws_hook(draws: dict[int, tuple], save_every: int, stop_at: int | None = None):
    """A callback that draws from torch's, NumPy's and Python's global generators after each iteration
    (what a random augmentation or loss would do), records the draws, and raises at ``stop_at``.

    The callback runs after the iteration's checkpoint, so a draw on a checkpoint iteration would
    fall outside the saved state (a resumed run would repeat it): the hook does not draw there."""
    import random

    def hook(iteration: int, model: torch.nn.Module) -> None:
        if iteration % save_every:
            draws[iteration] = (torch.rand(4), np.random.random_sample(4), random.random())
        if iteration == stop_at:
            raise _Interrupted

    return hook


def test_resume_restores_the_random_generators(data, tmp_path):
    """After a resume the global RNGs continue from the states saved in last.pt: the draws of the
    resumed iterations equal those of an uninterrupted run.

    The batches are a pure function of the seed and the iteration and nothing in this tiny run draws
    random numbers, so the weight comparison of the SIGKILL test above cannot see whether the RNG
    states come back; here the callback draws. The run is interrupted (an exception out of the
    callback) at iteration 6, after the checkpoint of iteration 4; before resuming, every generator
    is moved elsewhere, so only a restore can bring the uninterrupted run's draws back."""
    import random

    config = _config(data, data={"val": None}, train={"iterations": 8, "save_every": 4, "log_every": 4})

    def reseed(seed: int) -> None:
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)

    reseed(100)
    full: dict[int, tuple] = {}
    train(config, run_dir=tmp_path / "full", callback=_draws_hook(full, 4))
    reseed(100)
    cut: dict[int, tuple] = {}
    with pytest.raises(_Interrupted):
        train(config, run_dir=tmp_path / "cut", callback=_draws_hook(cut, 4, stop_at=6))
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["iteration"] == 4
    assert sorted(cut) == [1, 2, 3, 5, 6]
    for i in cut:  # the same run so far (the trainer's own seeding, then the same draws)
        assert torch.equal(cut[i][0], full[i][0]) and np.array_equal(cut[i][1], full[i][1]) and cut[i][2] == full[i][2]

    reseed(200)
    resumed: dict[int, tuple] = {}
    train(config, run_dir=tmp_path / "cut", resume=True, callback=_draws_hook(resumed, 4))
    assert sorted(resumed) == [5, 6, 7]
    for i in resumed:
        assert torch.equal(resumed[i][0], full[i][0]), f"torch draws differ at iteration {i}"
        assert np.array_equal(resumed[i][1], full[i][1]), f"NumPy draws differ at iteration {i}"
        assert resumed[i][2] == full[i][2], f"Python draws differ at iteration {i}"
    assert not torch.equal(full[5][0], full[1][0])  # the draws do move on from iteration to iteration


# --------------------------------------------------------------------------- other data and stops
@pytest.mark.slow
def test_16_bit_gray_and_multiband_data_train(tmp_path):
    rng = np.random.default_rng(2)
    for kind, channels, peak, suffix in (("gray16", 1, 65535, ".png"), ("bands4", 4, 255, ".tif")):
        for i in range(2):
            _write(tmp_path / kind / "train" / f"a{i}{suffix}", _smooth_image(rng, 20, 22, channels, peak), peak)
        _write(tmp_path / kind / "val" / "HR" / f"v{suffix}", _smooth_image(rng, 28, 28, channels, peak), peak)
        config = _config(
            {"train": tmp_path / kind / "train", "val": tmp_path / kind / "val"},
            model={"in_channels": channels},
            train={"iterations": 4, "val_every": 2, "log_every": 2},
        )
        model_path = train(config, run_dir=tmp_path / kind / "run")
        from superres.modelfile import load_model

        model = load_model(model_path)
        assert model.in_channels == channels
        scores = model.superres_meta["scores"]["val"]
        assert math.isfinite(scores["psnr_y"]) and math.isfinite(scores["bicubic_psnr_y"])


def test_max_seconds_stops_validates_and_exports(data, tmp_path):
    config = _config(data, train={"iterations": 100000, "max_seconds": 0.5, "val_every": 100000,
                                  "save_every": 100000, "log_every": 100000})
    model_path = train(config, run_dir=tmp_path / "run")
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert 1 <= state["iteration"] < 100000
    assert state["elapsed"] >= 0.5
    rows = _metrics(tmp_path / "run" / "metrics.csv")
    assert int(rows[-1]["iteration"]) == state["iteration"] and rows[-1]["val_psnr_y"]
    from superres.modelfile import read_metadata

    assert read_metadata(model_path)["iterations"] == state["iteration"]


def _last_bar(stderr: str) -> str:
    """The training bar as last drawn (tqdm redraws its line after a carriage return)."""
    bars = [seg for line in stderr.split("\n") for seg in line.split("\r") if "it/s" in seg or "s/it" in seg]
    assert bars, stderr[-2000:]
    return bars[-1]


def test_max_seconds_bar_ends_at_the_real_stop(data, tmp_path, capsys):
    """A run stopped by ``max_seconds`` long before ``train.iterations`` ends its bar at 100%, at the
    iteration it stopped at (the bar used to count towards ``iterations`` and stop at a few %)."""
    config = _config(data, train={"iterations": 100000, "max_seconds": 0.5, "val_every": 100000,
                                  "save_every": 100000, "log_every": 100000})
    train(config, run_dir=tmp_path / "run")
    stopped = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["iteration"]
    bar = _last_bar(capsys.readouterr().err)
    assert "100%" in bar and f"{stopped}/{stopped}" in bar, bar


def test_max_seconds_bar_re_estimates_the_total_from_the_rate(tmp_path):
    """With a time budget the bar's total (and so its ETA) is the iteration the clock will stop the
    run at, measured from the rate so far; never beyond ``train.iterations``, never below the
    iteration reached. Driven with a made-up clock: ``rate`` iterations per second."""
    from superres.training.logging import RunLog, expected_stop

    iterations, budget, rate = 8000, 3600.0, 1.25
    log = RunLog(tmp_path, enabled=True)
    log.start_progress(total=iterations, initial=0, max_seconds=budget)
    for i in range(1, 101):
        log.advance(i / rate)
    assert log._bar.total == rate * budget  # 4500 of 8000: where the clock stops the run
    log.finish()
    assert log._bar.total == log._bar.n == 100
    log.close()
    # a resumed run: the rate counts from the resume point, not from iteration 0
    assert expected_stop(1100, 1000.0, since=(1000, 900.0), iterations=iterations, max_seconds=budget) == 1100 + 2600
    # a fast run ends by iterations; an over-run one at the iteration reached; no time yet: iterations
    assert expected_stop(100, 1.0, since=(0, 0.0), iterations=iterations, max_seconds=budget) == iterations
    assert expected_stop(50, budget + 5, since=(0, 0.0), iterations=iterations, max_seconds=budget) == 50
    assert expected_stop(0, 0.0, since=(0, 0.0), iterations=iterations, max_seconds=budget) == iterations


# --------------------------------------------------------------------------- errors
def test_run_folder_guards(data, tmp_path):
    config = _config(data, data={"val": None}, train={"iterations": 2})
    with pytest.raises(SuperresError, match="no checkpoint to resume from"):
        train(config, run_dir=tmp_path / "run", resume=True)
    train(config, run_dir=tmp_path / "run")
    with pytest.raises(SuperresError, match="already holds a training checkpoint"):
        train(config, run_dir=tmp_path / "run")
    other_model = _config(data, data={"val": None}, model={"options": {"channels": 6, "num_blocks": 1}})
    with pytest.raises(SuperresError, match="resume with the same model settings"):
        train(other_model, run_dir=tmp_path / "run", resume=True)


@pytest.mark.parametrize(
    "sections, message",
    [
        ({"data": {"train": ["does/not/exist"]}}, "data.train: .*does/not/exist does not exist"),
        ({"data": {"val": "no/such/val"}}, "data.val: .*no/such/val is not a folder"),
        ({"data": {"val_extra": ["no/such/Set14"]}}, "data.val_extra: .*no/such/Set14 is not a folder"),
        ({"model": {"in_channels": 1}}, "model.in_channels=1 but the training data .* has 3 channel"),
        ({"data": {"batch_size": 3}, "model": {"name": "nosuchmodel"}}, "unknown model 'nosuchmodel'"),
        ({"loss": [{"type": "l3"}]}, "unknown type 'l3'"),
    ],
)
def test_bad_configs_raise_clear_errors(data, tmp_path, monkeypatch, sections, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SuperresError, match=message):
        train(_config(data, **sections), run_dir=tmp_path / "run")


def test_patch_file_must_match_patch_size(tmp_path):
    np.savez(tmp_path / "p.npz", hr=np.zeros((4, 16, 16, 3), np.uint8))
    config = config_from_dict(
        {"data": {"train": [str(tmp_path / "p.npz")], "patch_size": 8}, "model": {"name": "baseline", "scale": 2}},
        source="test",
    )
    with pytest.raises(SuperresError, match="data.patch_size=8 but the HR patches in .* are 16x16"):
        train(config, run_dir=tmp_path / "run")


def test_cli_train_and_resume(data, tmp_path, capsys):
    from superres.cli import main

    config_file = tmp_path / "c.yaml"
    config_file.write_text(textwrap.dedent(f"""
        model: {{name: baseline, scale: 2, options: {{channels: 4, num_blocks: 1}}}}
        data: {{train: [{data['train']}], patch_size: 8, batch_size: 4}}
        train: {{iterations: 3, device: cpu, log_every: 1}}
    """))
    out = tmp_path / "run"
    assert main(["train", "--config", str(config_file), "--out", str(out)]) == 0
    assert f"run folder: {out}" in capsys.readouterr().out
    # continue the same run for more iterations
    assert main(["train", "--config", str(config_file), "train.iterations=5", "--resume", str(out)]) == 0
    assert torch.load(out / "last.pt", weights_only=True)["iteration"] == 5
    assert [int(r["iteration"]) for r in _metrics(out / "metrics.csv")] == [1, 2, 3, 4, 5]
    # a typo is one line on stderr and exit code 2
    capsys.readouterr()
    assert main(["train", "--config", str(config_file), "train.iteratons=5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean 'train.iterations'" in err[0]
