"""Int8 quantization-aware lumanet: fake quantization, observers, warm start and the QLinearConv export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from superres.errors import SuperresError
from superres.models import build, quant
from superres.models.lumanet import LUMA_GAIN


def _random_weights(net: torch.nn.Module, seed: int, std: float = 0.15) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return net


def _int8_twin(net: torch.nn.Module, **opts) -> torch.nn.Module:
    """An int8 lumanet with ``net``'s weights and scales observed on a few random batches."""
    q = build("lumanet", int8=True, **opts)
    q.load_state_dict({**q.state_dict(), **net.state_dict()}, strict=True)
    q.train()
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for _ in range(5):
            q(torch.rand(4, q.in_channels, 12, 12, generator=g))
    return q.eval()


# --------------------------------------------------------------------------- fake quantization
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), out=st.integers(1, 6), spread=st.floats(1e-3, 10.0))
def test_weights_land_on_a_symmetric_per_channel_int8_grid(seed: int, out: int, spread: float) -> None:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, 3, 3, 3, generator=g) * spread * torch.rand(out, 1, 1, 1, generator=g)
    scales = quant.weight_scales(w)
    q = quant.fake_quant_weight(w)
    steps = q / scales.view(-1, 1, 1, 1)
    assert torch.allclose(steps, steps.round(), atol=1e-3)
    assert steps.abs().max() <= quant.WEIGHT_QMAX + 1e-3
    # the largest weight of each channel is exactly +-127 steps; every weight moves by at most half a step
    assert torch.allclose(steps.abs().amax(dim=(1, 2, 3)), torch.full((out,), 127.0), atol=1e-3)
    assert ((q - w).abs() <= scales.view(-1, 1, 1, 1) * 0.5 + 1e-6).all()


def test_activation_quantization_rounds_and_saturates() -> None:
    scale = torch.tensor(0.01)
    x = torch.tensor([-0.3, 0.0, 0.004, 0.006, 1.0, 2.55, 3.0])
    assert torch.allclose(quant.fake_quant_act(x, scale), torch.tensor([0.0, 0.0, 0.0, 0.01, 1.0, 2.55, 2.55]))
    signed = quant.fake_quant_act(torch.tensor([-2.0, -0.5, 0.5, 2.0]), scale, quant.SIGNED_ZERO_POINT)
    assert torch.allclose(signed, torch.tensor([-1.28, -0.5, 0.5, 1.27]))


def test_observer_starts_at_the_first_batch_then_moves_by_the_momentum() -> None:
    scales = torch.zeros(2)
    quant.observe_scale(scales, 0, torch.tensor([0.0, 2.55]), signed=False, momentum=0.1)
    assert scales[0].item() == pytest.approx(0.01)
    quant.observe_scale(scales, 0, torch.tensor([5.1]), signed=False, momentum=0.1)
    assert scales[0].item() == pytest.approx(0.9 * 0.01 + 0.1 * 0.02)
    quant.observe_scale(scales, 1, torch.tensor([-1.27, 0.5]), signed=True, momentum=0.1)
    assert scales[1].item() == pytest.approx(0.01)


# --------------------------------------------------------------------------- the int8 lumanet
@pytest.mark.parametrize("scale,channels", [(2, 1), (4, 3)])
def test_int8_lumanet_is_close_to_its_float_twin_and_trains(scale: int, channels: int) -> None:
    opts = {"scale": scale, "in_channels": channels, "channels": 8, "num_convs": 2}
    net = _random_weights(build("lumanet", **opts), seed=scale).eval()
    q = _int8_twin(net, **opts)
    assert (q.act_scales > 0).all()
    x = torch.rand(2, channels, 11, 9, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        want, got = net(x), q(x)
    assert got.shape == want.shape
    mse = ((got - want) ** 2).mean().item()
    assert 0 < mse and 10 * np.log10(1.0 / mse) > 35  # rounding, but small
    # quantization-aware: the gradient reaches every parameter through the rounding
    q.train()
    (q(x) - want).abs().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in q.parameters())


