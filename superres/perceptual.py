"""Perceptual distances between images: LPIPS (Zhang et al., CVPR 2018) and ``effdist``, the same
computation without learned heads on the offline EfficientNet-Lite0 backbone.

Both compare deep features of two images ``x``, ``y`` (``N x C x H x W``, RGB or gray replicated
to RGB, values in [0, 1]) and return one distance per image (``Tensor[N]``, 0 for identical images,
larger is more different):

    d(x, y) = sum_l  w_l  mean_{h,w}  sum_c  a_{l,c} (u_l(x)_{c,h,w} - u_l(y)_{c,h,w})^2

where ``u_l`` is layer ``l``'s feature map unit-normalised over channels at every position
(``f / (||f||_2 + 1e-10)``, the norm taken over the channel axis).

* **LPIPS** (``lpips-alex``, ``lpips-vgg``, ``lpips-squeeze``; version 0.1 of the release): inputs
  are mapped to [-1, 1] (``2 x - 1``) and then through LPIPS's ScalingLayer,
  ``(v - shift) / scale`` with shift ``(-0.030, -0.088, -0.188)`` and scale ``(0.458, 0.448, 0.450)``;
  the layers are the backbone's slices (:data:`superres.backbones.LPIPS_BACKBONES`); ``a_{l,c}`` are
  the learned, non-negative linear heads (``lin{l}.model.1.weight``, shape ``1 x C x 1 x 1``) and
  ``w_l = 1``. The heads come from the ``lpips`` PyPI package's own files
  (``lpips/weights/v0.1/<net>.pth``), read by path without importing that package (which imports
  torchvision); ``pip install lpips --no-deps`` provides them, or pass ``heads_path``. The ImageNet
  backbone comes from torchvision's file (torch hub cache, a path, or a download; see
  :mod:`superres.backbones`).
* **effdist**: EfficientNet-Lite0 features at :data:`EFFDIST_LAYERS` (strides 2, 4, 8, 16, 32)
  with the normalisation the weights expect (:class:`superres.backbones.EfficientNetFeatures`),
  ``a_{l,c} = 1`` and ``w_l = 1 / L`` (the mean over layers). No learned weights beyond the
  ImageNet classifier's, so it works offline once ``superres[perceptual]`` is installed. Its values
  are not on LPIPS's scale; compare effdist with effdist only.

:func:`image_distance` applies a metric to two images as arrays (``H x W`` or ``H x W x C``, uint8,
uint16 or float in [0, 1]) with a border shaved, the form ``superres eval --perceptual`` uses; see
docs/PROTOCOL.md, "Perceptual distance".
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from superres.backbones import EfficientNetFeatures, LPIPSBackbone, LPIPS_BACKBONES, read_state_dict
from superres.errors import SuperresError
from superres.packages import package_file
from superres.io import to_float

__all__ = [
    "LPIPS",
    "EffDist",
    "PERCEPTUAL_METRICS",
    "DEFAULT_PERCEPTUAL",
    "EFFDIST_LAYERS",
    "build_perceptual",
    "image_distance",
    "unit_normalise",
    "lpips_heads_file",
    "PERCEPTUAL_PROTOCOL",
]

PERCEPTUAL_METRICS: tuple[str, ...] = ("effdist", "lpips-alex", "lpips-vgg", "lpips-squeeze")
DEFAULT_PERCEPTUAL = "effdist"
EFFDIST_LAYERS: tuple[str, ...] = ("stem", "stage2", "stage3", "stage4", "stage6")
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10
#: One line for reports: what ``superres eval --perceptual`` computes (docs/PROTOCOL.md).
PERCEPTUAL_PROTOCOL = (
    "deep-feature distance (lower is closer) on RGB (gray replicated to 3 channels), values in [0, 1] "
    "from the SR samples rounded to the HR's bit depth, HR mod-cropped, scale pixels shaved from every "
    "border as for PSNR, whole image at once; mean over images"
)
#: Smallest image side the LPIPS metrics accept (AlexNet's stride-4 stem and two poolings need 31).
#: effdist takes any size (its convolutions pad like TensorFlow's SAME).
LPIPS_MIN_SIDE = 32


def unit_normalise(features: torch.Tensor) -> torch.Tensor:
    """Each position's channel vector divided by its L2 norm (+1e-10, so zero vectors stay zero)."""
    norm = torch.sqrt(torch.sum(features * features, dim=1, keepdim=True))
    return features / (norm + _EPS)


