"""Registry, architectures (shapes, upsamplers, init, trainability) and the complexity counters."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from functools import partial

import pytest
import torch
from support import l1_fit
import torch.nn.functional as F
from torch import nn

from superres.errors import SuperresError
from superres.models import REGISTRY, build, names, options
from superres.models.blocks import UPSAMPLER_KINDS, PixelShuffle, make_upsampler, upsample_stages
from superres.models.complexity import count_flops, count_parameters

torch.set_num_threads(min(2, torch.get_num_threads()))

# Small widths keep the shape tests fast; the defaults are covered by the docstring/cost tests.
SMALL = {"channels": 8, "num_blocks": 1}


def _lr(n: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- registry
def test_registry_is_an_explicit_dict_and_names_are_sorted() -> None:
    assert isinstance(REGISTRY, dict)
    assert {"baseline", "enhanced"} <= set(REGISTRY)
    assert names() == sorted(REGISTRY)


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(SuperresError) as info:
        build("no-such-net", scale=4)
    message = str(info.value)
    assert "no-such-net" in message
    for name in names():
        assert name in message


def test_unknown_option_names_option_and_model() -> None:
    with pytest.raises(SuperresError, match=r"'enhanced'.*'chanels'"):
        build("enhanced", scale=4, chanels=32)


@pytest.mark.parametrize("name", ["baseline", "enhanced"])
@pytest.mark.parametrize("bad", [1, 5, 8, "4"])
def test_unsupported_scale_is_a_user_error(name: str, bad: object) -> None:
    with pytest.raises(SuperresError, match="scale"):
        build(name, scale=bad)
    # The classes themselves raise ValueError (plain library code, no CLI semantics).
    with pytest.raises(ValueError, match="scale"):
        REGISTRY[name](scale=bad)


def test_bad_upsampler_is_a_user_error() -> None:
    with pytest.raises(SuperresError, match="upsampler"):
        build("baseline", scale=2, upsampler="lanczos")


def test_preset_partials_work_through_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """A preset (functools.partial) is validated against the partial's signature like a class."""
    monkeypatch.setitem(REGISTRY, "tiny-preset", partial(REGISTRY["enhanced"], channels=8, blocks=1))
    model = build("tiny-preset", scale=2, in_channels=1)
    assert model.in_channels == 1 and model.scale == 2
    assert count_parameters(model) < count_parameters(build("enhanced", scale=2, in_channels=1))
    with pytest.raises(SuperresError, match="'tiny-preset'.*'depth'"):
        build("tiny-preset", scale=2, depth=3)


# --------------------------------------------------------------------------- option names
# Current names (blocks, channels) and the old ones still accepted: (arch, old, new, a non-default value).
RENAMED = [
    ("baseline", "num_blocks", "blocks", 2),
    ("enhanced", "num_blocks", "blocks", 2),
    ("espcn", "features", "channels", 16),
    ("fsrcnn", "d", "channels", 16),
    ("fsrcnn", "m", "blocks", 2),
    ("lumanet", "num_convs", "blocks", 3),
]


@pytest.mark.parametrize("name,old,new,value", RENAMED)
def test_old_option_name_builds_the_same_model(name: str, old: str, new: str, value: int) -> None:
    torch.manual_seed(0)
    by_old = build(name, scale=2, **{old: value})
    torch.manual_seed(0)
    by_new = build(name, scale=2, **{new: value})
    assert count_parameters(by_new) != count_parameters(build(name, scale=2))  # the option took effect
    assert by_old.state_dict().keys() == by_new.state_dict().keys()
    for key, tensor in by_new.state_dict().items():
        assert torch.equal(by_old.state_dict()[key], tensor), key
    assert new in options(name) and old not in options(name)


@pytest.mark.parametrize("name,old,new,value", RENAMED)
def test_old_and_new_option_name_together_is_an_error(name: str, old: str, new: str, value: int) -> None:
    with pytest.raises(SuperresError, match=f"model '{name}': options '{old}' and '{new}' are the same option"):
        build(name, scale=2, **{old: value, new: value})


def test_presets_of_a_class_accept_its_old_option_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(REGISTRY, "tiny-preset", partial(REGISTRY["enhanced"], channels=8))
    assert count_parameters(build("tiny-preset", scale=2, num_blocks=1)) == count_parameters(
        build("tiny-preset", scale=2, blocks=1)
    )


