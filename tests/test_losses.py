"""Pixel losses, the VGG19 perceptual loss (layout, weights lookup, gradients) and build_loss."""

from __future__ import annotations

import math
import os
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from superres import losses
from superres.errors import SuperresError
from superres.losses import (
    CharbonnierLoss,
    L1Loss,
    MSELoss,
    PerceptualLoss,
    VGGFeatures,
    build_loss,
    vgg19_layer_index,
)

torch.set_num_threads(min(2, torch.get_num_threads()))

# torchvision's vgg19().features, written out independently of superres.losses: the index of every
# conv and its (out, in) channels. Convs sit at these indices because each conv is followed by a ReLU
# and each block by a max pool (ESRGAN's conv5_4 feature extractor is features[:35]).
TORCHVISION_VGG19_CONVS = {
    0: (64, 3), 2: (64, 64),
    5: (128, 64), 7: (128, 128),
    10: (256, 128), 12: (256, 256), 14: (256, 256), 16: (256, 256),
    19: (512, 256), 21: (512, 512), 23: (512, 512), 25: (512, 512),
    28: (512, 512), 30: (512, 512), 32: (512, 512), 34: (512, 512),
}


def _random_vgg19_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    state: dict[str, torch.Tensor] = {}
    for index, (cout, cin) in TORCHVISION_VGG19_CONVS.items():
        std = math.sqrt(2.0 / (cin * 9))  # He init keeps activations in range through 16 convs
        state[f"features.{index}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * std
        state[f"features.{index}.bias"] = torch.randn(cout, generator=g) * 0.01
    # The real file also holds the classifier; tiny stand-ins check that it is ignored.
    state["classifier.0.weight"] = torch.zeros(2, 2)
    state["classifier.0.bias"] = torch.zeros(2)
    return state


@pytest.fixture(scope="module")
def vgg_state() -> dict[str, torch.Tensor]:
    return _random_vgg19_state()


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory: pytest.TempPathFactory, vgg_state: dict[str, torch.Tensor]) -> Path:
    path = tmp_path_factory.mktemp("vgg") / "my-vgg19.pth"
    torch.save(vgg_state, path)
    return path


# --------------------------------------------------------------------------- pixel losses
def test_pixel_losses_by_hand() -> None:
    sr = torch.tensor([[[[0.0, 0.5], [1.0, 0.25]]]])
    hr = torch.tensor([[[[0.0, 0.0], [0.5, 0.75]]]])
    assert L1Loss()(sr, hr).item() == pytest.approx((0 + 0.5 + 0.5 + 0.5) / 4)
    assert MSELoss()(sr, hr).item() == pytest.approx((0 + 0.25 + 0.25 + 0.25) / 4)
    eps = 1e-3
    expected = (eps + 3 * math.sqrt(0.25 + eps**2)) / 4
    assert CharbonnierLoss(eps)(sr, hr).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError):
        CharbonnierLoss(0.0)


# --------------------------------------------------------------------------- layer names
def test_pixel_losses_on_luma() -> None:
    """space: y compares BT.601 Y (PROTOCOL.md's weights, no offset): an error that leaves Y alone costs
    nothing, one along Y costs its Y amount; gray is its own luma; other band counts are refused."""
    from superres.color import rgb_to_ycbcr

    rng = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 3, 6, 5, generator=rng)
    loss = build_loss([{"type": "l1", "space": "y"}])
    chroma_only = torch.tensor([1.0, -0.5, 0.0]).view(1, 3, 1, 1) * 0.01
    chroma_only[:, 2] = -(65.481 * chroma_only[0, 0] + 128.553 * chroma_only[0, 1]) / 24.966  # Y unchanged
    assert float(loss(hr + chroma_only, hr)) < 1e-7
    sr = hr + 0.02 * torch.randn(hr.shape, generator=rng)
    y = lambda t: rgb_to_ycbcr(t.permute(0, 2, 3, 1).double().numpy())[..., 0]  # noqa: E731
    assert float(loss(sr, hr)) == pytest.approx(float(np.abs(y(sr) - y(hr)).mean()), rel=1e-5)
    mse = build_loss([{"type": "mse", "space": "y"}])
    assert float(mse(sr, hr)) == pytest.approx(float(((y(sr) - y(hr)) ** 2).mean()), rel=1e-4)
    gray = build_loss([{"type": "charbonnier", "space": "y", "eps": 1e-3}])
    assert float(gray(hr[:, :1] + 0.1, hr[:, :1])) == pytest.approx(float(np.sqrt(0.01 + 1e-6)), rel=1e-5)
    with pytest.raises(SuperresError, match="space: y needs RGB or gray images, got 4 channels"):
        loss(torch.rand(1, 4, 3, 3), torch.rand(1, 4, 3, 3))
    with pytest.raises(SuperresError, match="space must be one of all, y"):
        build_loss([{"type": "l1", "space": "ycbcr"}])
    assert float(build_loss([{"type": "l1", "space": "all"}])(sr, hr)) == pytest.approx(float((sr - hr).abs().mean()))