def _layer_distance(fx: torch.Tensor, fy: torch.Tensor, head: torch.Tensor | None) -> torch.Tensor:
    """``mean_{h,w} sum_c a_c (u(fx) - u(fy))^2`` per image (``a`` = 1 without a head)."""
    d = (unit_normalise(fx) - unit_normalise(fy)) ** 2
    d = (d * head).sum(dim=1) if head is not None else d.sum(dim=1)
    return d.mean(dim=(1, 2))


def _check_pair(x: torch.Tensor, y: torch.Tensor, what: str) -> None:
    if x.shape != y.shape:
        raise SuperresError(f"{what}: the two images differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")


def lpips_heads_file(net: str, heads_path: str | Path | None = None) -> Path:
    """The LPIPS v0.1 linear heads for ``net``: ``heads_path``, else ``lpips/weights/v0.1/<net>.pth``
    in the installed ``lpips`` package (located without importing it)."""
    if heads_path is not None:
        path = Path(heads_path).expanduser()
        if not path.is_file():
            raise SuperresError(f"LPIPS heads ({net}): file not found: {path}")
        return path
    path = package_file("lpips", "weights", "v0.1", f"{net}.pth")
    if path is not None:
        return path
    raise SuperresError(
        f"LPIPS heads for {net} not found: lpips/weights/v0.1/{net}.pth comes with the lpips package "
        "(pip install lpips --no-deps; its torchvision dependency is not needed), or pass the file as heads_path"
    )


