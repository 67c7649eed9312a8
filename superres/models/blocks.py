"""Building blocks shared by the architectures: scale checks, residual blocks, upsamplers.

Every architecture in :mod:`superres.models` composes these instead of re-implementing them, so that
an upsampler or a residual block means the same thing in every model and a fix lands everywhere.

Upsamplers (:func:`make_upsampler`) come in two modes:

* **feature mode** (``out_channels=None``): ``channels -> channels`` at ``scale`` times the resolution,
  in stages of x2 (x4 = two x2 stages, as in EDSR/SRResNet) or one x3 stage. A reconstruction conv
  follows in the model. Expressive, but every layer after the first stage runs at higher resolution.
* **projection mode** (``out_channels=k``): one stage that maps ``channels`` features straight to
  ``k`` image channels at full resolution (ESPCN's final layer for ``pixelshuffle``). Nothing after it
  runs at HR, which is what makes a model cheap on a CPU.

Kinds (``UpsamplerKind``):

* ``"pixelshuffle"``: sub-pixel convolution, 3x3 conv to ``C * f^2`` channels at LR, then
  ``PixelShuffle(f)`` (Shi et al. 2016). All multiply-adds at the low resolution.
* ``"deconv"``: a transposed convolution with stride ``f``, kernel ``f + 2p`` and padding
  ``p = ceil(f / 2)``, which gives exactly ``f * h`` outputs (``(h-1) f - 2p + f + 2p``); FSRCNN-style.
  Prone to checkerboard artefacts when the kernel is not a multiple of the stride (x3).
* ``"nearest"``: nearest-neighbour resize by ``f``, then a 3x3 conv (the resize-convolution of Odena
  et al. 2016, used by ESRGAN); no checkerboard, conv runs at the high resolution.
* ``"bicubic"``: bicubic resize (``F.interpolate``, ``align_corners=False``) of the features, then a
  3x3 conv at the high resolution.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

UpsamplerKind = Literal["pixelshuffle", "deconv", "nearest", "bicubic"]
UPSAMPLER_KINDS: tuple[str, ...] = get_args(UpsamplerKind)
MODEL_SCALES: tuple[int, ...] = (2, 3, 4)


def check_scale(scale: int, allowed: tuple[int, ...] = MODEL_SCALES) -> int:
    """Return ``scale`` if the architecture supports it, else raise ``ValueError`` naming the choices."""
    if isinstance(scale, bool) or not isinstance(scale, int) or scale not in allowed:
        raise ValueError(f"scale must be one of {', '.join(map(str, allowed))}, got {scale!r}")
    return scale


def check_channels(in_channels: int) -> int:
    """Return ``in_channels`` if it is a positive int (1 gray, 3 RGB, N bands), else raise ``ValueError``."""
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")
    return in_channels


def check_upsampler(kind: str) -> str:
    """Return ``kind`` if it names an upsampler, else raise ``ValueError`` listing the kinds."""
    if kind not in UPSAMPLER_KINDS:
        raise ValueError(f"upsampler must be one of {', '.join(UPSAMPLER_KINDS)}, got {kind!r}")
    return kind


def upsample_stages(scale: int) -> list[int]:
    """Split ``scale`` into x2 and x3 stages: 2 -> [2], 3 -> [3], 4 -> [2, 2], 8 -> [2, 2, 2], 6 -> [2, 3].

    Two x2 stages for x4 keep the sub-pixel convs small (``C -> 4C`` twice instead of ``C -> 16C``).
    """
    if scale < 2:
        raise ValueError(f"upsampling scale must be >= 2, got {scale}")
    stages: list[int] = []
    rest = scale
    while rest % 2 == 0:
        stages.append(2)
        rest //= 2
    while rest % 3 == 0:
        stages.append(3)
        rest //= 3
    if rest != 1:
        raise ValueError(f"scale {scale} is not a product of 2s and 3s")
    return stages


def conv3x3(in_channels: int, out_channels: int, bias: bool = True) -> nn.Conv2d:
    """A 3x3 convolution with 'same' zero padding (output size = input size)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=bias)


