"""``lumanet``: its bicubic base is MATLAB bicubic, its residual touches only the luma."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from superres.color import rgb_to_ycbcr
from superres.models import build
from superres.models.complexity import count_flops, count_parameters
from superres.models.lumanet import LUMA_GAIN, bicubic_phase_kernels
from superres.resize import imresize
from superres.errors import SuperresError


def _zero_tail(net: torch.nn.Module) -> torch.nn.Module:
    torch.nn.init.zeros_(net.tail.weight)
    torch.nn.init.zeros_(net.tail.bias)
    return net.eval()


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("channels", [1, 3])
def test_zero_residual_is_exactly_matlab_bicubic(scale: int, channels: int) -> None:
    """With the tail at zero the model is superres.imresize (float64 reference), borders included."""
    net = _zero_tail(build("lumanet", scale=scale, in_channels=channels, channels=8, num_convs=1))
    x = torch.rand(2, channels, 11, 14, generator=torch.Generator().manual_seed(scale))
    with torch.inference_mode():
        got = net(x).permute(0, 2, 3, 1).double().numpy()
    for i in range(2):
        want = np.asarray(imresize(x[i].permute(1, 2, 0).double().numpy(), scale=scale)).reshape(got[i].shape)
        assert np.abs(got[i] - want).max() < 1e-6


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_phase_kernels_sum_to_one_and_are_separable(scale: int) -> None:
    kernels = bicubic_phase_kernels(scale)
    assert kernels.shape == (scale * scale, 1, 5, 5)
    assert np.allclose(kernels.sum(axis=(1, 2, 3)), 1.0, atol=1e-12)
    for k in kernels[:, 0]:
        assert np.linalg.matrix_rank(k, tol=1e-12) == 1


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([2, 3, 4]),
       h=st.integers(2, 11), w=st.integers(2, 11))
def test_residual_changes_luma_only(seed: int, scale: int, h: int, w: int) -> None:
    """Output minus bicubic moves Y and leaves Cb/Cr as bicubic made them (before clamping), for odd
    and even sizes."""
    torch.manual_seed(seed)
    net = build("lumanet", scale=scale, channels=8, num_convs=1).eval()
    torch.nn.init.normal_(net.tail.weight, std=0.5)  # a residual large enough to see
    base = _zero_tail(build("lumanet", scale=scale, channels=8, num_convs=1))
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        out = net(x)[0].permute(1, 2, 0).double().numpy()
        bic = base(x)[0].permute(1, 2, 0).double().numpy()
    ycc_out, ycc_bic = rgb_to_ycbcr(out), rgb_to_ycbcr(bic)
    assert np.abs(ycc_out[:, :, 1:] - ycc_bic[:, :, 1:]).max() < 1e-5
    delta_y = ycc_out[:, :, 0] - ycc_bic[:, :, 0]
    assert np.abs(delta_y).max() > 1e-2
    # The three channels moved by the same amount, which moved Y by LUMA_GAIN times that.
    delta_rgb = out - bic
    assert np.abs(delta_rgb - delta_rgb[:, :, :1]).max() < 1e-5
    assert np.abs(delta_y - LUMA_GAIN * delta_rgb[:, :, 0]).max() < 1e-5


def test_gray_residual_is_added_unchanged() -> None:
    net = build("lumanet", scale=2, in_channels=1, channels=8, num_convs=1).eval()
    base = _zero_tail(build("lumanet", scale=2, in_channels=1, channels=8, num_convs=1))
    base.body.load_state_dict(net.body.state_dict())
    x = torch.rand(1, 1, 8, 8)
    with torch.inference_mode():
        residual = net.bicubic.shuffle(net.tail(net.body(x - 0.5)))
        assert torch.allclose(net(x), base(x) + residual, atol=1e-6)


def test_other_band_counts_are_refused_with_the_reason() -> None:
    with pytest.raises(SuperresError, match="RGB .*gray"):
        build("lumanet", scale=4, in_channels=4)


def test_default_cost_is_what_the_docstring_says() -> None:
    net = build("lumanet", scale=4)
    params = count_parameters(net)
    # 3x3 convs: 1->32, 32->32 twice, 32->16, each with bias; the bicubic filters are fixed buffers.
    assert params == (9 * 32 + 32) + 2 * (9 * 32 * 32 + 32) + (9 * 32 * 16 + 16) == 23_440
    assert params <= 100_000
    assert not any(name.endswith("bicubic") for name in net.state_dict())  # not saved with the weights
    macs_per_lr_pixel = 9 * (32 + 2 * 32 * 32 + 32 * 16)
    assert macs_per_lr_pixel == 23_328
    flops = count_flops(net, (1, 3, 32, 32))
    trainable = 2 * macs_per_lr_pixel * 32 * 32
    assert trainable <= flops <= trainable * 1.25  # the rest: bicubic taps and the luma sum


def test_learns_another_lumanet() -> None:
    """Fitting a randomly initialised teacher's output: the loss falls (gradients reach every layer)."""
    torch.manual_seed(0)
    teacher = build("lumanet", scale=2, channels=8, num_convs=1).eval()
    torch.nn.init.normal_(teacher.tail.weight, std=0.3)
    student = build("lumanet", scale=2, channels=8, num_convs=1)
    lr = torch.rand(4, 3, 12, 12)
    with torch.no_grad():
        target = teacher(lr)
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss = (student(lr) - target).abs().mean()
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
        opt.step()
    assert losses[-1] < 0.5 * losses[0]


