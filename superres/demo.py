"""``superres demo``: the README's first command, what superres does and what training does, in a
few minutes on a CPU, offline.

It needs neither the internet nor ``../shared``: the photos are the ones bundled in the
scikit-image wheel, the models the ones shipped in ``superres/weights``. Four steps:

1. **data**: training patches from nine sample photos; three other photos held out as a test set,
   with two kinds of input: *clean* (MATLAB-bicubic x4 downscale, the benchmark protocol) and
   *degraded* (:func:`superres.degrade.make_degraded_set`, preset :data:`DEGRADE_PRESET`, seed
   :data:`DEGRADE_SEED`: blur, noise, JPEG, as photos from the wild have).
2. **shipped models** (:func:`shipped_selection`: the default model of ``superres upscale``,
   ``edsr-baseline-x4``, ``enhanced-x4-perceptual`` and every shipped x4 model with ``purpose:
   photo``, whichever of them are installed) against bicubic on both inputs: PSNR-Y (paper
   protocol, 4 pixels shaved; higher is better) and the perceptual distance ``effdist`` (lower is
   better; left out with a note when its backbone package is not installed).
3. **live training**: ``baseline`` and ``enhanced`` trained from scratch by
   :func:`superres.training.train` (the loop of ``superres train``) for ``seconds`` each, one line
   per model and a bar over the time budget; the trainer's own log goes to
   ``runs/<model>/train.log``. Both models learn a correction to a bicubic upscale (``baseline``
   with ``global_skip``), so they start at bicubic quality and colour and improve from there. A
   live run of a minute or two is a sketch of a training, not a finished model: the page shows it
   beside the shipped ``enhanced-x4`` (same architecture, fully trained).
4. **page**: :func:`superres.compare.compare_images` sheets (whole images and zoomed crops where the
   models differ most) and ``index.html`` putting the tables and sheets side by side.

Everything is written under ``out``::

    images/train/*.png            training photos (gray ones stored as RGB)
    patches/hr_lr_images.npz      128x128 HR patches with their 32x32 MATLAB-bicubic LR
    test/HR/*.png                 held-out photos (mod-cropped to a multiple of 4)
    test/LR_bicubic/X4/*.png      clean input
    test/LR_medium/X4/*.png       degraded input
    runs/baseline/, runs/enhanced/   superres.training run folders (model.safetensors, train.log ...)
    sheets/clean/, sheets/degraded/, sheets/live/   <photo>_compare.png (+ compare's metrics.json)
    metrics.json                  every number of the page (:func:`run_demo`)
    index.html                    the page; open it in a browser

With the defaults the whole run is meant to take a few minutes on a 2-core CPU; ``seconds`` is the
knob for slower or faster machines.
"""

from __future__ import annotations

import contextlib
import html
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from superres.compare import compare_images
from superres.config import config_from_dict
from superres.data.patches import make_patch_files
from superres.degrade import make_degraded_set
from superres.errors import SuperresError
from superres.io import Image, atomic_write, list_images, write_image
from superres.modelfile import WEIGHTS_DIR, list_models, load_model, read_metadata
from superres.models import build
from superres.perceptual import build_perceptual
from superres.resize import imresize, modcrop
from superres.speed import choose_default_model
from superres.training import train

__all__ = [
    "run_demo", "shipped_selection", "format_table", "DEFAULT_SECONDS", "TRAIN_PHOTOS", "TEST_PHOTOS",
    "MODELS", "SCALE", "DEGRADE_PRESET", "DEGRADE_SEED", "JARGON", "takeaway",
]

