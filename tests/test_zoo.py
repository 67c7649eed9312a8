"""The model zoo: ESPCN, FSRCNN, SRResNet, EDSR, RCAN and the two discriminators.

What is checked, and where each expected value comes from:

* shapes: the full presets run at x4; unsupported scales and channel counts raise ``ValueError``
  (the shapes for each supported scale and for 1, 3 and 4 channels are checked for every registered
  model by tests/test_contract.py).
* parameter counts: (a) exact, against layer-by-layer formulas written out by hand from each
  paper's configuration (not from the code), and (b) against the papers' published figures, within
  the precision the figure is published to (e.g. "43M" means 42.5M..43.5M, "1.5M" 1.45M..1.55M).
  The big presets are built on the ``meta`` device: no memory, no initialisation, no forward pass.
* learning: each family, at a tiny width, fits one fixed batch (loss falls below 40% of its start
  within 40 Adam steps).
* FSRCNN: the yjn870 peer weights load with the same parameter names and, on Set5 x4, score within
  0.05 dB of the shared sanity table's 30.52 dB.
* discriminators: N x 1 logits for several patch sizes (VGG-style) and the fixed size (SRGAN).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest
import torch
from support import l1_fit
import torch.nn.functional as F
from torch import nn

from superres.models.discriminators import SRGANDiscriminator, VGGStyleDiscriminator
from superres.models.edsr import DIV2K_RGB_MEAN, EDSR, image_mean
from superres.models.espcn import ESPCN
from superres.models.fsrcnn import FSRCNN, load_yjn870_state_dict
from superres.models.rcan import RCAN
from superres.models.srresnet import SRResNet

REPO = Path(__file__).resolve().parent.parent

# The presets as they are registered (see the report for the REGISTRY lines).
PRESETS: dict[str, Callable[..., nn.Module]] = {
    "espcn": ESPCN,
    "fsrcnn": FSRCNN,
    "srresnet": SRResNet,
    "edsr-baseline": lambda **kw: EDSR(blocks=16, channels=64, res_scale=1.0, **kw),
    "edsr": lambda **kw: EDSR(blocks=32, channels=256, res_scale=0.1, **kw),
    "rcan": lambda **kw: RCAN(groups=10, blocks=20, channels=64, reduction=16, **kw),
    "rcan-small": lambda **kw: RCAN(groups=3, blocks=6, channels=32, reduction=16, **kw),
}

SCALES = {"espcn": (2, 3, 4, 8), "fsrcnn": (2, 3, 4, 8), "srresnet": (2, 3, 4, 8), "edsr-baseline": (2, 3, 4, 8),
          "rcan-small": (2, 3, 4, 8)}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def on_meta(name: str, **kwargs: int) -> nn.Module:
    """Build a preset without allocating or initialising its weights (only shapes matter for counts)."""
    with torch.device("meta"):
        return PRESETS[name](**kwargs)


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """Run on one thread: these tensors are tiny, and on a busy machine idle OpenMP workers spinning
    for work cost many times the computation itself."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def peers_dir() -> Path:
    """../shared/peers next to the repository (the peer model weights); skip when absent."""
    path = REPO.parent / "shared" / "peers"
    if not (path / "yjn870-pr6_fsrcnn_x4.pth").is_file():
        pytest.skip("../shared/peers (peer model weights) is not present next to the repository")
    return path


# --------------------------------------------------------------------------- shapes and arguments
# The shapes of every scale and channel count, at small widths: tests/test_contract.py.
@pytest.mark.parametrize("name", list(SCALES))
def test_presets_run_at_x4(name: str) -> None:
    torch.manual_seed(0)
    model = PRESETS[name](scale=4, in_channels=3).eval()
    with torch.no_grad():
        y = model(torch.rand(1, 3, 5, 4))
    assert y.shape == (1, 3, 20, 16) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", list(SCALES))
@pytest.mark.parametrize("scale", [1, 5, 6, 16])
def test_unsupported_scale_raises(name: str, scale: int) -> None:
    with pytest.raises(ValueError, match="scale"):
        on_meta(name, scale=scale, in_channels=3)


@pytest.mark.parametrize("name", list(SCALES))
def test_bad_channel_count_raises(name: str) -> None:
    with pytest.raises(ValueError, match="in_channels"):
        on_meta(name, scale=2, in_channels=0)


