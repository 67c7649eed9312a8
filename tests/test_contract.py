"""The model contract (superres.models.contract), checked for every entry of superres.models.REGISTRY.

The cases are generated from the registry at collection time, so a new entry is covered by adding
it there. Each model is built small with its contract's ``test_options`` and checked for:

* forward: for each supported scale and for 1, 3 and 4 channels, ``N x C x h x w`` (odd,
  non-square) -> ``N x C' x (s*h) x (s*w)`` float32 and finite, and the smallest input the contract
  allows; a channel count the contract excludes, and a scale it does not list, are refused
  (:class:`SuperresError` from ``build``);
* backward: a gradient reaches every parameter (finite, not all zero);
* a save -> load round trip through superres.modelfile gives the same outputs;
* fold: where the contract has ``training_options``, the folded model (and the model rebuilt from
  the folded args) gives the same outputs; elsewhere ``fold`` returns the model itself;
* half/bfloat16: where the contract claims support, the model cast to that dtype runs and stays
  close to float32;
* ONNX: the export's own onnxruntime check passes and the exported file, run as an ``OnnxModel``,
  declares the same contract and gives the same outputs.

The check functions take a registry name, so the last tests run them on a dummy architecture
monkeypatched into the registry (covered without touching anything else), and on broken ones to
show that they fail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from superres.errors import SuperresError
from superres.export import TOLERANCE, export_onnx, load_onnx
from superres.modelfile import load_model, save_model
from superres.models import REGISTRY, ModelContract, SRModel, build, contract, describe, fold, names

CHANNELS = (1, 3, 4)
UNSUPPORTED_SCALES = (1, 2, 3, 4, 5, 8, 16)  # the ones a contract does not list must be refused


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- helpers
def tiny(name: str, scale: int, channels: int, **extra: object) -> nn.Module:
    """``name`` built small (its contract's ``test_options``), seeded."""
    torch.manual_seed(0)
    return build(name, scale=scale, in_channels=channels, **{**contract(name).test_options, **extra})


def default_case(name: str) -> tuple[int, int]:
    """A (scale, channels) the architecture takes: its first scale, RGB when it takes RGB."""
    arch = contract(name)
    channels = 3 if arch.takes_channels(3) else arch.channel_counts[0]
    return arch.scales[0], channels


def lr_size(arch: ModelContract, h: int = 7, w: int = 5) -> tuple[int, int]:
    """An odd, non-square input size the contract allows (scaled up to its multiple and minimum)."""
    m = arch.size_multiple
    return max(h * m, -(-arch.min_size // m) * m), max(w * m, -(-arch.min_size // m) * m)


def lr(n: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def randomize(model: nn.Module, seed: int = 1) -> nn.Module:
    """Perturb every parameter so that zero-initialised layers (biases, tails) matter in comparisons."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


# --------------------------------------------------------------------------- checks
def check_forward(name: str, scale: int, channels: int) -> None:
    arch = contract(name)
    assert scale in arch.scales
    if not arch.takes_channels(channels):
        with pytest.raises(SuperresError, match="channels"):
            tiny(name, scale, channels)
        return
    model = tiny(name, scale, channels).eval()
    assert isinstance(model, SRModel), f"{type(model).__name__} does not follow the SRModel protocol"
    assert model.scale == scale and model.in_channels == channels
    bound = describe(model)
    assert (bound.scale, bound.in_channels) == (scale, channels) and bound.out_channels is not None
    # The instance's contract is the architecture's, bound: the architecture-level fields agree.
    assert (bound.scales, bound.channel_counts, bound.size_multiple, bound.min_size) == (
        arch.scales, arch.channel_counts, arch.size_multiple, arch.min_size
    )
    h, w = lr_size(arch)
    with torch.no_grad():
        out = model(lr(2, channels, h, w))
    assert out.shape == (2, bound.out_channels, h * scale, w * scale)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    side = -(-arch.min_size // arch.size_multiple) * arch.size_multiple  # the smallest input allowed
    with torch.no_grad():
        out = model(lr(1, channels, side, side))
    assert out.shape == (1, bound.out_channels, side * scale, side * scale) and torch.isfinite(out).all()


def check_refuses_other_scales(name: str) -> None:
    arch = contract(name)
    _, channels = default_case(name)
    for scale in UNSUPPORTED_SCALES:
        if scale not in arch.scales:
            with pytest.raises(SuperresError, match="scale"):
                tiny(name, scale, channels)


def check_backward(name: str) -> None:
    scale, channels = default_case(name)
    model = tiny(name, scale, channels).train()
    h, w = lr_size(contract(name), 6, 5)
    out = model(lr(2, channels, h, w))
    target = lr(*out.shape, seed=1)
    (out - target).abs().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient reaches {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {pname}"
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient in {pname}"


def check_round_trip(name: str, folder: Path) -> None:
    scale, channels = default_case(name)
    model = randomize(tiny(name, scale, channels)).eval()
    path = save_model(folder / f"{name}.safetensors", model, arch=name, args=dict(contract(name).test_options))
    loaded = load_model(path)
    assert type(loaded) is type(model) and not loaded.training
    assert describe(loaded).scale == scale and describe(loaded).in_channels == channels
    assert describe(loaded).metadata["arch"] == name
    x = lr(2, channels, *lr_size(contract(name)))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def check_fold(name: str) -> None:
    arch = contract(name)
    scale, channels = default_case(name)
    args = {"scale": scale, "in_channels": channels, **arch.test_options}
    if not arch.training_options:
        model = tiny(name, scale, channels)
        assert describe(model).fold is None
        folded, folded_args = fold(model, args)
        assert folded is model and folded_args == args
        return
    model = randomize(tiny(name, scale, channels, **arch.training_options)).eval()
    assert describe(model).fold is not None, f"{name}: built with {dict(arch.training_options)} but has no fold"
    folded, folded_args = fold(model, {**args, **arch.training_options})
    assert folded_args == args  # the training-only options are dropped
    assert describe(folded).fold is None  # the folded form is final
    rebuilt = build(name, **folded_args)
    rebuilt.load_state_dict(folded.state_dict(), strict=True)
    x = lr(2, channels, *lr_size(arch))
    with torch.no_grad():
        want = model(x)
        torch.testing.assert_close(folded(x), want, rtol=0, atol=1e-5)
        torch.testing.assert_close(rebuilt.eval()(x), want, rtol=0, atol=1e-5)


def check_precision(name: str) -> None:
    arch = contract(name)
    scale, channels = default_case(name)
    model = randomize(tiny(name, scale, channels)).eval()
    bound = describe(model)
    x = lr(1, channels, *lr_size(arch))
    with torch.no_grad():
        want = model(x)
        for dtype, supported in ((torch.bfloat16, bound.supports_bfloat16), (torch.float16, bound.supports_half)):
            if not supported:
                continue
            got = tiny(name, scale, channels).eval()
            got.load_state_dict(model.state_dict())
            out = got.to(dtype)(x.to(dtype))
            assert out.dtype == dtype and out.shape == want.shape
            assert (out.float() - want).abs().max() < 0.1, f"{name} in {dtype}"


def check_onnx(name: str, folder: Path) -> None:
    scale, channels = default_case(name)
    model = randomize(tiny(name, scale, channels)).eval()
    path = folder / f"{name}.onnx"
    result = export_onnx(model, path)  # raises unless onnxruntime agrees with PyTorch
    assert result.max_abs_diff_random < TOLERANCE and result.max_abs_diff_image < TOLERANCE
    exported = load_onnx(path, threads=1)
    assert isinstance(exported, SRModel)
    bound = describe(exported)
    assert (bound.scale, bound.in_channels) == (scale, channels)
    x = lr(1, channels, *lr_size(contract(name), 9, 11), seed=3)
    with torch.no_grad():
        np.testing.assert_allclose(exported(x).numpy(), model(x).numpy(), rtol=0, atol=TOLERANCE)


# --------------------------------------------------------------------------- every registered model
FORWARD_CASES = [(n, s, c) for n in names() for s in contract(n).scales for c in CHANNELS]


@pytest.mark.parametrize("name,scale,channels", FORWARD_CASES, ids=[f"{n}-x{s}-{c}ch" for n, s, c in FORWARD_CASES])
def test_forward_shapes(name: str, scale: int, channels: int) -> None:
    check_forward(name, scale, channels)


@pytest.mark.parametrize("name", names())
def test_refuses_scales_outside_the_contract(name: str) -> None:
    check_refuses_other_scales(name)


@pytest.mark.parametrize("name", names())
def test_gradients_reach_every_parameter(name: str) -> None:
    check_backward(name)


@pytest.mark.parametrize("name", names())
def test_save_load_round_trip(name: str, tmp_path: Path) -> None:
    check_round_trip(name, tmp_path)


@pytest.mark.parametrize("name", names())
def test_fold(name: str) -> None:
    check_fold(name)


@pytest.mark.parametrize("name", names())
def test_half_and_bfloat16_where_claimed(name: str) -> None:
    check_precision(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", names())
def test_onnx_export(name: str, tmp_path: Path) -> None:
    check_onnx(name, tmp_path)


def test_every_registry_entry_states_a_contract() -> None:
    for name in REGISTRY:
        arch = contract(name)
        assert isinstance(arch, ModelContract)
        assert arch.scale is None and arch.in_channels is None  # architecture level: not bound yet
        assert arch.scales and all(s in (2, 3, 4, 8) for s in arch.scales)
        assert arch.test_options, f"{name}: no test_options (how to build it small)"


def test_int8_lumanet_contract() -> None:
    """The optional parts: an int8 model has a plan and warm-start-optional buffers and claims no
    half/bfloat16 (its integer sums are exact only in float32); its float twin has none of them."""
    plain, q = describe(build("lumanet", scale=2, channels=8)), describe(build("lumanet", scale=2, channels=8, int8=True))
    assert plain.int8_plan is None and plain.warm_start_optional == () and plain.supports_half
    assert q.int8_plan is not None and [c.module for c in q.int8_plan()] == ["body.2", "body.4", "tail"]
    assert q.warm_start_optional == ("act_scales",) and not q.supports_half and not q.supports_bfloat16


# --------------------------------------------------------------------------- a new architecture
class TinyNet(nn.Module):
    """A minimal architecture satisfying the contract: one conv and a pixel shuffle."""

    CONTRACT = ModelContract(scales=(2, 3), channel_counts=(1, 3), test_options={"width": 4})

    def __init__(self, scale: int, in_channels: int = 3, width: int = 8) -> None:
        super().__init__()
        if scale not in (2, 3):
            raise ValueError(f"scale must be 2 or 3, got {scale}")
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        self.scale, self.in_channels = scale, in_channels
        self.body = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU())
        self.up = nn.Sequential(nn.Conv2d(width, in_channels * scale**2, 3, padding=1), nn.PixelShuffle(scale))

    def contract(self) -> ModelContract:
        return self.CONTRACT.bind(self.scale, self.in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.body(x))


def run_all_checks(name: str, folder: Path) -> None:
    for scale in contract(name).scales:
        for channels in CHANNELS:
            check_forward(name, scale, channels)
    check_refuses_other_scales(name)
    check_backward(name)
    check_round_trip(name, folder)
    check_fold(name)
    check_precision(name)
    check_onnx(name, folder)


def test_a_new_registry_entry_is_covered(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(REGISTRY, "tiny-net", TinyNet)
    assert "tiny-net" in names()
    run_all_checks("tiny-net", tmp_path)


class WrongShape(TinyNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[..., :-1]


class NoContract(TinyNet):
    contract = None  # type: ignore[assignment]


class DeadParameter(TinyNet):
    def __init__(self, scale: int, in_channels: int = 3, width: int = 8) -> None:
        super().__init__(scale, in_channels, width)
        self.unused = nn.Parameter(torch.zeros(3))


class WrongScales(TinyNet):
    CONTRACT = ModelContract(scales=(2, 3, 4), channel_counts=(1, 3), test_options={"width": 4})


class WrongChannels(TinyNet):
    CONTRACT = ModelContract(scales=(2, 3), channel_counts=None, test_options={"width": 4})


@pytest.mark.parametrize(
    "broken,check",
    [
        (WrongShape, lambda n, f: check_forward(n, 2, 3)),
        (NoContract, lambda n, f: check_forward(n, 2, 3)),
        (DeadParameter, lambda n, f: check_backward(n)),
        (WrongScales, lambda n, f: [check_forward(n, s, 3) for s in contract(n).scales]),
        (WrongChannels, lambda n, f: check_forward(n, 2, 4)),
    ],
    ids=["wrong-shape", "no-contract", "dead-parameter", "claims-a-scale", "claims-4-channels"],
)
def test_a_model_that_breaks_the_contract_fails_the_checks(
    broken: type[nn.Module], check, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(REGISTRY, "broken", broken)
    with pytest.raises((AssertionError, SuperresError, TypeError)):
        check("broken", tmp_path)