SCALE = 4
#: Training wall time per model (s). Two of these plus ~1-2 minutes of data preparation, scoring
#: of the shipped models and sheets stay within a few minutes on a 2-core CPU.
DEFAULT_SECONDS = 60.0
#: scikit-image sample photos shipped inside its wheel (no download); gray ones are replicated to RGB.
#: Textures (brick, grass, gravel) and man-made edges (rocket, motorcycles) give varied detail.
TRAIN_PHOTOS: tuple[str, ...] = (
    "astronaut", "rocket", "motorcycle_left", "motorcycle_right", "hubble_deep_field",
    "camera", "brick", "grass", "gravel",
)
#: Held out for scoring: two natural photos and a microscopy slide.
TEST_PHOTOS: tuple[str, ...] = ("chelsea", "coffee", "immunohistochemistry")
#: The architectures trained live.
MODELS: tuple[str, ...] = ("baseline", "enhanced")
#: Shipped benchmark models shown besides the default model (when installed).
SHIPPED_BENCHMARK: tuple[str, ...] = ("edsr-baseline-x4", "enhanced-x4-perceptual")
#: The degraded input: :mod:`superres.degrade` preset and seed (fixed, so every run scores the same LR).
DEGRADE_PRESET = "medium"
DEGRADE_SEED = 0
#: Internal words that the demo's output must not show a new user (the trainer's notes use them;
#: they go to ``runs/<model>/train.log``).
JARGON: tuple[str, ...] = ("data path", "DataLoader", "data.workers", "device_resident", "cuda_graph")
HR_PATCH = 128
#: Patch grid step: half a patch, so that ~4x more (overlapping) patches than a non-overlapping grid.
PATCH_STRIDE = 64
#: Marks a folder as written by the demo, so that a second run may replace its own outputs but
#: never deletes anything in a folder the demo did not create.
_MARKER = ".superres-demo"
#: Side of the zoomed crop in the sheets, in HR pixels.
_CROP = 96
_CONDITIONS = {"clean": "LR_bicubic", "degraded": f"LR_{DEGRADE_PRESET}"}


def _say(text: str) -> None:
    print(text, flush=True)


# --------------------------------------------------------------------------- data
def _photo(name: str) -> np.ndarray:
    """A bundled scikit-image photo as ``H x W x 3`` uint8 (gray replicated, alpha dropped)."""
    import skimage.data

    if name == "motorcycle_left" or name == "motorcycle_right":
        left, right, _ = skimage.data.stereo_motorcycle()
        array = left if name == "motorcycle_left" else right
    else:
        try:
            array = getattr(skimage.data, name)()
        except Exception as exc:  # a photo that is not in this scikit-image's wheel (needs a download)
            raise SuperresError(f"scikit-image sample photo {name!r} is not available offline ({exc})") from None
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise SuperresError(f"scikit-image sample photo {name!r} is {array.dtype}, expected uint8")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