def test_layer_names_map_to_torchvision_indices() -> None:
    assert vgg19_layer_index("conv1_1") == 0
    assert vgg19_layer_index("relu1_1") == 1
    assert vgg19_layer_index("pool1") == 4
    assert vgg19_layer_index("conv2_2") == 7
    assert vgg19_layer_index("relu2_2") == 8
    assert vgg19_layer_index("conv5_4") == 34
    assert vgg19_layer_index("relu5_4") == 35
    assert vgg19_layer_index("pool5") == 36
    assert vgg19_layer_index(22) == 22
    for name, index in [(f"conv{b}_{l}", i) for i, (b, l) in zip(TORCHVISION_VGG19_CONVS, _block_layers())]:
        assert vgg19_layer_index(name) == index
    with pytest.raises(SuperresError, match="conv6_1"):
        vgg19_layer_index("conv6_1")
    with pytest.raises(SuperresError, match="37"):
        vgg19_layer_index(37)


def _block_layers() -> list[tuple[int, int]]:
    return [(1, 1), (1, 2), (2, 1), (2, 2)] + [(b, l) for b in (3, 4, 5) for l in (1, 2, 3, 4)]


# --------------------------------------------------------------------------- VGG features
def test_loads_from_explicit_path_and_builds_only_needed_layers(vgg_file: Path, vgg_state: dict) -> None:
    deep = VGGFeatures(["conv5_4"], weights_path=vgg_file)
    assert len(deep.features) == 35
    torch.testing.assert_close(deep.features[34].weight, vgg_state["features.34.weight"], rtol=0, atol=0)
    shallow = VGGFeatures(["relu1_2", "conv2_2"], weights_path=vgg_file)
    assert len(shallow.features) == 8
    assert set(shallow.state_dict()) == {f"features.{i}.{p}" for i in (0, 2, 5, 7) for p in ("weight", "bias")}
    assert not any(p.requires_grad for p in shallow.parameters())
    assert not shallow.training
    shallow.train()
    assert not shallow.training


def test_conv_layer_is_before_activation_and_normalised_with_imagenet_stats(vgg_file: Path, vgg_state: dict) -> None:
    vgg = VGGFeatures(["conv1_1", "relu1_1"], weights_path=vgg_file)
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    conv, relu = vgg(x)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = F.conv2d((x - mean) / std, vgg_state["features.0.weight"], vgg_state["features.0.bias"], padding=1)
    torch.testing.assert_close(conv, expected, rtol=1e-5, atol=1e-5)
    assert (conv < 0).any()  # pre-activation keeps negative responses...
    torch.testing.assert_close(relu, expected.clamp_min(0), rtol=1e-5, atol=1e-5)  # ...ReLU removes them


def test_gray_is_repeated_and_multiband_is_refused(vgg_file: Path) -> None:
    vgg = VGGFeatures(["conv2_1"], weights_path=vgg_file)
    gray = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(vgg(gray)[0], vgg(gray.repeat(1, 3, 1, 1))[0])
    with pytest.raises(SuperresError, match="4 channels"):
        vgg(torch.rand(1, 4, 8, 8))


def test_safetensors_weights_file(tmp_path: Path, vgg_state: dict) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "vgg19.safetensors"
    save_file({k: v for k, v in vgg_state.items() if k.startswith("features.")}, str(path))
    vgg = VGGFeatures(["conv1_2"], weights_path=path)
    torch.testing.assert_close(vgg.features[2].bias, vgg_state["features.2.bias"], rtol=0, atol=0)