def test_onnx_export_matches_on_odd_sizes(tmp_path) -> None:
    """The exported graph handles sizes other than the traced one, borders included."""
    pytest.importorskip("onnxruntime")
    from superres.export import export_onnx, load_onnx

    net = build("lumanet", scale=3, channels=8, num_convs=1).eval()
    torch.nn.init.normal_(net.tail.weight, std=0.3)
    export_onnx(net, tmp_path / "m.onnx")
    onnx_model = load_onnx(tmp_path / "m.onnx", threads=1)
    for h, w in ((7, 9), (10, 5), (2, 3)):
        x = torch.rand(1, 3, h, w)
        with torch.inference_mode():
            want = net(x)
        got = onnx_model(x)
        assert got.shape == want.shape == (1, 3, 3 * h, 3 * w)
        assert torch.allclose(got, want, atol=1e-5)


# --------------------------------------------------------------------------- training-time expansion
def _randomised(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter drawn at random (biases too), so a fold that drops a term shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return net.eval()


@pytest.mark.parametrize("scale,channels", [(2, 1), (3, 3), (4, 3)])
def test_expanded_lumanet_folds_into_the_plain_one(scale: int, channels: int) -> None:
    """``expand`` changes the training form only: folded, it is a plain lumanet with the same outputs."""
    opts = {"channels": 8, "num_convs": 2}
    net = _randomised(build("lumanet", scale=scale, in_channels=channels, expand=24, **opts), seed=scale)
    plain = build("lumanet", scale=scale, in_channels=channels, **opts)
    folded = net.folded()
    assert folded.expand == 0 and not folded.training
    assert folded.state_dict().keys() == plain.state_dict().keys()
    assert count_parameters(folded) == count_parameters(plain) < count_parameters(net)
    x = torch.rand(2, channels, 9, 13, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want, got = net(x), folded(x)
    assert got.shape == (2, channels, 9 * scale, 13 * scale)
    assert (want - got).abs().max().item() < 1e-5 * want.abs().max().item()
    assert build("lumanet", scale=2, channels=8).folded() is not None


def test_folding_a_plain_lumanet_is_a_no_op_and_bad_expand_is_refused() -> None:
    from superres.models import fold

    plain = build("lumanet", scale=2, channels=8, num_convs=1)
    assert plain.folded() is plain
    assert fold(plain, {"scale": 2, "channels": 8}) == (plain, {"scale": 2, "channels": 8})
    expanded = build("lumanet", scale=2, channels=8, num_convs=1, expand=16)
    model, args = fold(expanded, {"scale": 2, "channels": 8, "expand": 16})
    assert model.expand == 0 and args == {"scale": 2, "channels": 8}
    for bad in (-1, 2.5, True):
        with pytest.raises(SuperresError, match="expand"):
            build("lumanet", scale=2, expand=bad)


def test_expanded_tail_starts_near_bicubic() -> None:
    """The expanded tail keeps the small start (tail_init on its last conv, zero bias)."""
    net = build("lumanet", scale=4, expand=64).eval()
    base = _zero_tail(build("lumanet", scale=4)).eval()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert (net(x) - base(x)).abs().mean().item() < 0.02
    assert net.tail.squeeze.bias.abs().sum().item() == 0.0


def test_onnx_export_of_an_expanded_lumanet_is_the_folded_graph(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    import onnx

    from superres.export import export_onnx, load_onnx

    net = _randomised(build("lumanet", scale=2, channels=8, num_convs=1, expand=16))
    plain = _randomised(build("lumanet", scale=2, channels=8, num_convs=1))
    export_onnx(net, tmp_path / "e.onnx")
    export_onnx(plain, tmp_path / "p.onnx")
    nodes = [n.op_type for n in onnx.load(str(tmp_path / "e.onnx")).graph.node]
    assert nodes == [n.op_type for n in onnx.load(str(tmp_path / "p.onnx")).graph.node]
    x = torch.rand(1, 3, 10, 7)
    with torch.inference_mode():
        want = net(x)
    assert torch.allclose(load_onnx(tmp_path / "e.onnx", threads=1)(x), want, atol=1e-5)