def test_integer_pass_matches_fake_quantization_up_to_rare_boundary_flips() -> None:
    """Eval mode (integer arithmetic) and training mode (fake quantization) compute the same function;
    they may differ by one step of the residual where float rounding crosses a rounding boundary."""
    opts = {"scale": 4, "in_channels": 3, "channels": 8, "num_convs": 2}
    q = _int8_twin(_random_weights(build("lumanet", **opts), seed=7), **opts)
    x = torch.rand(2, 3, 20, 17, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        exact = q(x)
        q.observer_momentum = 0.0  # a training-mode pass that leaves the scales as they are
        fake = q.train()(x)
    q.eval()
    step = q.act_scales[-1].item() / LUMA_GAIN
    diff = (exact - fake).abs()
    assert diff.max().item() <= 2 * step + 1e-6
    assert (diff > 1e-5).float().mean().item() < 0.01


def test_int8_conv_is_the_integer_arithmetic_of_qlinearconv() -> None:
    """``int8_conv`` against a direct integer computation (numpy int64) of the same formula."""
    g = torch.Generator().manual_seed(11)
    conv = torch.nn.Conv2d(5, 4, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.3)
        conv.bias.copy_(torch.randn(4, generator=g) * 0.1)
    x_q = torch.randint(0, 256, (1, 5, 6, 7), generator=g).float()
    s_in, s_out = torch.tensor(0.02), torch.tensor(0.05)
    got = quant.int8_conv(conv, x_q, s_in, s_out, 128)
    w_q, w_s = quant.int8_weight(conv.weight)
    b_q = quant.int32_bias(conv.bias, s_in, w_s)
    xi = np.pad(x_q.numpy().astype(np.int64)[0], ((0, 0), (1, 1), (1, 1)))
    wi = w_q.numpy().astype(np.int64)
    acc = np.zeros((4, 6, 7), np.int64)
    for dy in range(3):
        for dx in range(3):
            acc += np.einsum("oc,chw->ohw", wi[:, :, dy, dx], xi[:, dy : dy + 6, dx : dx + 7])
    acc += b_q.numpy().astype(np.int64)[:, None, None]
    multiplier = ((s_in * w_s) / s_out).numpy().astype(np.float32)
    want = np.clip(np.rint(acc.astype(np.float32) * multiplier[:, None, None]) + 128, 0, 255)
    assert np.array_equal(got[0].numpy(), want)
    assert np.abs(w_q.numpy()).max() == 127 and set(np.unique(got.numpy())) <= set(range(256))


def test_int8_lumanet_refuses_unobserved_scales_and_bad_options() -> None:
    q = build("lumanet", scale=2, channels=8, num_convs=1, int8=True).eval()
    with pytest.raises(RuntimeError, match="never observed"):
        q(torch.rand(1, 3, 6, 6))
    with pytest.raises(SuperresError, match="int8 and expand"):
        build("lumanet", scale=2, int8=True, expand=16)
    with pytest.raises(SuperresError, match="int8 must be"):
        build("lumanet", scale=2, int8=1)
    assert build("lumanet", scale=2).int8_plan() == []


def test_warm_start_from_a_float_model_file_observes_the_scales_afresh(tmp_path) -> None:
    from superres.modelfile import load_initial_weights, save_model

    opts = {"scale": 2, "in_channels": 3, "channels": 8, "num_convs": 1}
    net = _random_weights(build("lumanet", **opts), seed=1)
    save_model(tmp_path / "float.safetensors", net, arch="lumanet", args=opts)
    q = build("lumanet", int8=True, **opts)
    load_initial_weights(q, tmp_path / "float.safetensors", arch="lumanet")
    assert torch.equal(q.tail.weight, net.tail.weight) and (q.act_scales == 0).all()
    # only the declared buffers may be missing: a float model still refuses a file without a weight
    other = build("lumanet", scale=2, channels=8, num_convs=2)
    with pytest.raises(SuperresError, match="missing body.4.weight"):
        load_initial_weights(other, tmp_path / "float.safetensors", arch="lumanet")


def test_int8_model_file_round_trip_keeps_the_scales(tmp_path) -> None:
    from superres.modelfile import load_model, save_model

    opts = {"scale": 3, "in_channels": 3, "channels": 8, "num_convs": 1}
    q = _int8_twin(_random_weights(build("lumanet", **opts), seed=2), **opts)
    save_model(tmp_path / "q.safetensors", q, arch="lumanet", args={**opts, "int8": True}, weights_dtype="float16")
    back = load_model(str(tmp_path / "q.safetensors"))
    assert back.int8 and torch.equal(back.act_scales, q.act_scales)  # buffers stay float32


# --------------------------------------------------------------------------- ONNX export
@pytest.mark.parametrize("scale,channels,num_convs", [(4, 3, 2), (3, 1, 1), (2, 3, 0)])
def test_int8_export_runs_qlinearconv_and_matches_pytorch(tmp_path, scale: int, channels: int, num_convs: int) -> None:
    pytest.importorskip("onnxruntime")
    import onnx
    from onnx import numpy_helper

    from superres.export import export_onnx, load_onnx

    opts = {"scale": scale, "in_channels": channels, "channels": 8, "blocks": num_convs}
    q = _int8_twin(_random_weights(build("lumanet", **opts), seed=scale + num_convs), **opts)
    result = export_onnx(q, tmp_path / "q.onnx")
    assert max(result.max_abs_diff_random, result.max_abs_diff_image) < 1e-5
    assert result.int8 == [f"body.{2 * k}" for k in range(1, num_convs + 1)] + ["tail"]
    proto = onnx.load(str(tmp_path / "q.onnx"))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QLinearConv") == num_convs + 1
    assert ops.count("Conv") == 2  # the head and the bicubic base stay float
    assert ops.count("QuantizeLinear") == 1 and ops.count("DequantizeLinear") == 1 and "Relu" in ops  # the head's ReLU
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    assert inits["int8/tail/w"].dtype == np.int8 and inits["int8/tail/b"].dtype == np.int32
    assert not any(name.startswith(("body.2.", "tail.")) for name in inits)  # no float copy of a quantized conv
    model = load_onnx(tmp_path / "q.onnx", threads=1)
    for h, w in ((7, 9), (16, 5), (2, 3), (40, 33)):
        x = torch.rand(2, channels, h, w, generator=torch.Generator().manual_seed(h * w))
        with torch.inference_mode():
            want = q(x)
        # the eval-mode integer pass is onnxruntime's QLinearConv, step for step
        assert (model(x) - want).abs().max().item() < 1e-5
    # the graph really uses the model's scales: a model observed differently disagrees with it
    other = q.__class__(**opts, int8=True)
    other.load_state_dict({**q.state_dict(), "act_scales": q.act_scales * 1.3})
    x = torch.rand(1, channels, 12, 12, generator=torch.Generator().manual_seed(9))
    with torch.inference_mode():
        assert (model(x) - other.eval()(x)).abs().mean().item() > 1e-3


def test_int8_export_names_a_conv_it_cannot_find(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    import onnx

    from superres.export import export_onnx, quantize_graph
    from superres.models.quant import Int8Conv

    net = build("lumanet", scale=2, channels=8, num_convs=1).eval()
    export_onnx(net, tmp_path / "f.onnx")
    proto = onnx.load(str(tmp_path / "f.onnx"))
    with pytest.raises(SuperresError, match="no Conv node reads body.9.weight"):
        quantize_graph(proto, [Int8Conv("body.9", 0.01, 0.01, 0, True)])


def test_the_shipped_int8_model_exports_to_the_same_outputs(tmp_path) -> None:
    """lumanet-x4-deep-int8: its ONNX graph (int8 QLinearConv) and its PyTorch eval pass agree exactly
    enough for the usual export check, on a photo, and its recorded scores are the same in both."""
    pytest.importorskip("onnxruntime")
    from superres.export import check_image_input, export_onnx, load_onnx
    from superres.modelfile import WEIGHTS_DIR, load_model, read_metadata

    meta = read_metadata(WEIGHTS_DIR / "lumanet-x4-deep-int8.safetensors")
    assert meta["args"]["int8"] is True and meta["params"] < 100_000
    for scores in meta["scores"].values():
        assert scores["psnr_y"] == pytest.approx(scores["onnx_int8"]["psnr_y"], abs=1e-4)
    net = load_model("lumanet-x4-deep-int8")
    result = export_onnx("lumanet-x4-deep-int8", tmp_path / "q.onnx")
    assert result.int8 == ["body.2", "body.4", "body.6", "tail"]
    x, _ = check_image_input(3)
    x = torch.from_numpy(x)
    with torch.inference_mode():
        want = net(x)
    assert (load_onnx(tmp_path / "q.onnx", threads=1)(x) - want).abs().max().item() < 1e-5
