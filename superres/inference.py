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
* Device memory is bounded by one tile, ``(tile + 2 * tile_overlap)^2`` input pixels times the batch;
  the output canvas lives with the input tensor (on the CPU for :func:`upscale`).
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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from superres.color import rgb_to_ycbcr, ycbcr_matrix
from superres.devices import resolve_device
from superres.errors import SuperresError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from superres.export import OnnxModel

    #: What the functions below run: a torch module, or an exported file run by onnxruntime.
    Model = nn.Module | OnnxModel

__all__ = [
    "upscale_tensor",
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
    declared = getattr(model, "scale", None)
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
    from superres.precision import autocast_for

    autocast = autocast_for(device, "fp16" if half else precision)
    # On the CPU the tile goes in as channels_last (NHWC): oneDNN then runs the convolutions in its
    # blocked NHWC kernels, 20-25% faster for the residual models (enhanced, baseline) and neutral for
    # the tiny Y models, with results equal to 1e-6 (docs/BENCHMARKS.md, "CPU inference speed"). Only
    # the input is converted, so the caller's model is not modified.
    layout = torch.channels_last if device.type == "cpu" else torch.contiguous_format

    def run(part: "torch.Tensor") -> "torch.Tensor":
        with autocast:
            part = part.to(device=device, dtype=torch.float32, non_blocking=True)
            return model(part.contiguous(memory_format=layout)).float()

    return run


def upscale_tensor(
    model: "Model",
    x: "torch.Tensor",
    *,
    tile: int = 0,
    tile_overlap: int = 16,
    half: bool = False,
    progress: bool = False,
    precision: str = "fp32",
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
    """
    import torch

    if x.ndim != 4:
        raise ValueError(f"upscale_tensor expects an N x C x H x W tensor, got shape {tuple(x.shape)}")
    if tile < 0 or tile_overlap < 0:
        raise SuperresError(f"--tile {tile} / --tile-overlap {tile_overlap}: must be >= 0")
    run = _tile_call(model, x.device, half, precision)
    n, _, height, width = x.shape
    ys, xs = tile_grid(height, tile), tile_grid(width, tile)
    if len(ys) == 2 and len(xs) == 2:  # one tile: no canvas, no weights
        with torch.inference_mode():
            out = run(x)
        _model_scale(model, x.shape, out.shape)
        return out.to(x.device)

    half_width = tile_overlap // 2
    tiles = [(i, j) for i in range(len(ys) - 1) for j in range(len(xs) - 1)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tiles), desc="tiles", unit="tile", leave=False, file=sys.stderr)
    canvas: torch.Tensor | None = None
    scale = 0
    with torch.inference_mode():
        for i, j in tiles:
            y0, y1 = max(0, ys[i] - tile_overlap), min(height, ys[i + 1] + tile_overlap)
            x0, x1 = max(0, xs[j] - tile_overlap), min(width, xs[j + 1] + tile_overlap)
            out = run(x[:, :, y0:y1, x0:x1])
            if canvas is None:
                scale = _model_scale(model, (y1 - y0, x1 - x0), out.shape)
                canvas = torch.zeros((n, out.shape[1], height * scale, width * scale), dtype=torch.float32, device=x.device)
            elif out.shape[-2:] != ((y1 - y0) * scale, (x1 - x0) * scale):
                raise SuperresError(f"the model's output size changed between tiles: {tuple(out.shape)}")
            wy = axis_weights(ys, scale, half_width, i, y0, y1)
            wx = axis_weights(xs, scale, half_width, j, x0, x1)
            # Only the rows/columns with non-zero weight are touched (the core plus the ramps).
            ry = np.nonzero(wy)[0]
            rx = np.nonzero(wx)[0]
            ya, yb, xa, xb = int(ry[0]), int(ry[-1]) + 1, int(rx[0]), int(rx[-1]) + 1
            weight = torch.from_numpy(np.outer(wy[ya:yb], wx[xa:xb]).astype(np.float32)).to(out.device)
            contribution = (out[:, :, ya:yb, xa:xb] * weight).to(x.device)
            canvas[:, :, y0 * scale + ya : y0 * scale + yb, x0 * scale + xa : x0 * scale + xb] += contribution
            del out, contribution
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    assert canvas is not None
    return canvas


# --------------------------------------------------------------------------- colour
def _upscale_chroma(chroma: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB-bicubic upscaling of the ``H x W x 2`` Cb/Cr planes, as float32 ``H*s x W*s x 2``.

    Runs the torch float32 path of :func:`superres.resize.imresize` (it differs from the float64
    numpy reference by ~3e-7, far below one 16-bit output level, 1.5e-5). On one CPU core the
    float64 numpy resize took ~16 ms for a 128x128 -> 512x512 x4 chroma pair, longer than
    ``espcn`` itself; this path takes ~1.7 ms (docs/BENCHMARKS.md, "CPU inference speed").
    """
    import torch

    from superres.resize import imresize

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
        from superres.export import load_onnx

        return load_onnx(model)
    if str(model).lower().endswith(".onnx"):
        raise SuperresError(f"--model {model}: an ONNX file runs with --backend onnx")
    from superres.modelfile import load_model

    return load_model(model, device=device)


def _model_channels(model: "Model") -> int:
    channels = getattr(model, "in_channels", None)
    if channels is None:
        raise SuperresError(f"the model ({type(model).__name__}) has no in_channels attribute; load it with superres.load_model")
    return int(channels)


def _model_scale_attr(model: "Model") -> int:
    scale = getattr(model, "scale", None)
    if scale is None:
        raise SuperresError(f"the model ({type(model).__name__}) has no scale attribute; load it with superres.load_model")
    return int(scale)


def _run_hwc(
    model: "Model", data: np.ndarray, tile: int, tile_overlap: int, half: bool, progress: bool, precision: str = "fp32"
) -> np.ndarray:
    """float ``H x W x C`` -> model -> float32 ``H*s x W*s x C'`` (not clamped), through CPU tensors.

    The result is C-contiguous: the clamp and the integer conversion that follow then stream through
    memory instead of striding across the model's channel planes.
    """
    import torch

    x = torch.from_numpy(np.ascontiguousarray(data.transpose(2, 0, 1), dtype=np.float32))[None]
    y = upscale_tensor(model, x, tile=tile, tile_overlap=tile_overlap, half=half, progress=progress, precision=precision)
    return y[0].to("cpu", torch.float32).permute(1, 2, 0).contiguous().numpy()


def _upscale_data(
    model: "Model", data: np.ndarray, *, tile: int, tile_overlap: int, half: bool, progress: bool, what: str,
    precision: str = "fp32",
) -> np.ndarray:
    """Upscale float ``H x W x C`` data in [0, 1], matching the image's channels to the model's."""
    channels = data.shape[2]
    model_channels = _model_channels(model)
    scale = _model_scale_attr(model)
    if channels == model_channels:
        out = _run_hwc(model, data, tile, tile_overlap, half, progress, precision)
    elif model_channels == 1 and channels == 3:
        ycc = rgb_to_ycbcr(data)
        y = _run_hwc(model, ycc[:, :, :1], tile, tile_overlap, half, progress, precision)
        out = _luma_chroma_to_rgb(y, _upscale_chroma(ycc[:, :, 1:], scale))
    elif model_channels == 3 and channels == 1:
        rgb = np.repeat(data, 3, axis=2)
        out = _run_hwc(model, rgb, tile, tile_overlap, half, progress, precision).mean(axis=2, keepdims=True)
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
) -> Any:
    """Upscale one image with ``model`` (a module, an :class:`~superres.export.OnnxModel`, or a shipped
    model name / model file path; an ``.onnx`` path runs through onnxruntime).

    ``image`` is a :class:`superres.io.Image` (the result is an ``Image`` with the same bit depth and
    channel layout, alpha upscaled separately with MATLAB bicubic and clipped to [0, 1], ``path``
    None) or a float numpy array ``H x W`` / ``H x W x C`` in [0, 1] (the result is a float32 array of
    the same layout). Values are clamped to [0, 1]. A module passed in is moved to ``device``; see
    the module docstring and docs/INFERENCE.md for tiling and the channel rules. ``precision``
    (``fp32``, ``bf16``, ``fp16`` or ``auto``, :mod:`superres.precision`) is the autocast the model runs in.
    """
    import torch

    from superres.io import Image

    dev = resolve_device(device)
    _check_half(half, dev)
    net = _as_model(model, dev)
    if isinstance(model, torch.nn.Module):
        net = net.to(dev)
    if precision == "auto":
        from superres.precision import resolve_precision

        precision = resolve_precision("auto", dev, net, backend="torch" if isinstance(net, torch.nn.Module) else "onnx")[0]

    if isinstance(image, Image):
        what = str(image.path) if image.path is not None else "image"
        data = np.asarray(image.data, dtype=np.float32)
        if data.ndim == 2:
            data = data[:, :, None]
        out = _upscale_data(
            net, data, tile=tile, tile_overlap=tile_overlap, half=half, progress=progress, what=what, precision=precision
        )
        alpha = None
        if image.alpha is not None:
            from superres.resize import imresize

            scale = _model_scale_attr(net)
            alpha_in = np.asarray(image.alpha, dtype=np.float32)
            alpha = np.asarray(imresize(alpha_in, scale=scale), dtype=np.float32).reshape(out.shape[0], out.shape[1], 1)
            alpha = np.clip(alpha, 0.0, 1.0, out=alpha)
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
        )
        return out[:, :, 0] if image.ndim == 2 else out

    raise SuperresError(f"upscale: expected a superres.io.Image or a numpy array, got {type(image).__name__}")