def test_shipped_model_files_with_old_option_names_load() -> None:
    """The shipped files store the args they were trained with (num_blocks, num_convs): unchanged."""
    from superres.modelfile import WEIGHTS_DIR, load_model, read_metadata, shipped_names

    old_names = {old for _, old, _, _ in RENAMED}
    shipped = shipped_names()
    assert any(old_names & set(read_metadata(WEIGHTS_DIR / f"{n}.safetensors")["args"]) for n in shipped)
    for name in shipped:
        model = load_model(name)
        assert model.scale == model.superres_meta["scale"]


# --------------------------------------------------------------------------- shapes
# The shapes of every scale and channel count: tests/test_contract.py (every registered model).
@pytest.mark.parametrize("name", ["baseline", "enhanced"])
@pytest.mark.parametrize("upsampler", UPSAMPLER_KINDS)
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_every_upsampler_in_every_model(name: str, upsampler: str, scale: int) -> None:
    model = build(name, scale=scale, in_channels=3, upsampler=upsampler, **SMALL)
    with torch.no_grad():
        out = model(_lr(1, 3, 6, 9))
    assert out.shape == (1, 3, 6 * scale, 9 * scale)


@pytest.mark.parametrize("kind", UPSAMPLER_KINDS)
@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_make_upsampler_modes(kind: str, scale: int) -> None:
    x = _lr(1, 5, 4, 3)
    with torch.no_grad():
        assert make_upsampler(kind, 5, scale)(x).shape == (1, 5, 4 * scale, 3 * scale)
        assert make_upsampler(kind, 5, scale, out_channels=2)(x).shape == (1, 2, 4 * scale, 3 * scale)


def test_upsample_stages() -> None:
    assert upsample_stages(2) == [2]
    assert upsample_stages(3) == [3]
    assert upsample_stages(4) == [2, 2]
    assert upsample_stages(8) == [2, 2, 2]
    with pytest.raises(ValueError):
        upsample_stages(5)


def test_pixelshuffle_feature_upsampler_is_two_x2_stages_at_x4() -> None:
    up = make_upsampler("pixelshuffle", 4, 4)
    shuffles = [m.upscale_factor for m in up if isinstance(m, nn.PixelShuffle)]
    convs = [m for m in up if isinstance(m, nn.Conv2d)]
    assert shuffles == [2, 2]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(4, 16), (4, 16)]
    # Projection mode is one conv to C*s^2 at LR and one PixelShuffle(s) (ESPCN's last layer).
    proj = make_upsampler("pixelshuffle", 4, 4, out_channels=3)
    assert [type(m) for m in proj] == [nn.Conv2d, PixelShuffle]  # our faster subclass of nn.PixelShuffle
    assert proj[0].out_channels == 3 * 16 and proj[1].upscale_factor == 4


# --------------------------------------------------------------------------- enhanced = bicubic + residual
def test_enhanced_starts_close_to_bicubic() -> None:
    torch.manual_seed(0)
    lr = _lr(1, 3, 12, 12)
    bicubic = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)
    with torch.no_grad():
        out = build("enhanced", scale=4)(lr)
        # Same architecture with the tail at its ordinary initialisation, for scale.
        torch.manual_seed(0)
        out_plain = build("enhanced", scale=4, tail_init=1.0)(lr)
    # The residual at init is small in absolute terms (1/100 of the value range on average)...
    assert (out - bicubic).abs().mean() < 0.02
    # ...and tail_init is what makes it small.
    assert (out - bicubic).abs().mean() < 0.2 * (out_plain - bicubic).abs().mean()


@pytest.mark.parametrize("upsampler", UPSAMPLER_KINDS)
def test_enhanced_with_zero_tail_is_exactly_bicubic(upsampler: str) -> None:
    lr = _lr(2, 1, 5, 6)
    model = build("enhanced", scale=3, in_channels=1, upsampler=upsampler, tail_init=0.0, **SMALL)
    with torch.no_grad():
        out = model(lr)
    expected = F.interpolate(lr, scale_factor=3, mode="bicubic", align_corners=False)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_enhanced_adds_before_its_one_shuffle_exactly_as_after_two(scale: int, dtype: torch.dtype) -> None:
    """The pixelshuffle tail adds the bicubic phases before a single shuffle: bit for bit the output of
    shuffling both and adding (what the layer list says), in fp32 and under bf16 autocast, NCHW and NHWC."""
    torch.manual_seed(scale)
    model = build("enhanced", scale=scale, channels=8, blocks=1, tail_init=1.0).eval()
    for x in (_lr(2, 3, 7, 9), _lr(1, 3, 6, 5).contiguous(memory_format=torch.channels_last)):
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            features = model.head(x - 0.5)
            features = features + model.trunk_conv(model.blocks(features))
            expected = model.bicubic(x) + model.tail(features)
            out = model(x)
        assert out.dtype == expected.dtype and torch.equal(out, expected)


