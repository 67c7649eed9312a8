"""Tiled, blended, memory-bounded upscaling that keeps bit depth, channels and alpha.

Three layers, each usable on its own:

* :func:`upscale_tensor` runs a model over an ``N x C x H x W`` tensor tile by tile;
* :func:`upscale` upscales one image (a :class:`superres.io.Image` or a float array) and handles
  the mismatch between the image's channels and the model's;
* :func:`upscale_files` is ``superres upscale``: files and folders in, files of the same format,
  bit depth, channel layout and alpha out.

Contract:

* Tiling is exact for a fully convolutional model whose receptive-field radius ``R`` (input pixels)
  is at most ``ceil(tile_overlap / 2)``: the tiled result equals the untiled one within 1e-4. For a
  larger ``R`` tiles are cross-faded (no seams) but not exact.
* Device memory is bounded by one model call: ``(tile + 2 * tile_overlap)^2`` input pixels times the
  images in the batch, times the tiles per call (``batch``: 1 on a CPU; on CUDA as many as fit,
  :func:`superres.speed.tile_batch`); the output canvas lives with the input tensor (on the CPU for
  :func:`upscale`). Host memory: :func:`upscale_tensor_rows` yields the result one row of tiles at a
  time (the same values), and :func:`upscale_files` writes results too large for ``--max-memory`` to
  disk in strips, so host memory is bounded by the tile and the output width (docs/RELIABILITY.md).
* Both backends (``torch``: an ``nn.Module``; ``onnx``: an exported graph through onnxruntime on the
  CPU) go through the same :func:`upscale_tensor`, so their results agree within 1e-4.
* Channels: equal counts run directly; a 1-channel model on RGB runs on BT.601 Y with Cb/Cr upscaled
  by MATLAB bicubic; a 3-channel model on gray runs on the replicated gray and is averaged back; any
  other combination is an error naming both counts. Alpha is upscaled with bicubic on its own.

The design (the partition-of-unity blending weights, why cross-fade over hard crops, the channel
rules in detail) is written up in docs/INFERENCE.md.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from superres import animation, outputs
from superres.color import rgb_to_ycbcr, ycbcr_matrix
from superres.devices import resolve_device
from superres.errors import SuperresError
from superres.export import OnnxModel, load_onnx
from superres.io import (
    Image,
    PNG_LEVEL,
    STREAM_SUFFIXES,
    check_png_level,
    check_writable,
    list_images,
    read_raw,
    to_float,
    to_integer,
    write_image,
    write_image_rows,
    write_samples,
)
from superres.metadata import read_metadata
from superres import modelfile
from superres.modelfile import load_model
from superres.models.contract import describe
from superres.precision import autocast_for, resolve_precision
from superres.resize import imresize
from superres.speed import auto_tile, bytes_per_input_pixel, choose_default_model, tile_batch
from superres.threads import writer_threads

if TYPE_CHECKING:
    import torch
    from torch import nn

    #: What the functions below run: a torch module, or an exported file run by onnxruntime.
    Model = nn.Module | OnnxModel

__all__ = [
    "upscale_tensor",
    "upscale_tensor_rows",
    "upscale",
    "upscale_files",
    "tile_grid",
    "axis_weights",
    "BACKENDS",
    "load_for_backend",
]

#: Inference backends: PyTorch, or onnxruntime on an exported graph (``superres export``).
BACKENDS = ("torch", "onnx")

#: Images with more tiles than this get a second (per-tile) progress bar in :func:`upscale_files`.
_TILE_BAR_MIN_TILES = 4
#: Runs of at most this many images show it for every image of more than one tile.
_TILE_BAR_MAX_IMAGES = 8


def _model_device(model: "Model", fallback: "torch.device") -> "torch.device":
    from torch import nn

    if not isinstance(model, nn.Module):  # an OnnxModel: onnxruntime's CPU provider
        import torch

        return torch.device("cpu")
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return fallback


def _check_half(half: bool, device: "torch.device") -> None:
    """Half precision is offered on CUDA only.

    On CPU, float16 convolutions are either unsupported or far slower than float32 and bfloat16
    changes the results by more than the differences SR models are compared on, so ``--half`` on
    CPU is refused with an error rather than silently ignored (a warning would be easy to miss when
    the run is slow or the output differs).
    """
    if half and device.type != "cuda":
        raise SuperresError(f"--half: half precision needs a CUDA device, not {device}; drop --half or use --device cuda")


# --------------------------------------------------------------------------- tiling geometry
def tile_grid(length: int, tile: int) -> list[int]:
    """Core boundaries ``[0, b1, ..., length]`` splitting ``length`` pixels into ``ceil(length / tile)``
    nearly equal cores of at most ``tile`` pixels (``tile <= 0``: one core).

    Splitting evenly instead of cutting ``tile``-sized cores and a remainder keeps every core at least
    about ``tile / 2`` wide, so the cross-fade ramps of a core's two sides never meet in a tiny tile.
    """
    if length <= 0:
        raise ValueError(f"length must be positive, got {length}")
    if tile <= 0 or tile >= length:
        return [0, length]
    n = math.ceil(length / tile)
    return [(k * length) // n for k in range(n + 1)]


def _ramp(t: np.ndarray, half_width: float) -> np.ndarray:
    """Raised-cosine step: 0 for ``t <= -w``, 1 for ``t >= w``, ``r(t) + r(-t) = 1`` (``w = 0``: a hard step)."""
    if half_width <= 0:
        return (t > 0).astype(np.float64)
    u = np.clip((t + half_width) / (2.0 * half_width), 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * u)


def axis_weights(bounds: Sequence[int], scale: int, half_width: int, index: int, start: int, stop: int) -> np.ndarray:
    """The 1-D blending weight of core ``index`` over output pixels ``start*scale .. stop*scale``.

    ``bounds`` are the core boundaries in input pixels, ``[start, stop)`` the tile's input span
    (core plus context) and ``half_width`` the ramp half-width in input pixels. Output pixel ``q``
    has its centre at ``q + 0.5``; the weight is ``r(c - p_i) - r(c - p_{i+1})`` with ``p`` in output
    pixels and the outermost boundaries at infinity (docs/INFERENCE.md).
    """
    centres = np.arange(start * scale, stop * scale, dtype=np.float64) + 0.5
    w = half_width * scale
    rise = np.ones_like(centres) if index == 0 else _ramp(centres - bounds[index] * scale, w)
    fall = np.zeros_like(centres) if index + 1 == len(bounds) - 1 else _ramp(centres - bounds[index + 1] * scale, w)
    return rise - fall


def _model_scale(model: "nn.Module", in_shape: Sequence[int], out_shape: Sequence[int]) -> int:
    """The model's integer scale, checked against the shapes of one forward pass."""
    h, w = in_shape[-2:]
    oh, ow = out_shape[-2:]
    if oh % h or ow % w or oh // h != ow // w:
        raise SuperresError(f"the model maps {h}x{w} to {oh}x{ow}: not an integer upscaling")
    scale = oh // h

    declared = describe(model).scale
    if declared is not None and int(declared) != scale:
        raise SuperresError(f"the model declares scale {declared} but upscales by {scale}")
    return scale


