"""``train.cuda_graph``: the whole training step captured in one CUDA graph.

On the CPU the trainer runs the same step function without a graph; it must train exactly the
weights of the ordinary step, on both data paths, with EMA, clipping and a changing learning rate,
and resume across the setting. On CUDA (skipped elsewhere) the captured step must train the weights
of the eager step, the learning-rate schedule included (a rate baked into the graph would show).
References: ordinary runs of the same config, and plain torch optimizers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import assert_same_weights, model_weights, train_until_killed
import torch
from PIL import Image

from superres.config import Config, config_from_dict, load_config, save_config
from superres.errors import SuperresError
from superres.training import train
from superres.training.graph_step import GraphStep
from superres.training.optim import load_optimizer_state, set_learning_rate

pytestmark = pytest.mark.usefixtures("one_thread")
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    for i, (h, w) in enumerate([(24, 28), (30, 26), (20, 33)]):
        path = tmp_path / "train" / f"t{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return tmp_path / "train"


def _config(folder: Path, *, device: str = "cpu", train: dict[str, Any] | None = None, **data: Any) -> Config:
    raw = {
        "name": "graph",
        "model": {"name": "edsr-baseline", "scale": 2, "options": {"channels": 8, "blocks": 2}},
        "data": {"train": [str(folder)], "patch_size": 16, "batch_size": 4, **data},
        "optim": {"lr": 2e-3},
        "schedule": {"name": "cosine", "warmup": 3, "min_lr": 1e-5},
        "train": {"iterations": 12, "save_every": 5, "log_every": 3, "val_every": 100, "seed": 0,
                  "device": device, "ema": 0.9, "grad_clip": 0.05, **(train or {})},
    }
    return config_from_dict(raw, source="test")


# --------------------------------------------------------------------------- CPU: the same step, no graph
@pytest.mark.parametrize("resident", [True, False])
def test_graph_step_function_trains_the_ordinary_weights(folder, tmp_path, resident, capsys):
    plain = train(_config(folder, device_resident=resident), run_dir=tmp_path / "plain")
    graph = train(_config(folder, device_resident=resident, train={"cuda_graph": True}), run_dir=tmp_path / "graph")
    assert "train.cuda_graph on cpu: the step runs as it would be captured" in capsys.readouterr().err
    assert_same_weights(model_weights(plain), model_weights(graph))


@pytest.mark.slow
def test_resume_across_the_setting(folder, tmp_path):
    """Killed at iteration 8 with cuda_graph on (checkpoint at 5), resumed with it off: the weights of
    an uninterrupted run without it."""
    full = train(_config(folder, device_resident=True), run_dir=tmp_path / "full")
    config_file = tmp_path / "graph.yaml"
    save_config(_config(folder, device_resident=True, train={"cuda_graph": True}), config_file)
    killed = tmp_path / "killed"
    train_until_killed(config_file, killed, 8, tmp_path)
    assert torch.load(killed / "last.pt", weights_only=True)["iteration"] == 5
    resumed = train(load_config(config_file, ["train.cuda_graph=false"]), run_dir=killed, resume=True)
    assert_same_weights(model_weights(full), model_weights(resumed))


@pytest.mark.parametrize("setting, message", [
    ({"train": {"compile": "reduce-overhead"}}, "train.compile: reduce-overhead"),
    ({"train": {"compile": True}}, "train.compile: True"),
])
def test_conflicting_settings_are_refused(folder, tmp_path, setting, message):
    config = _config(folder, train={"cuda_graph": True, **setting["train"]})
    with pytest.raises(SuperresError, match=f"train.cuda_graph: true does not work with {message}"):
        train(config, run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_a_discriminator_is_refused(folder, tmp_path):
    raw = {
        "model": {"name": "edsr-baseline", "scale": 2, "options": {"channels": 8, "blocks": 1}},
        "data": {"train": [str(folder)], "patch_size": 16, "batch_size": 2},
        "loss": [{"type": "l1"}, {"type": "adversarial", "weight": 0.001, "kind": "vanilla"}],
        "discriminator": {"name": "vgg", "options": {"width": 4, "hidden": 8}},
        "train": {"iterations": 2, "device": "cpu", "cuda_graph": True},
    }
    with pytest.raises(SuperresError, match="does not work with a discriminator"):
        train(config_from_dict(raw, source="test"), run_dir=tmp_path / "gan")


# --------------------------------------------------------------------------- pieces
def test_graph_step_without_cuda_calls_the_function_each_time():
    calls = []

    def fn(x):
        calls.append(x)
        return (x * 2,)

    step = GraphStep(fn, device=torch.device("cpu"))
    for i in range(5):
        (out,) = step(torch.tensor([float(i)]))
        assert out.item() == 2 * i
    assert len(calls) == 5 and not step.captured
    with pytest.raises(ValueError, match="warmup must be >= 1"):
        GraphStep(fn, device=torch.device("cpu"), warmup=0)


def test_learning_rate_tensor_is_filled_in_place_and_survives_a_load():
    w = torch.nn.Parameter(torch.ones(3))
    rate = torch.tensor(0.1)
    tensor_opt = torch.optim.Adam([w], lr=rate)
    float_opt = torch.optim.Adam([torch.nn.Parameter(torch.ones(3))], lr=0.1)
    set_learning_rate(tensor_opt, 0.25)
    set_learning_rate(float_opt, 0.5)
    assert tensor_opt.param_groups[0]["lr"] is rate and rate.item() == 0.25
    assert float_opt.param_groups[0]["lr"] == 0.5

    # a float-rate checkpoint into a tensor-rate optimizer: the same tensor, the saved value
    load_optimizer_state(tensor_opt, float_opt.state_dict())
    assert tensor_opt.param_groups[0]["lr"] is rate and rate.item() == 0.5
    # and the other way: a plain float again, not the saved tensor
    set_learning_rate(tensor_opt, 0.125)
    load_optimizer_state(float_opt, tensor_opt.state_dict())
    lr = float_opt.param_groups[0]["lr"]
    assert type(lr) is float and lr == 0.125
    assert float_opt.param_groups[0]["capturable"] is False


# --------------------------------------------------------------------------- CUDA: the captured step
@cuda_only
@pytest.mark.parametrize("resident", [True, False])
def test_captured_step_trains_the_eager_weights_on_cuda(folder, tmp_path, resident):
    """Deterministic kernels, fp32: the replayed graph computes what the eager step computes, with the
    learning rate of each step (the cosine schedule changes it every step)."""
    common = {"device": "cuda", "deterministic": True, "amp": "none", "channels_last": False}
    eager = model_weights(train(_config(folder, device_resident=resident, train=common), run_dir=tmp_path / "e"))
    graph_config = _config(folder, device_resident=resident, train={**common, "cuda_graph": True})
    graph = model_weights(train(graph_config, run_dir=tmp_path / "g"))
    worst = max(float((eager[k].double() - graph[k].double()).abs().max()) for k in eager)
    assert worst <= 1e-6, worst


@cuda_only
def test_graph_is_captured_after_the_warmup_and_replayed():
    device = torch.device("cuda")
    model = torch.nn.Linear(4, 1).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=torch.tensor(0.01, device=device), fused=True, capturable=True)
    reference = torch.nn.Linear(4, 1).to(device)
    reference.load_state_dict(model.state_dict())
    ref_opt = torch.optim.Adam(reference.parameters(), lr=0.01)

    def fn(x):
        opt.zero_grad(set_to_none=True)
        loss = model(x).square().mean()
        loss.backward()
        opt.step()
        return (loss.detach(),)

    step = GraphStep(fn, device=device, warmup=2)
    for i in range(6):
        x = torch.full((8, 4), float(i + 1), device=device)
        set_learning_rate(opt, 0.01 / (i + 1))
        set_learning_rate(ref_opt, 0.01 / (i + 1))
        (loss,) = step(x)
        ref_opt.zero_grad()
        ref_loss = reference(x).square().mean()
        ref_loss.backward()
        ref_opt.step()
        assert step.captured == (i >= 2)
        torch.testing.assert_close(loss, ref_loss.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.weight, reference.weight, rtol=1e-5, atol=1e-6)