def _prepare_folder(out: Path) -> None:
    """Create ``out`` or reuse a previous demo's folder (its runs are replaced); refuse other folders."""
    if out.exists() and not out.is_dir():
        raise SuperresError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / _MARKER).is_file():
        raise SuperresError(f"--out {out}: folder exists and was not written by superres demo; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / _MARKER).write_text("written by superres demo; a new run replaces this folder's contents\n")
    for stale in ("runs", "patches", "images", "test", "sheets"):
        if (out / stale).is_dir():
            shutil.rmtree(out / stale)


def _write_photos(out: Path) -> tuple[list[Path], Path]:
    """Training PNGs in ``images/train``; the benchmark folder ``test``: HR (mod-cropped), clean LR
    (MATLAB bicubic) and degraded LR (:data:`DEGRADE_PRESET`, :data:`DEGRADE_SEED`)."""

    train_dir = out / "images" / "train"
    train_paths = []
    for name in TRAIN_PHOTOS:
        path = train_dir / f"{name}.png"
        write_image(path, Image.from_array(_photo(name)))
        train_paths.append(path)
    bench = out / "test"
    for name in TEST_PHOTOS:
        hr = modcrop(_photo(name), SCALE)
        write_image(bench / "HR" / f"{name}.png", Image.from_array(hr))
        lr = imresize(hr, scale=1.0 / SCALE)  # uint8, rounded per pass as MATLAB does
        write_image(bench / "LR_bicubic" / f"X{SCALE}" / f"{name}.png", Image.from_array(lr))
    make_degraded_set([str(bench / "HR")], str(bench), scale=SCALE, preset=DEGRADE_PRESET, seed=DEGRADE_SEED)
    return train_paths, bench


# --------------------------------------------------------------------------- shipped models
def shipped_selection(entries: list[dict[str, Any]] | None = None) -> list[str]:
    """The shipped x4 models the demo scores, in this order and each once: the default model of
    ``superres upscale`` on this machine's CPU (:func:`superres.speed.choose_default_model`), those
    of :data:`SHIPPED_BENCHMARK` that are installed, then every shipped x4 model with ``purpose:
    photo`` (discovered: they may or may not be installed)."""
    import torch

    if entries is None:
        entries = list_models()
    shipped = [e for e in entries if e.get("shipped") and e.get("scale") == SCALE]
    names = {e["name"] for e in shipped}
    chosen: list[str] = []
    if shipped:
        chosen.append(choose_default_model(torch.device("cpu"), scale=SCALE, entries=entries)[0])
    chosen += [n for n in SHIPPED_BENCHMARK if n in names]
    chosen += [e["name"] for e in shipped if e.get("purpose") == "photo"]
    return list(dict.fromkeys(chosen))


def _perceptual_metric() -> tuple[Any, str | None]:
    """``(effdist metric, None)``, or ``(None, why not)`` when it cannot be built here."""
    try:
        return build_perceptual("effdist"), None
    except (SuperresError, ImportError, OSError) as exc:
        return None, f"effdist left out: {exc}"


# --------------------------------------------------------------------------- training
def _options(model: str) -> dict[str, Any]:
    """``model.options`` of a live model (:func:`_train_config` says why)."""
    return {"global_skip": True} if model == "baseline" else {}


def _train_config(model: str, patch_file: Path, seconds: float) -> Any:
    """The demo's training run: the shipped presets' recipe, shortened to a time budget.

    Differences from ``configs/*_x4.yaml``, each for the short budget: no EMA (a 0.999 average over
    a few hundred steps would still be mostly the initial weights), no validation during training
    (the demo scores once at the end, on the held-out images), batch 4 (four times the steps of 16
    in the same time, which matters more than gradient noise this early), no warm-up, a cosine over
    the time budget. ``baseline`` is built with ``global_skip``: without it the network must learn
    the whole image, colours included, and after a minute its output still has a colour cast of a
    few levels per channel (pink on the test photos) and scores below bicubic; with it, it starts
    at bicubic and learns the detail, as ``enhanced`` does.
    """
    return config_from_dict(
        {
            "name": f"demo_{model}_x{SCALE}",
            "model": {"name": model, "scale": SCALE, "in_channels": 3, "options": _options(model)},
            "data": {"train": [str(patch_file)], "patch_size": HR_PATCH, "batch_size": 4, "augment": True, "val": None},
            "loss": [{"type": "l1", "weight": 1.0}],
            "optim": {"name": "adam", "lr": 1.0e-3},
            "schedule": {"name": "cosine", "warmup": 0, "min_lr": 1.0e-5},
            "train": {
                "iterations": 1_000_000,  # the time budget ends the run; the cosine follows the clock
                "max_seconds": float(seconds),
                "ema": None,
                "seed": 0,
                "device": "auto",
                "val_every": 1_000_000,
                "save_every": 1_000_000,
                "log_every": 10,
            },
        },
        source="superres demo",
    )


def _bar_text(name: str, elapsed: float, budget: float, steps: int, *, final: bool = False, width: int = 30) -> str:
    """One state of a model's training bar: the share of the time budget spent, the steps so far
    and the seconds left (the run stops when its budget is spent, so that is the ETA); ``final``:
    the run's end, ``elapsed`` the training time it recorded."""
    done = min(max(elapsed, 0.0), budget)
    filled = round(width * done / budget)
    end = f"done: {steps} steps in {elapsed:.1f} s" if final else f"{steps} steps, {math.ceil(budget - done):.0f} s left"
    return f"  {name:<9} [{'#' * filled}{'.' * (width - filled)}] {done:5.1f}/{budget:g} s, {end}"


def _train_live(name: str, patch_file: Path, budget: float, run_dir: Path,
                stream: Any) -> tuple[Path, int, float]:
    """Train ``name`` for ``budget`` seconds into ``run_dir``; draw its bar on ``stream`` (redrawn in
    place on a terminal, else a line every ~10% of the budget). The trainer's own messages and bar
    go to ``run_dir/train.log``. Returns the model file, the steps taken and the training time the
    trainer recorded.

    The bar follows the trainer's clock, which starts at its first step (after loading the patches
    and building the model) and stops the run at ``budget``: that start is taken as the end of the
    first step less the duration of the second, so the bar is within about one step of the truth;
    its last line shows the steps and the time the trainer recorded.
    """
    interactive = bool(getattr(stream, "isatty", lambda: False)())
    state: dict[str, Any] = {"steps": 0, "first": None, "start": None, "shown": -math.inf}

    def write(text: str, final: bool = False) -> None:
        if interactive:
            stream.write("\r" + text + ("\n" if final else ""))
        else:
            stream.write(text + "\n")
        stream.flush()

    def on_step(iteration: int, _model: Any) -> None:
        now = time.monotonic()
        state["steps"] = iteration
        if state["first"] is None:
            state["first"] = now
            return
        if state["start"] is None:  # the trainer's clock started one step before the first step ended
            state["start"] = state["first"] - (now - state["first"])
        elapsed = now - state["start"]
        if elapsed - state["shown"] >= (0.5 if interactive else budget / 10):
            state["shown"] = elapsed
            write(_bar_text(name, elapsed, budget, iteration))

    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "train.log", "w", encoding="utf-8") as log, contextlib.redirect_stderr(log):
        model_file = train(_train_config(name, patch_file, budget), run_dir=run_dir, callback=on_step)
    seconds = float(load_model(str(model_file)).superres_meta.get("wall_time_s", budget))
    write(_bar_text(name, seconds, budget, state["steps"], final=True), final=True)
    return model_file, state["steps"], seconds


