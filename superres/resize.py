"""MATLAB-exact bicubic ``imresize`` (numpy float64 reference + batched torch) and ``modcrop``.

Why MATLAB-exact: every SR benchmark's LR input was made with MATLAB's ``imresize(HR, 1/s,
'bicubic')``, and training on LR made any other way (Pillow, OpenCV, torch ``interpolate``) shifts the
published numbers by tenths of a dB. This module reproduces MATLAB's algorithm step by step:

- cubic kernel of Keys with a = -0.5, support [-2, 2];
- when shrinking (scale < 1) the kernel is stretched by 1/scale and its height multiplied by
  ``scale`` (antialiasing), then every output pixel's weights are normalised to sum to 1;
- output pixel ``x`` (1-based) samples input coordinate ``u = x/scale + 0.5*(1 - 1/scale)``;
- taps that fall outside the image are clamped to the nearest edge pixel (edge replication), and tap
  positions whose weight is zero for every output pixel are dropped;
- the image is resized one dimension at a time, the dimension with the smaller scale first (rows
  first when both scales are equal, because MATLAB's ``sort`` is stable);
- integer images stay integer between the two passes: each pass is rounded half away from zero
  (MATLAB's conversion to an integer class) and saturated to the type's range.

With these rules the numpy path reproduces the official Set5/Set14 ``LR_bicubic`` X2, X3 and X4
files bit for bit (see ``tests/test_resize.py``). The detail that is easy to get wrong is the
rounding: it must be half *away from zero*. ``np.round`` rounds half to even and is off by one (two
in one pixel) on about 0.5-0.7% of X2 pixels, where the x2 weights are dyadic and exact ties are
common. Each output pixel is accumulated tap by tap in kernel order, as MATLAB's ``imresizemex``
does, so that the bytes never depend on a BLAS library's summation order or thread count (on the
benchmark files a dense float64 matrix product happens to give the same bytes).

Two implementations share the per-axis weights from :func:`contributions`:

- numpy (the float64 reference): tap-by-tap gather-and-accumulate in float64. Its cost is
  proportional to the number of taps, not to the image width, so large images stay cheap.
- torch: for float tensors two matrix products with dense (out x in) weight matrices, which is one
  kernel per axis on a GPU and differentiable; for uint8 tensors the numpy arithmetic, so that the
  per-pass rounding gives identical bytes: on a GPU the same tap-by-tap float64 accumulation in
  torch ops, on the CPU the numpy code itself (faster there than torch's small kernels).
"""

from __future__ import annotations

import math
import numbers
import sys
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Sequence, TypeVar

import numpy as np

from superres.errors import SuperresError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

__all__ = ["imresize", "modcrop", "cubic", "contributions", "weight_matrix", "output_size"]

_ARRAY = TypeVar("_ARRAY")

_KERNEL_WIDTH = 4.0  # support of the cubic kernel, [-2, 2]
_INT_MAX = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