# --------------------------------------------------------------------------- parameter counts
def conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def upsampler(f: int, scale: int) -> int:
    """Sub-pixel stages as in EDSR/SRResNet: x2 per stage (x4 = 2, x8 = 3) or one x3 stage."""
    stages = {2: [2], 3: [3], 4: [2, 2], 8: [2, 2, 2]}[scale]
    return sum(conv(f, f * r * r, 3) for r in stages)


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
@pytest.mark.parametrize("c", [1, 3])
def test_espcn_parameters_by_hand(scale: int, c: int) -> None:
    expected = conv(c, 64, 5) + conv(64, 32, 3) + conv(32, c * scale * scale, 3)
    assert n_params(on_meta("espcn", scale=scale, in_channels=c)) == expected


def test_espcn_x4_matches_the_papers_configuration() -> None:
    # 1*64*25+64 + 64*32*9+32 + 32*16*9+16, worked out in the task description.
    assert n_params(on_meta("espcn", scale=4, in_channels=1)) == 24752


def test_fsrcnn_parameters_match_the_paper() -> None:
    model = on_meta("fsrcnn", scale=4, in_channels=1)
    weights = sum(p.numel() for p in model.parameters() if p.dim() == 4)
    # Dong et al. count only the convolution weights: FSRCNN(56, 12, 4) has 12,464 ("12.46k").
    assert weights == 56 * 25 + 12 * 56 + 4 * 9 * 12 * 12 + 56 * 12 + 81 * 56 == 12464
    biases = 56 + 12 + 4 * 12 + 56 + 1
    prelu = 56 + 12 + 4 * 12 + 56
    assert n_params(model) == 12464 + biases + prelu == 12809


def srresnet_by_hand(c: int, scale: int, f: int = 64, blocks: int = 16) -> int:
    head = conv(c, f, 9) + f  # conv + per-channel PReLU
    block = 2 * conv(f, f, 3, bias=False) + 2 * 2 * f + f  # 2 convs, 2 BN (weight, bias), PReLU
    body_end = conv(f, f, 3, bias=False) + 2 * f
    stages = {2: [2], 3: [3], 4: [2, 2], 8: [2, 2, 2]}[scale]
    up = sum(conv(f, f * r * r, 3) + f for r in stages)  # conv, shuffle, PReLU
    return head + blocks * block + body_end + up + conv(f, c, 9)


def edsr_by_hand(c: int, scale: int, f: int, blocks: int) -> int:
    return conv(c, f, 3) + blocks * 2 * conv(f, f, 3) + conv(f, f, 3) + upsampler(f, scale) + conv(f, c, 3)