# --------------------------------------------------------------------------- scoring
def _score(bench: Path, condition: str, models: list[str], out: Path, metric: Any,
           labels: dict[str, str] | None = None) -> dict[str, Any]:
    """Sheets of ``models`` on the ``condition`` input of ``bench`` in ``out`` and the scores of
    each model: mean and per image PSNR-Y, SSIM-Y (and ``effdist``) against the HR, gain over bicubic."""
    inputs = list_images([bench / _CONDITIONS[condition] / f"X{SCALE}"])
    report = compare_images(inputs, models, out, hr=bench / "HR", crop_side=_CROP, perceptual=metric,
                            say=lambda _text: None, labels=labels)
    keys = ["psnr_y", "ssim_y"] + (["effdist"] if metric is not None else [])
    scores: dict[str, Any] = {}
    for m in models:
        images = {Path(n).stem: {k: float(v["scores"][m][k]) for k in keys} for n, v in report["images"].items()}
        scores[m] = {k: float(np.mean([im[k] for im in images.values()])) for k in keys}
        scores[m]["images"] = images
    for m in models:
        scores[m]["gain_db"] = scores[m]["psnr_y"] - scores["bicubic"]["psnr_y"]
    sheets = [str(out / v["sheet"]) for v in report["images"].values()]
    return {"input": _CONDITIONS[condition], "models": scores, "sheets": sheets}


# --------------------------------------------------------------------------- tables and page
def _photo_note(photo: list[str]) -> str:
    if photo:
        return f"{', '.join(photo)}: trained on such degradations (purpose photo); the others on clean input only."
    return ("No model for photos (purpose photo) is installed; the benchmark models were trained on clean "
            "input only and do not undo blur, noise or JPEG, so expect them near bicubic here.")