# --------------------------------------------------------------------------------------------------
# Weights (shared by the numpy and torch paths)
# --------------------------------------------------------------------------------------------------


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5, evaluated as MATLAB's ``cubic`` does.

    ``(1.5|x|^3 - 2.5|x|^2 + 1)`` on ``|x| <= 1``, ``(-0.5|x|^3 + 2.5|x|^2 - 4|x| + 2)`` on
    ``1 < |x| <= 2``, 0 elsewhere; written in MATLAB's expression order, so that the float64
    weights match MATLAB's to the last bit as far as the arithmetic allows.
    """
    ax = np.abs(np.asarray(x, dtype=np.float64))
    ax2 = ax**2
    ax3 = ax**3
    inner = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1.0)
    outer = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1.0) & (ax <= 2.0))
    return inner + outer


@lru_cache(maxsize=256)
def contributions(in_size: int, out_size: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-pixel taps for resizing one axis from ``in_size`` to ``out_size`` samples.

    ``scale`` is the kernel scale of this axis (``out_size / in_size`` when a size was requested, the
    user's scale otherwise; MATLAB distinguishes the two). Returns ``(weights, indices)``, both of
    shape ``(out_size, P)``: output pixel ``i`` is ``sum_k weights[i, k] * input[indices[i, k]]``,
    accumulated in ``k`` order. ``indices`` are 0-based and already clamped to ``[0, in_size)``, so
    an edge pixel may appear in several taps (edge replication). Tap columns whose weight is zero for
    every output pixel are dropped, as MATLAB does.

    The arrays are cached (this is called for every image in a data loader) and therefore
    read-only.
    """
    if scale < 1.0:
        # Antialiasing: stretch the kernel by 1/scale and scale its height by `scale`.
        kernel_width = _KERNEL_WIDTH / scale

        def h(t: np.ndarray) -> np.ndarray:
            return scale * cubic(scale * t)

    else:
        kernel_width = _KERNEL_WIDTH
        h = cubic
    x = np.arange(1, out_size + 1, dtype=np.float64)[:, None]
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)  # input coordinate (1-based) of output pixel x
    left = np.floor(u - kernel_width / 2.0)
    taps = math.ceil(kernel_width) + 2  # one spare tap on each side; zero columns are dropped below
    idx = left + np.arange(taps, dtype=np.float64)[None, :]
    weights = h(u - idx)
    weights = weights / weights.sum(axis=1, keepdims=True)
    indices = np.clip(idx.astype(np.int64), 1, in_size) - 1
    keep = np.any(weights != 0.0, axis=0)
    weights = np.ascontiguousarray(weights[:, keep])
    indices = np.ascontiguousarray(indices[:, keep])
    weights.setflags(write=False)
    indices.setflags(write=False)
    return weights, indices


@lru_cache(maxsize=256)
def weight_matrix(in_size: int, out_size: int, scale: float) -> np.ndarray:
    """Dense ``(out_size, in_size)`` float64 matrix ``M`` with ``resized = M @ signal`` (no rounding).

    Built from :func:`contributions` by adding the weights of taps that hit the same input pixel
    (the clamped edge taps). Used by the torch float path, where one matmul per axis beats a loop
    over taps. Cached and read-only.
    """
    weights, indices = contributions(in_size, out_size, scale)
    m = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.broadcast_to(np.arange(out_size)[:, None], indices.shape)
    np.add.at(m, (rows, indices), weights)
    m.setflags(write=False)
    return m


# --------------------------------------------------------------------------------------------------
# Argument handling
# --------------------------------------------------------------------------------------------------


def output_size(in_size: tuple[int, int], scale: float) -> tuple[int, int]:
    """MATLAB's output size for a scale factor: ``ceil(scale * size)`` per axis."""
    return math.ceil(scale * in_size[0]), math.ceil(scale * in_size[1])


def _check_scale(scale: Any) -> float:
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise SuperresError(f"imresize: scale must be a positive number, got {scale!r}")
    value = float(scale)
    if not math.isfinite(value) or value <= 0.0:
        raise SuperresError(f"imresize: scale must be a positive finite number, got {scale!r}")
    return value


def _check_size(size: Any) -> tuple[int, int]:
    if isinstance(size, np.ndarray) and size.ndim == 1:
        size = size.tolist()
    if isinstance(size, (str, bytes)) or not isinstance(size, Sequence) or len(size) != 2:
        raise SuperresError(f"imresize: size must be (height, width), got {size!r}")
    out = []
    for v in size:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral) or int(v) < 1:
            raise SuperresError(f"imresize: size must be two positive integers, got {size!r}")
        out.append(int(v))
    return out[0], out[1]


def _plan(
    in_hw: tuple[int, int], scale: float | None, size: Sequence[int] | None
) -> tuple[tuple[int, int], tuple[float, float], tuple[int, int]]:
    """Output size, per-axis kernel scale and axis order (0 = height, 1 = width) for a resize."""
    if (scale is None) == (size is None):
        raise SuperresError("imresize: give exactly one of scale= or size=")
    if in_hw[0] < 1 or in_hw[1] < 1:
        raise SuperresError(f"imresize: image of size {in_hw[0]}x{in_hw[1]} is empty")
    if scale is not None:
        s = _check_scale(scale)
        out_hw = output_size(in_hw, s)
        scales = (s, s)
    else:
        out_hw = _check_size(size)
        scales = (out_hw[0] / in_hw[0], out_hw[1] / in_hw[1])
    # MATLAB resizes the axis with the smaller scale first; sorted() is stable like MATLAB's sort,
    # so rows go first when the scales are equal. The order matters for integer images.
    order = tuple(sorted((0, 1), key=lambda axis: scales[axis]))
    return out_hw, scales, order  # type: ignore[return-value]


