"""Scoring a model (or plain bicubic) on a benchmark folder under the paper protocol (`superres eval`).

A benchmark folder is laid out as the standard test sets are distributed (EDSR/BasicSR convention)::

    DIR/HR/<name>.png                 ground truth, uncropped
    DIR/LR_bicubic/X{s}/<name>.png    MATLAB-bicubic LR input (``<name>x{s}.png`` is accepted too)

For every HR image: ``HR_crop = modcrop(HR, s)`` (top-left crop to a multiple of ``s``, the crop the
LR files were made from), ``SR = model(LR)``, then :func:`superres.metrics.score` (PSNR/SSIM on Y of
BT.601 or gray intensity, ``s`` pixels shaved). The set's figures are the means over images. When
``LR_bicubic/X{s}`` is absent the LR is made here with MATLAB-exact ``imresize(HR_crop, 1/s)``, which
reproduces the official files (see ``superres.resize``), and the report says so.

``model="bicubic"`` is the reference every paper prints first: ``imresize(LR, s)`` on the integer
LR, rounded after each pass, as MATLAB does on uint8, which is how the published bicubic rows were
made. Any other model's float output is rounded to the HR's bit depth before scoring, as saving the
SR image to PNG would, so the figures are those of the files a user would get.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from superres.devices import resolve_device
from superres.errors import SuperresError
from superres.inference import load_for_backend, upscale
from superres.io import list_images, read_array, to_float, to_integer
from superres.metrics import PSNR_CAP_DB, mean_psnr, score
from superres.modelfile import load_model
from superres.models.contract import describe
from superres.perceptual import PERCEPTUAL_PROTOCOL, build_perceptual, image_distance
from superres.precision import resolve_precision
from superres.progress import progress_bar
from superres.resize import imresize, modcrop
from superres.scales import SCALES
from superres.threads import apply_threads

__all__ = ["PROTOCOL", "evaluate", "format_report", "make_upscaler", "net_upscaler"]

#: Scales a benchmark can be scored at (8 only makes sense where a model supports it).

#: One line describing the scoring, copied into every report so that saved JSON explains itself.
PROTOCOL = (
    "PSNR/SSIM on Y of BT.601 studio swing (grayscale: intensity), HR top-left mod-cropped to a "
    "multiple of the scale, scale pixels shaved from every border; SSIM 11x11 Gaussian sigma 1.5, "
    f"valid region; per-image PSNR capped at {PSNR_CAP_DB:g} dB; means over images"
)

#: LR samples (as read) and the HR bit depth (8, 16; 32 = float) -> SR samples.
_Upscaler = Callable[[np.ndarray, int], np.ndarray]


def _size(a: np.ndarray) -> str:
    """``WxH``, the way image sizes are usually written."""
    return f"{a.shape[1]}x{a.shape[0]}"


def _bicubic(scale: int) -> _Upscaler:
    """MATLAB's ``imresize(LR, s, 'bicubic')`` on the integer LR (rounded after each pass)."""

    def run(lr: np.ndarray, bit_depth: int) -> np.ndarray:
        return imresize(lr, scale)  # integer in, integer out: rounded per pass like MATLAB

    return run


def _model_upscaler(model: str, scale: int, device: str, tile: int, backend: str, precision: str = "fp32") -> _Upscaler:
    """A loaded model as an upscaler of file samples: LR as read in, SR rounded to the HR's bit depth out."""
    if backend == "torch":
        net = load_model(model, device=device)
    else:  # onnx (an .onnx file, or a model exported on the fly); unknown backends are refused there
        net = load_for_backend(model, backend=backend, device=device)
    return net_upscaler(net, model, scale, device=device, tile=tile, precision=precision)


def net_upscaler(net: Any, label: str, scale: int, *, device: str = "cpu", tile: int = 0,
                 precision: str = "fp32") -> _Upscaler:
    """:func:`make_upscaler` for a model already loaded (``label`` names it in errors): refused when
    it upscales by another factor than ``scale``."""
    model_scale = describe(net).scale
    if model_scale is not None and int(model_scale) != scale:
        raise SuperresError(f"--model {label}: the model upscales x{model_scale}, not x{scale}")

    autocast = {} if precision == "fp32" else {"precision": precision}

    def run(lr: np.ndarray, bit_depth: int) -> np.ndarray:
        sr = np.asarray(upscale(net, to_float(lr), tile=tile, device=device, **autocast))
        if sr.ndim == 2:
            sr = sr[:, :, None]
        # Rounded to the HR's bit depth exactly as write_image stores it: the scores are those of
        # the SR files a user would save.
        return to_integer(sr, bit_depth)

    return run


def make_upscaler(
    model: str, scale: int, *, device: str = "cpu", tile: int = 0, backend: str = "torch", precision: str = "fp32"
) -> _Upscaler:
    """The function :func:`evaluate` runs on each LR (``(lr_samples, hr_bit_depth) -> sr_samples``):
    bicubic for ``"bicubic"``, else the loaded model (``backend`` "torch" or "onnx"). Public so that
    callers that time or wrap the upscaling (``superres benchmark``) score exactly what eval scores.
    ``precision``: :mod:`superres.precision` (``auto`` resolved for the model)."""
    if model != "bicubic" and precision != "fp32":
        precision = resolve_precision(precision, resolve_device(device), model, backend=backend)[0]
    return _bicubic(scale) if model == "bicubic" else _model_upscaler(model, scale, device, tile, backend, precision)