def rcan_by_hand(c: int, scale: int, f: int, groups: int, blocks: int, reduction: int = 16) -> int:
    squeezed = max(1, f // reduction)
    rcab = 2 * conv(f, f, 3) + conv(f, squeezed, 1) + conv(squeezed, f, 1)
    group = blocks * rcab + conv(f, f, 3)
    return conv(c, f, 3) + groups * group + conv(f, f, 3) + upsampler(f, scale) + conv(f, c, 3)


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
@pytest.mark.parametrize("c", [1, 3])
def test_residual_families_parameters_by_hand(scale: int, c: int) -> None:
    assert n_params(on_meta("srresnet", scale=scale, in_channels=c)) == srresnet_by_hand(c, scale)
    assert n_params(on_meta("edsr-baseline", scale=scale, in_channels=c)) == edsr_by_hand(c, scale, 64, 16)
    assert n_params(on_meta("rcan-small", scale=scale, in_channels=c)) == rcan_by_hand(c, scale, 32, 3, 6)


def test_big_presets_parameters_by_hand() -> None:
    assert n_params(on_meta("edsr", scale=4, in_channels=3)) == edsr_by_hand(3, 4, 256, 32)
    assert n_params(on_meta("rcan", scale=4, in_channels=3)) == rcan_by_hand(3, 4, 64, 10, 20)


# Published x4 parameter counts with 3 channels, and half a unit of their last published digit.
PUBLISHED_X4 = {
    "srresnet": (1.5e6, 0.05e6),  # comparison tables (PROTOCOL.md): 1.5M
    "edsr-baseline": (1.5e6, 0.05e6),  # Lim et al., Table 1: 1.5M
    "edsr": (43e6, 0.5e6),  # Lim et al., Table 1: 43M
    "rcan": (16e6, 0.5e6),  # Zhang et al., Fig. 6 / PROTOCOL.md: 16M
}


@pytest.mark.parametrize("name", list(PUBLISHED_X4))
def test_parameters_match_published_figures(name: str) -> None:
    reference, tolerance = PUBLISHED_X4[name]
    assert abs(n_params(on_meta(name, scale=4, in_channels=3)) - reference) <= tolerance


@pytest.mark.parametrize("name", list(PRESETS))
def test_registry_presets_match(name: str) -> None:
    from superres.models import registry

    # Every preset above is registered: a missing one is a failure, not a skip.
    assert name in registry.REGISTRY, f"{name!r} is not in superres.models.registry.REGISTRY"
    with torch.device("meta"):
        built = registry.build(name, scale=4, in_channels=3)
    assert n_params(built) == n_params(on_meta(name, scale=4, in_channels=3))


@pytest.mark.parametrize("name", list(PRESETS))
def test_registry_presets_compute_what_the_papers_configure(name: str) -> None:
    """Same weights, same output: the registered preset is the papers' configuration (``PRESETS``).

    Parameter counts cannot see the scalar settings: EDSR's ``res_scale`` (0.1 for the full model,
    1.0 for the baseline) has no parameter, so a preset with the wrong one has the right count and
    computes something else. Here the registered model gets the reference model's weights (strictly:
    same names and shapes) and must give the same output on a fixed input. Full width and depth, at
    x2 on a 6 x 5 input (about a second for EDSR's 43M parameters)."""
    from superres.models import registry

    assert name in registry.REGISTRY, f"{name!r} is not in superres.models.registry.REGISTRY"
    torch.manual_seed(0)
    reference = PRESETS[name](scale=2, in_channels=3).eval()
    built = registry.build(name, scale=2, in_channels=3).eval()
    built.load_state_dict(reference.state_dict())
    x = torch.rand(1, 3, 6, 5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = reference(x), built(x)
    assert got.shape == want.shape == (1, 3, 12, 10)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- behaviour
@pytest.mark.parametrize("cls", [EDSR, RCAN])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_mean_shift_is_removed_and_restored(cls: type[nn.Module], channels: int) -> None:
    """With a zero tail the network's output is exactly the mean it added back: DIV2K RGB or 0.5."""
    model = cls(scale=2, in_channels=channels, blocks=1, channels=8)
    nn.init.zeros_(model.tail.weight)
    nn.init.zeros_(model.tail.bias)
    expected = DIV2K_RGB_MEAN if channels == 3 else (0.5,) * channels
    with torch.no_grad():
        y = model(torch.rand(1, channels, 4, 4))
    assert torch.allclose(y, torch.tensor(expected).view(1, channels, 1, 1).expand_as(y))
    assert "mean" not in model.state_dict()  # derived from in_channels, not stored
    assert image_mean(channels).shape == (1, channels, 1, 1)


TINY: dict[str, Callable[[int, int], nn.Module]] = {
    "espcn": lambda s, c: ESPCN(s, c, channels=16, hidden=8),
    "fsrcnn": lambda s, c: FSRCNN(s, c, channels=16, s=8, blocks=2),
    "srresnet": lambda s, c: SRResNet(s, c, channels=16, blocks=2),
    "edsr": lambda s, c: EDSR(s, c, blocks=2, channels=16),
    "rcan": lambda s, c: RCAN(s, c, groups=2, blocks=2, channels=16, reduction=4),
}


@pytest.mark.parametrize("name", list(TINY))
def test_tiny_model_fits_one_batch(name: str) -> None:
    torch.manual_seed(0)
    scale, c = 2, 3
    hr = F.interpolate(torch.rand(2, c, 3, 3), size=(6 * scale, 6 * scale), mode="bilinear", align_corners=False)
    lr = F.avg_pool2d(hr, scale)
    model = TINY[name](scale, c)
    losses = l1_fit(model, lr, hr, steps=40, learning_rate=3e-3)
    assert losses[-1] < 0.4 * losses[0], losses


# --------------------------------------------------------------------------- discriminators
@pytest.mark.parametrize("size", [(16, 16), (24, 24), (40, 32), (33, 17)])
@pytest.mark.parametrize("channels", [1, 3])
def test_vgg_discriminator_any_patch_size(size: tuple[int, int], channels: int) -> None:
    model = VGGStyleDiscriminator(in_channels=channels, width=8, hidden=16)
    out = model(torch.rand(2, channels, *size))  # training mode: BN on batch statistics
    assert out.shape == (2, 1)
    model.eval()
    assert model(torch.rand(1, channels, *size)).shape == (1, 1)


@pytest.mark.parametrize("channels", [1, 3])
def test_srgan_discriminator_fixed_size(channels: int) -> None:
    torch.manual_seed(0)
    model = SRGANDiscriminator(in_channels=channels)  # the paper's 96x96, width 64, dense 1024
    # 96 / 2^4 = 6: the first dense layer sees 512 * 6 * 6 features.
    assert model.classifier[1].in_features == 512 * 6 * 6 and model.classifier[1].out_features == 1024
    assert model(torch.rand(2, channels, 96, 96)).shape == (2, 1)
    with pytest.raises(ValueError, match="96x96"):
        model(torch.rand(2, channels, 64, 64))


def test_srgan_discriminator_odd_size_and_gradients() -> None:
    model = SRGANDiscriminator(in_channels=3, input_size=40, width=8, hidden=16)  # 40 -> 20 -> 10 -> 5 -> 3
    assert model.classifier[1].in_features == 64 * 3 * 3
    x = torch.rand(2, 3, 40, 40, requires_grad=True)
    model(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_discriminator_conv_stack_matches_the_paper() -> None:
    model = VGGStyleDiscriminator(in_channels=3)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in convs] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert [m.stride[0] for m in convs] == [1, 2, 1, 2, 1, 2, 1, 2]
    assert all(m.kernel_size == (3, 3) for m in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.features) == 7  # all but the first
    acts = [m for m in model.features if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 8 and all(a.negative_slope == 0.2 for a in acts)


# --------------------------------------------------------------------------- FSRCNN peer weights
def load_peer(peers_dir: Path, scale: int) -> FSRCNN:
    state = torch.load(peers_dir / f"yjn870-pr6_fsrcnn_x{scale}.pth", map_location="cpu", weights_only=True)
    model = FSRCNN(scale=scale, in_channels=1)
    load_yjn870_state_dict(model, state)
    return model.eval()


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_fsrcnn_peer_weights_load_and_run(peers_dir: Path, scale: int) -> None:
    model = load_peer(peers_dir, scale)
    x = torch.full((1, 1, 10, 12), 0.5)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 1, 10 * scale, 12 * scale)
    # A trained SR model maps a flat grey image to (nearly) the same grey in the interior.
    interior = y[..., 2 * scale : -2 * scale, 2 * scale : -2 * scale]
    assert torch.allclose(interior, torch.full_like(interior, 0.5), atol=0.02)


def test_fsrcnn_peer_weights_reject_wrong_shapes(peers_dir: Path) -> None:
    state = torch.load(peers_dir / "yjn870-pr6_fsrcnn_x4.pth", map_location="cpu", weights_only=True)
    with pytest.raises(ValueError, match="first_part.0.weight"):
        load_yjn870_state_dict(FSRCNN(scale=4, in_channels=3), state)
    with pytest.raises(ValueError, match="missing keys"):
        load_yjn870_state_dict(FSRCNN(scale=4, in_channels=1, blocks=5), state)


@pytest.mark.shared_data
def test_fsrcnn_peer_set5_x4_score(peers_dir: Path, shared_data: Path) -> None:
    """Set5 x4 through the peer's pipeline: Y (BT.601 studio swing) / 255 in, Y out, PSNR on Y.

    Expected 30.52 dB from ../shared/peers/SOURCES.md (measured independently there); the paper's
    FSRCNN scores 30.71.
    """
    metrics = pytest.importorskip("superres.metrics")
    resize = pytest.importorskip("superres.resize")
    from PIL import Image

    model = load_peer(peers_dir, 4)
    scores = []
    for hr_path in sorted((shared_data / "Set5" / "HR").glob("*.png")):
        hr = resize.modcrop(np.asarray(Image.open(hr_path).convert("RGB")), 4)
        lr = np.asarray(Image.open(shared_data / "Set5" / "LR_bicubic" / "X4" / hr_path.name).convert("RGB"))
        y_lr = metrics.to_y(lr / 255.0) / 255.0
        with torch.no_grad():
            sr = model(torch.from_numpy(y_lr).float()[None, None]).clamp(0, 1)[0, 0].double().numpy()
        y_hr = metrics.to_y(hr / 255.0)
        scores.append(metrics.psnr(sr[..., None] * 255.0, y_hr[..., None], shave=4, channels="all", data_range=255.0))
    assert len(scores) == 5
    assert abs(float(np.mean(scores)) - 30.52) <= 0.05