def _torch_module() -> Any | None:
    """torch if it is already imported (a tensor can only exist then), without importing it."""
    return sys.modules.get("torch")


def _is_tensor(image: Any) -> bool:
    torch = _torch_module()
    return torch is not None and isinstance(image, torch.Tensor)


# --------------------------------------------------------------------------------------------------
# numpy path (float64 reference)
# --------------------------------------------------------------------------------------------------


_CHUNK_ELEMENTS = 1 << 17  # float64 work buffers of ~1 MiB stay in cache; measured best on 512^2 x4


def _resize_rows_numpy(src: np.ndarray, dest: np.ndarray, scale: float, max_value: float | None) -> None:
    """Resize ``src`` along axis 0 into ``dest`` (shape ``(out, *src.shape[1:])``, any layout/dtype).

    Each output pixel is accumulated in float64 tap by tap in kernel order, as MATLAB's
    ``imresizemex`` does: a fixed order of plain multiplies and adds makes the rounded bytes
    independent of BLAS and threads, and lets the torch GPU path reproduce them exactly. For
    integer images each output is rounded half away from zero and saturated to
    ``[0, max_value]`` (MATLAB's conversion to an integer class).

    Resizing along axis 0 makes every tap a gather of whole rows; output rows are processed in
    chunks so that the gathers and the accumulator stay in cache (5x faster than whole-array
    passes when upscaling). ``dest`` may be a transposed view: the caller uses that to hand the next
    pass its axis first without a separate transpose.
    """
    out_size = dest.shape[0]
    weights, indices = contributions(src.shape[0], out_size, scale)
    row = int(np.prod(src.shape[1:], dtype=np.int64))
    step = max(1, _CHUNK_ELEMENTS // max(row, 1))
    bshape = (-1,) + (1,) * (src.ndim - 1)
    acc_buf = np.empty((min(step, out_size),) + src.shape[1:], dtype=np.float64)
    term_buf = np.empty_like(acc_buf)
    for r0 in range(0, out_size, step):
        r1 = min(out_size, r0 + step)
        acc, term = acc_buf[: r1 - r0], term_buf[: r1 - r0]
        np.multiply(src[indices[r0:r1, 0]], weights[r0:r1, 0].reshape(bshape), out=acc)
        for k in range(1, weights.shape[1]):
            np.multiply(src[indices[r0:r1, k]], weights[r0:r1, k].reshape(bshape), out=term)
            acc += term
        if max_value is not None:
            acc += 0.5
            np.floor(acc, out=acc)
            np.clip(acc, 0.0, max_value, out=acc)
        dest[r0:r1] = acc  # exact: integer outputs are already rounded and in range


def _imresize_numpy(image: np.ndarray, scale: float | None, size: Sequence[int] | None) -> np.ndarray:
    if image.ndim not in (2, 3):
        raise SuperresError(f"imresize: numpy image must be HxW or HxWxC, got shape {image.shape}")
    dtype = image.dtype
    max_value = _INT_MAX.get(dtype)
    if max_value is None and not np.issubdtype(dtype, np.floating):
        raise SuperresError(f"imresize: unsupported numpy dtype {dtype} (use uint8, uint16 or float)")
    out_hw, scales, order = _plan((image.shape[0], image.shape[1]), scale, size)
    return _resize_numpy_planned(image, out_hw, scales, order, max_value)


def _resize_numpy_planned(
    image: np.ndarray,
    out_hw: tuple[int, int],
    scales: tuple[float, float],
    order: tuple[int, int],
    max_value: float | None,
) -> np.ndarray:
    """The two passes of :func:`imresize` on a validated ``HxW[xC]`` array (see :func:`_plan`)."""
    dtype = image.dtype
    rest = image.shape[2:]
    # Integer intermediates are exact after the per-pass rounding, so they keep the input dtype.
    mid_dtype = dtype if max_value is not None else np.dtype(np.float64)
    first, second = order
    # Row gathers from a strided view (a transposed or channels-first source) are about 2x slower
    # than copying it to C order first.
    src = np.ascontiguousarray(image if first == 0 else image.swapaxes(0, 1))
    # First pass: written transposed, so the second pass finds its own axis first.
    mid_shape = [image.shape[0], image.shape[1]]
    mid_shape[first] = out_hw[first]
    mid = np.empty((mid_shape[second], mid_shape[first]) + rest, dtype=mid_dtype)
    _resize_rows_numpy(src, mid.swapaxes(0, 1), scales[first], max_value)
    # Second pass: straight into the H x W output, transposed when the second axis is the width.
    out = np.empty(out_hw + rest, dtype=dtype)
    _resize_rows_numpy(mid, out if second == 0 else out.swapaxes(0, 1), scales[second], max_value)
    return out


# --------------------------------------------------------------------------------------------------
# torch path (batched, any device, differentiable for float)
# --------------------------------------------------------------------------------------------------


@lru_cache(maxsize=128)
def _torch_matrix(
    in_size: int, out_size: int, scale: float, device: "torch.device", dtype: "torch.dtype"
) -> "torch.Tensor":
    """:func:`weight_matrix` as a tensor on ``device`` in ``dtype`` (cached: no host copy per call)."""
    import torch

    return torch.from_numpy(weight_matrix(in_size, out_size, scale).copy()).to(device=device, dtype=dtype)


@lru_cache(maxsize=128)
def _torch_taps(
    in_size: int, out_size: int, scale: float, device: "torch.device"
) -> tuple["torch.Tensor", "torch.Tensor"]:
    """:func:`contributions` as float64 weights and int64 indices on ``device`` (cached)."""
    import torch

    weights, indices = contributions(in_size, out_size, scale)
    return (
        torch.from_numpy(weights.copy()).to(device=device),
        torch.from_numpy(indices.copy()).to(device=device),
    )


def _resize_uint8_torch(
    x: "torch.Tensor", out_hw: tuple[int, int], scales: tuple[float, float], order: tuple[int, int]
) -> "torch.Tensor":
    """uint8 tensors on a GPU: the numpy algorithm in float64, op for op, so the bytes match numpy.

    Products and sums are separate elementwise kernels (no fused multiply-add), in the same tap
    order as numpy, so every intermediate float64 value is identical on any IEEE device. All taps
    are gathered, converted and multiplied at once (one kernel each), and then summed tap by tap:
    ``taps + 2`` kernels per axis instead of ``4 * taps``, which matters where the host launching
    them is the bottleneck (a GPU training step).
    """
    import torch

    device = x.device
    a = x
    for axis in order:
        dim = a.ndim - 2 + axis
        weights, indices = _torch_taps(a.shape[dim], out_hw[axis], scales[axis], device)
        out, taps = weights.shape
        split = list(a.shape[:dim]) + [taps, out] + list(a.shape[dim + 1:])
        gathered = a.index_select(dim, indices.t().reshape(-1)).view(split).to(torch.float64)  # tap-major
        wshape = [1] * len(split)
        wshape[dim], wshape[dim + 1] = taps, out
        products = gathered * weights.t().reshape(wshape)
        acc = products.select(dim, 0)
        for k in range(1, taps):
            acc = acc + products.select(dim, k)
        a = torch.floor(acc + 0.5).clamp_(0.0, 255.0)
    return a.to(torch.uint8)


def _resize_uint8_via_numpy(
    x: "torch.Tensor", out_hw: tuple[int, int], scales: tuple[float, float], order: tuple[int, int]
) -> "torch.Tensor":
    """uint8 ``...xHxW`` tensor through the numpy reference, viewed as one ``HxWxB`` image."""
    import torch

    lead = tuple(x.shape[:-2])
    planes = x.detach().cpu().reshape((-1,) + tuple(x.shape[-2:])).numpy()  # B x H x W
    out = _resize_numpy_planned(planes.transpose(1, 2, 0), out_hw, scales, order, 255.0)  # h x w x B
    return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1))).reshape(lead + out_hw).to(x.device)


