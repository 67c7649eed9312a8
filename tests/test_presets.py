"""Every preset in configs/ loads strictly and trains end to end through ``superres train``.

Each preset runs exactly as a user would run it: ``superres.cli.main(["train", "--config", preset,
...overrides])``. Only the sizes change, through command-line overrides: tiny generated data, 16x16
HR patches, batch 2, two iterations, and narrower networks where the full one would be slow on a CPU.
The exported model must then load with :func:`superres.load_model` and upscale with
:func:`superres.upscale`.

The perceptual terms get a random VGG19 weights file that the test writes (laid out like
torchvision's). The SRGAN preset runs its whole path: it warm-starts from the model file of the
SRResNet preset's run (its ``model.init_from`` names ``runs/srresnet_x4/...``, and that run is the
one the test made), trains the discriminator alongside with L1 + perceptual + adversarial losses,
and its result is used by ``superres upscale``.

A new preset whose model has no entry in ``SMALL_OPTIONS`` fails here on purpose: say how to shrink it.
"""

from __future__ import annotations

import csv
import inspect
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import superres
from superres.cli import main
from superres.config import load_config

REPO = Path(__file__).resolve().parent.parent
PRESETS = sorted((REPO / "configs").glob("*.yaml"))
PATCH = 16  # HR patch side in the tiny runs (LR 4x4 at x4; 18 at x3)

#: Model options that make each architecture tiny (the full ones stay as the presets give them).
SMALL_OPTIONS: dict[str, dict[str, Any]] = {
    "baseline": {"channels": 4, "num_blocks": 1},
    "enhanced": {"channels": 4, "num_blocks": 1},
    "srresnet": {"channels": 8, "blocks": 1},
    "edsr-baseline": {"channels": 8, "blocks": 1},
    "edsr": {"channels": 8, "blocks": 1},
    "rcan": {"groups": 1, "blocks": 1, "channels": 8, "reduction": 4},
    "rcan-small": {"groups": 1, "blocks": 1, "channels": 8, "reduction": 4},
    "espcn": {},  # already small
    "fsrcnn": {"channels": 16, "s": 8, "blocks": 1},
    "lumanet": {"channels": 4, "blocks": 1},
}
SMALL_DISCRIMINATOR: dict[str, Any] = {"width": 4, "hidden": 8}