def test_wrong_weights_files_are_user_errors(tmp_path: Path, vgg_state: dict) -> None:
    with pytest.raises(SuperresError, match="weights_path: file not found"):
        VGGFeatures(["conv1_1"], weights_path=tmp_path / "missing.pth")
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in vgg_state.items() if k.startswith("features.0.")}, partial)
    with pytest.raises(SuperresError, match=r"partial\.pth.*features\.2\.weight"):
        VGGFeatures(["conv1_2"], weights_path=partial)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(SuperresError, match="garbage.pth"):
        VGGFeatures(["conv1_1"], weights_path=garbage)


def test_weights_file_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    """weights_only=True: a file that needs arbitrary unpickling is rejected, not executed."""
    evil = tmp_path / "evil.pth"
    torch.save({"features.0.weight": torch.zeros(1), "obj": _Unsafe()}, evil)
    with pytest.raises(SuperresError, match="evil.pth"):
        VGGFeatures(["conv1_1"], weights_path=evil)


class _Unsafe:
    pass


def _fake_hub(monkeypatch: pytest.MonkeyPatch, hub: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(hub.parent))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))


def test_loads_from_torch_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vgg_file: Path) -> None:
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    os.symlink(vgg_file, hub / "checkpoints" / "vgg19-dcbb9e9d.pth")
    _fake_hub(monkeypatch, hub)

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("must not download when the cache has the file")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    vgg = VGGFeatures(["conv1_1"])
    assert vgg.weights_file == hub / "checkpoints" / "vgg19-dcbb9e9d.pth"


def test_downloads_official_file_into_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vgg_file: Path) -> None:
    hub = tmp_path / "hub"
    _fake_hub(monkeypatch, hub)
    calls: list[tuple[str, str]] = []

    def fake_download(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        calls.append((url, dst))
        assert hash_prefix == "dcbb9e9d"
        Path(dst).write_bytes(vgg_file.read_bytes())

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    vgg = VGGFeatures(["conv1_1"])
    assert calls == [("https://download.pytorch.org/models/vgg19-dcbb9e9d.pth", str(hub / "checkpoints" / "vgg19-dcbb9e9d.pth"))]
    assert vgg.weights_file.is_file()


def test_offline_failure_names_file_url_and_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = tmp_path / "hub"
    _fake_hub(monkeypatch, hub)

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(SuperresError) as info:
        PerceptualLoss()
    message = str(info.value)
    assert message.startswith("VGG19 weights not found")
    assert str(hub / "checkpoints" / "vgg19-dcbb9e9d.pth") in message
    assert "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in message
    assert "name resolution" in message
    assert "loss.1.weights_path=PATH" in message


# --------------------------------------------------------------------------- perceptual loss
def test_perceptual_loss_zero_for_identical_positive_otherwise(vgg_file: Path) -> None:
    loss = PerceptualLoss({"conv5_4": 1.0}, weights_path=vgg_file)
    g = torch.Generator().manual_seed(3)
    hr = torch.rand(1, 3, 16, 16, generator=g)
    assert loss(hr.clone(), hr).item() == 0.0
    assert loss((hr + 0.05 * torch.randn(hr.shape, generator=g)).clamp(0, 1), hr).item() > 0.0


def test_perceptual_loss_gradients_reach_input_not_vgg(vgg_file: Path) -> None:
    loss = PerceptualLoss({"conv2_2": 0.5, "conv3_1": 1.0}, criterion="mse", weights_path=vgg_file)
    hr = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    sr = (hr * 0.9).requires_grad_(True)
    value = loss(sr, hr)
    value.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss.parameters())
    # The weighted sum over layers, checked against the features computed directly.
    fs, fh = loss.vgg(sr.detach()), loss.vgg(hr)
    expected = 0.5 * F.mse_loss(fs[0], fh[0]) + 1.0 * F.mse_loss(fs[1], fh[1])
    torch.testing.assert_close(value.detach(), expected)


# --------------------------------------------------------------------------- build_loss
def test_build_loss_weighted_sum_and_last_values() -> None:
    loss = build_loss([{"type": "l1", "weight": 1.0}, {"type": "mse", "weight": 0.5}, {"type": "l1", "weight": 2.0}])
    sr = torch.tensor([[[[0.0, 1.0]]]])
    hr = torch.tensor([[[[0.5, 0.5]]]])
    total = loss(sr, hr)
    assert total.item() == pytest.approx(1.0 * 0.5 + 0.5 * 0.25 + 2.0 * 0.5)
    assert loss.last_values == pytest.approx({"l1": 0.5, "mse": 0.25, "l1#2": 0.5})