# --------------------------------------------------------------------------- tensors
def _tile_call(
    model: "Model", fallback: "torch.device", half: bool, precision: str = "fp32"
) -> "Callable[[torch.Tensor], torch.Tensor]":
    """The one per-tile model call both backends share: input part -> float32 output.

    A torch module runs on the device of its parameters (under float16 autocast for ``half``, else
    under the autocast of ``precision``, see :mod:`superres.precision`); an
    :class:`~superres.export.OnnxModel` runs the part through onnxruntime on the CPU. Everything
    around it (the tile grid, the context, the blending) is :func:`upscale_tensor`'s, so the two
    backends cannot tile differently.
    """
    import torch
    from torch import nn

    device = _model_device(model, fallback)
    _check_half(half, device)
    if not isinstance(model, nn.Module):
        if precision != "fp32":
            raise SuperresError(f"--precision {precision}: the onnx backend runs fp32")
        return lambda part: model(part).float()

    autocast = autocast_for(device, "fp16" if half else precision)
    layout = tile_layout(device, "fp16" if half else precision)

    def run(part: "torch.Tensor") -> "torch.Tensor":
        with autocast:
            part = part.to(device=device, dtype=torch.float32, non_blocking=True)
            return model(part.contiguous(memory_format=layout)).float()

    return run


def tile_layout(device: "torch.device", precision: str) -> "torch.memory_format":
    """The memory format a tile goes into the model in (only the input is converted, so the caller's
    model is not modified).

    On the CPU channels_last (NHWC): oneDNN then runs the convolutions in its blocked NHWC kernels,
    20-25% faster for the residual models (enhanced, baseline) and neutral for the tiny Y models, with
    results equal to 1e-6 (docs/BENCHMARKS.md, "CPU inference speed"). On CUDA channels_last under
    bf16/fp16 autocast, the layout of cuDNN's tensor-core convolutions (PyTorch's channels_last
    guidance; not measured here, no GPU was lent), contiguous NCHW in fp32.
    """
    import torch

    if device.type == "cpu" or (device.type == "cuda" and precision in ("bf16", "fp16")):
        return torch.channels_last
    return torch.contiguous_format


def upscale_tensor(
    model: "Model",
    x: "torch.Tensor",
    *,
    tile: int = 0,
    tile_overlap: int = 16,
    half: bool = False,
    progress: bool = False,
    precision: str = "fp32",
    batch: int = 1,
) -> "torch.Tensor":
    """Run ``model`` on ``x`` (``N x C x H x W`` float) in overlapping tiles and blend the outputs.

    ``tile`` is the core size in input pixels (``0`` or ``>= max(H, W)``: the whole image in one
    pass) and ``tile_overlap`` the context added on each inner side of a tile; neighbouring tiles
    are cross-faded over ``tile_overlap`` pixels around their boundary (docs/INFERENCE.md). The model
    runs on the device of its parameters under ``torch.inference_mode``; each tile is copied there,
    run, and its weighted output added to a float32 canvas on ``x``'s device, so only one tile is on
    the model's device at a time. ``half=True`` runs the model under float16 autocast (CUDA only; the
    weights stay float32 and the model is not modified), ``precision`` (``fp32``, ``bf16``, ``fp16``;
    resolved, see :func:`superres.precision.resolve_precision`) under that autocast. Returns the float32 result on ``x``'s
    device, not clamped (callers that need ``[0, 1]`` clamp).

    ``batch`` (for accelerators; :func:`superres.speed.tile_batch`) runs up to ``batch`` tiles whose
    input spans have the same height and width (all interior tiles of an evenly split grid, most edge
    tiles) as one model call, concatenated along the batch axis: the same tiles, context and weights,
    so the same result within float rounding, with ``batch`` tiles on the model's device at a time.
    """
    import torch

    if x.ndim != 4:
        raise ValueError(f"upscale_tensor expects an N x C x H x W tensor, got shape {tuple(x.shape)}")
    if tile < 0 or tile_overlap < 0:
        raise SuperresError(f"--tile {tile} / --tile-overlap {tile_overlap}: must be >= 0")
    if batch < 1:
        raise SuperresError(f"tile batch {batch}: must be >= 1")
    run = _tile_call(model, x.device, half, precision)
    n, _, height, width = x.shape
    ys, xs = tile_grid(height, tile), tile_grid(width, tile)
    if len(ys) == 2 and len(xs) == 2:  # one tile: no canvas, no weights
        with torch.inference_mode():
            out = run(x)
        _model_scale(model, x.shape, out.shape)
        return out.to(x.device)

    calls = _tile_calls(ys, xs, tile_overlap, height, width, batch)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(len(call) for call in calls), desc="tiles", unit="tile", leave=False, file=sys.stderr)
    canvas: torch.Tensor | None = None
    scale = 0
    with torch.inference_mode():
        for call in calls:
            spans = [_tile_span(ys, xs, i, j, tile_overlap, height, width) for i, j in call]
            parts = [x[:, :, y0:y1, x0:x1] for y0, y1, x0, x1 in spans]
            out = run(parts[0] if len(parts) == 1 else torch.cat(parts))
            for k, ((i, j), span) in enumerate(zip(call, spans)):
                (r0, r1, c0, c1), contribution, scale = _weigh_tile(
                    model, out[k * n : (k + 1) * n], span, ys, xs, i, j, tile_overlap, scale, x.device
                )
                if canvas is None:
                    # channels_last (N x H x W x C in memory): the H x W x C result is then a view, not a copy.
                    canvas = torch.empty((n, contribution.shape[1], height * scale, width * scale), dtype=torch.float32,
                                         device=x.device, memory_format=torch.channels_last).zero_()
                canvas[:, :, r0:r1, c0:c1] += contribution
                del contribution
            del out
            if bar is not None:
                bar.update(len(call))
    if bar is not None:
        bar.close()
    assert canvas is not None
    return canvas