def _imresize_torch(x: "torch.Tensor", scale: float | None, size: Sequence[int] | None) -> "torch.Tensor":
    import torch

    if x.ndim < 2:
        raise SuperresError(f"imresize: tensor must be ...xHxW (NxCxHxW, CxHxW or HxW), got shape {tuple(x.shape)}")
    in_hw = (int(x.shape[-2]), int(x.shape[-1]))
    out_hw, scales, order = _plan(in_hw, scale, size)
    if x.dtype == torch.uint8:
        if x.device.type in ("cpu", "mps"):
            # The numpy path is the same arithmetic and 2x faster on a CPU (and stays fast when the
            # cores are oversubscribed, where torch's intra-op threads stall); MPS has no float64.
            return _resize_uint8_via_numpy(x, out_hw, scales, order)
        return _resize_uint8_torch(x, out_hw, scales, order)
    if not x.is_floating_point():
        raise SuperresError(f"imresize: unsupported tensor dtype {x.dtype} (use uint8 or a float type)")
    compute = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    y = x.to(compute)
    for axis in order:
        if axis == 0:
            y = torch.matmul(_torch_matrix(in_hw[0], out_hw[0], scales[0], x.device, compute), y)
        else:
            y = torch.matmul(y, _torch_matrix(in_hw[1], out_hw[1], scales[1], x.device, compute).T)
    return y.to(x.dtype)


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def imresize(image: _ARRAY, scale: float | None = None, size: Sequence[int] | None = None) -> _ARRAY:
    """Resize like MATLAB's ``imresize(image, scale, 'bicubic')`` (antialiasing on).

    Give exactly one of ``scale`` (output size ``ceil(scale * H) x ceil(scale * W)``, kernel scale
    ``scale`` on both axes) or ``size=(height, width)`` (kernel scale ``size / input size`` per axis).

    - numpy ``HxW`` or ``HxWxC`` (any C): uint8 and uint16 stay integer and are rounded and
      saturated after each of the two passes, as MATLAB does; float input is computed in float64 and
      returned in its own dtype, not clipped (bicubic overshoots, and callers may want that).
    - torch ``...xHxW`` (``NxCxHxW``, ``CxHxW`` or ``HxW``; note channels *first* here): float
      tensors stay on their device and dtype (float16/bfloat16 are computed in float32) and the
      result is differentiable; uint8 tensors give exactly the bytes of the numpy path.

    Raises :class:`SuperresError` for bad arguments, unsupported dtypes or empty images.
    """
    if _is_tensor(image):
        return _imresize_torch(image, scale, size)  # type: ignore[arg-type,return-value]
    if isinstance(image, np.ndarray):
        return _imresize_numpy(image, scale, size)  # type: ignore[return-value]
    raise SuperresError(f"imresize: expected a numpy array or a torch tensor, got {type(image).__name__}")