# --------------------------------------------------------------------------- files
def default_model_name() -> str:
    """The best shipped x4 model (highest recorded PSNR-Y, see :func:`superres.modelfile.list_models`),
    or an error when none is shipped."""
    from superres.modelfile import list_models

    shipped = [e for e in list_models() if e.get("shipped") and e.get("scale") == 4]
    if not shipped:
        raise SuperresError("no pretrained model is shipped yet; pass --model PATH")
    # Models without a recorded score rank last; ties keep list_models' (sorted by name) order.
    best = max(shipped, key=lambda e: e["psnr_y"] if isinstance(e.get("psnr_y"), (int, float)) else float("-inf"))
    return str(best["name"])


def _plan_outputs(inputs: Sequence[Path], out_dir: Path) -> list[tuple[Path, Path]]:
    """(source, destination) pairs: files keep their name, folders keep their inner layout.

    Refuses, before anything is written, to write two results to one path or over a source file.
    """
    from superres.io import list_images

    pairs: list[tuple[Path, Path]] = []
    for source in inputs:
        source = Path(source)
        if source.is_dir():
            for path in list_images([source]):
                pairs.append((path, out_dir / path.relative_to(source)))
        else:
            for path in list_images([source]):
                pairs.append((path, out_dir / path.name))
    seen: dict[Path, Path] = {}
    sources = {p.resolve() for p, _ in pairs}
    for src, dst in pairs:
        key = dst.resolve()
        if key in seen:
            raise SuperresError(f"{src} and {seen[key]} would both be written to {dst}; upscale them into different --out folders")
        if key in sources:
            raise SuperresError(f"{dst}: the output would overwrite an input image; choose another --out folder")
        seen[key] = src
    return pairs


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
    precision: str = "auto",
    note: Callable[[str], None] | None = None,
) -> list[Path]:
    """``superres upscale``: upscale image files and folders into ``out_dir``; returns the paths written.

    Each result keeps its file name and format (folders keep their inner layout), bit depth, channel
    layout and alpha. ``model=None`` picks the best shipped x4 model that fits the machine's speed
    budget (:func:`superres.speed.choose_default_model`); ``tile="auto"`` sizes tiles to the free
    memory (:func:`superres.speed.auto_tile`); ``precision`` is resolved per model
    (:func:`superres.precision.resolve_precision`); ``note`` receives the one-line reasons for these
    choices. Threads are the caller's (``superres upscale --threads``: :func:`superres.threads.apply_threads`). Every option is checked and
    every output path planned before the first image is processed; each file is written atomically,
    so an unreadable input (reported as ``SuperresError`` naming it) stops the run without leaving a
    half-written file.
    """
    from superres.io import read_image, write_image

    if backend not in BACKENDS:
        raise SuperresError(f"--backend {backend}: unknown backend; use one of {', '.join(BACKENDS)}")
    dev = resolve_device(device)
    _check_half(half, dev)
    if half and backend == "onnx":
        raise SuperresError("--half: the onnx backend runs float32 on the CPU; drop --half")
    if not (tile == "auto" or (isinstance(tile, int) and tile >= 0)):
        raise SuperresError(f"--tile {tile}: use auto or a size >= 0")
    from superres.precision import resolve_precision
    from superres.speed import auto_tile, choose_default_model

    say = note or (lambda line: None)
    pairs = _plan_outputs(inputs, Path(out_dir))
    if model is None:
        model, why = choose_default_model(dev)
        say(why)
    precision, why = resolve_precision(precision, dev, model, backend=backend)
    if half:
        precision = "fp32"  # --half is float16 autocast on CUDA, applied per tile
    say("precision: fp16 (--half)" if half else why or f"precision: {precision}")
    net = load_for_backend(model, backend=backend, device=str(dev))

    from tqdm import tqdm

    written: list[Path] = []
    bar = tqdm(pairs, desc="upscale", unit="image", disable=not progress, file=sys.stderr)
    for src, dst in bar:
        try:
            image = read_image(src)
        except SuperresError:
            raise
        except Exception as exc:  # a decoder error deep in Pillow/tifffile: name the file
            raise SuperresError(f"{src}: cannot read the image ({type(exc).__name__}: {exc})") from None
        h, w = image.data.shape[:2]
        run_tile = tile
        if run_tile == "auto":
            run_tile = auto_tile(net, h, w, _model_channels(net), dev, tile_overlap=tile_overlap)
        tiles = (len(tile_grid(h, run_tile)) - 1) * (len(tile_grid(w, run_tile)) - 1)
        many_tiles = tiles > _TILE_BAR_MIN_TILES or (tiles > 1 and len(pairs) <= _TILE_BAR_MAX_IMAGES)
        result = upscale(
            net, image, tile=run_tile, tile_overlap=tile_overlap, device=dev, half=half,
            progress=progress and many_tiles, precision=precision,
        )
        dst.parent.mkdir(parents=True, exist_ok=True)
        write_image(dst, result)
        written.append(dst)
    bar.close()
    return written