class LPIPS(nn.Module):
    """LPIPS v0.1 with a frozen ``net`` backbone (``alex``, ``vgg``, ``squeeze``) and its linear heads.

    ``forward(x, y)``: ``N x C x H x W`` in [0, 1] (C = 3, or 1 replicated) -> ``Tensor[N]``.
    ``backbone_path``: torchvision's ImageNet file for ``net`` (default: torch hub cache or download);
    ``heads_path``: the heads file (default: the installed ``lpips`` package's).
    """

    def __init__(
        self,
        net: str = "alex",
        backbone_path: str | Path | None = None,
        heads_path: str | Path | None = None,
        *,
        option: str = "--perceptual-weights PATH (backbone_path in Python)",
    ) -> None:
        super().__init__()
        if net not in LPIPS_BACKBONES:
            raise SuperresError(f"LPIPS: unknown backbone {net!r}; choose {', '.join(LPIPS_BACKBONES)}")
        self.net_name = net
        self.min_side = LPIPS_MIN_SIDE
        self.backbone = LPIPSBackbone(net, backbone_path, option=option)
        channels = self.backbone.channels
        self.heads_file = lpips_heads_file(net, heads_path)
        state = read_state_dict(self.heads_file, f"LPIPS {net} heads")
        heads: list[torch.Tensor] = []
        for i, c in enumerate(channels):
            key = f"lin{i}.model.1.weight"
            if key not in state:
                raise SuperresError(f"{self.heads_file}: not LPIPS {net} heads (missing {key})")
            w = state[key]
            if tuple(w.shape) != (1, c, 1, 1):
                raise SuperresError(f"{self.heads_file}: {key} has shape {tuple(w.shape)}, LPIPS {net} needs (1, {c}, 1, 1)")
            heads.append(w.to(torch.float32).reshape(1, c, 1, 1))
        expected = {f"lin{i}.model.1.weight" for i in range(len(channels))}
        extra = sorted(k for k in state if k not in expected)
        if extra:
            raise SuperresError(f"{self.heads_file}: not LPIPS {net} heads (unexpected {extra[0]})")
        for i, w in enumerate(heads):
            self.register_buffer(f"head{i}", w, persistent=False)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "LPIPS":
        return super().train(False)

    def heads(self) -> list[torch.Tensor]:
        return [getattr(self, f"head{i}") for i in range(len(self.backbone.channels))]

    def _scaled(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise SuperresError(f"LPIPS needs 1- or 3-channel images, got {x.shape[1]} channels")
        return ((2.0 * x - 1.0) - self.shift) / self.scale

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_pair(x, y, "LPIPS")
        fx = self.backbone(self._scaled(x))
        fy = self.backbone(self._scaled(y))
        total = x.new_zeros(x.shape[0])
        for a, b, head in zip(fx, fy, self.heads()):
            total = total + _layer_distance(a, b, head)
        return total


class EffDist(nn.Module):
    """``effdist``: LPIPS's computation without learned heads on frozen EfficientNet-Lite0 features,
    averaged over ``layers`` (default :data:`EFFDIST_LAYERS`).

    ``forward(x, y)``: ``N x C x H x W`` in [0, 1] (C = 3, or 1 replicated) -> ``Tensor[N]``.
    """

    def __init__(self, layers: Sequence[str] = EFFDIST_LAYERS, weights_path: str | Path | None = None) -> None:
        super().__init__()
        self.features = EfficientNetFeatures(list(layers), weights_path)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_pair(x, y, "effdist")
        fx, fy = self.features(x), self.features(y)
        total = x.new_zeros(x.shape[0])
        for a, b in zip(fx, fy):
            total = total + _layer_distance(a, b, None)
        return total / len(fx)


def build_perceptual(name: str = DEFAULT_PERCEPTUAL, *, weights_path: str | Path | None = None,
                     heads_path: str | Path | None = None) -> nn.Module:
    """The metric called ``name`` (:data:`PERCEPTUAL_METRICS`), frozen, on the CPU.

    ``weights_path``: the backbone's weights file (EfficientNet-Lite0's for ``effdist``,
    torchvision's for the LPIPS nets); ``heads_path``: LPIPS's heads file.
    """
    metric: nn.Module
    if name == "effdist":
        if heads_path is not None:
            raise SuperresError("effdist has no learned heads; heads_path is for the lpips-* metrics")
        metric = EffDist(weights_path=weights_path)
    elif name.startswith("lpips-") and name[6:] in LPIPS_BACKBONES:
        metric = LPIPS(name[6:], weights_path, heads_path)
    else:
        raise SuperresError(f"--perceptual {name}: unknown metric; choose {', '.join(PERCEPTUAL_METRICS)}")
    metric.metric_name = name  # the key evaluate() reports it under
    return metric


def _as_tensor(a: np.ndarray) -> torch.Tensor:
    x = to_float(np.asarray(a))
    if x.ndim == 2:
        x = x[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).permute(2, 0, 1)[None]


def image_distance(metric: nn.Module, sr: np.ndarray, hr: np.ndarray, *, shave: int = 0) -> float:
    """``metric`` on two images given as arrays (``H x W`` or ``H x W x C`` with C = 1 or 3; uint8,
    uint16 or float in [0, 1]), after removing ``shave`` pixels from every border of both."""
    if sr.shape != hr.shape:
        raise SuperresError(f"perceptual distance: images differ in shape: {sr.shape} vs {hr.shape}")
    if shave:
        sr, hr = sr[shave:-shave, shave:-shave], hr[shave:-shave, shave:-shave]
    least = getattr(metric, "min_side", 1)
    if min(sr.shape[:2]) < least:
        raise SuperresError(
            f"{getattr(metric, 'metric_name', 'perceptual distance')}: {sr.shape[1]}x{sr.shape[0]} after shaving "
            f"is too small (at least {least}x{least})"
        )
    x, y = _as_tensor(sr), _as_tensor(hr)
    device = next(metric.buffers(), next(metric.parameters(), torch.empty(0))).device
    with torch.no_grad():
        return float(metric(x.to(device), y.to(device))[0])