def _find_lr(lr_index: dict[str, Path], stem: str, scale: int) -> Path | None:
    return lr_index.get(stem) or lr_index.get(f"{stem}x{scale}")


def evaluate(
    model: str,
    data: Path,
    *,
    scale: int,
    device: str = "cpu",
    tile: int = 0,
    backend: str = "torch",
    upscaler: _Upscaler | None = None,
    perceptual: Any = None,
    lr: str = "LR_bicubic",
    precision: str = "fp32",
    threads: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Score ``model`` ("bicubic", a shipped model name or a model file) on the benchmark folder ``data``.

    ``lr`` names the LR folder: ``data/<lr>/X{s}`` (e.g. ``LR_medium`` of ``superres data degrade``);
    only the default ``LR_bicubic`` may be absent (the LR is then made here).

    ``upscaler`` (``(lr_samples, hr_bit_depth) -> sr_samples``) replaces the one made from ``model``,
    which is then only the report's label: peers and timed wrappers are scored by the same code.
    ``precision`` is the model's autocast (:mod:`superres.precision`); ``threads`` (given: applied to
    torch and onnxruntime, :func:`superres.threads.apply_threads`). ``progress``: a bar over the
    images on stderr (images/s, ETA; :func:`superres.progress.progress_bar`), gone when the set is done.

    Returns a JSON-serialisable report::

        {"dataset": <folder name>, "scale": s, "model": <model>, "psnr_y": mean, "ssim_y": mean,
         "count": n, "images": [{"name", "psnr_y", "ssim_y", "size": [w, h]}, ...],
         "lr_source": ..., "protocol": ..., "psnr_cap_db": 100.0, "seconds": ...}

    ``perceptual``: a metric name of :data:`superres.perceptual.PERCEPTUAL_METRICS` or a metric built
    by :func:`superres.perceptual.build_perceptual`; then every image also gets that distance under
    the metric's name (e.g. ``"effdist"``), the report its mean under the same key, ``"perceptual"``
    the name and ``"perceptual_protocol"`` what is computed (RGB, same shave as PSNR).

    ``size`` is that of the mod-cropped HR. PSNR values above ``psnr_cap_db`` (identical images give
    inf) are reported as the cap, also per image, so the JSON stays valid and the mean finite.

    Raises :class:`SuperresError` naming the path for a missing folder, no HR images, a missing or
    unreadable LR, an LR whose size is not the mod-cropped HR's divided by the scale, or an
    unsupported scale.
    """
    t0 = time.perf_counter()
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or int(scale) not in SCALES:
        raise SuperresError(
            f"--scale {scale}: unsupported scale; choose one of {', '.join(map(str, SCALES))}"
        )
    s = int(scale)
    data = Path(data)
    if not data.is_dir():
        raise SuperresError(f"{data}: benchmark folder not found")
    hr_dir = data / "HR"
    if not hr_dir.is_dir():
        raise SuperresError(f"{hr_dir}: HR folder not found (expected DIR/HR/*.png and DIR/LR_bicubic/X{s}/*.png)")
    hr_paths = _list_or_fail(hr_dir)
    lr_dir = data / lr / f"X{s}"
    lr_index: dict[str, Path] | None = None
    if lr_dir.is_dir():
        lr_index = {p.stem: p for p in _list_or_fail(lr_dir)}
        lr_source = str(Path(lr) / f"X{s}")
    elif lr != "LR_bicubic":
        raise SuperresError(f"{lr_dir}: LR folder not found (--lr {lr})")
    else:
        lr_source = f"generated: MATLAB-bicubic imresize(HR_crop, 1/{s}) (no LR_bicubic/X{s} folder)"

    if threads is not None:
        apply_threads(threads)
    if upscaler is None:
        upscaler = make_upscaler(model, s, device=device, tile=tile, backend=backend, precision=precision)
    metric = None
    if perceptual is not None:
        metric = build_perceptual(perceptual) if isinstance(perceptual, str) else perceptual
        if not isinstance(getattr(metric, "metric_name", None), str):
            raise SuperresError("perceptual: pass a metric name or a metric made by superres.perceptual.build_perceptual")

    images: list[dict[str, Any]] = []
    for hr_path in progress_bar(hr_paths, enabled=progress, desc=f"{data.name} x{s}", unit="image", leave=False):
        hr = read_array(hr_path)
        hr_crop = _named(hr_path, lambda: modcrop(hr, s))
        want = (hr_crop.shape[0] // s, hr_crop.shape[1] // s)
        if lr_index is None:
            lr_name = str(hr_path)
            lr = _named(hr_path, lambda: imresize(hr_crop, 1.0 / s))
        else:
            lr_path = _find_lr(lr_index, hr_path.stem, s)
            if lr_path is None:
                raise SuperresError(
                    f"{lr_dir}: no LR image for {hr_path.name} (looked for {hr_path.stem}.* and {hr_path.stem}x{s}.*)"
                )
            lr_name = str(lr_path)
            lr = read_array(lr_path)
        pair = f"{lr_name} / {hr_path}"
        if lr.shape[:2] != want:
            raise SuperresError(
                f"{pair}: LR is {_size(lr)} but the HR ({_size(hr)}, mod-cropped to {_size(hr_crop)}) "
                f"needs an LR of {want[1]}x{want[0]} at x{s}"
            )
        if lr.shape[2:] != hr_crop.shape[2:]:
            raise SuperresError(f"{pair}: LR has {_channels(lr)} channel(s) but HR has {_channels(hr_crop)}")
        sr = upscaler(lr, _bit_depth(hr_crop))
        if sr.shape != hr_crop.shape:
            raise SuperresError(
                f"{pair}: --model {model} produced {sr.shape} from an LR of {lr.shape}; expected {hr_crop.shape}"
            )
        sc = _named(hr_path, lambda: score(sr, hr_crop, s))
        images.append(
            {
                "name": hr_path.stem,
                "psnr_y": min(sc["psnr_y"], PSNR_CAP_DB),
                "ssim_y": sc["ssim_y"],
                "size": [int(hr_crop.shape[1]), int(hr_crop.shape[0])],
            }
        )
        if metric is not None:
            images[-1][metric.metric_name] = _named(hr_path, lambda: image_distance(metric, sr, hr_crop, shave=s))

    extra: dict[str, Any] = {}
    if metric is not None:
        name = metric.metric_name
        extra = {"perceptual": name, name: float(np.mean([im[name] for im in images])),
                 "perceptual_protocol": PERCEPTUAL_PROTOCOL}

    return {
        "dataset": data.resolve().name,
        "scale": s,
        "model": model,
        "psnr_y": mean_psnr(im["psnr_y"] for im in images),
        "ssim_y": float(np.mean([im["ssim_y"] for im in images])),
        "count": len(images),
        "images": images,
        "lr_source": lr_source,
        "protocol": PROTOCOL,
        "psnr_cap_db": PSNR_CAP_DB,
        **extra,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _bit_depth(a: np.ndarray) -> int:
    """The bit depth a file of these samples has: 8, 16, or 32 for float (TIFF) samples."""
    return {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}.get(a.dtype, 32)


def _channels(a: np.ndarray) -> int:
    return 1 if a.ndim == 2 else int(a.shape[2])


def _list_or_fail(folder: Path) -> list[Path]:
    """The images in ``folder`` (list_images raises a SuperresError naming it when there are none)."""
    paths = list_images([folder])
    if not paths:  # list_images promises an error instead; keep the guarantee local too
        raise SuperresError(f"{folder}: no images found")
    return paths


def _named(path: Path, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` and prefix any SuperresError with the image it concerns (resize/metrics don't know it)."""
    try:
        return fn()
    except SuperresError as exc:
        raise SuperresError(f"{path}: {exc}") from None