# --------------------------------------------------------------------------- trainability
@pytest.mark.parametrize("name", ["baseline", "enhanced"])
def test_overfits_one_batch(name: str) -> None:
    """50 Adam steps on one 16x16 -> 64x64 pair must cut the L1 loss below half its start value."""
    g = torch.Generator().manual_seed(0)
    hr = F.interpolate(torch.rand(1, 3, 16, 16, generator=g), size=(64, 64), mode="bicubic", align_corners=False)
    stripes = (torch.arange(64) % 8 < 4).float()
    hr[..., 20:40, :] = 0.3 * hr[..., 20:40, :] + 0.7 * stripes  # an edge-rich band bicubic cannot recover
    hr = hr.clamp(0, 1)
    lr = F.avg_pool2d(hr, 4)
    torch.manual_seed(0)
    model = build(name, scale=4, channels=16, num_blocks=2)
    losses = l1_fit(model, lr, hr, steps=50, learning_rate=2e-3)
    assert losses[-1] < 0.5 * losses[0], losses


# --------------------------------------------------------------------------- complexity
def test_count_parameters_and_flops_of_one_conv_by_hand() -> None:
    conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)
    assert count_parameters(conv) == 3 * 8 * 9 + 8
    # 2 FLOPs per multiply-add, one 3*9-term dot product per output element.
    assert count_flops(conv, (2, 3, 10, 12)) == 2 * (3 * 9) * 8 * 10 * 12 * 2


def test_count_flops_of_a_transposed_conv_by_hand() -> None:
    deconv = nn.ConvTranspose2d(4, 2, kernel_size=4, stride=2, padding=1)
    # Each input pixel scatters a 4x4 kernel to every output channel: 4*2*16 MACs per input pixel.
    assert count_flops(deconv, (1, 4, 5, 5)) == 2 * 4 * 2 * 16 * 25


def _conv_params(cin: int, cout: int, k: int = 3) -> int:
    return cin * cout * k * k + cout


def test_baseline_parameter_count_from_its_layer_list() -> None:
    c, blocks, s = 64, 4, 4
    expected = (
        _conv_params(3, c)
        + blocks * 2 * _conv_params(c, c)
        + 2 * _conv_params(c, 4 * c)  # two x2 sub-pixel stages
        + _conv_params(c, 3)
    )
    assert count_parameters(build("baseline", scale=s)) == expected


def test_enhanced_parameter_and_flop_count_from_its_layer_list() -> None:
    c, blocks, h, w = 48, 8, 32, 32
    lr_convs = [(3, c)] + [(c, c)] * (2 * blocks + 1) + [(c, 3 * 16)]  # all at LR, incl. the sub-pixel conv
    model = build("enhanced", scale=4)
    assert count_parameters(model) == sum(_conv_params(a, b) for a, b in lr_convs)
    # the fixed bicubic base is a grouped 5x5 conv: 25 taps for each of the 16 phases of 3 channels
    bicubic = 2 * 3 * 16 * 25 * h * w
    assert count_flops(model, (1, 3, h, w)) == sum(2 * a * b * 9 * h * w for a, b in lr_convs) + bicubic


#: A row of docs/MODELS.md's cost table: `name` | parameters | GFLOPs 32x32->128x128 | ...
_COST_ROW = re.compile(r"^\| `(?P<name>[\w.-]+)` \| (?P<params>[\d,]+) \| (?P<gflops>[\d.]+) \|", re.M)


