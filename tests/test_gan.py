"""Adversarial training in the shared trainer: the two steps, logging, exact resume, warm start, config.

Everything runs on tiny generated images, a tiny ``baseline`` generator and a narrow VGG-style
discriminator on one CPU thread. The expectations come from an independent path: hand-computed
learning rates, gradient signs and equality checks on the networks' weights, an uninterrupted run for
the resumed one, and the model file itself for the warm start.
"""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from support import run_two_ranks
from PIL import Image

from superres.config import Config, config_from_dict, dump_config, load_config, save_config
from superres.errors import SuperresError
from superres.losses import AdversarialLoss
from superres.modelfile import load_initial_weights
from superres.training import train
from superres.training.distributed import DistContext
from superres.training.gan import GANTraining, build_discriminator


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    """Three small RGB training images: smooth sinusoids plus noise."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "train"
    folder.mkdir()
    for i, (h, w) in enumerate([(24, 28), (30, 26), (20, 22)]):
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([np.sin(rng.uniform(0.1, 0.5) * y + rng.uniform(0.1, 0.5) * x + c) for c in range(3)], axis=2)
        image = (0.8 * (base + 1) / 2 + 0.2 * rng.random((h, w, 3))) * 255
        Image.fromarray(np.round(image).astype(np.uint8)).save(folder / f"t{i}.png")
    return folder


def _raw(images: Path, **sections: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "gan",
        "model": {"name": "baseline", "scale": 2, "options": {"channels": 4, "num_blocks": 1}},
        "data": {"train": [str(images)], "patch_size": 8, "batch_size": 4},
        "loss": [{"type": "l1", "weight": 1.0}, {"type": "adversarial", "weight": 0.1, "kind": "ragan"}],
        "optim": {"lr": 2e-3},
        "schedule": {"name": "cosine", "warmup": 0, "min_lr": 1e-5},
        "discriminator": {"name": "vgg", "options": {"width": 2, "hidden": 4}},
        "train": {"iterations": 10, "save_every": 4, "log_every": 2, "device": "cpu"},
    }
    for key, values in sections.items():
        raw[key] = {**raw.get(key, {}), **values} if isinstance(values, dict) and raw.get(key) else values
    return raw


def _config(images: Path, **sections: Any) -> Config:
    return config_from_dict(_raw(images, **sections), source="test")


def _metrics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


class _Interrupt(Exception):
    pass


# --------------------------------------------------------------------------- the two steps
def _gan(kind: str) -> GANTraining:
    from contextlib import nullcontext

    config = config_from_dict(
        {"data": {"train": ["x"], "patch_size": 8},
         "model": {"name": "baseline", "scale": 2},
         "loss": [{"type": "l1"}, {"type": "adversarial", "weight": 1.0, "kind": kind}],
         "discriminator": {"name": "vgg", "options": {"width": 2, "hidden": 4}, "optim": {"lr": 1e-2}}},
        source="test",
    )
    ctx = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), enabled=False)
    return GANTraining(config, (1.0, AdversarialLoss(kind)), ctx=ctx, autocast=nullcontext, channels_last=False,
                       fp16_scaler=False)


@pytest.mark.parametrize("kind", ["vanilla", "ragan"])
def test_generator_step_fools_frozen_d_and_d_step_leaves_g_alone(kind: str) -> None:
    torch.manual_seed(0)
    generator = torch.nn.Conv2d(3, 3, 3, padding=1)
    gan = _gan(kind)
    lr_img, hr = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)
    d = gan.discriminator

    # generator step: gradient reaches G through D, none lands on D
    sr = generator(lr_img)
    loss = gan.generator_loss(sr, hr)
    loss.backward()
    assert all(p.grad is None for p in d.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in generator.parameters())
    before = d(sr.detach()).mean().item()
    with torch.no_grad():
        for p in generator.parameters():
            p -= 0.05 * p.grad
    assert d(generator(lr_img)).mean().item() > before  # the step made D rate G's output more real

    # discriminator step: D learns, G's gradients are untouched (the SR input is detached)
    g_grads = [p.grad.clone() for p in generator.parameters()]
    d_before = {k: v.clone() for k, v in d.state_dict().items()}
    gan.discriminator_step(generator(lr_img), hr)
    assert any(not torch.equal(d_before[k], v) for k, v in d.state_dict().items())
    for p, g in zip(generator.parameters(), g_grads):
        assert torch.equal(p.grad, g)
    assert all(p.requires_grad for p in d.parameters())
    values = gan.log_values()
    assert set(values) == {"loss_adversarial", "d_loss", "d_real", "d_fake", "d_lr"}
    assert values["loss_adversarial"] == pytest.approx(loss.item())
    assert gan.log_values().keys() == {"loss_adversarial", "d_lr"}  # the window restarted


@pytest.mark.slow
def test_discriminator_overfits_against_a_frozen_generator(images: Path, tmp_path: Path) -> None:
    """With the generator held still (lr ~ 0), D must learn to tell its output from the real HR."""
    config = _config(
        images,
        loss=[{"type": "l1"}, {"type": "adversarial", "weight": 1e-3, "kind": "vanilla"}],
        optim={"lr": 1e-9},
        discriminator={"name": "vgg", "options": {"width": 4, "hidden": 8}, "optim": {"lr": 5e-3},
                       "schedule": {"name": "constant"}, "updates_per_step": 2},
        train={"iterations": 40, "log_every": 10, "save_every": 40},
    )
    train(config, run_dir=tmp_path / "run")
    rows = _metrics(tmp_path / "run" / "metrics.csv")
    first, last = rows[0], rows[-1]
    assert float(last["d_loss"]) < 0.5 * float(first["d_loss"]), [r["d_loss"] for r in rows]
    assert float(last["d_real"]) > float(last["d_fake"])


# --------------------------------------------------------------------------- a whole GAN run
@pytest.mark.slow
def test_gan_run_logs_d_and_resumes_exactly(images: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from superres.modelfile import save_model
    from superres.models import build

    # warm start file: a baseline model with known weights
    torch.manual_seed(3)
    start = build("baseline", scale=2, channels=4, num_blocks=1)
    init = save_model(tmp_path / "psnr.safetensors", start, arch="baseline", args={"channels": 4, "num_blocks": 1})
    config = _config(
        images,
        model={"init_from": str(init)},
        discriminator={"name": "vgg", "options": {"width": 2, "hidden": 4}, "start_iteration": 3,
                       "updates_per_step": 2, "optim": {"lr": 1e-3},
                       "schedule": {"name": "multistep", "milestones": [5], "gamma": 0.1}},
        train={"iterations": 10, "save_every": 4, "log_every": 2, "ema": 0.9},
    )
    full = tmp_path / "full"
    train(config, run_dir=full)

    rows = _metrics(full / "metrics.csv")
    assert [int(r["iteration"]) for r in rows] == [2, 4, 6, 8, 10]
    for row in rows:
        assert np.isfinite([float(row[k]) for k in ("d_loss", "d_real", "d_fake", "loss")]).all()
    # the generator's term starts after start_iteration = 3; D is trained from the start
    assert rows[0]["loss_adversarial"] == "" and float(rows[1]["loss_adversarial"]) > 0
    # D's own multistep schedule: lr 1e-3 for steps 0..4, 1e-4 from step 5 (iteration 6) on
    assert [float(r["d_lr"]) for r in rows] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-4])
    assert float(rows[0]["lr"]) != float(rows[0]["d_lr"])  # G keeps its own cosine
    state = torch.load(full / "last.pt", weights_only=True)
    assert state["gan"]["name"] == "vgg" and state["gan"]["optimizer"]["state"]

    # interrupted after the checkpoint at 8; the init file is gone: a resume must not read it
    def stop(iteration: int, model: torch.nn.Module) -> None:
        if iteration == 9:
            raise _Interrupt

    cut = tmp_path / "cut"
    with pytest.raises(_Interrupt):
        train(config, run_dir=cut, callback=stop)
    assert torch.load(cut / "last.pt", weights_only=True)["iteration"] == 8
    init.unlink()
    train(config, run_dir=cut, resume=True)

    _same(load_file(str(full / "model.safetensors")), load_file(str(cut / "model.safetensors")))
    # the warm start is recorded in the model's metadata, also by the resumed run (from last.pt)
    from superres.modelfile import read_metadata

    for run in (full, cut):
        meta = read_metadata(run / "model.safetensors")
        assert meta["init_from"]["path"] == str(init)
        assert meta["init_from"]["iterations"] == 0  # a hand-made file: no training recorded
        assert meta["total_iterations"] == meta["iterations"] == 10
        assert meta["total_wall_time_s"] == pytest.approx(meta["wall_time_s"], abs=1e-3)
    a, b = torch.load(full / "last.pt", weights_only=True), torch.load(cut / "last.pt", weights_only=True)
    _same(a["model"], b["model"])
    _same(a["gan"]["model"], b["gan"]["model"])  # D's weights and batch-norm buffers
    for k, v in a["gan"]["optimizer"]["state"].items():
        _same(v, b["gan"]["optimizer"]["state"][k])
    strip = lambda rs: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rs]  # noqa: E731
    assert strip(rows) == strip(_metrics(cut / "metrics.csv"))

    # resuming with another discriminator, or none, is refused
    with pytest.raises(SuperresError, match="resume with the same discriminator settings"):
        train(_config(images, discriminator={"options": {"width": 3, "hidden": 4}}), run_dir=cut, resume=True)
    plain = _config(images, loss=[{"type": "l1"}], discriminator=None)
    with pytest.raises(SuperresError, match="was trained with a discriminator"):
        train(plain, run_dir=cut, resume=True)


def test_generator_init_is_the_same_with_and_without_a_discriminator(images: Path, tmp_path: Path) -> None:
    """D is built after G, so adding a discriminator does not change the generator's random init."""
    from superres.training.trainer import Trainer

    seen: dict[str, dict[str, torch.Tensor]] = {}
    ctx = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), enabled=False)
    for name, config in (("gan", _config(images)), ("plain", _config(images, loss=[{"type": "l1"}], discriminator=None))):
        trainer = Trainer(config, tmp_path / name, ctx, resume=False, callback=None)
        seen[name] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        trainer.log.close()
    _same(seen["gan"], seen["plain"])