def format_report(report: dict[str, Any]) -> str:
    """A readable table: one row per image, then the means, then how the LR was obtained."""
    rows = [(im["name"], im["psnr_y"], im["ssim_y"]) for im in report["images"]]
    width = max([len("image"), len("mean")] + [len(r[0]) for r in rows])
    metric = report.get("perceptual")
    pw = max(len(metric), 8) if metric else 0
    per_image = [f"  {im[metric]:>{pw}.4f}" if metric else "" for im in report["images"]]

    def fmt_psnr(v: float) -> str:
        return "inf" if math.isinf(v) else f"{v:.3f}"

    lines = [
        f"{report['model']} on {report['dataset']}, x{report['scale']}",
        f"{'image':<{width}}  {'PSNR-Y (dB)':>11}  {'SSIM-Y':>7}" + (f"  {metric:>{pw}}" if metric else ""),
        "-" * (width + 22 + (pw + 2 if metric else 0)),
    ]
    lines += [f"{name:<{width}}  {fmt_psnr(p):>11}  {sv:>7.4f}{pm}" for (name, p, sv), pm in zip(rows, per_image)]
    lines.append("-" * (width + 22 + (pw + 2 if metric else 0)))
    lines.append(f"{'mean':<{width}}  {fmt_psnr(report['psnr_y']):>11}  {report['ssim_y']:>7.4f}"
                 + (f"  {report[metric]:>{pw}.4f}" if metric else ""))
    count = report.get("count", len(rows))
    extra = f"{count} image{'s' if count != 1 else ''}; LR: {report.get('lr_source', '?')}"
    if "seconds" in report:
        extra += f"; {report['seconds']:.1f} s"
    lines.append(extra)
    if "protocol" in report:
        lines.append(f"protocol: {report['protocol']}")
    if metric and "perceptual_protocol" in report:
        lines.append(f"{metric}: {report['perceptual_protocol']}")
    return "\n".join(lines)