@pytest.mark.parametrize("name", names())
@pytest.mark.slow
def test_models_doc_states_the_true_cost(name: str) -> None:
    """docs/MODELS.md's cost table (x4, RGB, 32x32 input) holds each architecture's parameters and
    GFLOPs; they must match the model, so the documentation cannot drift from the code. (The
    figures lived in each module's docstring before; docstrings now state contracts only.)"""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "MODELS.md").read_text(encoding="utf-8")
    rows = {m["name"]: m for m in _COST_ROW.finditer(doc)}
    assert name in rows, f"docs/MODELS.md has no cost row for {name!r}"
    model = build(name, scale=4, in_channels=3)
    assert int(rows[name]["params"].replace(",", "")) == count_parameters(model)
    stated = float(rows[name]["gflops"])
    decimals = len(rows[name]["gflops"].split(".")[1]) if "." in rows[name]["gflops"] else 0
    assert abs(stated - count_flops(model, (1, 3, 32, 32)) / 1e9) <= 0.5 * 10**-decimals + 1e-12


@pytest.mark.slow
def test_models_doc_lists_every_architecture_with_its_parameter_count() -> None:
    """docs/MODELS.md is generated by scripts/make_models_doc.py; re-run it after adding a model."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "MODELS.md").read_text(encoding="utf-8")
    for name in names():
        params = count_parameters(build(name, scale=4, in_channels=3))
        assert re.search(rf"^\| `{re.escape(name)}` \| {params:,} \|", doc, re.M), f"{name} missing or stale in MODELS.md"


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
@pytest.mark.parametrize("factor", [2, 3, 4])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_pixel_shuffle_moves_the_same_values(factor: int, channels_last: bool, device: str) -> None:
    x = torch.randn(2, 3 * factor * factor, 5, 7, device=device, requires_grad=True)
    y = x.detach().clone().requires_grad_(True)
    fast_in = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    fast, ref = PixelShuffle(factor)(fast_in), nn.PixelShuffle(factor)(y)
    assert torch.equal(fast, ref)
    # on CUDA a channels_last input stays channels_last (the next conv needs no conversion)
    layout = torch.channels_last if channels_last and device == "cuda" else torch.contiguous_format
    assert fast.is_contiguous(memory_format=layout)
    grad = torch.randn_like(ref)
    if channels_last:  # as a channels_last conv's backward hands it over
        grad = grad.contiguous(memory_format=torch.channels_last)
    fast.backward(grad)
    ref.backward(grad.contiguous())
    assert torch.equal(x.grad, y.grad)


def test_onnx_export_keeps_depth_to_space(tmp_path) -> None:
    pytest.importorskip("onnx")
    import onnx

    from superres.export import export_onnx

    net = build("enhanced", scale=4, channels=4, num_blocks=1).eval()
    export_onnx(net, tmp_path / "m.onnx")
    ops = [node.op_type for node in onnx.load(str(tmp_path / "m.onnx")).graph.node]
    # one, shared by the sub-pixel tail and the bicubic base, which are added before it (the fast
    # path, traced, would give none); and no cubic Resize, which onnxruntime runs ~30x slower than
    # the conv form
    assert ops.count("DepthToSpace") == 1 and "Resize" not in ops


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("shape", [(2, 3, 13, 17), (1, 4, 1, 1), (1, 1, 2, 5)])
def test_bicubic_upsample_is_torch_bicubic_with_a_075(scale: int, shape: tuple[int, ...]) -> None:
    """The conv form of the bicubic base equals F.interpolate(mode="bicubic") (a = -0.75, edge pixels
    replicated), including images of one or two pixels."""
    from superres.models.blocks import TORCH_CUBIC_A, BicubicUpsample

    x = _lr(*shape, seed=scale)
    want = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
    got = BicubicUpsample(scale, shape[1], a=TORCH_CUBIC_A)(x)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5)
    assert not BicubicUpsample(scale, shape[1]).state_dict()  # fixed filters: nothing saved with a model


def test_baseline_global_skip_starts_at_bicubic_with_the_same_parameters() -> None:
    """``global_skip``: the output is bicubic plus a small correction at initialisation (the plain
    baseline's is far from the image), with the same learnable tensors (the bicubic filters are a
    non-persistent buffer), so files of either kind load by their recorded options."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, 12, 12)
    bicubic = F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
    skip, plain = build("baseline", scale=4, global_skip=True), build("baseline", scale=4)
    with torch.no_grad():
        off_skip, off_plain = (skip(x) - bicubic).abs().mean(), (plain(x) - bicubic).abs().mean()
    assert off_skip < 0.1 * off_plain
    assert skip.state_dict().keys() == plain.state_dict().keys()
