"""PSNR and SSIM under the super-resolution paper protocol.

Papers report PSNR/SSIM under one convention (see ``PROTOCOL.md``, "Scoring"): colour images are
compared on Y of BT.601 studio swing (``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` with R, G, B in
[0, 1], not rounded), single-channel images on their intensity as is, ``scale`` pixels are shaved
from every border, PSNR is ``10 log10(255^2 / MSE)`` in float64, and SSIM uses an 11x11 Gaussian
window (sigma 1.5, K1 = 0.01, K2 = 0.03) over the 'valid' region only, averaged over the map.
Deviating from any of these moves the numbers by more than the differences papers argue about, so
this module implements exactly that, twice:

* a numpy float64 **reference** (:func:`psnr`, :func:`ssim`, :func:`score`) for reported figures;
* batched **torch** versions (:func:`psnr_torch`, :func:`ssim_torch`) for validation during
  training. They compute in float64 internally and agree with the reference within 1e-4 dB PSNR
  and 1e-5 SSIM (tested).

Value ranges. numpy integer arrays are taken in their native range (uint8: 0..255, uint16:
0..65535), float arrays as [0, 1]; ``data_range`` overrides that peak value (e.g. 65535 for 16-bit
data held in a float array). Torch tensors are float in ``[0, data_range]`` (default 1.0).

Channels. ``channels="y"`` (the default) scores colour (3-channel) images on Y and single-channel
images on their intensity rescaled to 0..255 (never through the Y formula: for a gray image that
would compress the range to 16..235 and shift PSNR), both with peak 255. Images whose channel count
is neither 1 nor 3 (multi-band, RGBA) have no Y, so with ``channels="y"`` all their channels are
scored, rescaled to 0..255. ``channels="rgb"`` (alias ``"all"``) scores every channel in the
input's own units with peak ``data_range``. PSNR over several channels uses the MSE over all of
them; SSIM over several channels is the mean of the per-channel SSIM maps. (Both metrics are
invariant to a common rescaling of the values and the peak, so the choice of units changes nothing
but float rounding.)

Identical images. PSNR of identical images is ``inf`` (MSE = 0), returned as such by :func:`psnr`,
:func:`score` and :func:`psnr_torch`. A mean over a set would then be ``inf`` and ``inf`` is not valid
JSON, so set means go through :func:`mean_psnr`, which caps every value at :data:`PSNR_CAP_DB`
(100 dB) first. 100 dB is an MSE of 2.55e-6 grey levels^2, far below what 8- or 16-bit
quantisation of two different images can produce on any realistic image size.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from superres.color import Y_COEFFS, Y_OFFSET
from superres.errors import SuperresError

if TYPE_CHECKING:  # torch is imported lazily: the numpy reference must not pay for it
    import torch

__all__ = [
    "Y_OFFSET",
    "Y_COEFFS",
    "PSNR_CAP_DB",
    "SSIM_WINDOW",
    "SSIM_SIGMA",
    "SSIM_K1",
    "SSIM_K2",
    "to_y",
    "gaussian_window",
    "ssim_map",
    "psnr",
    "ssim",
    "score",
    "mean_psnr",
    "psnr_torch",
    "ssim_torch",
]

#: Per-image PSNR values are capped at this before averaging over a set (identical images: inf).
PSNR_CAP_DB = 100.0
#: SSIM constants of Wang et al. (2004), as every SR paper uses them.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
#: The peak value of the Y / intensity scale every "y" score is computed on.
_Y_PEAK = 255.0

_CHANNEL_MODES = ("y", "rgb", "all")


# --------------------------------------------------------------------------- shared helpers
def to_y(rgb: Any) -> Any:
    """Y of BT.601 studio swing from RGB in [0, 1] (float, not rounded; 16..235 for in-range input).

    numpy: ``H x W x 3`` (channels last) -> float64 ``H x W``.
    torch: ``... x 3 x H x W`` (channels first) -> ``... x 1 x H x W`` in the input's float dtype.
    One definition of the coefficients serves both, so the reference and the training-time
    metric cannot drift apart.
    """
    if isinstance(rgb, np.ndarray):
        if rgb.ndim != 3 or rgb.shape[-1] != 3:
            raise ValueError(f"to_y expects an H x W x 3 array, got shape {rgb.shape}")
        x = rgb.astype(np.float64, copy=False)
        r, g, b = Y_COEFFS
        return Y_OFFSET + r * x[..., 0] + g * x[..., 1] + b * x[..., 2]
    if rgb.ndim < 3 or rgb.shape[-3] != 3:
        raise ValueError(f"to_y expects a ... x 3 x H x W tensor, got shape {tuple(rgb.shape)}")
    r, g, b = Y_COEFFS
    return Y_OFFSET + r * rgb[..., 0:1, :, :] + g * rgb[..., 1:2, :, :] + b * rgb[..., 2:3, :, :]


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The normalised 1-D Gaussian (float64); the 2-D SSIM window is its outer product.

    MATLAB's ``fspecial('gaussian', 11, 1.5)`` is ``exp(-(x^2 + y^2) / (2 sigma^2))`` normalised to
    sum 1, which factorises exactly into this 1-D kernel times itself, so filtering rows then
    columns gives the same result as the 2-D window at a fraction of the cost.
    """
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _check_mode(channels: str) -> str:
    mode = channels.lower() if isinstance(channels, str) else channels
    if mode not in _CHANNEL_MODES:
        raise ValueError(f"channels must be one of {', '.join(_CHANNEL_MODES)}; got {channels!r}")
    return "all" if mode == "rgb" else mode