def _training_record(name: str) -> str:
    """``"trained 9,793 steps in 45 min"`` from a shipped model's metadata ('' when not recorded)."""
    meta = read_metadata(WEIGHTS_DIR / f"{name}.safetensors")
    steps, seconds = meta.get("iterations"), meta.get("wall_time_s")
    if not steps or not seconds:
        return ""
    return f"trained {int(steps):,} steps in {float(seconds) / 60:.0f} min"



def format_table(section: dict[str, Any], labels: dict[str, str] | None = None) -> str:
    """One scored section (:func:`run_demo`'s ``clean``, ``degraded`` or ``live``) as a text table:
    model, PSNR-Y, gain over bicubic, SSIM-Y and effdist when measured."""
    models = section["models"]
    perceptual = all("effdist" in m for m in models.values())
    width = max(len((labels or {}).get(n, n)) for n in models) + 2
    header = f"  {'model':<{width}} {'PSNR-Y dB':>9} {'vs bicubic':>10} {'SSIM-Y':>7}" + (f" {'effdist':>8}" if perceptual else "")
    lines = [header]
    for name, m in models.items():
        gain = "" if name == "bicubic" else f"{m['gain_db']:+.2f}"
        line = f"  {(labels or {}).get(name, name):<{width}} {m['psnr_y']:>9.2f} {gain:>10} {m['ssim_y']:>7.4f}"
        lines.append(line + (f" {m['effdist']:>8.4f}" if perceptual else ""))
    return "\n".join(lines)


def takeaway(section: dict[str, Any], labels: dict[str, str] | None = None) -> str:
    """One sentence on a scored section: the model with the highest PSNR-Y and its gain over bicubic
    (and the one with the lowest effdist, when that is another model)."""
    models = {n: m for n, m in section["models"].items() if n != "bicubic"}
    if not models:
        return "no model to compare with bicubic"
    name = (labels or {}).get
    best = max(models, key=lambda n: models[n]["psnr_y"])
    text = f"highest PSNR-Y: {name(best, best)}, {models[best]['gain_db']:+.2f} dB over bicubic"
    if all("effdist" in m for m in section["models"].values()):
        closest = min(section["models"], key=lambda n: section["models"][n]["effdist"])
        if closest != best:
            text += f"; closest to the original by effdist: {name(closest, closest)}"
    return text


def _html_table(section: dict[str, Any], labels: dict[str, str]) -> str:
    models = section["models"]
    perceptual = all("effdist" in m for m in models.values())
    head = "<tr><th>model</th><th>PSNR-Y (dB)</th><th>vs bicubic</th><th>SSIM-Y</th>" + ("<th>effdist</th>" if perceptual else "") + "</tr>"
    rows = []
    for name, m in models.items():
        gain = "" if name == "bicubic" else f"{m['gain_db']:+.2f}"
        cells = [html.escape(labels.get(name, name)), f"{m['psnr_y']:.2f}", gain, f"{m['ssim_y']:.4f}"]
        if perceptual:
            cells.append(f"{m['effdist']:.4f}")
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


_SECTION_TEXT = {
    "clean": ("Shipped models, clean input",
              "Input: the held-out photo downscaled x4 with MATLAB bicubic (the benchmark protocol)."),
    "degraded": ("Shipped models, degraded input",
                 f"Input: the same photos with blur, noise and JPEG (preset {DEGRADE_PRESET}, seed "
                 f"{DEGRADE_SEED}), as photos from the wild have."),
    "live": ("Trained just now", ""),
}