# --------------------------------------------------------------------------- warm start
def test_load_initial_weights_copies_exactly_and_checks_the_file(tmp_path: Path) -> None:
    from superres.modelfile import save_model
    from superres.models import build

    torch.manual_seed(1)
    source = build("baseline", scale=2, channels=4, num_blocks=1)
    path = save_model(tmp_path / "m.safetensors", source, arch="baseline", args={"channels": 4, "num_blocks": 1})
    target = build("baseline", scale=2, channels=4, num_blocks=1)
    load_initial_weights(target, path, arch="baseline")
    _same(source.state_dict(), target.state_dict())

    # the lineage it returns carries the totals of a chain of warm starts forward
    chained = save_model(tmp_path / "stage2.safetensors", source, arch="baseline", args={"channels": 4, "num_blocks": 1},
                         metadata={"name": "stage2", "iterations": 100, "wall_time_s": 50.0,
                                   "total_iterations": 300, "total_wall_time_s": 150.0})
    parent = load_initial_weights(target, chained, arch="baseline")
    assert (parent["name"], parent["iterations"], parent["wall_time_s"]) == ("stage2", 100, 50.0)
    assert (parent["total_iterations"], parent["total_wall_time_s"]) == (300, 150.0)
    first = load_initial_weights(target, path, arch="baseline")
    assert (first["total_iterations"], first["total_wall_time_s"]) == (0, 0.0)

    with pytest.raises(SuperresError, match=r"model.init_from: .*nope.safetensors: model file not found"):
        load_initial_weights(target, tmp_path / "nope.safetensors", arch="baseline")
    with pytest.raises(SuperresError, match="holds a 'baseline' model but model.name is 'enhanced'"):
        load_initial_weights(build("enhanced", scale=2), path, arch="enhanced")
    with pytest.raises(SuperresError, match=r"model.init_from: .*does not fit.*shape"):
        load_initial_weights(build("baseline", scale=2, channels=6, num_blocks=1), path, arch="baseline")
    with pytest.raises(SuperresError, match=r"model.init_from: .*does not fit.*missing"):
        load_initial_weights(build("baseline", scale=2, channels=4, num_blocks=2), path, arch="baseline")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(SuperresError, match="model.init_from: .*not a superres model file"):
        load_initial_weights(target, tmp_path / "junk.safetensors", arch="baseline")