def _tile_calls(
    ys: Sequence[int], xs: Sequence[int], tile_overlap: int, height: int, width: int, batch: int
) -> list[list[tuple[int, int]]]:
    """The tiles ``(i, j)`` of the grid ``ys`` x ``xs`` in model calls: one tile per call in row order
    for ``batch=1``, else up to ``batch`` tiles of equal input span per call (:func:`upscale_tensor`)."""
    tiles = [(i, j) for i in range(len(ys) - 1) for j in range(len(xs) - 1)]
    if batch == 1:
        return [[tile] for tile in tiles]
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for i, j in tiles:
        y0, y1, x0, x1 = _tile_span(ys, xs, i, j, tile_overlap, height, width)
        groups.setdefault((y1 - y0, x1 - x0), []).append((i, j))
    return [members[k : k + batch] for members in groups.values() for k in range(0, len(members), batch)]


def _tile_span(
    ys: Sequence[int], xs: Sequence[int], i: int, j: int, tile_overlap: int, height: int, width: int
) -> tuple[int, int, int, int]:
    """Input rows and columns ``(y0, y1, x0, x1)`` of tile ``(i, j)``: its core plus ``tile_overlap``
    of context on each inner side."""
    return (max(0, ys[i] - tile_overlap), min(height, ys[i + 1] + tile_overlap),
            max(0, xs[j] - tile_overlap), min(width, xs[j + 1] + tile_overlap))


def _weighted_tile(
    run: "Callable[[torch.Tensor], torch.Tensor]", model: "Model", x: "torch.Tensor", ys: Sequence[int],
    xs: Sequence[int], i: int, j: int, tile_overlap: int, scale: int, convert: "Callable | None" = None,
) -> "tuple[tuple[int, int, int, int], torch.Tensor, int]":
    """Run tile ``(i, j)`` and weight it: its output rows/columns ``(r0, r1, c0, c1)`` with non-zero
    weight (the core plus the ramps), the weighted output there on ``x``'s device, and the scale
    (``scale=0``: measured on this tile). ``convert`` maps the input part to float first (streaming
    keeps the input as stored: uint8/uint16)."""
    span = _tile_span(ys, xs, i, j, tile_overlap, *x.shape[-2:])
    y0, y1, x0, x1 = span
    part = x[:, :, y0:y1, x0:x1]
    out = run(part if convert is None else convert(part))
    return _weigh_tile(model, out, span, ys, xs, i, j, tile_overlap, scale, x.device)


def _weigh_tile(
    model: "Model", out: "torch.Tensor", span: tuple[int, int, int, int], ys: Sequence[int], xs: Sequence[int],
    i: int, j: int, tile_overlap: int, scale: int, device: "torch.device",
) -> "tuple[tuple[int, int, int, int], torch.Tensor, int]":
    """Tile ``(i, j)``'s model output ``out`` (input span ``span``) weighted for blending, as
    :func:`_weighted_tile` returns it, on ``device``."""
    import torch

    y0, y1, x0, x1 = span
    half_width = tile_overlap // 2
    if not scale:
        scale = _model_scale(model, (y1 - y0, x1 - x0), out.shape)
    elif out.shape[-2:] != ((y1 - y0) * scale, (x1 - x0) * scale):
        raise SuperresError(f"the model's output size changed between tiles: {tuple(out.shape)}")
    wy = axis_weights(ys, scale, half_width, i, y0, y1)
    wx = axis_weights(xs, scale, half_width, j, x0, x1)
    # Only the rows/columns with non-zero weight are touched (the core plus the ramps).
    ry = np.nonzero(wy)[0]
    rx = np.nonzero(wx)[0]
    ya, yb, xa, xb = int(ry[0]), int(ry[-1]) + 1, int(rx[0]), int(rx[-1]) + 1
    weight = torch.from_numpy(np.outer(wy[ya:yb], wx[xa:xb]).astype(np.float32)).to(out.device)
    contribution = (out[:, :, ya:yb, xa:xb] * weight).to(device)
    return (y0 * scale + ya, y0 * scale + yb, x0 * scale + xa, x0 * scale + xb), contribution, scale