class ExpandedConv3x3(nn.Module):
    """A 3x3 conv that trains as a wider linear block and folds back into one 3x3 conv for use.

    Training form (the collapsible linear block of SESR, Bhardwaj et al. 2022): a 3x3 conv to
    ``expand`` channels, a 1x1 conv back to ``out_channels``, no nonlinearity between them, plus the
    input itself when ``in_channels == out_channels``. Everything is linear, so the block *is* one
    3x3 conv ``in -> out`` (:meth:`folded`), but gradient descent on the factored form trains better
    (overparameterisation), at a training cost of about ``expand / out_channels`` times the plain conv.
    """

    def __init__(self, in_channels: int, out_channels: int, expand: int) -> None:
        super().__init__()
        if expand < 1:
            raise ValueError(f"expand must be >= 1, got {expand}")
        self.expand = nn.Conv2d(in_channels, expand, kernel_size=3, padding=1)
        self.squeeze = nn.Conv2d(expand, out_channels, kernel_size=1)
        self.identity = in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.squeeze(self.expand(x))
        return y + x if self.identity else y

    @torch.no_grad()
    def folded(self) -> nn.Conv2d:
        """The single 3x3 conv (with bias) that computes the same function, in float64 then cast."""
        w1 = self.expand.weight.double()  # E x in x 3 x 3
        w2 = self.squeeze.weight.double()[:, :, 0, 0]  # out x E
        weight = torch.einsum("oe,eikl->oikl", w2, w1)
        bias = w2 @ self.expand.bias.double() + self.squeeze.bias.double()
        if self.identity:
            weight[:, :, 1, 1] += torch.eye(weight.shape[0], dtype=weight.dtype, device=weight.device)
        conv = conv3x3(weight.shape[1], weight.shape[0]).to(self.squeeze.weight.device)
        conv.weight.copy_(weight.to(conv.weight.dtype))
        conv.bias.copy_(bias.to(conv.bias.dtype))
        return conv


def conv3x3_or_expanded(in_channels: int, out_channels: int, expand: int) -> nn.Module:
    """A plain 3x3 conv for ``expand == 0``, else its training-time expanded form (:class:`ExpandedConv3x3`)."""
    return conv3x3(in_channels, out_channels) if expand == 0 else ExpandedConv3x3(in_channels, out_channels, expand)


def fold_expanded(module: nn.Module) -> None:
    """Replace every :class:`ExpandedConv3x3` inside ``module`` by its folded 3x3 conv, in place."""
    for name, child in list(module.named_children()):
        if isinstance(child, ExpandedConv3x3):
            setattr(module, name, child.folded())
        else:
            fold_expanded(child)