def test_missing_init_file_fails_the_run_with_the_key(images: Path, tmp_path: Path) -> None:
    config = _config(images, model={"init_from": str(tmp_path / "runs" / "srresnet_x4" / "model.safetensors")})
    with pytest.raises(SuperresError, match="model.init_from: .*srresnet_x4/model.safetensors: model file not found"):
        train(config, run_dir=tmp_path / "run")


# --------------------------------------------------------------------------- config
def test_discriminator_section_round_trips_and_defaults(tmp_path: Path, images: Path) -> None:
    import yaml

    config = _config(images)
    d = config.discriminator
    assert d is not None and d.optim is None and d.schedule is None and d.start_iteration == 0 and d.updates_per_step == 1
    assert config_from_dict(yaml.safe_load(dump_config(config))) == config
    assert config_from_dict({"data": {"train": ["x"]}}).discriminator is None
    # overrides walk into the optional section, and can create it
    path = tmp_path / "c.yaml"
    raw = _raw(images, loss=[{"type": "l1"}, {"type": "adversarial", "weight": 1e-3, "kind": "hinge"}])
    del raw["discriminator"]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SuperresError, match="needs a discriminator"):
        load_config(path)
    made = load_config(path, ["discriminator.name=srgan", "discriminator.options.input_size=8",
                              "discriminator.optim.lr=1e-4"])
    assert made.discriminator is not None and made.discriminator.name == "srgan"
    assert made.discriminator.optim is not None and made.discriminator.optim.lr == 1e-4
    assert made.discriminator.options == {"input_size": 8}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"loss": [{"type": "l1"}]}, "'discriminator' is set but no loss term uses it"),
        ({"discriminator": None}, r"'loss.1' is an adversarial term, which needs a discriminator"),
        ({"discriminator": {"name": "vgg", "optim": {"lrr": 1e-4}}}, r"unknown key 'discriminator.optim.lrr' \(did you mean 'discriminator.optim.lr'\?\)"),
        ({"discriminator": {"name": "vgg", "start_iter": 2}}, r"unknown key 'discriminator.start_iter' \(did you mean 'discriminator.start_iteration'\?\)"),
        ({"discriminator": {"name": "vgg", "updates_per_step": 0}}, "'discriminator.updates_per_step' must be >= 1"),
        ({"discriminator": {"name": "vgg", "start_iteration": -1}}, "'discriminator.start_iteration' must be >= 0"),
        ({"discriminator": {"name": "vgg", "optim": {"lr": 0}}}, "'discriminator.optim.lr' must be > 0"),
        ({"discriminator": {"name": "vgg", "schedule": {"milestones": [5, 2]}}}, "'discriminator.schedule.milestones' must be increasing"),
        ({"discriminator": "vgg"}, "'discriminator' must be a mapping or null, got 'vgg'"),
        ({"model": {"name": "baseline", "scale": 2, "init_from": 3}}, "'model.init_from' must be a string or null"),
    ],
)
def test_config_errors(images: Path, change: dict[str, Any], message: str) -> None:
    raw = _raw(images)
    raw.update(change)
    with pytest.raises(SuperresError, match=message):
        config_from_dict(raw, source="test")