def upscale_tensor_rows(
    model: "Model",
    x: "torch.Tensor",
    *,
    tile: int,
    tile_overlap: int = 16,
    half: bool = False,
    convert: "Callable[[torch.Tensor], torch.Tensor] | None" = None,
    precision: str = "fp32",
) -> "Iterator[tuple[int, torch.Tensor]]":
    """:func:`upscale_tensor`, but yielding the result band by band: ``(first output row, rows)``.

    The canvas holds only the output rows of one row of tiles (plus the ramp below it), so host
    memory is bounded by ``tile`` and the output *width*, not the image size. Each band is final when
    it is yielded (no later tile has weight there) and is the same values :func:`upscale_tensor`
    computes (the same additions in the same order). A yielded band is an ``N x C x rows x W*s``
    view of the canvas (channels_last), valid until the next one is asked for. ``convert`` maps each
    input part to float (so ``x`` may stay uint8/uint16 as stored). ``tile`` must be > 0.
    """
    import torch

    if x.ndim != 4:
        raise ValueError(f"upscale_tensor_rows expects an N x C x H x W tensor, got shape {tuple(x.shape)}")
    if tile <= 0 or tile_overlap < 0:
        raise SuperresError(f"--tile {tile} / --tile-overlap {tile_overlap}: writing in strips needs --tile > 0")
    run = _tile_call(model, x.device, half, precision)
    n, _, height, width = x.shape
    ys, xs = tile_grid(height, tile), tile_grid(width, tile)
    half_width = tile_overlap // 2
    scale = 0
    canvas: torch.Tensor | None = None
    top = 0  # the output row of canvas row 0
    filled = 0  # canvas rows [0, filled) hold sums; rows below are stale and zeroed when reached
    with torch.inference_mode():
        for i in range(len(ys) - 1):
            for j in range(len(xs) - 1):
                (r0, r1, c0, c1), contribution, scale = _weighted_tile(
                    run, model, x, ys, xs, i, j, tile_overlap, scale, convert
                )
                if canvas is None:
                    # The most rows in use at once: from the first row still open (a ramp above a core
                    # boundary) to the last row a tile row touches.
                    rows = max(
                        min(height, ys[k + 1] + tile_overlap) - max(0, ys[k] - half_width) for k in range(len(ys) - 1)
                    ) * scale
                    canvas = torch.empty((n, contribution.shape[1], rows, width * scale), dtype=torch.float32,
                                         device=x.device, memory_format=torch.channels_last)
                if r1 - top > canvas.shape[2]:
                    raise AssertionError("tile row exceeds the strip canvas")  # geometry bug, not user error
                if r1 - top > filled:
                    canvas[:, :, filled : r1 - top].zero_()
                    filled = r1 - top
                canvas[:, :, r0 - top : r1 - top, c0:c1] += contribution
                del contribution
            # Rows above the next core boundary's ramp get no more weight: they are final.
            done = height * scale if i == len(ys) - 2 else max(top, (ys[i + 1] - half_width) * scale)
            yield top, canvas[:, :, : done - top]
            keep = filled - (done - top)
            if keep > 0:
                canvas[:, :, :keep] = canvas[:, :, done - top : filled].clone()
            top, filled = done, max(keep, 0)