def _check_shave(shave: int) -> int:
    if int(shave) != shave or shave < 0:
        raise ValueError(f"shave must be an integer >= 0, got {shave!r}")
    return int(shave)


# --------------------------------------------------------------------------- numpy reference
def _native_peak(a: np.ndarray) -> float:
    """The value of full white for ``a``'s dtype: the integer maximum, or 1.0 for floats."""
    if np.issubdtype(a.dtype, np.integer):
        return float(np.iinfo(a.dtype).max)
    if np.issubdtype(a.dtype, np.floating):
        return 1.0
    if a.dtype == np.bool_:
        return 1.0
    raise ValueError(f"unsupported image dtype {a.dtype}")


def _as_hwc(a: np.ndarray, what: str) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{what} must be a numpy array, got {type(a).__name__}")
    if a.ndim == 2:
        return a[:, :, None]
    if a.ndim == 3:
        return a
    raise ValueError(f"{what} must be H x W or H x W x C, got shape {a.shape}")


def _prepare(
    sr: np.ndarray, hr: np.ndarray, shave: int, channels: str, data_range: float | None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Both images as float64 ``H x W x C`` on the scoring scale, shaved, plus the peak value.

    Each input is read in its own native range (or ``data_range``), so a uint8 HR can be compared
    with a float SR in [0, 1]; the result is on the Y / intensity 0..255 scale for ``"y"`` and in
    the units of ``data_range`` (default: the HR's native peak) for ``"all"``.
    """
    mode = _check_mode(channels)
    shave = _check_shave(shave)
    a, b = _as_hwc(sr, "sr"), _as_hwc(hr, "hr")
    if a.shape != b.shape:
        raise SuperresError(f"cannot score images of different shapes: SR {sr.shape} vs HR {hr.shape}")
    if data_range is not None and not (data_range > 0 and math.isfinite(data_range)):
        raise ValueError(f"data_range must be a positive number, got {data_range!r}")
    peaks = [float(data_range) if data_range is not None else _native_peak(x) for x in (a, b)]
    c = a.shape[2]
    if mode == "y" and c == 3:
        out = [to_y(x.astype(np.float64) / p) for x, p in zip((a, b), peaks)]
        out = [y[:, :, None] for y in out]
        peak = _Y_PEAK
    else:
        # "y" on gray or multi-band: intensity on 0..255; "all": units of the HR's peak.
        peak = _Y_PEAK if mode == "y" else peaks[1]
        out = []
        for x, p in zip((a, b), peaks):
            x = x.astype(np.float64)
            if p != peak:  # skip when exact: keeps integer inputs exactly integral
                x = x * (peak / p)
            out.append(x)
    if shave:
        h, w = out[0].shape[:2]
        if h <= 2 * shave or w <= 2 * shave:
            raise SuperresError(f"image of {w}x{h} pixels is too small to shave {shave} pixels from every border")
        out = [x[shave:-shave, shave:-shave, :] for x in out]
    return out[0], out[1], peak


def _mse_to_psnr(mse: float, peak: float) -> float:
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


def psnr(
    sr: np.ndarray,
    hr: np.ndarray,
    *,
    shave: int = 0,
    channels: str = "y",
    data_range: float | None = None,
) -> float:
    """Peak signal-to-noise ratio in dB (float64 reference); ``inf`` for identical images.

    See the module docstring for how ``channels`` and ``data_range`` pick the values compared.
    """
    a, b, peak = _prepare(sr, hr, shave, channels, data_range)
    diff = a - b
    mse = float(np.mean(diff * diff))
    return _mse_to_psnr(mse, peak)


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of a 2-D float64 array with ``outer(g, g)``."""
    k = g.shape[0]
    rows = np.lib.stride_tricks.sliding_window_view(x, k, axis=0) @ g  # (H-k+1) x W
    return np.lib.stride_tricks.sliding_window_view(rows, k, axis=1) @ g  # (H-k+1) x (W-k+1)


def ssim_map(a: np.ndarray, b: np.ndarray, *, data_range: float) -> np.ndarray:
    """The SSIM map of two 2-D float64 images over the 'valid' region (no padding).

    The map is ``(H - 10) x (W - 10)``: only positions where the whole 11x11 window lies inside the
    image, which is what MATLAB's ``ssim_index`` (``filter2(..., 'valid')``) of Wang et al. computes
    and what SR papers report. Variances are the population (1/N, Gaussian-weighted) moments.
    """
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"ssim_map expects two 2-D arrays of the same shape, got {a.shape} and {b.shape}")
    if min(a.shape) < SSIM_WINDOW:
        raise SuperresError(
            f"image of {a.shape[1]}x{a.shape[0]} pixels (after shaving) is smaller than the "
            f"{SSIM_WINDOW}x{SSIM_WINDOW} SSIM window"
        )
    a = a.astype(np.float64, copy=False)
    b = b.astype(np.float64, copy=False)
    g = gaussian_window()
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a * mu_a
    var_b = _filter_valid(b * b, g) - mu_b * mu_b
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    num = (2.0 * mu_a * mu_b + c1) * (2.0 * cov + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    return num / den


def ssim(
    sr: np.ndarray,
    hr: np.ndarray,
    *,
    shave: int = 0,
    channels: str = "y",
    data_range: float | None = None,
) -> float:
    """Structural similarity (float64 reference): mean of the valid SSIM map, mean over channels.

    Scored on the same values as :func:`psnr` (Y / intensity with peak 255 by default).
    """
    a, b, peak = _prepare(sr, hr, shave, channels, data_range)
    maps = [ssim_map(a[:, :, i], b[:, :, i], data_range=peak).mean() for i in range(a.shape[2])]
    return float(np.mean(maps))


def score(sr: np.ndarray, hr: np.ndarray, scale: int) -> dict[str, float]:
    """The paper protocol in one call: PSNR and SSIM on Y (gray: intensity), shave = ``scale``.

    ``hr`` must already be mod-cropped to the SR size (see :func:`superres.resize.modcrop`).
    """
    return {
        "psnr_y": psnr(sr, hr, shave=scale, channels="y"),
        "ssim_y": ssim(sr, hr, shave=scale, channels="y"),
    }


def mean_psnr(values: Iterable[float], cap: float = PSNR_CAP_DB) -> float:
    """Mean of per-image PSNRs with each value capped at ``cap`` dB (identical images give inf).

    Without the cap a single perfect reconstruction would make the set mean ``inf``, which says
    nothing about the other images and cannot be written as JSON.
    """
    vals = [min(float(v), cap) for v in values]
    if not vals:
        raise ValueError("mean_psnr of an empty sequence")
    if any(math.isnan(v) for v in vals):
        raise ValueError("mean_psnr got NaN")
    return float(np.mean(vals))


# --------------------------------------------------------------------------- torch (batched)
def _prepare_torch(
    sr: "torch.Tensor", hr: "torch.Tensor", shave: int, channels: str, data_range: float
) -> tuple["torch.Tensor", "torch.Tensor", float]:
    """The torch twin of :func:`_prepare`: float64 ``N x C' x H' x W'`` on the scoring scale."""
    import torch

    mode = _check_mode(channels)
    shave = _check_shave(shave)
    for name, t in (("sr", sr), ("hr", hr)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 4:
            raise ValueError(f"{name} must be N x C x H x W, got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a float tensor in [0, data_range], got {t.dtype}")
    if sr.shape != hr.shape:
        raise SuperresError(
            f"cannot score tensors of different shapes: SR {tuple(sr.shape)} vs HR {tuple(hr.shape)}"
        )
    if not (data_range > 0 and math.isfinite(data_range)):
        raise ValueError(f"data_range must be a positive number, got {data_range!r}")
    a = sr.to(torch.float64)
    b = hr.to(torch.float64)
    c = a.shape[1]
    if mode == "y" and c == 3:
        a, b = to_y(a / data_range), to_y(b / data_range)
        peak = _Y_PEAK
    elif mode == "y":
        if data_range != _Y_PEAK:
            a, b = a * (_Y_PEAK / data_range), b * (_Y_PEAK / data_range)
        peak = _Y_PEAK
    else:
        peak = float(data_range)
    if shave:
        h, w = a.shape[-2:]
        if h <= 2 * shave or w <= 2 * shave:
            raise SuperresError(f"image of {w}x{h} pixels is too small to shave {shave} pixels from every border")
        a = a[..., shave:-shave, shave:-shave]
        b = b[..., shave:-shave, shave:-shave]
    return a, b, peak


def psnr_torch(
    sr: "torch.Tensor",
    hr: "torch.Tensor",
    *,
    shave: int = 0,
    channels: str = "y",
    data_range: float = 1.0,
) -> "torch.Tensor":
    """Per-image PSNR (dB) of a batch ``N x C x H x W`` in ``[0, data_range]`` -> float64 ``Tensor[N]``.

    Same rules as :func:`psnr`; ``inf`` where an image pair is identical (average with a cap, see
    :func:`mean_psnr`). Not meant for backpropagation (it is a metric, computed in float64).
    """
    import torch

    a, b, peak = _prepare_torch(sr, hr, shave, channels, data_range)
    mse = (a - b).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(peak * peak / mse)  # mse == 0 -> +inf, as in the reference


def ssim_torch(
    sr: "torch.Tensor",
    hr: "torch.Tensor",
    *,
    shave: int = 0,
    channels: str = "y",
    data_range: float = 1.0,
) -> "torch.Tensor":
    """Per-image SSIM of a batch ``N x C x H x W`` in ``[0, data_range]`` -> float64 ``Tensor[N]``.

    Same rules as :func:`ssim`: separable 11x11 Gaussian via two depthwise ``conv2d`` passes with no
    padding ('valid' map), mean of the map, mean over channels.
    """
    import torch
    import torch.nn.functional as F

    a, b, peak = _prepare_torch(sr, hr, shave, channels, data_range)
    n, c, h, w = a.shape
    if min(h, w) < SSIM_WINDOW:
        raise SuperresError(
            f"image of {w}x{h} pixels (after shaving) is smaller than the {SSIM_WINDOW}x{SSIM_WINDOW} SSIM window"
        )
    g = torch.as_tensor(gaussian_window(), dtype=torch.float64, device=a.device)
    w_rows = g.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    w_cols = g.view(1, 1, 1, -1).expand(c, 1, 1, -1)

    def blur(x: "torch.Tensor") -> "torch.Tensor":
        return F.conv2d(F.conv2d(x, w_rows, groups=c), w_cols, groups=c)

    c1 = (SSIM_K1 * peak) ** 2
    c2 = (SSIM_K2 * peak) ** 2
    # One conv call over the five stacked moments instead of five calls.
    stats = blur(torch.cat([a, b, a * a, b * b, a * b], dim=0)).view(5, n, c, h - SSIM_WINDOW + 1, w - SSIM_WINDOW + 1)
    mu_a, mu_b, ea2, eb2, eab = stats.unbind(0)
    var_a = ea2 - mu_a * mu_a
    var_b = eb2 - mu_b * mu_b
    cov = eab - mu_a * mu_b
    num = (2.0 * mu_a * mu_b + c1) * (2.0 * cov + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    return (num / den).flatten(2).mean(dim=2).mean(dim=1)