def test_override_errors_name_the_discriminator_key(images: Path, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    save_config(_config(images), path)
    with pytest.raises(SuperresError, match=r"override 'discriminator.updates=2': unknown key 'discriminator.updates' "
                                            r"\(did you mean 'discriminator.updates_per_step'\?\)"):
        load_config(path, ["discriminator.updates=2"])


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("patchgan", {}, "discriminator.name: unknown discriminator 'patchgan'; known: srgan, unet, vgg"),
        ("vgg", {"depth": 3}, "discriminator.options: 'vgg' has no option 'depth'; its options: width, hidden"),
        ("vgg", {"width": 0}, "discriminator 'vgg': width and hidden must be >= 1"),
    ],
)
def test_build_discriminator_errors(name: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(SuperresError, match=message):
        build_discriminator(name, in_channels=3, options=options)


def test_srgan_discriminator_size_mismatch_is_a_clear_error(images: Path, tmp_path: Path) -> None:
    config = _config(images, discriminator={"name": "srgan", "options": {"input_size": 96, "width": 2, "hidden": 4}})
    with pytest.raises(SuperresError, match="discriminator: cannot score data.patch_size=8 patches .*built for 96x96"):
        train(config, run_dir=tmp_path / "run")


# --------------------------------------------------------------------------- DDP
_DDP_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import torch
    torch.set_num_threads(1)
    from superres.config import load_config
    from superres.training import train
    from superres.training.trainer import Trainer

    config = load_config(sys.argv[1])
    out = sys.argv[3]
    original = Trainer._save

    def save_and_dump(self):
        original(self)
        if self.iteration == config.train.iterations:
            torch.save(self.gan.discriminator.state_dict(), os.path.join(out, f"d{os.environ['RANK']}.pt"))

    Trainer._save = save_and_dump
    train(config, run_dir=sys.argv[2])
    """
)


@pytest.mark.slow
def test_gan_under_ddp_two_cpu_processes(images: Path, tmp_path: Path) -> None:
    """Both networks are trained under DDP: the ranks end with identical discriminators."""
    config = _config(images, train={"iterations": 3, "save_every": 3, "log_every": 1})
    config_file = tmp_path / "ddp.yaml"
    save_config(config, config_file)
    run_two_ranks(_DDP_SCRIPT, config_file, tmp_path)
    d0, d1 = (torch.load(tmp_path / f"d{r}.pt", weights_only=True) for r in (0, 1))
    for k in d0:
        if "running" not in k and "num_batches" not in k:  # BN buffers are synced from rank 0 at each forward
            torch.testing.assert_close(d0[k], d1[k], rtol=0, atol=0)
    rows = _metrics(tmp_path / "run" / "metrics.csv")
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3] and all(r["d_loss"] for r in rows)


# --------------------------------------------------------------------------- the U-Net discriminator
def test_unet_discriminator_gives_a_logit_per_pixel_and_needs_sides_of_8() -> None:
    from superres.models.discriminators import UNetDiscriminator

    torch.manual_seed(0)
    d = UNetDiscriminator(in_channels=3, width=4)
    assert d(torch.rand(2, 3, 16, 24)).shape == (2, 1, 16, 24)
    assert UNetDiscriminator(in_channels=1, width=2)(torch.rand(1, 1, 8, 8)).shape == (1, 1, 8, 8)
    with pytest.raises(ValueError, match="multiples of 8"):
        d(torch.rand(1, 3, 16, 20))
    # a logit depends on its neighbourhood: changing one corner pixel moves that corner's logit most
    x = torch.rand(1, 3, 32, 32)
    d.eval()
    with torch.no_grad():
        base = d(x)
        y = x.clone()
        y[..., :2, :2] += 0.5
        change = (d(y) - base).abs()[0, 0]
    assert change[:4, :4].mean() > 10 * change[-4:, -4:].mean()


def test_unet_discriminator_is_spectrally_normalised() -> None:
    """Spectral norm divides each inner weight by its largest singular value (after power iterations
    in training mode), so the weights the layers use have a spectral norm of about 1."""
    from superres.models.discriminators import UNetDiscriminator

    torch.manual_seed(0)
    d = UNetDiscriminator(in_channels=3, width=4)
    with torch.no_grad():
        for conv in d.down:
            conv.parametrizations.weight.original.mul_(25.0)  # far from norm 1 before normalisation
        for _ in range(30):
            d(torch.rand(1, 3, 16, 16))
    for conv in [*d.down, *d.up]:
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert sigma == pytest.approx(1.0, abs=0.05)
    assert not hasattr(d.first, "parametrizations")  # the first and last convs are plain, as in the paper


def test_gan_run_with_the_unet_discriminator_resumes_exactly(images: Path, tmp_path: Path) -> None:
    """Spectral norm keeps power-iteration vectors as buffers: they must survive a resume."""
    from safetensors.torch import load_file

    config = _config(images, data={"patch_size": 8}, discriminator={"name": "unet", "options": {"width": 2}},
                     loss=[{"type": "l1"}, {"type": "adversarial", "weight": 0.1, "kind": "vanilla"}],
                     train={"iterations": 6, "save_every": 3, "log_every": 3})
    train(config, run_dir=tmp_path / "full")
    rows = _metrics(tmp_path / "full" / "metrics.csv")
    assert all(np.isfinite(float(r["d_loss"])) for r in rows)

    def stop(iteration: int, model: torch.nn.Module) -> None:
        if iteration == 4:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train(config, run_dir=tmp_path / "cut", callback=stop)
    train(config, run_dir=tmp_path / "cut", resume=True)
    _same(load_file(str(tmp_path / "full" / "model.safetensors")), load_file(str(tmp_path / "cut" / "model.safetensors")))
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["gan"]["model"]
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["gan"]["model"]
    assert any(k.endswith("_u") for k in a)
    _same(a, b)