def _write_page(path: Path, metrics: dict[str, Any], labels: dict[str, str]) -> None:
    """``index.html``: the tables and the sheets (linked as files next to it, relative paths)."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>superres demo</title><style>"
        "body{font-family:sans-serif;margin:2em;max-width:110em}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}td:first-child{text-align:left}"
        "img{max-width:100%;border:1px solid #ddd;margin:.3em 0}</style></head><body>",
        f"<h1>superres demo: x{SCALE} super-resolution on {len(metrics['test_photos'])} held-out photos</h1>",
        "<p>PSNR-Y: luma PSNR against the original photo, 4 border pixels shaved; higher is better. "
        "effdist: perceptual distance (EfficientNet-Lite0 features); lower is better. "
        "Each sheet: whole images on top, below a zoom on the window where the models differ most.</p>",
    ]
    if metrics.get("perceptual_note"):
        parts.append(f"<p><em>{html.escape(metrics['perceptual_note'])}</em></p>")
    for key in ("clean", "degraded", "live"):
        section = metrics[key]
        title, text = _SECTION_TEXT[key]
        if key == "live":
            text = section["note"]
        if key == "degraded":
            text += " " + _photo_note(metrics["shipped_photo"])
        parts.append(f"<h2>{html.escape(title)}</h2><p>{html.escape(text)}</p>{_html_table(section, labels)}"
                     f"<p>{html.escape(takeaway(section, labels))}.</p>")
        for sheet in section["sheets"]:
            rel = Path(sheet).relative_to(path.parent).as_posix()
            parts.append(f"<h3>{html.escape(Path(sheet).stem.removesuffix('_compare'))}</h3>"
                         f"<a href='{rel}'><img src='{rel}' alt='{html.escape(rel)}'></a>")
    parts.append("</body></html>\n")
    with atomic_write(path) as tmp:
        Path(tmp).write_text("\n".join(parts), encoding="utf-8")


# --------------------------------------------------------------------------- the demo
def run_demo(out: Path, *, seconds: float | None = None, stream: Any = None) -> dict[str, Any]:
    """Run the demo into ``out`` and return what it writes to ``out/metrics.json``.

    ``seconds``: the training wall time per live model (default :data:`DEFAULT_SECONDS`).
    ``stream``: where the training bars go (default ``sys.stderr``); the step lines and tables go
    to stdout. A folder a previous demo wrote is reused (its contents are replaced); any other
    non-empty folder is refused.

    ``metrics.json``: ``scale``, ``seconds_per_model``, ``train_photos``, ``test_photos``,
    ``degradation`` (preset, seed), ``perceptual`` (``"effdist"`` or None) and ``perceptual_note``,
    ``shipped`` (the names scored), ``shipped_photo`` (those with purpose photo), ``clean`` and ``degraded`` (bicubic and the shipped models) and
    ``live`` (bicubic, the shipped ``enhanced-x4`` when installed, and the two live models, on the
    clean input), each ``{"input", "models": {name: {psnr_y, ssim_y, [effdist], gain_db, images:
    {photo: {...}}}}, "sheets": [...]}``; ``live`` also has ``runs`` (per model: ``model_file``,
    ``params``, ``steps``, ``train_seconds``) and ``note``; ``labels`` (display name per model key),
    ``page``, ``timings_s``.
    """
    t_start = time.perf_counter()
    budget = DEFAULT_SECONDS if seconds is None else float(seconds)
    if not math.isfinite(budget) or budget <= 0:
        raise SuperresError(f"--seconds {seconds}: must be a positive number of seconds")
    stream = sys.stderr if stream is None else stream
    out = Path(out)
    _prepare_folder(out)
    phases: dict[str, float] = {}

    # 1. data
    t0 = time.perf_counter()
    train_paths, bench = _write_photos(out)
    summary = make_patch_files(train_paths, out / "patches", hr_size=HR_PATCH, scale=SCALE, stride=PATCH_STRIDE)
    phases["data_s"] = round(time.perf_counter() - t0, 2)
    _say(f"[1/4] Photos: {len(train_paths)} for training ({summary['count']} patches), "
         f"{len(TEST_PHOTOS)} held out for testing ({', '.join(TEST_PHOTOS)}), each as a clean and a "
         f"degraded x{SCALE} smaller input ({phases['data_s']:.0f} s)")

    # 2. shipped models against bicubic
    t0 = time.perf_counter()
    shipped = shipped_selection()
    metric, note = _perceptual_metric()
    labels: dict[str, str] = {"bicubic": "bicubic"}
    labels.update({n: f"{n} (shipped)" for n in shipped})
    photo = [e["name"] for e in list_models() if e.get("shipped") and e["name"] in shipped and e.get("purpose") == "photo"]
    _say(f"[2/4] Shipped models against bicubic: {', '.join(shipped) or 'none installed'}")
    if note:
        _say(f"      ({note})")
    sections: dict[str, Any] = {}
    for condition in ("clean", "degraded"):
        sections[condition] = _score(bench, condition, ["bicubic", *shipped], out / "sheets" / condition, metric, labels)
        _say(f"      {condition} input:\n{format_table(sections[condition], labels)}")
        _say(f"      {takeaway(sections[condition], labels)}")
        if condition == "degraded":
            _say(f"      {_photo_note(photo)}")
    phases["shipped_s"] = round(time.perf_counter() - t0, 2)

    # 3. live training, through the same loop as `superres train`
    import torch

    runs: dict[str, Any] = {}
    for k, name in enumerate(MODELS, start=1):
        params = sum(p.numel() for p in build(name, scale=SCALE, **_options(name)).parameters())
        _say(f"[3/4] Training {name} ({params:,} parameters) from scratch for {budget:g} s ({k}/{len(MODELS)})")
        t0 = time.perf_counter()
        model_file, steps, train_seconds = _train_live(name, Path(summary["pair_file"]), budget,
                                                       out / "runs" / name, stream)
        runs[name] = {"model_file": str(model_file), "params": params, "steps": steps, "train_seconds": train_seconds}
        phases[f"train_{name}_s"] = round(time.perf_counter() - t0, 2)
        labels[str(model_file)] = f"{name} (live, {budget:g} s)"
    t0 = time.perf_counter()
    reference = "enhanced-x4" if "enhanced-x4" in {e["name"] for e in list_models() if e.get("shipped")} else None
    live_models = ["bicubic", *[r["model_file"] for r in runs.values()], *([reference] if reference else [])]
    if reference:
        labels.setdefault(reference, f"{reference} (shipped)")
    sections["live"] = _score(bench, "clean", live_models, out / "sheets" / "live", metric, labels)
    sections["live"]["runs"] = runs
    gains = {n: sections["live"]["models"][r["model_file"]]["gain_db"] for n, r in runs.items()}
    sections["live"]["note"] = (
        f"baseline and enhanced trained from scratch on {len(train_paths)} photos for {budget:g} s each "
        f"on this machine (gain over bicubic on the clean input: "
        + ", ".join(f"{n} {g:+.2f} dB" for n, g in gains.items())
        + "). A run this short is a sketch of a training, not a finished model"
        + (f"; {reference} is the enhanced architecture fully trained ({_training_record(reference) or 'shipped'})."
           if reference else ".")
    )
    _say(f"      clean input:\n{format_table(sections['live'], labels)}")
    _say(f"      {sections['live']['note']}")
    phases["live_eval_s"] = round(time.perf_counter() - t0, 2)

    # 4. page
    metrics: dict[str, Any] = {
        "scale": SCALE,
        "seconds_per_model": budget,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "train_photos": list(TRAIN_PHOTOS),
        "test_photos": list(TEST_PHOTOS),
        "degradation": {"preset": DEGRADE_PRESET, "seed": DEGRADE_SEED},
        "perceptual": None if metric is None else "effdist",
        "perceptual_note": note,
        "patches": {"count": summary["count"], "hr_size": HR_PATCH, "stride": summary["stride"]},
        "shipped": shipped,
        "shipped_photo": photo,
        **sections,
        "labels": labels,
        "page": str(out / "index.html"),
        "timings_s": phases,
    }
    _write_page(out / "index.html", metrics, labels)
    phases["total_s"] = round(time.perf_counter() - t_start, 2)
    with atomic_write(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    _say(f"[4/4] Done in {phases['total_s']:.0f} s. Open the comparison page in a browser:\n"
         f"      {(out / 'index.html').resolve()}\n"
         f"      (numbers in {out / 'metrics.json'})")
    return metrics