class ResidualBlock(nn.Module):
    """``x + res_scale * conv(relu(conv(x)))``: the EDSR block (no batch norm).

    Batch norm is left out because it normalises away the absolute intensity range that SR must keep
    and costs memory (Lim et al. 2017). ``res_scale < 1`` (EDSR uses 0.1 for wide, deep models) keeps
    the sum of many blocks from growing at initialisation.
    """

    def __init__(self, channels: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(channels, channels)
        self.res_scale = float(res_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.conv2(self.act(self.conv1(x)))
        if self.res_scale != 1.0:
            residual = residual * self.res_scale
        return x + residual


class PixelShuffle(nn.PixelShuffle):
    """``nn.PixelShuffle`` computed as view -> permute -> reshape: the same values, moved faster.

    On the CPU, ``aten::pixel_shuffle`` costs about 3.4x the equivalent reshape-permute copy (48 x 256
    x 256 -> 3 x 1024 x 1024, torch 2.13, one thread; ``benchmarks/ops_speed.py``); in a small model
    such as ``lumanet`` it was 16% of the forward time. During ONNX export the built-in op is used, so the
    graph keeps its single DepthToSpace node.

    On CUDA a ``channels_last`` input (the training layout there) is shuffled in that layout: its
    memory ``[n][h][w][c][i][j]`` is permuted to ``[n][h][i][w][j][c]`` in one copy, and the result
    is ``channels_last`` too, ready for the next conv. The generic path makes a contiguous (NCHW)
    output that the next conv copies back, and its backward the same: on an H100, full-resolution
    strided copies were 30% of an ``edsr-baseline`` x4 training step's GPU time
    (``benchmarks/pixel_shuffle_speed.py`` times the stage both ways). On the CPU, where fp32 runs
    channels_last slower this way (1.15-1.22x the stage's time, one thread), the generic path stays.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export() or x.dim() != 4:
            return super().forward(x)
        n, c, h, w = x.shape
        f = self.upscale_factor
        if x.is_cuda and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            nhwc = x.permute(0, 2, 3, 1).reshape(n, h, w, c // (f * f), f, f).permute(0, 1, 4, 2, 5, 3)
            return nhwc.reshape(n, h * f, w * f, c // (f * f)).permute(0, 3, 1, 2)
        out = x.reshape(n, c // (f * f), f, f, h, w).permute(0, 1, 4, 2, 5, 3)
        return out.reshape(n, c // (f * f), h * f, w * f)


#: Keys' cubic coefficient of MATLAB's ``imresize`` (and :func:`superres.imresize`).
MATLAB_CUBIC_A = -0.5
#: Keys' cubic coefficient of PyTorch's ``F.interpolate(mode="bicubic")`` (and OpenCV's INTER_CUBIC).
TORCH_CUBIC_A = -0.75


def keys_cubic(x: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel with coefficient ``a``, support [-2, 2] (float64)."""
    ax = np.abs(np.asarray(x, dtype=np.float64))
    inner = ((a + 2.0) * ax**3 - (a + 3.0) * ax**2 + 1.0) * (ax <= 1.0)
    outer = (a * ax**3 - 5.0 * a * ax**2 + 8.0 * a * ax - 4.0 * a) * ((ax > 1.0) & (ax < 2.0))
    return inner + outer


def bicubic_phase_kernels(scale: int, a: float = MATLAB_CUBIC_A) -> np.ndarray:
    """Bicubic upscaling by an integer ``scale`` as ``scale^2`` 5x5 filters (float64, ``s^2 x 1 x 5 x 5``).

    Output pixel ``(s*k + i, s*l + j)`` of the upscale is the 5x5 neighbourhood of LR pixel ``(k, l)``
    weighted by filter ``i*s + j``: the output's centre sits at LR offset ``(i + 0.5)/s - 0.5`` (the
    half-pixel convention of both MATLAB and ``align_corners=False``), so its four cubic taps fall
    within two pixels of ``k``. Used as a conv after edge-replication padding and followed by a pixel
    shuffle (:class:`BicubicUpsample`), this is MATLAB's ``imresize(x, s)`` for ``a = -0.5`` and
    PyTorch's ``F.interpolate(x, scale_factor=s, mode="bicubic")`` for ``a = -0.75``, both of which
    replicate the edge pixels at the borders.
    """
    offsets = (np.arange(scale) + 0.5) / scale - 0.5
    taps = np.arange(-2, 3)
    weights = keys_cubic(offsets[:, None] - taps[None, :], a)  # (s, 5): phase x tap
    weights /= weights.sum(axis=1, keepdims=True)  # already 1 for upscaling; as MATLAB does
    return np.einsum("ia,jb->ijab", weights, weights).reshape(scale * scale, 1, 5, 5)


class BicubicUpsample(nn.Module):
    """Fixed bicubic upscaling by an integer factor as one grouped 5x5 conv and a pixel shuffle.

    Much cheaper than a resampling op: for 1 MP of RGB output at x4 on one CPU thread it is 2.5-4x
    faster than ``F.interpolate`` in PyTorch and about 40x faster than onnxruntime's cubic ``Resize``
    (``benchmarks/ops_speed.py``; figures in docs/BENCHMARKS.md). No parameters; the filters are a non-persistent buffer, so model
    files do not store them. ``a`` picks the kernel: -0.5 (MATLAB, default) or -0.75 (PyTorch).
    """

    def __init__(self, scale: int, channels: int, a: float = MATLAB_CUBIC_A) -> None:
        super().__init__()
        self.scale = int(scale)
        self.channels = int(channels)
        kernels = torch.from_numpy(bicubic_phase_kernels(self.scale, a)).float().repeat(self.channels, 1, 1, 1)
        self.register_buffer("kernels", kernels, persistent=False)
        self.shuffle = PixelShuffle(self.scale)

    def phases(self, x: torch.Tensor) -> torch.Tensor:
        """``N x C x h x w`` -> ``N x C*s^2 x h x w``: the upscale before its pixel shuffle."""
        padded = F.pad(x, (2, 2, 2, 2), mode="replicate")
        return F.conv2d(padded, self.kernels.to(x.dtype), groups=self.channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.phases(x))


def _stage(kind: str, in_channels: int, out_channels: int, factor: int) -> list[nn.Module]:
    """Layers of one upsampling stage by ``factor`` from ``in_channels`` to ``out_channels``."""
    if kind == "pixelshuffle":
        return [conv3x3(in_channels, out_channels * factor * factor), PixelShuffle(factor)]
    if kind == "deconv":
        pad = (factor + 1) // 2
        return [
            nn.ConvTranspose2d(in_channels, out_channels, kernel_size=factor + 2 * pad, stride=factor, padding=pad)
        ]
    if kind == "nearest":
        return [nn.Upsample(scale_factor=factor, mode="nearest"), conv3x3(in_channels, out_channels)]
    if kind == "bicubic":
        return [
            nn.Upsample(scale_factor=factor, mode="bicubic", align_corners=False),
            conv3x3(in_channels, out_channels),
        ]
    raise ValueError(f"upsampler must be one of {', '.join(UPSAMPLER_KINDS)}, got {kind!r}")


def make_upsampler(kind: UpsamplerKind, channels: int, scale: int, *, out_channels: int | None = None) -> nn.Sequential:
    """Upsample ``N x channels x h x w`` features by ``scale`` (see the module docstring for the kinds).

    ``out_channels=None`` (feature mode): staged x2/x3, ``channels`` features out, a reconstruction
    conv is expected to follow. ``out_channels=k`` (projection mode): a single stage by the whole
    ``scale`` straight to ``k`` channels; its last layer is a learned conv, so a model can give it a
    small initialisation (see :func:`last_conv`).
    """
    check_upsampler(kind)
    if out_channels is None:
        layers: list[nn.Module] = []
        for factor in upsample_stages(scale):
            layers += _stage(kind, channels, channels, factor)
        return nn.Sequential(*layers)
    upsample_stages(scale)  # validates the scale the same way as feature mode
    return nn.Sequential(*_stage(kind, channels, out_channels, scale))


def last_conv(module: nn.Module) -> nn.Conv2d | nn.ConvTranspose2d:
    """The last convolution (plain or transposed) inside ``module``, in registration order."""
    found = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    if not found:
        raise ValueError(f"{type(module).__name__} has no convolution")
    return found[-1]


@torch.no_grad()
def scale_init_(conv: nn.Conv2d | nn.ConvTranspose2d, factor: float) -> None:
    """Multiply the default (Kaiming-uniform) weights of ``conv`` by ``factor`` and zero its bias.

    Used on the layer that writes a residual, so the residual starts small and the model starts close
    to the identity path it is added to (bicubic for ``enhanced``), instead of adding noise to it.
    """
    conv.weight.mul_(factor)
    if conv.bias is not None:
        conv.bias.zero_()