def test_build_loss_charbonnier_and_perceptual(vgg_file: Path) -> None:
    loss = build_loss(
        [{"type": "charbonnier", "eps": 0.01}, {"type": "perceptual", "weight": 0.01, "layers": {"conv1_2": 1.0}}],
        vgg_weights=vgg_file,
    )
    hr = torch.rand(1, 3, 8, 8)
    sr = hr.clone().requires_grad_(True)
    total = loss(sr, hr)
    assert total.item() == pytest.approx(0.01, rel=1e-5)  # Charbonnier's floor is eps; perceptual is 0
    assert loss.last_values["perceptual"] == 0.0
    total.backward()


def test_build_loss_errors(vgg_file: Path) -> None:
    with pytest.raises(SuperresError, match="'ssim'.*l1"):
        build_loss([{"type": "ssim"}])
    with pytest.raises(SuperresError, match=r"\(l1\).*'eps'"):
        build_loss([{"type": "l1", "eps": 0.1}])
    with pytest.raises(SuperresError, match=r"\(perceptual\).*'layer'"):
        build_loss([{"type": "perceptual", "layer": "conv5_4", "weights_path": str(vgg_file)}])
    with pytest.raises(SuperresError, match="type"):
        build_loss([{"weight": 1.0}])
    with pytest.raises(SuperresError, match="no terms"):
        build_loss([])
    with pytest.raises(SuperresError, match="criterion"):
        build_loss([{"type": "perceptual", "criterion": "huber", "weights_path": str(vgg_file)}])


def test_build_loss_reads_a_terms_options_from_its_signature(monkeypatch) -> None:
    """The keys a term takes come from its builder's signature: a term registered in TERMS with a
    new keyword is built with it, without any other change, and a key it does not take is refused."""

    class ScaledL1(torch.nn.Module):
        def __init__(self, factor: float = 1.0, *, offset: float = 0.0) -> None:
            super().__init__()
            self.factor, self.offset = factor, offset

        def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
            return self.factor * (sr - hr).abs().mean() + self.offset

    monkeypatch.setitem(losses.TERMS, "scaled_l1", ScaledL1)
    loss = build_loss([{"type": "scaled_l1", "weight": 2.0, "factor": 3.0, "offset": 0.5}])
    assert isinstance(loss.terms[0], ScaledL1) and loss.terms[0].factor == 3.0
    sr, hr = torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.25)
    assert loss(sr, hr).item() == pytest.approx(2.0 * (3.0 * 0.25 + 0.5))
    with pytest.raises(SuperresError, match=r"loss term 1 \(scaled_l1\): unknown key 'eps'; "
                                            r"allowed keys: type, weight, factor, offset$"):
        build_loss([{"type": "scaled_l1", "eps": 0.1}])
    # the shipped terms' options, read the same way
    assert losses.term_options(losses.TERMS["l1"]) == ("space",)
    assert losses.term_options(losses.TERMS["charbonnier"]) == ("eps", "space")
    assert losses.term_options(losses.TERMS["perceptual"]) == ("layers", "criterion", "weights_path", "backbone")
    assert losses.term_options(losses.TERMS["style"]) == ("layers", "criterion", "weights_path", "backbone")
    with pytest.raises(SuperresError, match=r"\(charbonnier\): unknown key 'reduction'; allowed keys: type, weight, eps, space$"):
        build_loss([{"type": "charbonnier", "reduction": "sum"}])


def test_module_exports_torch_builtins() -> None:
    assert losses.L1Loss is torch.nn.L1Loss and losses.MSELoss is torch.nn.MSELoss


# --------------------------------------------------------------------------- style loss
def test_gram_matrix_by_hand() -> None:
    from superres.losses import gram_matrix

    # one image, C = 2 channels of H x W = 1 x 2: F = [[1, 2], [3, 4]]
    features = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])
    # F F^T = [[1+4, 3+8], [3+8, 9+16]], divided by C*H*W = 4
    expected = torch.tensor([[[5.0, 11.0], [11.0, 25.0]]]) / 4.0
    torch.testing.assert_close(gram_matrix(features), expected, rtol=0, atol=0)
    # batched: each image gets its own matrix
    two = torch.cat([features, 2 * features])
    torch.testing.assert_close(gram_matrix(two)[1], 4 * expected[0], rtol=0, atol=0)


