"""Real-world degradations: Real-ESRGAN's second-order model as batched torch (``data.degradation``).

The LR of each training pair is made from its HR crop by two rounds of

    blur (a random kernel) -> resize (up, down or keep; area/bilinear/bicubic) -> noise (Gaussian or
    Poisson, colour or gray) -> JPEG (random quality)

after which the second round ends, in random order, with [resize to the LR size + sinc filter, JPEG]
or [JPEG, resize + sinc] (Wang et al., *Real-ESRGAN*, ICCVW 2021, section 3 and figure 2). The
HR target may first be sharpened with an unsharp mask, and the LR is then made from the sharpened
HR, as Real-ESRGAN trains its x4plus model. Presets and their parameters: docs/DEGRADATIONS.md.

Kernels. Every kernel is built on the 21 x 21 grid (:data:`superres.config.MAX_KERNEL_SIZE`) and is
zero outside its own odd size, so a batch of kernels is one ``B x 21 x 21`` tensor made by a few
batched operations; the batch is filtered by one grouped convolution cut to the largest size drawn
(reflect padding; replicate where an image is too small to reflect). Gaussian family:
``exp(-0.5 q^beta)`` (beta = 1: Gaussian; otherwise generalized Gaussian) and plateau
``1 / (1 + q^beta)``, with ``q = c^T Sigma^-1 c``, ``Sigma = R(theta) diag(sx^2, sy^2) R(theta)^T``
(isotropic: ``sx = sy``); 2-D sinc ``omega J1(omega r) / (2 pi r)``. Each kernel is normalised to sum 1.

Randomness. A batch is a pure function of ``(seed, iteration, slots)`` and the HR crops, as the
batches themselves are (:mod:`superres.training.batches`): every per-sample value (kernel,
noise level, JPEG quality, and the seed of that sample's noise generator) comes from
:func:`superres.data.folders.draw_uniforms` of ``(seed, iteration, slot)``, and the per-batch values
(resize scales and modes, the order of the last steps) from ``(seed, iteration)``. Nothing is drawn
from torch's global generator, so a resumed run degrades the same batches, and a sample is the same
whichever rank or batch it is computed in (up to the float rounding of a convolution over another
batch size). The noise tensors are drawn on the batch's device: the same seed gives the same batch on
one device; the CPU and CUDA draw different noise.

JPEG is the real codec (libjpeg through Pillow, quality q, Pillow's default 4:2:0 chroma
subsampling), on the host: a CUDA batch's JPEG samples are copied to the host and back. The last
step rounds the LR to 8-bit levels.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from superres.color import Y_COEFFS
from superres.config import (
    DegradationConfig,
    DegradationStageConfig,
    MAX_KERNEL_SIZE,
    degradation_config,
    parse_override,
)
from superres.data.folders import draw_uniforms
from superres.errors import SuperresError
from superres.io import Image, list_images, read_array, to_float, write_image
from superres.progress import progress_bar
from superres.resize import modcrop
from superres.scales import SCALES

__all__ = [
    "KERNELS",
    "RESIZE_MODES",
    "PRESETS",
    "Degrader",
    "resolve",
    "blur_kernels",
    "sinc_kernels",
    "filter_batch",
    "jpeg",
    "usm_sharpen",
]

#: The six blur kernels ``kernel_prob`` weighs, in its order.
KERNELS = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
#: Interpolation modes a random resize picks from (equally likely).
RESIZE_MODES = ("area", "bilinear", "bicubic")

_KERNEL_PROB = [0.45, 0.25, 0.12, 0.03, 0.12, 0.03]


def _stage(**values: object) -> dict[str, object]:
    base: dict[str, object] = dict(
        blur_prob=1.0, kernel_size=[7, 21], kernel_prob=list(_KERNEL_PROB), sinc_prob=0.1,
        blur_sigma=[0.2, 3.0], betag_range=[0.5, 4.0], betap_range=[1.0, 2.0],
        resize_prob=[0.2, 0.7, 0.1], resize_range=[0.15, 1.5],
        noise_prob=1.0, gaussian_noise_prob=0.5, noise_range=[1.0, 30.0], poisson_scale_range=[0.05, 3.0],
        gray_noise_prob=0.4, jpeg_prob=1.0, jpeg_range=[30, 95],
    )
    base.update(values)
    return base


#: Every preset's full parameters. ``realesrgan``: the published settings (paper and
#: ``train_realesrgan_x4plus.yml``); ``light``/``medium``/``heavy``: ours (docs/DEGRADATIONS.md).
PRESETS: dict[str, dict[str, object]] = {
    "realesrgan": dict(
        first=_stage(),
        second=_stage(blur_prob=0.8, blur_sigma=[0.2, 1.5], resize_prob=[0.3, 0.4, 0.3], resize_range=[0.3, 1.2],
                      noise_range=[1.0, 25.0], poisson_scale_range=[0.05, 2.5]),
        final_sinc_prob=0.8,
        sharpen_target=True,
    ),
    "light": dict(
        first=_stage(blur_sigma=[0.2, 1.5], sinc_prob=0.05, resize_prob=[0.2, 0.5, 0.3], resize_range=[0.5, 1.2],
                     noise_range=[1.0, 10.0], poisson_scale_range=[0.05, 1.0], jpeg_range=[70, 95]),
        second=_stage(blur_prob=0.3, blur_sigma=[0.2, 0.8], sinc_prob=0.05, resize_prob=[0.2, 0.4, 0.4],
                      resize_range=[0.7, 1.1], noise_prob=0.3, noise_range=[1.0, 5.0],
                      poisson_scale_range=[0.05, 0.5], jpeg_prob=0.5, jpeg_range=[80, 95]),
        final_sinc_prob=0.2,
        sharpen_target=False,
    ),
    "medium": dict(
        first=_stage(blur_sigma=[0.2, 2.0], resize_prob=[0.2, 0.6, 0.2], resize_range=[0.3, 1.3],
                     noise_range=[1.0, 20.0], poisson_scale_range=[0.05, 2.0], jpeg_range=[50, 95]),
        second=_stage(blur_prob=0.5, blur_sigma=[0.2, 1.2], resize_prob=[0.3, 0.4, 0.3], resize_range=[0.5, 1.2],
                      noise_prob=0.6, noise_range=[1.0, 15.0], poisson_scale_range=[0.05, 1.5],
                      jpeg_prob=0.8, jpeg_range=[50, 95]),
        final_sinc_prob=0.5,
        sharpen_target=False,
    ),
    "heavy": dict(
        first=_stage(blur_sigma=[0.2, 4.0], sinc_prob=0.15, noise_range=[1.0, 40.0], poisson_scale_range=[0.05, 4.0],
                     jpeg_range=[20, 90]),
        second=_stage(blur_prob=0.9, blur_sigma=[0.2, 2.0], sinc_prob=0.15, resize_prob=[0.3, 0.5, 0.2],
                      resize_range=[0.3, 1.2], noise_range=[1.0, 30.0], jpeg_range=[20, 90]),
        final_sinc_prob=0.9,
        sharpen_target=False,
    ),
}


def resolve(cfg: DegradationConfig) -> DegradationConfig:
    """``cfg`` with every unset (null) value filled from its preset."""
    preset = PRESETS[cfg.preset]

    def stage(given: DegradationStageConfig, base: dict[str, object]) -> DegradationStageConfig:
        values = {f.name: getattr(given, f.name) for f in dataclasses.fields(given)}
        return DegradationStageConfig(**{k: (base[k] if v is None else v) for k, v in values.items()})

    return dataclasses.replace(
        cfg,
        first=stage(cfg.first, preset["first"]),  # type: ignore[arg-type]
        second=stage(cfg.second, preset["second"]),  # type: ignore[arg-type]
        final_sinc_prob=preset["final_sinc_prob"] if cfg.final_sinc_prob is None else cfg.final_sinc_prob,
        sharpen_target=preset["sharpen_target"] if cfg.sharpen_target is None else cfg.sharpen_target,
    )


# --------------------------------------------------------------------------- kernels
def _grid(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    half = MAX_KERNEL_SIZE // 2
    ax = torch.arange(-half, half + 1, dtype=dtype)
    y, x = torch.meshgrid(ax, ax, indexing="ij")
    return x, y


def _normalise(k: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """Zero outside each kernel's own ``size x size`` square, then scaled to sum 1."""
    x, y = _grid(k.dtype)
    r = (size // 2).to(k.dtype)[:, None, None]
    k = torch.where((x.abs() <= r) & (y.abs() <= r), k, torch.zeros_like(k))
    return k / k.sum(dim=(1, 2), keepdim=True)


def blur_kernels(kind: torch.Tensor, size: torch.Tensor, sigma_x: torch.Tensor, sigma_y: torch.Tensor,
                 theta: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``B x 21 x 21`` float64 kernels of the Gaussian family: ``kind`` indexes :data:`KERNELS`; the
    isotropic kinds (even indices) use ``sigma_x`` and no rotation; ``beta`` is ignored by the plain
    Gaussians (0, 1). All arguments are length-B tensors."""
    kind = kind.long()
    iso = kind % 2 == 0
    sx = sigma_x.double()
    sy = torch.where(iso, sx, sigma_y.double())
    th = torch.where(iso, torch.zeros_like(sx), theta.double())
    c, s = torch.cos(th), torch.sin(th)
    d1, d2 = 1.0 / sx**2, 1.0 / sy**2
    a, b, cc = c * c * d1 + s * s * d2, c * s * (d1 - d2), s * s * d1 + c * c * d2
    x, y = _grid()
    q = a[:, None, None] * x**2 + 2 * b[:, None, None] * x * y + cc[:, None, None] * y**2
    be = torch.where(kind < 2, torch.ones_like(sx), beta.double())[:, None, None]
    qb = q.clamp_min(0) ** be
    plateau = (kind >= 4)[:, None, None]
    k = torch.where(plateau, 1.0 / (1.0 + qb), torch.exp(-0.5 * qb))
    return _normalise(k, size)


def sinc_kernels(omega: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """``B x 21 x 21`` float64 2-D sinc (ideal low-pass, cut-off ``omega`` in radians per pixel)
    kernels ``omega J1(omega r) / (2 pi r)``, truncated to ``size`` and normalised."""
    x, y = _grid()
    r = torch.sqrt(x**2 + y**2)
    w = omega.double()[:, None, None]
    safe = torch.where(r == 0, torch.ones_like(r), r)
    k = w * torch.special.bessel_j1(w * safe) / (2 * math.pi * safe)
    k = torch.where(r == 0, w**2 / (4 * math.pi), k)
    return _normalise(k, size)


def _pad(x: torch.Tensor, p: int) -> torch.Tensor:
    mode = "reflect" if p < min(x.shape[-2:]) else "replicate"
    return F.pad(x, (p, p, p, p), mode=mode)


def filter_batch(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Each sample of ``x`` (``B x C x H x W``) filtered by its own kernel (``B x K x K``, K odd), same
    size out, the borders padded by reflection: one grouped convolution. The kernels are
    point-symmetric, so correlation equals convolution. (An FFT version was slower on the CPU at
    every size drawn here, 7 to 21 taps on 48 to 128 pixels.)"""
    b, c, h, w = x.shape
    k = kernels.to(device=x.device, dtype=x.dtype)
    weight = k[:, None].repeat_interleave(c, dim=0)  # (B*C) x 1 x K x K
    out = F.conv2d(_pad(x.reshape(1, b * c, h, w), k.shape[-1] // 2), weight, groups=b * c)
    return out.view(b, c, h, w)


def _crop_kernels(kernels: torch.Tensor, size: int) -> torch.Tensor:
    half, r = MAX_KERNEL_SIZE // 2, size // 2
    return kernels[:, half - r : half + r + 1, half - r : half + r + 1]


def _apply_kernels(x: torch.Tensor, kernels: torch.Tensor, sizes: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Filter the ``active`` samples (others pass unchanged: a unit impulse), with the grid cut to the
    largest active size. Nothing is computed when no sample is active."""
    if not bool(active.any()):
        return x
    largest = int(sizes[active].max())
    impulse = torch.zeros_like(kernels)
    impulse[:, MAX_KERNEL_SIZE // 2, MAX_KERNEL_SIZE // 2] = 1
    k = torch.where(active[:, None, None], kernels, impulse)
    return filter_batch(x, _crop_kernels(k, largest))


# --------------------------------------------------------------------------- JPEG, sharpening
def jpeg(x: torch.Tensor, quality: Sequence[int | None]) -> torch.Tensor:
    """JPEG-compress sample ``i`` of ``x`` (``B x C x H x W``, C 1 or 3, in [0, 1]) at ``quality[i]``
    (``None``: unchanged) with libjpeg through Pillow: rounded to 8 bits, encoded, decoded, back to
    ``[0, 1]`` on ``x``'s device."""
    from PIL import Image

    chosen = [i for i, q in enumerate(quality) if q is not None]
    if not chosen:
        return x
    host = (x[chosen].clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    decoded = []
    for a, i in zip(host, chosen):
        buf = io.BytesIO()
        Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(buf, format="JPEG", quality=int(quality[i]))
        buf.seek(0)
        with Image.open(buf) as im:
            decoded.append(np.asarray(im).reshape(a.shape))
    back = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).float() / 255.0
    out = x.clone()
    out[chosen] = back.to(device=x.device, dtype=x.dtype)
    return out


#: Unsharp mask of the HR target: Real-ESRGAN's weight 0.5, 51-tap Gaussian (sigma 8.0, the sigma
#: OpenCV gives a 51-tap kernel), residual threshold 10 levels (of 255).
USM_WEIGHT, USM_TAPS, USM_THRESHOLD = 0.5, 51, 10.0


def _gaussian_blur(x: torch.Tensor, taps: int) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding, as two matrix products (much faster on the CPU than
    a 51-tap single-channel convolution): the padding is folded into the ``n x n`` blur matrices."""
    rows = _usm_matrix(x.shape[-1], taps).to(device=x.device, dtype=x.dtype)
    cols = _usm_matrix(x.shape[-2], taps).to(device=x.device, dtype=x.dtype)
    return cols.T @ (x @ rows)


@functools.lru_cache(maxsize=16)
def _usm_matrix(n: int, taps: int) -> torch.Tensor:
    sigma = 0.3 * ((taps - 1) * 0.5 - 1) + 0.8  # OpenCV's sigma for a kernel of this size
    ax = torch.arange(taps, dtype=torch.float64) - taps // 2
    g = torch.exp(-0.5 * (ax / sigma) ** 2)
    return _blur_matrix(n, g / g.sum())


def _blur_matrix(n: int, g: torch.Tensor) -> torch.Tensor:
    """``M`` (n x n, float64) with ``signal @ M`` = the 1-D filter ``g`` over a length-n signal, padded
    by reflection (replication when n is too short to reflect): the response to each unit impulse."""
    p = len(g) // 2
    eye = torch.eye(n, dtype=torch.float64)[:, None, :]
    padded = F.pad(eye, (p, p), mode="reflect" if p < n else "replicate")
    return F.conv1d(padded, g.view(1, 1, -1))[:, 0, :]


def usm_sharpen(x: torch.Tensor) -> torch.Tensor:
    """Unsharp mask: ``x + w (x - blur(x))`` clipped to [0, 1], blended in through a soft mask (the
    blurred map of where the residual exceeds the threshold), so flat areas stay as they were."""
    residual = x - _gaussian_blur(x, USM_TAPS)
    mask = (residual.abs() * 255 > USM_THRESHOLD).to(x.dtype)
    soft = _gaussian_blur(mask, USM_TAPS)
    sharp = (x + USM_WEIGHT * residual).clamp(0, 1)
    return soft * sharp + (1 - soft) * x


# --------------------------------------------------------------------------- the draws
#: Keeps the degradation's draws apart from the crop draws of the same (seed, iteration, slot).
_TAG = 0xDE64ADE << 32
_BATCH_INDEX = _TAG + 2**31
#: Uniforms per sample: 17 per stage (16 parameters + the noise generator's seed), 3 for the final sinc.
_STAGE_UNIFORMS = 17
_SAMPLE_UNIFORMS = 2 * _STAGE_UNIFORMS + 3
_BATCH_UNIFORMS = 8


def _uniforms(seed: int, iteration: int, indices: Sequence[int], count: int) -> torch.Tensor:
    return torch.from_numpy(draw_uniforms(seed, iteration, np.asarray(indices, dtype=np.int64), count))


def _between(u: torch.Tensor, bounds: Sequence[float]) -> torch.Tensor:
    lo, hi = float(bounds[0]), float(bounds[1])
    return lo + u * (hi - lo)


def _odd_size(u: torch.Tensor, bounds: Sequence[int]) -> torch.Tensor:
    """An odd size in ``[lo, hi]`` (both odd), each equally likely."""
    lo, hi = int(bounds[0]), int(bounds[1])
    steps = (hi - lo) // 2 + 1
    return (lo + 2 * torch.clamp((u * steps).long(), max=steps - 1)).long()


def _beta(side: torch.Tensor, u: torch.Tensor, bounds: Sequence[float]) -> torch.Tensor:
    """A shape in ``[lo, hi]``; when the range straddles 1, below and above 1 are equally likely."""
    lo, hi = float(bounds[0]), float(bounds[1])
    if lo < 1 < hi:
        return torch.where(side < 0.5, lo + u * (1 - lo), 1 + u * (hi - 1))
    return lo + u * (hi - lo)


def _stage_kernels(u: torch.Tensor, st: DegradationStageConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(kernels B x 21 x 21, sizes, active)`` of one stage from its uniform columns ``u`` (B x 17)."""
    active = u[:, 0] < st.blur_prob
    cdf = torch.tensor(np.cumsum(st.kernel_prob), dtype=torch.float64)  # type: ignore[arg-type]
    kind = torch.clamp(torch.searchsorted(cdf, u[:, 1].contiguous(), right=True), max=len(KERNELS) - 1)
    size = _odd_size(u[:, 3], st.kernel_size)  # type: ignore[arg-type]
    sx, sy = _between(u[:, 4], st.blur_sigma), _between(u[:, 5], st.blur_sigma)  # type: ignore[arg-type]
    theta = (2 * u[:, 6] - 1) * math.pi
    plateau = kind >= 4
    beta = torch.where(plateau, _beta(u[:, 7], u[:, 8], st.betap_range), _beta(u[:, 7], u[:, 8], st.betag_range))  # type: ignore[arg-type]
    kernels = blur_kernels(kind, size, sx, sy, theta, beta)
    sinc = u[:, 2] < st.sinc_prob
    if bool(sinc.any()):
        low = torch.where(size < 13, math.pi / 3, math.pi / 5)
        omega = low + u[:, 9] * (math.pi - low)
        kernels = torch.where(sinc[:, None, None], sinc_kernels(omega, size), kernels)
    return kernels, size, active


def _resize_size(u: torch.Tensor, prob: Sequence[float], bounds: Sequence[float], h: float, w: float) -> tuple[tuple[int, int], str]:
    """Up, down or keep (``prob``) by a uniform factor in ``[1, hi]`` / ``[lo, 1]``; a mode of :data:`RESIZE_MODES`."""
    kind, value, mode = (float(v) for v in u)
    if kind < prob[0]:
        factor = 1 + value * (bounds[1] - 1)
    elif kind < prob[0] + prob[1]:
        factor = bounds[0] + value * (1 - bounds[0])
    else:
        factor = 1.0
    return (max(1, int(h * factor)), max(1, int(w * factor))), RESIZE_MODES[min(int(mode * 3), 2)]


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def _luma(x: torch.Tensor) -> torch.Tensor:
    """Gray of an RGB sample (C x H x W) by the BT.601 luma weights (1 x H x W); gray passes through."""
    if x.shape[0] == 1:
        return x

    w = torch.tensor(Y_COEFFS, dtype=x.dtype, device=x.device) / sum(Y_COEFFS)
    return (x * w[:, None, None]).sum(0, keepdim=True)


def _noise(x: torch.Tensor, u: torch.Tensor, st: DegradationStageConfig) -> torch.Tensor:
    """Gaussian (sigma in 8-bit levels) or Poisson (photon count 255 at white, times a scale) noise,
    colour or gray, per sample; clipped to [0, 1]. Each sample's noise comes from its own generator on
    ``x``'s device, seeded from its uniforms."""
    out = []
    for j in range(x.shape[0]):
        sample = x[j]
        uj = [float(v) for v in u[j]]
        if not uj[10] < st.noise_prob:
            out.append(sample)
            continue
        g = torch.Generator(device=x.device).manual_seed(int(uj[16] * 2**53))
        gray = uj[13] < st.gray_noise_prob
        c = 1 if gray else sample.shape[0]
        if uj[11] < st.gaussian_noise_prob:
            sigma = float(_between(torch.tensor(uj[12]), st.noise_range)) / 255.0  # type: ignore[arg-type]
            n = torch.randn((c, *sample.shape[1:]), generator=g, device=x.device, dtype=x.dtype) * sigma
        else:
            scale = float(_between(torch.tensor(uj[12]), st.poisson_scale_range))  # type: ignore[arg-type]
            base = _luma(sample) if gray else sample
            rate = base.clamp(0, 1) * 255.0
            n = (torch.poisson(rate, generator=g) - rate) / 255.0 * scale
        out.append((sample + n).clamp(0, 1))
    return torch.stack(out)


def _jpeg_stage(x: torch.Tensor, u: torch.Tensor, st: DegradationStageConfig) -> torch.Tensor:
    lo, hi = (int(v) for v in st.jpeg_range)  # type: ignore[union-attr]
    quality = [min(hi, lo + int(float(row[15]) * (hi - lo + 1))) if float(row[14]) < st.jpeg_prob else None for row in u]
    return jpeg(x.clamp(0, 1), quality)


class Degrader:
    """The ``realworld`` degradation of a :class:`~superres.config.DegradationConfig` at ``scale``, seeded.

    ``degrader(hr, iteration, slots)`` takes a float ``B x C x H x W`` HR batch in [0, 1] (C 1 or 3,
    H and W multiples of ``scale``) whose sample ``i`` is slot ``slots[i]`` of ``iteration``, and
    returns ``(lr, hr_target)``: the degraded ``B x C x H/s x W/s`` LR (8-bit levels) and the HR target
    (unsharp-masked when ``sharpen_target``, else ``hr`` itself), on ``hr``'s device.
    """

    def __init__(self, cfg: DegradationConfig, *, scale: int, seed: int) -> None:
        self.params = resolve(cfg)
        self.scale = int(scale)
        self.seed = int(seed)

    def __call__(self, hr: torch.Tensor, iteration: int, slots: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        p, s = self.params, self.scale
        if hr.shape[1] not in (1, 3):
            raise ValueError(f"realworld degradation needs 1 or 3 channels, got {hr.shape[1]}")
        u = _uniforms(self.seed, iteration, [_TAG + int(j) for j in slots], _SAMPLE_UNIFORMS)
        ub = _uniforms(self.seed, iteration, [_BATCH_INDEX], _BATCH_UNIFORMS)[0]
        h, w = hr.shape[-2:]
        target = usm_sharpen(hr) if p.sharpen_target else hr
        x = target
        for k, (st, base) in enumerate(((p.first, (h, w)), (p.second, (h / s, w / s)))):
            us = u[:, k * _STAGE_UNIFORMS : (k + 1) * _STAGE_UNIFORMS]
            kernels, sizes, active = _stage_kernels(us, st)
            x = _apply_kernels(x, kernels, sizes, active)
            size, mode = _resize_size(ub[3 * k : 3 * k + 3], st.resize_prob, st.resize_range, *base)  # type: ignore[arg-type]
            x = _resize(x, size, mode)
            x = _noise(x, us, st)
            if k == 0:
                x = _jpeg_stage(x, us, st)
        # the last steps: [resize to the LR size + sinc, JPEG] or [JPEG, resize + sinc]
        uf = u[:, 2 * _STAGE_UNIFORMS :]
        final_size = _odd_size(uf[:, 1], [7, MAX_KERNEL_SIZE])
        final = sinc_kernels(math.pi / 3 + uf[:, 2] * (2 * math.pi / 3), final_size)
        final_on = uf[:, 0] < p.final_sinc_prob
        mode = RESIZE_MODES[min(int(float(ub[7]) * 3), 2)]
        us2 = u[:, _STAGE_UNIFORMS : 2 * _STAGE_UNIFORMS]
        lr_size = (h // s, w // s)
        if float(ub[6]) < 0.5:
            x = _apply_kernels(_resize(x, lr_size, mode), final, final_size, final_on)
            x = _jpeg_stage(x, us2, p.second)
        else:
            x = _jpeg_stage(x, us2, p.second)
            x = _apply_kernels(_resize(x, lr_size, mode), final, final_size, final_on)
        lr = (x.clamp(0, 1) * 255).round() / 255
        return lr, target


# --------------------------------------------------------------------------- degraded test sets
def make_degraded_set(sources: Sequence[str], out: str, *, scale: int, preset: str, seed: int,
                      overrides: Sequence[str] = (), progress: bool = False) -> dict[str, object]:
    """``superres data degrade``: a paired test set from the images of ``sources``.

    Writes ``out/HR/<name>.png`` (the image mod-cropped to a multiple of ``scale``, samples as read,
    alpha dropped) and ``out/LR_<preset>/X<scale>/<name>.png`` (8-bit: the HR degraded by ``preset``
    with ``overrides`` (``first.noise_range=[1,10]``, keys of ``data.degradation``), the randomness of
    image ``name`` drawn from ``(seed, crc32(name))``, so a set is the same whatever else is in it).
    The unsharp mask never applies here: the HR is the reference the LR is scored against.
    ``superres eval --lr LR_<preset>`` scores it. Everything is checked before the first write; each
    file is written atomically. Returns a summary. ``progress``: bars on stderr for the check and
    for the writing pass (:func:`superres.progress.progress_bar`).
    """
    import zlib


    if scale not in SCALES:
        raise SuperresError(f"--scale {scale}: unsupported scale; choose one of {', '.join(map(str, SCALES))}")
    if preset not in PRESETS:
        raise SuperresError(f"--preset {preset}: unknown preset; choose one of {', '.join(PRESETS)}")
    raw: dict[str, object] = {"kind": "realworld", "preset": preset}
    for text in overrides:
        parts, value = parse_override(text)
        if parts[0] in ("kind", "preset"):
            raise SuperresError(f"--set {text}: use --preset to choose the preset")
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SuperresError(f"--set {text}: '{part}' is not a section")
            node = child
        node[parts[-1]] = value
    cfg = dataclasses.replace(degradation_config(raw, "--set"), sharpen_target=False)
    degrader = Degrader(cfg, scale=scale, seed=seed)

    paths = list_images(sources)
    names: dict[str, str] = {}
    for path in paths:
        if path.stem in names:
            raise SuperresError(f"{path}: two sources are named {path.stem} (also {names[path.stem]}); the set needs distinct names")
        names[path.stem] = str(path)
    root = Path(out)
    hr_dir, lr_dir = root / "HR", root / f"LR_{preset}" / f"X{scale}"

    def checked(path: Path) -> np.ndarray:
        samples = read_array(path)
        if samples.dtype not in (np.uint8, np.uint16):
            raise SuperresError(f"{path}: float samples are not supported here (8- or 16-bit images only)")
        if samples.shape[2] not in (1, 3):
            raise SuperresError(f"{path}: {samples.shape[2]} channels; degraded sets need gray or RGB images")
        if samples.shape[0] < 2 * scale or samples.shape[1] < 2 * scale:
            raise SuperresError(f"{path}: {samples.shape[1]}x{samples.shape[0]} is too small for x{scale}")
        return samples

    for path in progress_bar(paths, enabled=progress, desc="check", unit="image"):  # all before any write
        checked(path)
    written = 0
    for path in progress_bar(paths, enabled=progress, desc=f"LR_{preset} x{scale}", unit="image"):
        hr = modcrop(checked(path), scale)
        x = torch.from_numpy(np.ascontiguousarray(to_float(hr))).permute(2, 0, 1)[None]
        lr, _ = degrader(x, zlib.crc32(path.stem.encode("utf-8")), [0])
        lr_data = lr[0].permute(1, 2, 0).numpy()
        write_image(hr_dir / f"{path.stem}.png", Image.from_array(hr))
        write_image(lr_dir / f"{path.stem}.png", Image(lr_data, None, 8))
        written += 1
    return {"count": written, "hr_dir": str(hr_dir), "lr_dir": str(lr_dir)}