# torchvision's vgg19().features conv indices and (out, in) channels up to conv5_4
VGG19_CONVS = {
    0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128),
    10: (256, 128), 12: (256, 256), 14: (256, 256), 16: (256, 256),
    19: (512, 256), 21: (512, 512), 23: (512, 512), 25: (512, 512),
    28: (512, 512), 30: (512, 512), 32: (512, 512), 34: (512, 512),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(rng.uniform(0.1, 0.5) * y + rng.uniform(0.1, 0.5) * x + c) for c in range(3)], axis=2)
    return np.round((0.8 * (base + 1) / 2 + 0.2 * rng.random((h, w, 3))) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Training images, a 2-image benchmark folder (HR only: LR made on the fly) and a VGG19 file."""
    root = tmp_path_factory.mktemp("presets")
    rng = np.random.default_rng(0)
    (root / "train").mkdir()
    for i in range(3):
        Image.fromarray(_image(rng, 36, 40)).save(root / "train" / f"t{i}.png")
    (root / "val" / "HR").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(_image(rng, 24, 28)).save(root / "val" / "HR" / f"v{i}.png")
    g = torch.Generator().manual_seed(1)
    state = {}
    for index, (cout, cin) in VGG19_CONVS.items():
        state[f"features.{index}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * math.sqrt(2.0 / (cin * 9))
        state[f"features.{index}.bias"] = torch.zeros(cout)
    torch.save(state, root / "vgg19-random.pth")
    return {"root": root, "train": root / "train", "val": root / "val", "vgg": root / "vgg19-random.pth"}


def _overrides(preset: Path, ws: dict[str, Path], run_of: Callable[[str], Path]) -> list[str]:
    """The command-line overrides that shrink ``preset`` to a two-iteration CPU run."""
    raw = yaml.safe_load(preset.read_text())
    model = raw["model"]["name"]
    scale = int(raw["model"]["scale"])
    patch = PATCH if PATCH % scale == 0 else 6 * scale  # an HR patch must be a multiple of the scale
    assert model in SMALL_OPTIONS, f"{preset.name}: add tiny options for model {model!r} to SMALL_OPTIONS"
    out = [
        f"data.train=[{ws['train']}]",
        f"data.val={ws['val']}",
        f"data.patch_size={patch}",
        "data.batch_size=2",
        "train.iterations=2",
        "train.max_seconds=null",
        "train.val_every=2",
        "train.save_every=2",
        "train.log_every=1",
        "train.device=cpu",
    ]
    out += [f"model.options.{k}={v}" for k, v in SMALL_OPTIONS[model].items()]
    for i, term in enumerate(raw["loss"]):
        # VGG19 gets the random file; EfficientNet-Lite0 reads the weights the [perceptual] extra ships
        if term["type"] in ("perceptual", "style") and term.get("backbone", "vgg19") == "vgg19":
            out.append(f"loss.{i}.weights_path={ws['vgg']}")
    d = raw.get("discriminator")
    if d is not None:
        from superres.models.registry import DISCRIMINATORS

        accepted = inspect.signature(DISCRIMINATORS[d.get("name", "srgan")]).parameters
        out += [f"discriminator.options.{k}={v}" for k, v in SMALL_DISCRIMINATOR.items() if k in accepted]
        if d["name"] == "srgan":
            out.append(f"discriminator.options.input_size={PATCH}")
    init = raw["model"].get("init_from")
    if init is not None:
        # runs/<preset>/model.safetensors: the tiny run of that preset stands in for the real one
        source = Path(init).parent.name
        assert (REPO / "configs" / f"{source}.yaml").is_file(), f"{preset.name}: init_from {init} names no preset's run"
        out.append(f"model.init_from={run_of(source) / 'model.safetensors'}")
    return out


@pytest.fixture(scope="module")
def run_of(workspace: dict[str, Path]) -> Callable[[str], Path]:
    """``run_of("srresnet_x4")``: the run folder of that preset's tiny run, trained once on first use."""
    done: dict[str, Path] = {}

    def run(name: str) -> Path:
        if name not in done:
            preset = REPO / "configs" / f"{name}.yaml"
            folder = workspace["root"] / "runs" / name
            argv = ["train", "--config", str(preset), "--out", str(folder), *_overrides(preset, workspace, run)]
            assert main(argv) == 0, f"superres train failed for {preset.name}"
            done[name] = folder
        return done[name]

    return run


def _metrics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- every preset
def test_the_zoo_presets_exist() -> None:
    names = {p.stem for p in PRESETS}
    assert names >= {"srresnet_x4", "srgan_x4", "edsr_baseline_x4", "espcn_x4", "fsrcnn_x4", "rcan_x4"}


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
@pytest.mark.slow
def test_preset_trains_exports_and_upscales(preset: Path, workspace: dict[str, Path], run_of: Callable[[str], Path]) -> None:
    config = load_config(preset)  # strict, as written
    assert config.data.val == "../shared/data/Set5"
    assert config.out == f"runs/{preset.stem}"

    run = run_of(preset.stem)
    model_path = run / "model.safetensors"
    rows = _metrics(run / "metrics.csv")
    assert [int(r["iteration"]) for r in rows] == [1, 2]
    assert all(math.isfinite(float(r["loss"])) for r in rows) and rows[-1]["val_psnr_y"]

    model = superres.load_model(model_path)
    meta = model.superres_meta
    scale = config.model.scale
    assert meta["arch"] == config.model.name and meta["scale"] == scale and meta["iterations"] == 2
    assert meta["args"] == {"scale": scale, "in_channels": config.model.in_channels,
                            **config.model.options, **SMALL_OPTIONS[config.model.name]}
    image = np.random.default_rng(2).random((6, 7, 3)).astype(np.float32)
    out = superres.upscale(model, image)
    assert out.shape == (6 * scale, 7 * scale, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0


# --------------------------------------------------------------------------- the GAN path
def test_srgan_preset_warm_starts_trains_d_and_serves_upscale(
    workspace: dict[str, Path], run_of: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import load_file

    config = load_config(REPO / "configs" / "srgan_x4.yaml")
    assert config.model.init_from == "runs/srresnet_x4/model.safetensors"
    assert config.discriminator is not None
    types = [term["type"] for term in config.loss]
    assert types == ["l1", "perceptual", "adversarial"] and config.loss[1]["layers"] == {"conv5_4": 1.0}

    gan_run = run_of("srgan_x4")
    psnr_run = run_of("srresnet_x4")

    # warm start: after 2 Adam steps of lr 1e-4 every weight is within a few lr of the SRResNet's
    # (a random init would differ by ~0.1); batch-norm running statistics move with each forward.
    start = load_file(str(psnr_run / "model.safetensors"))
    end = load_file(str(gan_run / "model.safetensors"))
    assert start.keys() == end.keys()
    weights = [k for k in start if "running_" not in k and "num_batches" not in k]
    assert max(float((start[k] - end[k]).abs().max()) for k in weights) < 5 * config.optim.lr
    assert any(not torch.equal(start[k], end[k]) for k in weights)

    # both networks were trained: the checkpoint has the discriminator, the log its logits
    state = torch.load(gan_run / "last.pt", weights_only=True)
    assert state["gan"]["name"] == "srgan" and state["gan"]["optimizer"]["state"]
    rows = _metrics(gan_run / "metrics.csv")
    for row in rows:
        for key in ("loss_l1", "loss_perceptual", "loss_adversarial", "d_loss", "d_real", "d_fake"):
            assert math.isfinite(float(row[key])), key

    # `superres upscale` serves the GAN's model file
    Image.fromarray(_image(np.random.default_rng(3), 10, 12)).save(workspace["root"] / "input.png")
    out_dir = workspace["root"] / "upscaled"
    capsys.readouterr()
    argv = ["upscale", str(workspace["root"] / "input.png"), "--model", str(gan_run / "model.safetensors"),
            "--out", str(out_dir), "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    with Image.open(out_dir / "input.png") as result:
        assert result.size == (48, 40) and result.mode == "RGB"