def test_style_loss_against_a_float64_reference(vgg_file: Path) -> None:
    import numpy as np

    from superres.losses import GramStyleLoss

    loss = GramStyleLoss({"relu1_2": 1.0, "conv2_1": 0.5}, weights_path=vgg_file)
    g = torch.Generator().manual_seed(6)
    hr = torch.rand(2, 3, 12, 10, generator=g)
    sr = (hr + 0.1 * torch.randn(hr.shape, generator=g)).clamp(0, 1).requires_grad_(True)
    value = loss(sr, hr)

    def gram64(f: torch.Tensor) -> np.ndarray:
        a = f.detach().double().numpy()
        n, c, h, w = a.shape
        out = np.zeros((n, c, c))
        for k in range(n):
            flat = a[k].reshape(c, h * w)
            for i in range(c):
                for j in range(c):
                    out[k, i, j] = np.sum(flat[i] * flat[j]) / (c * h * w)
        return out

    fs, fh = loss.vgg(sr.detach()), loss.vgg(hr)
    expected = sum(w * np.mean(np.abs(gram64(a) - gram64(b))) for w, a, b in zip((1.0, 0.5), fs, fh))
    assert value.item() == pytest.approx(expected, rel=1e-4)
    assert loss(hr.clone(), hr).item() == 0.0
    value.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in loss.parameters())


def test_style_loss_default_layers_and_build_loss(vgg_file: Path) -> None:
    from superres.losses import GramStyleLoss

    default = GramStyleLoss(weights_path=vgg_file)
    assert default.vgg.indices == [vgg19_layer_index(n) for n in ("relu1_2", "relu2_2", "relu3_4", "relu4_4")]
    loss = build_loss([{"type": "l1"}, {"type": "style", "weight": 2.0, "layers": ["relu1_1"]}], vgg_weights=vgg_file)
    assert isinstance(loss.terms[1], GramStyleLoss) and loss.terms[1].vgg.weights_file == vgg_file
    hr = torch.rand(1, 3, 8, 8)
    sr = hr * 0.5
    total = loss(sr, hr)
    parts = loss.last_values
    assert total.item() == pytest.approx(parts["l1"] + 2.0 * parts["style"], rel=1e-6)
    assert parts["style"] > 0
    with pytest.raises(SuperresError, match=r"\(style\).*'layer'"):
        build_loss([{"type": "style", "layer": "relu1_1", "weights_path": str(vgg_file)}])


# --------------------------------------------------------------------------- adversarial loss
def _sp(x: float) -> float:
    """softplus, log(1 + e^x), written out for the hand-computed references."""
    return math.log1p(math.exp(x))


REAL = [1.0, -0.5]
FAKE = [0.5, -2.0]


def _hand_values() -> dict[str, tuple[float, float]]:
    """(generator loss, discriminator loss) of every kind on REAL/FAKE, from the papers' formulas."""
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    mr, mf = mean(REAL), mean(FAKE)  # 0.25, -0.75
    return {
        # SRGAN, non-saturating: G = -E log sigmoid(f); D = -(E log sigmoid(r) + E log(1 - sigmoid(f))) / 2
        "vanilla": (
            mean([-math.log(1 / (1 + math.exp(-f))) for f in FAKE]),
            (mean([-math.log(1 / (1 + math.exp(-r))) for r in REAL])
             + mean([-math.log(1 - 1 / (1 + math.exp(-f))) for f in FAKE])) / 2,
        ),
        "lsgan": (mean([(f - 1) ** 2 for f in FAKE]), (mean([(r - 1) ** 2 for r in REAL]) + mean([f**2 for f in FAKE])) / 2),
        # ESRGAN: D_Ra(a, b) = sigmoid(a - E b); G = -(E log(1 - D_Ra(r, f)) + E log D_Ra(f, r)) / 2
        "ragan": (
            (mean([_sp(r - mf) for r in REAL]) + mean([_sp(-(f - mr)) for f in FAKE])) / 2,
            (mean([_sp(-(r - mf)) for r in REAL]) + mean([_sp(f - mr) for f in FAKE])) / 2,
        ),
        "hinge": (-mf, (mean([max(0.0, 1 - r) for r in REAL]) + mean([max(0.0, 1 + f) for f in FAKE])) / 2),
    }