def modcrop(image: _ARRAY, scale: int) -> _ARRAY:
    """Top-left crop so that height and width are multiples of ``scale``: ``HR[:s*(H//s), :s*(W//s)]``.

    This is how the benchmark LR files were made (SelfExSR/EDSR convention); a centred crop would
    shift every pixel of the comparison. numpy arrays are ``HxW`` or ``HxWxC``, tensors ``...xHxW``.
    Returns a view (no copy).
    """
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, numbers.Integral) or int(scale) < 1:
        raise SuperresError(f"modcrop: scale must be a positive integer, got {scale!r}")
    s = int(scale)
    if _is_tensor(image):
        if image.ndim < 2:  # type: ignore[attr-defined]
            shape = tuple(image.shape)  # type: ignore[attr-defined]
            raise SuperresError(f"modcrop: tensor must be ...xHxW, got shape {shape}")
        h, w = int(image.shape[-2]), int(image.shape[-1])  # type: ignore[attr-defined]
    elif isinstance(image, np.ndarray):
        if image.ndim not in (2, 3):
            raise SuperresError(f"modcrop: numpy image must be HxW or HxWxC, got shape {image.shape}")
        h, w = image.shape[0], image.shape[1]
    else:
        raise SuperresError(f"modcrop: expected a numpy array or a torch tensor, got {type(image).__name__}")
    if h < s or w < s:
        raise SuperresError(f"modcrop: image of size {h}x{w} is smaller than the scale {s}")
    hc, wc = h - h % s, w - w % s
    if _is_tensor(image):
        return image[..., :hc, :wc]  # type: ignore[index,return-value]
    return image[:hc, :wc]  # type: ignore[index,return-value]
