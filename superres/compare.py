"""``superres compare``: side-by-side sheets for people who would rather look than read.

For each input image, one PNG: a row of whole views (LR, each model's output, HR when given) and a
row of zoomed crops of the same region, every panel labelled with its name and, when an HR
reference is given, its scores under the paper protocol (PSNR-Y / SSIM-Y; the perceptual distance
when a metric is given). The crop is ``--crop x,y,w,h`` in output pixels, or ``auto``: the window
where the models' outputs differ most from each other (the largest mean over the window of the
per-pixel spread of their luma), so the sheet shows where the choice of model matters.

Inputs are LR images, or (``lr_from_hr``) HR images whose LR is made here with MATLAB-exact bicubic
after a top-left mod-crop, as the benchmark sets are made. Every model must upscale by one scale.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from superres.color import Y_COEFFS
from superres.errors import SuperresError
from superres.evaluate import make_upscaler, net_upscaler
from superres.io import atomic_write, list_images, read_array, to_float, to_integer
from superres.metrics import score
from superres.modelfile import load_model
from superres.models.contract import describe
from superres.perceptual import build_perceptual, image_distance
from superres.resize import imresize, modcrop

__all__ = ["Crop", "parse_crop", "auto_crop", "compare_images"]

#: Side of a whole-view panel, in sheet pixels (the longer image side is scaled to it).
PANEL = 320
#: Side of a zoomed crop panel, in sheet pixels.
CROP_PANEL = 320
_LABEL_H = 50
_MARGIN = 6


@dataclass(frozen=True)
class Crop:
    """A window of the output image, in output pixels."""

    x: int
    y: int
    w: int
    h: int


def parse_crop(text: str) -> Crop | None:
    """``auto`` -> None; ``x,y,w,h`` (integers, w and h > 0, x and y >= 0) -> :class:`Crop`."""
    if text == "auto":
        return None
    parts = text.split(",")
    try:
        x, y, w, h = (int(p) for p in parts)
    except ValueError:
        raise SuperresError(f"--crop {text}: expected auto or x,y,w,h (four integers)") from None
    if x < 0 or y < 0 or w <= 0 or h <= 0:
        raise SuperresError(f"--crop {text}: x and y must be >= 0, w and h > 0")
    return Crop(x, y, w, h)


def _luma(rgb: np.ndarray) -> np.ndarray:
    if rgb.shape[2] < 3:
        return rgb[:, :, 0].astype(np.float64)
    r, g, b = Y_COEFFS
    return (r * rgb[:, :, 0] + g * rgb[:, :, 1] + b * rgb[:, :, 2]) / 255.0


def auto_crop(outputs: Sequence[np.ndarray], side: int) -> Crop:
    """The ``side`` x ``side`` window (clipped to the image) where ``outputs`` (float ``H x W x C``,
    all the same size) differ most: the largest window mean of the per-pixel standard deviation of
    their luma. With one output, the window of its largest local detail (absolute differences of
    horizontal neighbours in luma)."""
    h, w = outputs[0].shape[:2]
    side_y, side_x = min(side, h), min(side, w)
    lumas = np.stack([_luma(o) for o in outputs])
    if len(outputs) > 1:
        spread = lumas.std(axis=0)
    else:  # one model: where its output has the most detail
        y = lumas[0]
        spread = np.abs(y - np.pad(y, 1, mode="edge")[1:-1, :-2])
    integral = np.pad(spread, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    sums = (integral[side_y:, side_x:] - integral[:-side_y, side_x:] - integral[side_y:, :-side_x]
            + integral[:-side_y, :-side_x])
    iy, ix = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return Crop(int(ix), int(iy), side_x, side_y)


def _load(models: Sequence[str], device: str) -> dict[str, Any]:
    """Each model loaded once (``None`` for ``bicubic``)."""
    return {m: None if m == "bicubic" else load_model(m, device=device) for m in models}


def _label_font() -> Any:
    try:
        return ImageFont.load_default(size=13)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _panel(image: np.ndarray, size: tuple[int, int], title: str, lines: Sequence[str],
           box: Crop | None = None, scale_to: float = 1.0) -> PILImage.Image:
    """One labelled panel: ``image`` (float [0, 1]) resized (nearest) to ``size``, a crop box in red."""
    rgb = image if image.shape[2] >= 3 else np.repeat(image[:, :, :1], 3, axis=2)
    pil = PILImage.fromarray(to_integer(rgb[:, :, :3], 8)).resize(size, PILImage.NEAREST)
    if box is not None:
        d = ImageDraw.Draw(pil)
        d.rectangle([box.x * scale_to, box.y * scale_to, (box.x + box.w) * scale_to - 1,
                     (box.y + box.h) * scale_to - 1], outline=(255, 40, 40), width=2)
    sheet = PILImage.new("RGB", (size[0], size[1] + _LABEL_H), "white")
    sheet.paste(pil, (0, _LABEL_H))
    d = ImageDraw.Draw(sheet)
    font = _label_font()
    d.text((2, 1), title, fill=(0, 0, 0), font=font)
    for k in range(0, len(lines), 2):  # two figures a row, under the title
        d.text((2, 17 + 16 * (k // 2)), "  ".join(lines[k:k + 2]), fill=(60, 60, 60), font=font)
    return sheet


def _sheet(panels: list[tuple[str, np.ndarray, list[str]]], crop: Crop) -> PILImage.Image:
    """Whole views on the first row, zoomed crops on the second."""
    h, w = panels[-1][1].shape[:2]
    fit = PANEL / max(h, w)
    view = (max(1, round(w * fit)), max(1, round(h * fit)))
    zoom = CROP_PANEL / max(crop.w, crop.h)
    crop_size = (max(1, round(crop.w * zoom)), max(1, round(crop.h * zoom)))
    cols = len(panels)
    width = cols * (max(view[0], crop_size[0]) + _MARGIN) + _MARGIN
    height = 2 * _MARGIN + view[1] + crop_size[1] + 2 * _LABEL_H + _MARGIN
    sheet = PILImage.new("RGB", (width, height), (235, 235, 235))
    x = _MARGIN
    for title, image, lines in panels:
        sheet.paste(_panel(image, view, title, lines, crop, fit), (x, _MARGIN))
        part = image[crop.y:crop.y + crop.h, crop.x:crop.x + crop.w]
        sheet.paste(_panel(part, crop_size, f"{title}, zoomed x{zoom:.1f}", []), (x, 2 * _MARGIN + view[1] + _LABEL_H))
        x += max(view[0], crop_size[0]) + _MARGIN
    return sheet


def compare_images(
    inputs: Sequence[str | Path],
    models: Sequence[str],
    out_dir: Path,
    *,
    lr_from_hr: bool = False,
    hr: str | Path | None = None,
    crop: Crop | None = None,
    crop_side: int = 96,
    perceptual: Any = None,
    device: str = "cpu",
    tile: int = 0,
    say: Callable[[str], None] = print,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Write ``<out_dir>/<stem>_compare.png`` for every image of ``inputs`` and ``metrics.json``.

    ``models``: shipped names, model files or ``bicubic``, all of one scale. ``lr_from_hr``: the
    inputs are HR images (the LR is made here). ``hr``: the HR reference of LR inputs, a file (one
    input) or a folder holding files of the same base names. ``crop``: the zoomed window in output
    pixels (``None``: :func:`auto_crop` with ``crop_side``). ``perceptual``: a metric of
    :func:`superres.perceptual.build_perceptual` (or its name) to report beside PSNR/SSIM.
    ``labels``: a panel title for some of ``models`` (e.g. a short name for a model file; the others
    are titled with their name as given; the report keys stay the names as given).
    Returns the metrics written to ``metrics.json``: per image, per model, the scores.
    """
    if not models:
        raise SuperresError("--models: name at least one model (or bicubic)")
    nets = _load(models, device)
    scales = {m: None if net is None else int(describe(net).scale) for m, net in nets.items()}
    known = {s for s in scales.values() if s is not None}
    if len(known) > 1:
        raise SuperresError("--models: the models upscale by different factors ("
                            + ", ".join(f"{m} x{s}" for m, s in scales.items() if s is not None) + ")")
    if not known:
        raise SuperresError("--models: bicubic alone has no scale; name a model too")
    scale = known.pop()
    if lr_from_hr and hr is not None:
        raise SuperresError("--hr: the inputs are already HR with --lr-from-hr")
    paths = list_images(list(inputs))
    hr_for: Callable[[Path], Path | None] = lambda p: None  # noqa: E731
    if hr is not None:
        hr_path = Path(hr)
        if hr_path.is_dir():
            index = {p.stem: p for p in list_images([hr_path])}

            def hr_for(p: Path) -> Path | None:  # noqa: F811
                found = index.get(p.stem) or index.get(p.stem.removesuffix(f"x{scale}"))
                if found is None:
                    raise SuperresError(f"--hr {hr_path}: no HR image named like {p.name}")
                return found
        elif len(paths) == 1:
            hr_for = lambda p: hr_path  # noqa: E731
        else:
            raise SuperresError(f"--hr {hr_path}: a single file is the reference of a single input; pass a folder")
    metric = None
    if perceptual is not None:
        metric = build_perceptual(perceptual) if isinstance(perceptual, str) else perceptual
    upscalers = {m: make_upscaler(m, scale) if net is None else net_upscaler(net, m, scale, device=device, tile=tile)
                 for m, net in nets.items()}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"scale": scale, "models": list(models), "images": {}}
    for path in paths:
        source = read_array(path)
        bit_depth = 16 if source.dtype == np.uint16 else 8
        reference = None
        if lr_from_hr:
            reference = modcrop(source, scale)
            lr = imresize(reference, 1 / scale)
        else:
            lr = source
            ref_path = hr_for(path)
            if ref_path is not None:
                reference = modcrop(read_array(ref_path), scale)
                if reference.shape[:2] != (lr.shape[0] * scale, lr.shape[1] * scale):
                    raise SuperresError(f"{ref_path}: HR is {reference.shape[1]}x{reference.shape[0]} after mod-crop, "
                                        f"but {path.name} x{scale} is {lr.shape[1] * scale}x{lr.shape[0] * scale}")
        outputs = {m: upscalers[m](lr, bit_depth) for m in models}
        floats = {m: to_float(o) for m, o in outputs.items()}
        h, w = next(iter(floats.values())).shape[:2]
        window = crop if crop is not None else auto_crop(list(floats.values()), crop_side)
        if window.x + window.w > w or window.y + window.h > h:
            raise SuperresError(f"--crop {window.x},{window.y},{window.w},{window.h}: outside the {w}x{h} output of {path.name}")
        lr_view = np.repeat(np.repeat(to_float(lr), scale, axis=0), scale, axis=1)  # nearest: the pixels as given
        panels: list[tuple[str, np.ndarray, list[str]]] = [(f"LR ({lr.shape[1]}x{lr.shape[0]})", lr_view, [])]
        scores: dict[str, dict[str, float]] = {}
        for m in models:
            lines: list[str] = []
            if reference is not None:
                s = score(outputs[m], reference, scale)
                if metric is not None:
                    s[getattr(metric, "metric_name", "perceptual")] = image_distance(
                        metric, outputs[m], reference, shave=scale)
                scores[m] = s
                lines = [f"PSNR-Y {s['psnr_y']:.2f}", f"SSIM {s['ssim_y']:.3f}"]
                lines += [f"{k} {v:.3f}" for k, v in s.items() if k not in ("psnr_y", "ssim_y")]
            panels.append(((labels or {}).get(m, m), floats[m], lines))
        if reference is not None:
            panels.append(("HR", to_float(reference), []))
        sheet = _sheet(panels, window)
        target = out_dir / f"{path.stem}_compare.png"
        with atomic_write(target) as tmp:
            sheet.save(tmp, format="PNG")
        report["images"][path.name] = {"sheet": target.name, "crop": [window.x, window.y, window.w, window.h],
                                       "scores": scores}
        say(f"wrote {target}")
    with atomic_write(out_dir / "metrics.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report