@pytest.mark.parametrize("kind", ["vanilla", "lsgan", "ragan", "hinge"])
def test_adversarial_losses_by_hand(kind: str) -> None:
    from superres.losses import AdversarialLoss

    g_expected, d_expected = _hand_values()[kind]
    loss = AdversarialLoss(kind)
    real, fake = torch.tensor(REAL).view(2, 1), torch.tensor(FAKE).view(2, 1)
    assert loss.generator_loss(fake, real).item() == pytest.approx(g_expected, rel=1e-6)
    assert loss.discriminator_loss(real, fake).item() == pytest.approx(d_expected, rel=1e-6)
    assert loss.needs_real_for_generator == (kind == "ragan")


@pytest.mark.parametrize("kind", ["vanilla", "lsgan", "ragan", "hinge"])
def test_adversarial_gradients_point_the_right_way(kind: str) -> None:
    """The generator gains by raising fake logits; the discriminator by raising real, lowering fake.

    The logits lie between LSGAN's targets (0 for fake, 1 for real) and inside the hinge margins,
    where every kind agrees on the direction.
    """
    from superres.losses import AdversarialLoss

    loss = AdversarialLoss(kind)
    real = torch.tensor([[0.3], [-0.2]], requires_grad=True)
    fake = torch.tensor([[0.1], [0.4]], requires_grad=True)
    loss.generator_loss(fake, real.detach()).backward()
    assert (fake.grad < 0).all()
    fake.grad = None
    loss.discriminator_loss(real, fake).backward()
    assert (real.grad < 0).all() and (fake.grad > 0).all()


def test_adversarial_loss_at_chance_and_errors() -> None:
    from superres.losses import AdversarialLoss

    zeros = torch.zeros(4, 1)
    chance = {"vanilla": math.log(2), "ragan": math.log(2), "lsgan": 0.5, "hinge": 1.0}
    for kind, value in chance.items():
        assert AdversarialLoss(kind).discriminator_loss(zeros, zeros).item() == pytest.approx(value)
    with pytest.raises(ValueError, match="real_logits"):
        AdversarialLoss("ragan").generator_loss(zeros)
    with pytest.raises(SuperresError, match="wgan"):
        AdversarialLoss("wgan")


def test_split_adversarial_and_build_loss_refusal() -> None:
    from superres.losses import AdversarialLoss, split_adversarial

    terms = [{"type": "l1", "weight": 0.01}, {"type": "adversarial", "weight": "5e-3", "kind": "ragan"}]
    content, adversarial = split_adversarial(terms)
    assert content == [terms[0]]
    assert adversarial is not None
    weight, loss = adversarial
    assert weight == 5e-3 and isinstance(loss, AdversarialLoss) and loss.kind == "ragan"
    assert split_adversarial([{"type": "l1"}]) == ([{"type": "l1"}], None)

    with pytest.raises(SuperresError, match=r"loss term 2 \(adversarial\).*split_adversarial"):
        build_loss(terms)
    with pytest.raises(SuperresError, match=r"term 2 \(adversarial\): give its weight"):
        split_adversarial([{"type": "l1"}, {"type": "adversarial", "kind": "ragan"}])
    with pytest.raises(SuperresError, match=r"'kind' must be one of vanilla, lsgan, ragan, hinge, got 'gan'"):
        split_adversarial([{"type": "l1"}, {"type": "adversarial", "weight": 1e-3, "kind": "gan"}])
    with pytest.raises(SuperresError, match="unknown key 'layers'"):
        split_adversarial([{"type": "l1"}, {"type": "adversarial", "weight": 1e-3, "kind": "hinge", "layers": [1]}])
    with pytest.raises(SuperresError, match="must be a number > 0"):
        split_adversarial([{"type": "l1"}, {"type": "adversarial", "weight": 0, "kind": "hinge"}])
    with pytest.raises(SuperresError, match="only one adversarial term"):
        split_adversarial([{"type": "l1"}] + [{"type": "adversarial", "weight": 1e-3, "kind": "hinge"}] * 2)
    with pytest.raises(SuperresError, match="at least one content term"):
        split_adversarial([{"type": "adversarial", "weight": 1e-3, "kind": "vanilla"}])