# --------------------------------------------------------------------------- colour
def _upscale_chroma(chroma: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB-bicubic upscaling of the ``H x W x 2`` Cb/Cr planes, as float32 ``H*s x W*s x 2``.

    Runs the torch float32 path of :func:`superres.resize.imresize` (it differs from the float64
    numpy reference by ~3e-7, far below one 16-bit output level, 1.5e-5). On one CPU core the
    float64 numpy resize took ~16 ms for a 128x128 -> 512x512 x4 chroma pair, longer than
    ``espcn`` itself; this path takes ~1.7 ms (docs/BENCHMARKS.md, "CPU inference speed").
    """
    import torch

    planes = torch.from_numpy(np.ascontiguousarray(chroma.transpose(2, 0, 1), dtype=np.float32))
    return imresize(planes, scale=scale).permute(1, 2, 0).numpy()


def _luma_chroma_to_rgb(y: np.ndarray, chroma: np.ndarray) -> np.ndarray:
    """:func:`ycbcr_to_rgb` of ``Y`` (``H x W x 1``) and ``Cb/Cr`` (``H x W x 2``) in float32, without
    concatenating: ``rgb_c = sum_k B[c, k] * ycc_k + b_c`` with ``B = inv(M) * 255`` and
    ``b = -inv(M) @ offset`` folded once in float64. Error vs the float64 matrix product ~1e-6,
    at a fraction of its time and memory on megapixel outputs."""
    matrix, offset = ycbcr_matrix()
    inverse = np.linalg.inv(matrix)
    gains = (inverse * 255.0).astype(np.float32)
    bias = (-inverse @ offset).astype(np.float32)
    planes = (y[:, :, 0], chroma[:, :, 0], chroma[:, :, 1])
    out = np.empty(y.shape[:2] + (3,), dtype=np.float32)
    for c in range(3):
        acc = planes[0] * gains[c, 0]
        acc += planes[1] * gains[c, 1]
        acc += planes[2] * gains[c, 2]
        acc += bias[c]
        out[:, :, c] = acc
    return out


# --------------------------------------------------------------------------- images
def _as_model(model: "Model | str | os.PathLike[str]", device: "torch.device") -> "Model":
    if isinstance(model, (str, os.PathLike)):
        backend = "onnx" if str(model).lower().endswith(".onnx") else "torch"
        return load_for_backend(str(model), backend=backend, device=str(device))
    eval_ = getattr(model, "eval", None)
    if eval_ is not None:
        eval_()
    return model


def load_for_backend(model: str, *, backend: str = "torch", device: str = "cpu") -> "Model":
    """Load ``model`` (a shipped name, a ``.safetensors`` model file, or for ``onnx`` also an ``.onnx``
    file) for the inference ``backend``.

    ``torch``: :func:`superres.modelfile.load_model` on ``device``. ``onnx``: an
    :class:`~superres.export.OnnxModel`; a name or ``.safetensors`` file is exported on the fly to a
    temporary file (verified against PyTorch, see :mod:`superres.export`), so both backends accept
    the same ``--model`` values. onnxruntime runs on the CPU here, so ``onnx`` needs ``device="cpu"``.
    """
    if backend not in BACKENDS:
        raise SuperresError(f"--backend {backend}: unknown backend; use one of {', '.join(BACKENDS)}")
    if backend == "onnx":
        if resolve_device(device).type != "cpu":
            raise SuperresError(f"--device {device}: the onnx backend runs on the CPU (onnxruntime); use --device cpu")

        return load_onnx(model)
    if str(model).lower().endswith(".onnx"):
        raise SuperresError(f"--model {model}: an ONNX file runs with --backend onnx")

    return load_model(model, device=device)


def _model_channels(model: "Model") -> int:
    channels = describe(model).in_channels
    if channels is None:
        raise SuperresError(f"the model ({type(model).__name__}) has no in_channels attribute; load it with superres.load_model")
    return int(channels)


def _model_scale_attr(model: "Model") -> int:
    scale = describe(model).scale
    if scale is None:
        raise SuperresError(f"the model ({type(model).__name__}) has no scale attribute; load it with superres.load_model")
    return int(scale)


def _run_hwc(
    model: "Model", data: np.ndarray, tile: int, tile_overlap: int, half: bool, progress: bool, precision: str = "fp32",
    batch: int = 1,
) -> np.ndarray:
    """float ``H x W x C`` -> model -> float32 ``H*s x W*s x C'`` (not clamped), through CPU tensors.

    The result is C-contiguous: the clamp and the integer conversion that follow then stream through
    memory instead of striding across the model's channel planes.
    """
    import torch

    x = torch.from_numpy(np.ascontiguousarray(data.transpose(2, 0, 1), dtype=np.float32))[None]
    y = upscale_tensor(model, x, tile=tile, tile_overlap=tile_overlap, half=half, progress=progress, precision=precision,
                       batch=batch)
    return y[0].to("cpu", torch.float32).permute(1, 2, 0).contiguous().numpy()


def _upscale_data(
    model: "Model", data: np.ndarray, *, tile: int, tile_overlap: int, half: bool, progress: bool, what: str,
    precision: str = "fp32", batch: int = 1,
) -> np.ndarray:
    """Upscale float ``H x W x C`` data in [0, 1], matching the image's channels to the model's."""
    channels = data.shape[2]
    model_channels = _model_channels(model)
    scale = _model_scale_attr(model)
    if channels == model_channels:
        out = _run_hwc(model, data, tile, tile_overlap, half, progress, precision, batch)
    elif model_channels == 1 and channels == 3:
        ycc = rgb_to_ycbcr(data)
        y = _run_hwc(model, ycc[:, :, :1], tile, tile_overlap, half, progress, precision, batch)
        out = _luma_chroma_to_rgb(y, _upscale_chroma(ycc[:, :, 1:], scale))
    elif model_channels == 3 and channels == 1:
        rgb = np.repeat(data, 3, axis=2)
        out = _run_hwc(model, rgb, tile, tile_overlap, half, progress, precision, batch).mean(axis=2, keepdims=True)
    else:
        raise SuperresError(
            f"{what}: the image has {channels} channel(s) but the model takes {model_channels}; "
            "use a model trained for this channel count"
        )
    out = np.asarray(out, dtype=np.float32)
    expected = (data.shape[0] * scale, data.shape[1] * scale)
    if out.shape[:2] != expected:
        raise SuperresError(f"{what}: the model returned {out.shape[:2]}, expected {expected} at scale {scale}")
    return np.clip(out, 0.0, 1.0, out=out)


def _upscale_alpha(alpha: np.ndarray, scale: int) -> np.ndarray:
    """An ``H x W x 1`` float alpha plane upscaled by ``scale`` with MATLAB bicubic, clipped to [0, 1]."""
    alpha = np.asarray(alpha, dtype=np.float32)
    out = np.asarray(imresize(alpha, scale=scale), dtype=np.float32).reshape(alpha.shape[0] * scale, alpha.shape[1] * scale, 1)
    return np.clip(out, 0.0, 1.0, out=out)


def _runs_in_uint8(model: "Model", raw: Any, tile: int, out_hw: tuple[int, int]) -> bool:
    """Whether ``superres upscale`` runs ``raw`` (a :class:`superres.io.RawImage`) through the 8-bit
    graph of an onnx model (:meth:`superres.export.OnnxModel.run_uint8`): 8-bit samples with the
    model's 3 channels, one pass (``tile`` covers the image), written at the model's own size. The
    samples written are those of the float path, bit for bit, with the conversions in onnxruntime."""
    h, w, c = raw.pixels.shape
    return (isinstance(model, OnnxModel) and raw.pixels.dtype == np.uint8 and c == model.in_channels == 3
            and len(tile_grid(h, tile)) == 2 and len(tile_grid(w, tile)) == 2
            and tuple(out_hw) == (h * model.scale, w * model.scale))


def upscale(
    model: "Model | str | os.PathLike[str]",
    image: Any,
    *,
    tile: int = 256,
    tile_overlap: int = 16,
    device: "str | torch.device" = "cpu",
    half: bool = False,
    progress: bool = False,
    precision: str = "fp32",
    batch: int = 1,
) -> Any:
    """Upscale one image with ``model`` (a module, an :class:`~superres.export.OnnxModel`, or a shipped
    model name / model file path; an ``.onnx`` path runs through onnxruntime).

    ``image`` is a :class:`superres.io.Image` (the result is an ``Image`` with the same bit depth and
    channel layout, alpha upscaled separately with MATLAB bicubic and clipped to [0, 1], ``path``
    None) or a float numpy array ``H x W`` / ``H x W x C`` in [0, 1] (the result is a float32 array of
    the same layout). Values are clamped to [0, 1]. A module passed in is moved to ``device``; see
    the module docstring and docs/INFERENCE.md for tiling and the channel rules. ``precision``
    (``fp32``, ``bf16``, ``fp16`` or ``auto``, :mod:`superres.precision`) is the autocast the model runs in;
    ``batch`` the tiles per model call (:func:`upscale_tensor`).
    """
    import torch

    dev = resolve_device(device)
    _check_half(half, dev)
    net = _as_model(model, dev)
    if isinstance(model, torch.nn.Module):
        net = net.to(dev)
    if precision == "auto":
        precision = resolve_precision("auto", dev, net, backend="torch" if isinstance(net, torch.nn.Module) else "onnx")[0]

    if isinstance(image, Image):
        what = str(image.path) if image.path is not None else "image"
        data = np.asarray(image.data, dtype=np.float32)
        if data.ndim == 2:
            data = data[:, :, None]
        out = _upscale_data(
            net, data, tile=tile, tile_overlap=tile_overlap, half=half, progress=progress, what=what, precision=precision,
            batch=batch,
        )
        alpha = None if image.alpha is None else _upscale_alpha(image.alpha, _model_scale_attr(net))
        return Image(data=out, alpha=alpha, bit_depth=image.bit_depth, path=None)

    if isinstance(image, np.ndarray):
        if not np.issubdtype(image.dtype, np.floating):
            raise SuperresError(
                f"upscale: expected a float array in [0, 1], got {image.dtype}; divide integer images by "
                "their maximum (255 or 65535) or pass a superres.io.Image"
            )
        if image.ndim not in (2, 3):
            raise SuperresError(f"upscale: expected an H x W or H x W x C array, got shape {image.shape}")
        data = image.astype(np.float32, copy=False)
        out = _upscale_data(
            net, data if data.ndim == 3 else data[:, :, None],
            tile=tile, tile_overlap=tile_overlap, half=half, progress=progress, what="array", precision=precision,
            batch=batch,
        )
        return out[:, :, 0] if image.ndim == 2 else out

    raise SuperresError(f"upscale: expected a superres.io.Image or a numpy array, got {type(image).__name__}")


# --------------------------------------------------------------------------- files
def default_model_name() -> str:
    """The best shipped x4 model (highest recorded PSNR-Y, see :func:`superres.modelfile.list_models`),
    or an error when none is shipped."""
    shipped = [e for e in modelfile.list_models() if e.get("shipped") and e.get("scale") == 4]
    if not shipped:
        raise SuperresError("no pretrained model is shipped yet; pass --model PATH")
    # Models without a recorded score rank last; ties keep list_models' (sorted by name) order.
    best = max(shipped, key=lambda e: e["psnr_y"] if isinstance(e.get("psnr_y"), (int, float)) else float("-inf"))
    return str(best["name"])


def _plan_outputs(inputs: Sequence[Path], out_dir: Path) -> list[tuple[Path, Path]]:
    """(source, destination) pairs: files keep their name, folders keep their inner layout.

    Not checked here: :func:`superres.outputs.rename_outputs` applies ``--suffix``/``--ext`` and
    then refuses two results for one path or a result over a source file, on the final names.
    """
    pairs: list[tuple[Path, Path]] = []
    for source in inputs:
        source = Path(source)
        if source.is_dir():
            for path in list_images([source]):
                pairs.append((path, out_dir / path.relative_to(source)))
        else:
            for path in list_images([source]):
                pairs.append((path, out_dir / path.name))
    return pairs


#: What ``superres upscale`` does with an output file that already exists: stop before any work
#: (the default), replace it (``--overwrite``), or leave it and skip its input (``--skip-existing``).
EXISTING_POLICIES = ("error", "overwrite", "skip")


def _check_out_dir(out_dir: Path, pairs: Sequence[tuple[Path, Path]], existing: str) -> list[tuple[Path, Path]]:
    """Check ``--out`` and every destination before the model is loaded; return the pairs to run.

    Every output folder must exist as a writable folder or be creatable (its nearest existing parent
    a writable folder), so a path that cannot be created fails now, not after the model has run;
    nothing is created here. A destination that is a folder is refused, and existing output files
    follow ``existing``.
    """
    if existing not in EXISTING_POLICIES:
        raise SuperresError(f"existing={existing!r}: use one of {', '.join(EXISTING_POLICIES)}")
    if out_dir.exists() and not out_dir.is_dir():
        raise SuperresError(f"--out {out_dir}: exists and is not a folder; choose a folder path")
    for folder in sorted({dst.parent for _, dst in pairs} | {out_dir}):
        base = folder
        while not base.exists() and not base.is_symlink() and base.parent != base:
            base = base.parent
        if not base.is_dir():
            what = "a broken or looping link" if base.is_symlink() and not base.exists() else "a file"
            raise SuperresError(f"--out {out_dir}: cannot create folder {folder} ({base} is {what}, not a folder)")
        if not os.access(base, os.W_OK | os.X_OK):
            raise SuperresError(f"--out {out_dir}: cannot create or write into {folder} (no write permission on {base})")
    todo = []
    present = []
    for src, dst in pairs:
        if dst.is_dir():
            raise SuperresError(f"{dst}: the output path is a folder; move it away or choose another --out")
        if dst.exists() or dst.is_symlink():
            present.append(dst)
            if existing == "skip":
                continue
        todo.append((src, dst))
    if present and existing == "error":
        more = f" and {len(present) - 1} more" if len(present) > 1 else ""
        raise SuperresError(
            f"{present[0]}{more}: output file(s) already exist; pass --overwrite to replace them "
            "or --skip-existing to upscale only the missing ones"
        )
    return todo


# --------------------------------------------------------------------------- host memory
def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (``MemAvailable`` of ``/proc/meminfo``, else the
    free physical pages), or None where neither is known."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def memory_budget(max_memory: int | None = None) -> int | None:
    """The host memory one image may take while it is upscaled: ``max_memory`` bytes when given
    (``--max-memory``), else half of :func:`available_memory` (None: unknown, no limit)."""
    if max_memory is not None:
        if max_memory <= 0:
            raise SuperresError(f"--max-memory {max_memory}: must be positive")
        return int(max_memory)
    available = available_memory()
    return None if available is None else available // 2


def _strip_rows(height: int, tile: int, tile_overlap: int, scale: int) -> int:
    """Output rows of the canvas of :func:`upscale_tensor_rows` (the same formula)."""
    ys = tile_grid(height, tile)
    return max(min(height, ys[k + 1] + tile_overlap) - max(0, ys[k] - tile_overlap // 2) for k in range(len(ys) - 1)) * scale


def _needs_strips(
    model: "Model", raw: Any, src: Path, dst: Path, *, tile: int, tile_overlap: int, budget: int | None
) -> bool:
    """Whether ``raw`` (a :class:`superres.io.RawImage`) must be upscaled in strips to stay within
    ``budget`` bytes; refuses (before the model runs) an image that fits neither way.

    The estimates count the arrays the two paths allocate, not the process around them (Python,
    torch, the model: a few hundred MB). In one piece: the float input and its tensor copy, the
    float32 output canvas, the integer output, and the alpha plane with its float64 resize. In
    strips: the input as stored, the canvas of one row of tiles, and three integer copies of it (the
    samples, a copy, and the PNG encoder's filtered rows).
    """
    if budget is None:
        return False
    h, w, c = raw.pixels.shape
    run_c = _model_channels(model)
    scale = _model_scale_attr(model)
    out_px = h * scale * w * scale
    out_item = {8: 1, 16: 2, 32: 4}[raw.bit_depth]
    whole = h * w * 4 * (c + max(c, run_c)) + out_px * (max(c, run_c) * 4 + c * out_item)
    if raw.alpha is not None:
        whole += out_px * (4 + 8 + out_item)
    if run_c == 1 and c == 3:
        whole += out_px * 4 * 3  # chroma planes and the RGB conversion
    if whole <= budget:
        return False
    size = f"{w * scale} x {h * scale}"
    needs = f"upscaling to {size} needs about {_mb(whole)} in one piece, more than the {_mb(budget)} allowed"
    hint = "raise --max-memory if the machine has the memory"
    why_not = None
    if raw.alpha is not None:
        why_not = "an image with alpha cannot be upscaled in strips"
    elif not (c == run_c or (run_c == 3 and c == 1)):
        why_not = f"a {run_c}-channel model on a {c}-channel image cannot run in strips"
    elif dst.suffix.lower() not in STREAM_SUFFIXES:
        why_not = f"a {dst.suffix or 'suffix-less'} output cannot be written in strips (write .png or .tif)"
    elif tile <= 0:
        why_not = "--tile 0 runs the image in one piece (use --tile 256 to write it in strips)"
    if why_not is not None:
        raise SuperresError(f"{src}: {needs}, and {why_not}; {hint}")
    rows = _strip_rows(h, tile, tile_overlap, scale)
    strips = h * w * c * raw.pixels.dtype.itemsize + rows * w * scale * (max(c, run_c) * 4 + 3 * c * out_item)
    if strips > budget:
        raise SuperresError(
            f"{src}: {needs}, and about {_mb(strips)} in strips of --tile {tile}; use a smaller --tile or {hint}"
        )
    return True


def _mb(size: int) -> str:
    return f"{size / 2**20:,.1f} MB" if size < 100 * 2**20 else f"{size / 2**20:,.0f} MB"


def _upscale_in_strips(model: "Model", raw: Any, dst: Path, *, tile: int, tile_overlap: int, half: bool,
                       precision: str = "fp32", png_level: int = PNG_LEVEL, metadata: dict | None = None) -> None:
    """Upscale ``raw`` band by band straight into ``dst``: the same pixels :func:`upscale` gives
    (same float conversion, tiles, blending, clamping and rounding), in memory bounded by the tile,
    with the source's ``metadata`` (ICC profile, DPI, EXIF) as a whole write carries it."""
    import torch

    pixels = raw.pixels
    c = pixels.shape[2]
    run_c = _model_channels(model)
    scale = _model_scale_attr(model)
    with warnings.catch_warnings():  # a read-only array (Pillow's): the tensor is only read here
        warnings.simplefilter("ignore", UserWarning)
        x = torch.from_numpy(pixels).permute(2, 0, 1)[None]  # a view: the input stays as stored

    def convert(part: "torch.Tensor") -> "torch.Tensor":
        values = torch.from_numpy(to_float(part.numpy()))  # exactly read_image's conversion
        return values.expand(-1, 3, -1, -1) if run_c == 3 and c == 1 else values

    def bands() -> Iterator[np.ndarray]:
        for _, band in upscale_tensor_rows(model, x, tile=tile, tile_overlap=tile_overlap, half=half, convert=convert,
                                           precision=precision):
            data = band[0].permute(1, 2, 0).numpy()  # rows x W x C, a view of the channels_last canvas
            if run_c == 3 and c == 1:
                data = data.mean(axis=2, keepdims=True)
            data = np.clip(data, 0.0, 1.0, out=data)
            samples = to_integer(data, raw.bit_depth)
            yield np.array(samples, copy=True) if samples is data or samples.base is not None else samples

    write_image_rows(dst, pixels.shape[0] * scale, pixels.shape[1] * scale, c, raw.bit_depth, bands(), png_level=png_level,
                     metadata=metadata)


def upscale_files(
    inputs: Sequence[Path],
    *,
    model: str | None,
    out_dir: Path,
    tile: int | str = "auto",
    tile_overlap: int = 16,
    device: str = "cpu",
    half: bool = False,
    backend: str = "torch",
    progress: bool = True,
    existing: str = "error",
    max_memory: int | None = None,
    suffix: str = "",
    ext: str = "auto",
    output_size: Any = None,
    failures: list | None = None,
    on_start: Callable[[str], None] | None = None,
    precision: str = "auto",
    note: Callable[[str], None] | None = None,
    png_level: int = PNG_LEVEL,
) -> list[Path]:
    """``superres upscale``: upscale image files and folders into ``out_dir``; returns the paths written.

    ``existing`` says what happens to output files that are already there: ``"error"`` (the default)
    stops before any work, naming one; ``"overwrite"`` replaces them (atomically, as every write);
    ``"skip"`` leaves them and skips their inputs (what a re-run after an interruption wants).

    Host memory: before an image is run, the memory its upscaling takes in one piece is estimated
    (:func:`_needs_strips`) against ``max_memory`` bytes (default :func:`memory_budget`: half the
    available memory). Over it, the result is computed and written in strips of rows
    (:func:`upscale_tensor_rows`, :func:`superres.io.write_image_rows`), so memory is bounded by the
    tile size and the output width; where that is not possible (alpha, a luma-only model on RGB,
    JPEG/BMP output, ``tile=0``) or still too much, the image is refused before the model runs.

    Each result keeps its file name and format (folders keep their inner layout), bit depth, channel
    layout and alpha. ``model=None`` picks the best shipped x4 model that fits the machine's speed
    budget (:func:`superres.speed.choose_default_model`); ``tile="auto"`` sizes tiles to the free
    memory (:func:`superres.speed.auto_tile`); ``precision`` is resolved per model
    (:func:`superres.precision.resolve_precision`); ``note`` receives the one-line reasons for these
    choices. Threads are the caller's (``superres upscale --threads``: :func:`superres.threads.apply_threads`). Every option is checked and
    every output path planned before the first image is processed; each file is written atomically,
    so an unreadable input (reported as ``SuperresError`` naming it) stops the run without leaving a
    half-written file.

    ``suffix``/``ext`` rename the outputs and ``output_size`` (a :class:`superres.outputs.OutputSize`)
    resizes each result after the model (:mod:`superres.outputs`); ICC profile, DPI and EXIF are
    carried over (:mod:`superres.metadata`); animated GIF/WebP go through :mod:`superres.animation`.
    PNG outputs are compressed at zlib level ``png_level`` (0-9; ``superres upscale --png-level``).
    With a ``failures`` list, a file that fails is appended to it as ``(source, message)`` and the
    others go on. Under ``torchrun`` each rank takes its share of the planned files. ``on_start`` is
    called with the device once everything is checked and the model is loaded.
    """

    if backend not in BACKENDS:
        raise SuperresError(f"--backend {backend}: unknown backend; use one of {', '.join(BACKENDS)}")
    dev = resolve_device(device)
    _check_half(half, dev)
    if half and backend == "onnx":
        raise SuperresError("--half: the onnx backend runs float32 on the CPU; drop --half")
    if not (tile == "auto" or (isinstance(tile, int) and tile >= 0)):
        raise SuperresError(f"--tile {tile}: use auto or a size >= 0")
    check_png_level(png_level, "--png-level")

    say = note or (lambda line: None)
    size = output_size if output_size is not None else outputs.OutputSize()
    planned = outputs.rename_outputs(_plan_outputs(inputs, Path(out_dir)), suffix=suffix, ext=ext)
    pairs = _check_out_dir(Path(out_dir), outputs.shard(planned), existing)
    if model is None:
        model, why = choose_default_model(dev)
        say(why)
    precision, why = resolve_precision(precision, dev, model, backend=backend)
    if half:
        precision = "fp32"  # --half is float16 autocast on CUDA, applied per tile
    say("precision: fp16 (--half)" if half else why or f"precision: {precision}")
    net = load_for_backend(model, backend=backend, device=str(dev))
    if on_start is not None:
        on_start(str(_model_device(net, dev)))

    probed: list[float] = []  # the model's working bytes per input pixel: one probe pass for the whole run

    def per_pixel() -> float:
        if not probed:
            probed.append(bytes_per_input_pixel(net, _model_channels(net)))
        return probed[0]

    def tile_for(h: int, w: int) -> int:
        """``tile``, or for ``auto`` the largest tile that fits the memory budget (:func:`superres.speed.auto_tile`)."""
        if tile == "auto":
            return auto_tile(net, h, w, _model_channels(net), dev, tile_overlap=tile_overlap, per_pixel=per_pixel())
        return tile

    def batch_for(run_tile: int) -> int:
        """Tiles per model call: more than 1 only on CUDA with tiles smaller than its memory (:func:`superres.speed.tile_batch`)."""
        return tile_batch(net, run_tile, _model_channels(net), _model_device(net, dev), tile_overlap=tile_overlap,
                          per_pixel=per_pixel())

    from tqdm import tqdm

    budget = memory_budget(max_memory)
    written: list[Path] = []
    writer = outputs.BackgroundWriter(failures)
    png_threads = writer_threads()  # the writer deflates beside the next image's model run
    bar = tqdm(pairs, desc="upscale", unit="image", disable=not progress, file=sys.stderr)
    for src, dst in bar:
        with outputs.recorded(failures, src, writer):
            if animation.is_animation(src):
                def frame_call(image: Any) -> Any:
                    h, w = image.data.shape[:2]
                    frame_tile = tile_for(h, w)
                    return upscale(net, image, tile=frame_tile, tile_overlap=tile_overlap, device=dev, half=half,
                                   precision=precision, batch=batch_for(frame_tile))

                animation.upscale_animation(frame_call, _model_scale_attr(net), src, dst, output_size=size)
                written.append(dst)
                continue
            try:
                raw = read_raw(src)
            except SuperresError:
                raise
            except Exception as exc:  # a decoder error deep in Pillow/tifffile: name the file
                raise SuperresError(f"{src}: cannot read the image ({type(exc).__name__}: {exc})") from None
            # What the output file cannot hold (alpha in a JPEG, 16 bits in a BMP ...) is refused before
            # the model runs; the result has the image's channels and depth (8 bits for --ext jpg/webp).
            check_writable(dst, raw.pixels.shape[2], 8 if ext in ("jpg", "webp") else raw.bit_depth, raw.alpha is not None)
            run_tile = tile_for(*raw.pixels.shape[:2])
            if _needs_strips(net, raw, src, dst, tile=run_tile, tile_overlap=tile_overlap, budget=budget):
                if not size.native:
                    raise SuperresError(f"{src}: too large to upscale in one piece, and --outscale/--size/--width "
                                        "need the whole result in memory; raise --max-memory")
                writer.drain()  # a result too large for memory: nothing else held while it streams
                dst.parent.mkdir(parents=True, exist_ok=True)
                _upscale_in_strips(net, raw, dst, tile=run_tile, tile_overlap=tile_overlap, half=half, precision=precision,
                                   png_level=png_level, metadata=read_metadata(src))
                written.append(dst)
                continue
            h, w = raw.pixels.shape[:2]
            out_hw = size.target(h, w, _model_scale_attr(net), str(src))
            if _runs_in_uint8(net, raw, run_tile, out_hw):
                samples = net.run_uint8(raw.pixels)
                if raw.alpha is not None:
                    alpha = to_integer(_upscale_alpha(to_float(raw.alpha), net.scale), 8)
                    samples = np.concatenate([samples, alpha], axis=2)
                dst.parent.mkdir(parents=True, exist_ok=True)
                writer.submit(src, dst, write_samples, dst, samples, 3, 8, raw.alpha is not None,
                              metadata=read_metadata(src), png_level=png_level, png_threads=png_threads)
                continue
            image = Image(to_float(raw.pixels), None if raw.alpha is None else to_float(raw.alpha), raw.bit_depth, src)
            del raw
            tiles = (len(tile_grid(h, run_tile)) - 1) * (len(tile_grid(w, run_tile)) - 1)
            many_tiles = tiles > _TILE_BAR_MIN_TILES or (tiles > 1 and len(pairs) <= _TILE_BAR_MAX_IMAGES)
            result = upscale(
                net, image, tile=run_tile, tile_overlap=tile_overlap, device=dev, half=half,
                progress=progress and many_tiles, precision=precision, batch=batch_for(run_tile),
            )
            result = outputs.finish(result, out_hw, ext)
            dst.parent.mkdir(parents=True, exist_ok=True)
            writer.submit(src, dst, write_image, dst, result, metadata=read_metadata(src), png_level=png_level,
                          png_threads=png_threads)
    written += writer.close()
    bar.close()
    return written
