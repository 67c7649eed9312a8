"""Write ``notebooks/*.ipynb`` from the cell sources in this file, and run them for the committed outputs.

The notebooks are generated, not edited in Jupyter:

* **Readable sources and diffs.** The cell sources here are plain Python strings; the ``.ipynb``
  files have fixed cell ids and only the ``kernelspec``/``language_info`` metadata and cell tags,
  so a change to a cell shows here as ordinary code.
* **Outputs a reader can see, from one run.** The committed notebooks hold the outputs of one
  top-to-bottom full run (``--execute full``: ``SUPERRES_SMALL=0``), made in a fresh kernel of this
  interpreter, with progress-bar redraws settled and large PNGs given a palette. Rebuilding without
  ``--execute`` keeps the outputs of unchanged cells only, and ``tests/test_notebooks.py`` then asks
  for a new run, so outputs never mix two versions of a notebook.
* **Reproducibility.** The test checks that the committed cells equal the sources here, and
  executes copies built from these sources in SMALL mode.

Usage (from the repository root)::

    python scripts/build_notebooks.py                   # rewrite the sources, keep unchanged cells' outputs
    python scripts/build_notebooks.py --execute full    # run both notebooks (about 70 min on 2 cores) and write them
    python scripts/build_notebooks.py --check           # exit 1 if a committed notebook's cells differ

To change a notebook, edit its cells below, run it with ``--execute full`` and commit. Both notebooks
are independent (each makes the data it needs) and honour ``SUPERRES_SMALL`` (default 1: a quick tour
that CI runs).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import nbformat
from nbformat import NotebookNode

if TYPE_CHECKING:
    from jupyter_client.kernelspec import KernelSpecManager

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO / "notebooks"

#: The only notebook-level metadata kept: enough for Jupyter and nbclient to pick a Python 3 kernel.
METADATA = {
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}

Cell = tuple[str, str, tuple[str, ...]]  # (kind "markdown" | "code", source, tags)


def md(source: str) -> Cell:
    return ("markdown", source.strip("\n"), ())


def code(source: str, *tags: str) -> Cell:
    return ("code", source.strip("\n"), tuple(tags))


# =========================================================================== shared cells
# The parameters and set-up cells are the same in both notebooks (each notebook runs on its own).

PARAMETERS_COMMON = '''
# Parameters (papermill-style cell, tagged "parameters"). Set them through the environment or
# papermill (-p); the defaults give the quick tour that CI runs.
import os

SMALL = os.environ.get("SUPERRES_SMALL", "1") == "1"     # 1: a ~2-minute tour; 0: full data and the configs/ presets
DATA = os.environ.get("SUPERRES_NOTEBOOK_DATA", "auto")  # auto: ../shared/data when present, else scikit-image photos;
                                                         # or force "shared" / "samples"
OUT = os.environ.get("SUPERRES_NOTEBOOK_OUT", "")        # work folder; empty: a new folder in the system temp dir
SCALE = 4                                                # upscaling factor (2, 3 or 4)
SEED = 0
'''

SETUP = '''
import sys
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image as ShowImage, display

import superres
from superres.io import Image, list_images, read_array, write_image


def find_repo_root(start: Path) -> Path:
    """The superres checkout that holds ``start`` (its pyproject.toml next to superres/), searched upwards.

    Jupyter starts kernels in the notebook's folder, nbclient and papermill wherever they are told;
    searching upwards works for all of them. Outside a checkout, the installed package's parent.
    """
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "superres" / "__init__.py").is_file():
            return folder
    return Path(superres.__file__).resolve().parent.parent


REPO = find_repo_root(Path.cwd().resolve())
SHARED = Path(os.environ.get("SUPERRES_SHARED_DATA") or REPO.parent / "shared" / "data")
WORK = Path(OUT) if OUT else Path(tempfile.mkdtemp(prefix="superres-notebook-"))
WORK.mkdir(parents=True, exist_ok=True)

if DATA not in ("auto", "shared", "samples"):
    raise ValueError(f"DATA must be auto, shared or samples, got {DATA!r}")
have_shared = (SHARED / "train").is_dir() and (SHARED / "Set5" / "HR").is_dir()
if DATA == "shared" and not have_shared:
    raise FileNotFoundError(f"DATA='shared' but {SHARED} has no train/ and Set5/HR/")
USE_SHARED = have_shared and DATA != "samples"

# scikit-image ships these colour photos in its wheel: no download needed.
SAMPLE_TRAIN = ("astronaut", "rocket", "immunohistochemistry", "hubble_deep_field")
SAMPLE_VAL = ("chelsea", "coffee")


def write_samples(folder: Path, names: tuple[str, ...]) -> Path:
    """Save scikit-image sample photos as 8-bit PNGs in ``folder`` (kept if already there)."""
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = folder / f"{name}.png"
        if not path.is_file():
            write_image(path, Image.from_array(getattr(skimage.data, name)()))
    return folder


if USE_SHARED:
    train_folders = [SHARED / "train" / name for name in ("T91", "BSD200", "General100")]
    # SMALL: the first two images of each training set; full: the three folders.
    TRAIN = [p for folder in train_folders for p in list_images(folder)[:2]] if SMALL else train_folders
    VAL = SHARED / "Set5"  # HR/ + LR_bicubic/X{2,3,4}/: the paper's validation set
else:
    TRAIN = [write_samples(WORK / "samples" / "train", SAMPLE_TRAIN)]
    VAL = write_samples(WORK / "samples" / "val" / "HR", SAMPLE_VAL).parent  # HR/ only: LR made on the fly
TRAIN_FILES = list_images(TRAIN)

plt.rcParams.update({"figure.dpi": 80, "axes.titlesize": "medium"})
print(f"superres {superres.__version__} from {REPO}")
print(f"mode: {'SMALL' if SMALL else 'full'}; data: {'../shared/data' if USE_SHARED else 'scikit-image samples'}")
print(f"{len(TRAIN_FILES)} training images; validation set {VAL}; work folder {WORK}")
'''


# =========================================================================== 0.0 exploratory
EXPLORATORY: list[Cell] = [
    md('''
# 0.0: Exploring super-resolution data

This notebook looks at the data before any model is trained:

1. HR images and the LR images made from them with MATLAB-exact bicubic (`superres.imresize`);
2. how Pillow's bicubic differs from MATLAB's, and where (the border);
3. image statistics: sizes, aspect ratios, per-channel histograms, mean and standard deviation
   (`superres.data.stats`);
4. what the downscale takes away: gradient magnitude and the radial power spectrum of HR against
   the bicubic upscale of its LR;
5. the training patches, written with `superres data patches` and read back with `load_patches`.

Data: `../shared/data/train` (T91, BSD200, General100) when it sits next to the repository,
otherwise photos bundled with scikit-image, so the notebook runs offline anywhere. With
`SUPERRES_SMALL=1` (the default, and what CI runs) it uses a handful of images and finishes in about
a minute; `SUPERRES_SMALL=0` uses all training images. Files go to a work folder
(`SUPERRES_NOTEBOOK_OUT`, default a new folder in the system temp directory), never into the repository.
'''),
    code(PARAMETERS_COMMON + '''
PATCH = 64 if SMALL else 96              # HR patch side (the configs/ presets train on 96)
MAX_PATCHES = 256 if SMALL else None     # None: every patch of the non-overlapping grid
''', "parameters"),
    code(SETUP),
    md('''
## 1. HR images and their LR versions

The benchmarks' LR images were made in MATLAB: crop the HR image so that its size is a multiple of
the scale (`modcrop`, top-left), then `imresize(hr, 1/scale)` with the bicubic kernel, on `uint8`
data, rounding after each of the two 1-D passes. `superres.imresize` reproduces this bit for bit
(numpy float64 reference; a batched torch version for training), so training LR has exactly the
distribution of test LR. The LR is shown at the size of the HR, with nearest-neighbour pixels.
'''),
    code('''
from superres.resize import imresize, modcrop


def as_rgb(array: np.ndarray) -> np.ndarray:
    """H x W x C uint8 -> something imshow draws as it is (gray stays gray)."""
    return array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 else array


hr_images = {p.stem: modcrop(read_array(p), SCALE) for p in TRAIN_FILES}
lr_images = {name: imresize(hr, 1 / SCALE) for name, hr in hr_images.items()}  # uint8 in, uint8 out

shown = list(hr_images)[:3]
fig, axes = plt.subplots(len(shown), 2, figsize=(9, 3.6 * len(shown)), squeeze=False)
for (ax_hr, ax_lr), name in zip(axes, shown):
    hr, lr = hr_images[name], lr_images[name]
    ax_hr.imshow(as_rgb(hr), cmap="gray")
    ax_hr.set_title(f"{name}: HR {hr.shape[1]}x{hr.shape[0]}")
    ax_lr.imshow(as_rgb(lr), cmap="gray", interpolation="nearest", extent=(0, hr.shape[1], hr.shape[0], 0))
    ax_lr.set_title(f"LR x1/{SCALE}: {lr.shape[1]}x{lr.shape[0]}")
for ax in axes.ravel():
    ax.axis("off")
fig.tight_layout()
'''),
    md('''
## 2. MATLAB bicubic against Pillow bicubic

Both use the cubic kernel with `a = -0.5` and widen it by the scale when downscaling (antialiasing),
so in the interior of the image they differ by at most a grey level or so: both round to `uint8`
after each 1-D pass, but MATLAB resizes vertically first and Pillow horizontally first. The column
"same order" compares Pillow with MATLAB's bicubic run in Pillow's order (`imresize` of the
transposed image, transposed back): in the interior that leaves almost nothing. They differ more
at the **border**: MATLAB pads the image by mirroring it, Pillow drops the kernel taps that fall
outside the image and renormalises the rest. The table measures the difference on every image,
separately for the outermost two LR pixels and for the interior, and the figure shows where it is. The last two columns are the PSNR-Y (paper protocol) of the two bicubic *upscales* of the
same LR against the HR: how much, or how little, the choice of bicubic moves the "bicubic" row of a
results table.
'''),
    code('''
from PIL import Image as PILImage

from superres.metrics import score

BORDER = 2  # LR pixels counted as "border"


def pillow_resize(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pillow's bicubic resize of a uint8 H x W x C array to (width, height)."""
    planes = array[:, :, 0] if array.shape[2] == 1 else array
    out = np.asarray(PILImage.fromarray(planes).resize(size, PILImage.BICUBIC))
    return out.reshape(size[1], size[0], array.shape[2])


def distance_to_border(shape: tuple[int, ...]) -> np.ndarray:
    ys, xs = np.mgrid[: shape[0], : shape[1]]
    return np.minimum.reduce([ys, xs, shape[0] - 1 - ys, shape[1] - 1 - xs])


rows, profiles = [], []
for name, hr in hr_images.items():
    lr_matlab = lr_images[name]
    lr_pil = pillow_resize(hr, (lr_matlab.shape[1], lr_matlab.shape[0]))
    diff = np.abs(lr_pil.astype(np.int16) - lr_matlab.astype(np.int16)).max(axis=2)
    dist = distance_to_border(diff.shape)
    lr_same_order = imresize(hr.transpose(1, 0, 2), 1 / SCALE).transpose(1, 0, 2)  # horizontal pass first
    diff_same_order = np.abs(lr_pil.astype(np.int16) - lr_same_order.astype(np.int16)).max(axis=2)
    profiles.append([diff[dist == d].mean() for d in range(6)])
    up_matlab = imresize(lr_matlab, SCALE)
    up_pil = pillow_resize(lr_matlab, (hr.shape[1], hr.shape[0]))
    rows.append((name, int(diff.max()), diff.mean(), diff[dist < BORDER].mean(), diff[dist >= BORDER].mean(),
                 diff_same_order[dist >= BORDER].mean(), (diff > 0).mean(),
                 score(up_matlab, hr, SCALE)["psnr_y"], score(up_pil, hr, SCALE)["psnr_y"]))

width = max(len("image"), *(len(r[0]) for r in rows)) + 2
print(f"{'image':<{width}}{'max':>5}{'mean':>8}{'border':>8}{'inner':>8}{'same order':>12}{'differ':>8}"
      f"{'PSNR matlab':>13}{'PSNR pillow':>13}")
for name, mx, mean, border, inner, same, frac, p_m, p_p in rows[:12]:  # the summary below covers all
    print(f"{name:<{width}}{mx:>5}{mean:>8.3f}{border:>8.3f}{inner:>8.3f}{same:>12.4f}{frac:>8.1%}{p_m:>13.3f}{p_p:>13.3f}")
if len(rows) > 12:
    print(f"... and {len(rows) - 12} more images")
print(f"(mean |Pillow - MATLAB| in grey levels, largest over the channels; border: the outer {BORDER} LR pixels; "
      "same order: interior, MATLAB's passes swapped; differ: share of pixels not equal)")
border_mean, inner_mean, same_mean = (np.mean([r[k] for r in rows]) for k in (3, 4, 5))
print(f"\\nover all {len(rows)} images: border {border_mean:.3f}, interior {inner_mean:.3f}, interior with the passes "
      f"in the same order {same_mean:.4f} grey levels")
'''),
    code('''
worst = max(rows, key=lambda r: r[1])[0]
hr, lr_matlab = hr_images[worst], lr_images[worst]
lr_pil = pillow_resize(hr, (lr_matlab.shape[1], lr_matlab.shape[0]))
signed = (lr_pil.astype(np.int16) - lr_matlab.astype(np.int16)).mean(axis=2)
limit = max(1.0, np.abs(signed).max())

fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
axes[0].imshow(as_rgb(lr_matlab), cmap="gray", interpolation="nearest")
axes[0].set_title(f"{worst}: LR, MATLAB bicubic")
im = axes[1].imshow(signed, cmap="coolwarm", vmin=-limit, vmax=limit, interpolation="nearest")
axes[1].set_title("Pillow - MATLAB (grey levels, mean over channels)")
fig.colorbar(im, ax=axes[1], fraction=0.046)
for ax in axes[:2]:
    ax.axis("off")
profile = np.mean(profiles, axis=0)
axes[2].bar(range(len(profile)), profile, color="tab:purple")
axes[2].set(xlabel="distance to the image border (LR pixels)", ylabel="mean |Pillow - MATLAB| (grey levels)",
            title=f"where they differ (mean over {len(profiles)} images)")
fig.tight_layout()
'''),
    md('''
## 3. Image statistics

`superres.data.stats.compute_stats` reads every image once and returns exact per-channel means,
standard deviations and histograms (the same numbers as `superres data stats`). `plot_stats` draws
the histograms and the size scatter; below it, the distribution of aspect ratios and the channel
means with their standard deviations.
'''),
    code('''
from superres.data.stats import compute_stats, format_stats, plot_stats

stats = compute_stats(TRAIN)
print(format_stats(stats))
plot_stats(stats, WORK / "stats.png")
display(ShowImage(filename=str(WORK / "stats.png")))
'''),
    code('''
sizes = np.asarray(stats["sizes"], dtype=float)  # [width, height] per file
aspect = sizes[:, 0] / sizes[:, 1]
fig, (ax_aspect, ax_mean) = plt.subplots(1, 2, figsize=(12, 3.8))
ax_aspect.hist(aspect, bins=min(30, max(5, len(aspect) // 3)), color="tab:gray")
ax_aspect.axvline(1.0, ls="--", color="k", lw=1)
ax_aspect.set(xlabel="aspect ratio (width / height)", ylabel="images",
              title=f"{int((aspect > 1).sum())} landscape, {int((aspect < 1).sum())} portrait, {int((aspect == 1).sum())} square")

for key, group in stats["per_channel"].items():
    names = ["gray"] if key == "1" else ["R", "G", "B"] if key == "3" else [f"band {i}" for i in range(int(key))]
    ax_mean.errorbar(names, group["mean"], yerr=group["std"], fmt="o", capsize=6, label=f"{key}-channel images")
ax_mean.set(ylim=(0, 1), ylabel="value in [0, 1]", title="per-channel mean +- std")
ax_mean.legend()
fig.tight_layout()
'''),
    md('''
## 4. What the downscale removes

A model has to restore what the LR no longer holds. Two views of it on the luma (Y of BT.601, the
channel the paper protocol scores): the **gradient magnitude** of the HR against that of the bicubic
upscale of its LR (`imresize(lr, scale)`, i.e. the "bicubic" baseline), and the **radial power
spectrum** (Hann-windowed, averaged over rings of equal spatial frequency, then over images). Above
the LR's Nyquist frequency, `0.5 / scale` cycles per pixel, the LR cannot represent anything;
bicubic leaves there only the weak images of lower frequencies that its kernel lets through.
'''),
    code('''
from superres.metrics import to_y


def luma(array: np.ndarray) -> np.ndarray:
    """Y (BT.601, 16..235) of a uint8 RGB image; gray images are their own intensity."""
    x = array.astype(np.float64) / 255.0
    return to_y(x) if x.shape[2] == 3 else 255.0 * x[:, :, 0]


def gradient_magnitude(y: np.ndarray) -> np.ndarray:
    gy, gx = np.gradient(y)
    return np.hypot(gx, gy)


bicubic_images = {name: imresize(lr, SCALE) for name, lr in lr_images.items()}
grad_hr = {name: gradient_magnitude(luma(hr)) for name, hr in hr_images.items()}
grad_bic = {name: gradient_magnitude(luma(bicubic_images[name])) for name in hr_images}
ratios = [grad_bic[n].mean() / grad_hr[n].mean() for n in hr_images]
print(f"mean gradient magnitude, bicubic / HR: {np.mean(ratios):.3f} on average "
      f"(from {min(ratios):.3f} to {max(ratios):.3f} over {len(ratios)} images)")

# The image with the most detail, and its busiest square (largest mean HR gradient in the window).
detailed = max(hr_images, key=lambda n: grad_hr[n].mean())
g = grad_hr[detailed]
side = min(g.shape) // 3
integral = np.pad(g.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
window_sums = integral[side:, side:] - integral[:-side, side:] - integral[side:, :-side] + integral[:-side, :-side]
top, left = np.unravel_index(np.argmax(window_sums), window_sums.shape)
crop = (slice(top, top + side), slice(left, left + side))

fig, axes = plt.subplots(2, 2, figsize=(9, 9))
vmax = np.percentile(g[crop], 99)
axes[0, 0].imshow(as_rgb(hr_images[detailed])[crop], cmap="gray")
axes[0, 0].set_title(f"{detailed}: HR (crop)")
axes[0, 1].imshow(as_rgb(bicubic_images[detailed])[crop], cmap="gray")
axes[0, 1].set_title(f"bicubic upscale of the x1/{SCALE} LR")
axes[1, 0].imshow(g[crop], cmap="magma", vmin=0, vmax=vmax)
axes[1, 0].set_title(f"|gradient| of HR Y (mean {g[crop].mean():.1f})")
axes[1, 1].imshow(grad_bic[detailed][crop], cmap="magma", vmin=0, vmax=vmax)
axes[1, 1].set_title(f"|gradient| of bicubic Y (mean {grad_bic[detailed][crop].mean():.1f})")
for ax in axes.ravel():
    ax.axis("off")
fig.tight_layout()
'''),
    code('''
EDGES = np.linspace(0.0, 0.5 * np.sqrt(2.0), 72)  # radial frequency bins, cycles per pixel
NYQUIST_LR = 0.5 / SCALE


def power_spectrum(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Power |FFT|^2 of the Hann-windowed, mean-removed image, and the radial frequency of each bin."""
    h, w = y.shape
    window = np.outer(np.hanning(h), np.hanning(w))
    power = np.abs(np.fft.fft2((y - y.mean()) * window)) ** 2 / (window**2).sum()
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij"))
    return power, radius


def radial_mean(power: np.ndarray, radius: np.ndarray) -> np.ndarray:
    index = np.clip(np.digitize(radius, EDGES) - 1, 0, len(EDGES) - 2)
    total = np.bincount(index.ravel(), weights=power.ravel(), minlength=len(EDGES) - 1)
    count = np.bincount(index.ravel(), minlength=len(EDGES) - 1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


spectra = {"HR": [], "bicubic": []}
high_share = {"HR": [], "bicubic": []}
for name, hr in hr_images.items():
    for label, image in (("HR", hr), ("bicubic", bicubic_images[name])):
        power, radius = power_spectrum(luma(image))
        spectra[label].append(radial_mean(power, radius))
        high_share[label].append(power[radius > NYQUIST_LR].sum() / power.sum())

centres = 0.5 * (EDGES[1:] + EDGES[:-1])
mean_hr = np.nanmean(spectra["HR"], axis=0)
mean_bic = np.nanmean(spectra["bicubic"], axis=0)
fig, (ax_psd, ax_ratio) = plt.subplots(1, 2, figsize=(13, 4.2))
ax_psd.semilogy(centres, mean_hr, label="HR")
ax_psd.semilogy(centres, mean_bic, label=f"bicubic upscale of x1/{SCALE} LR")
ax_psd.set(xlabel="spatial frequency (cycles / pixel)", ylabel="mean power", title="radial power spectrum of Y")
ax_ratio.plot(centres, mean_bic / mean_hr, color="tab:green")
ax_ratio.set(xlabel="spatial frequency (cycles / pixel)", ylabel="bicubic / HR",
             title="share of the power that survives", ylim=(0, 1.2))
for ax in (ax_psd, ax_ratio):
    ax.axvline(NYQUIST_LR, ls="--", color="k", lw=1, label=f"LR Nyquist {NYQUIST_LR:.3f}")
    ax.grid(True, alpha=0.3)
    ax.legend()
fig.tight_layout()
print(f"share of the Y power above the LR Nyquist frequency: HR {np.mean(high_share['HR']):.2%}, "
      f"bicubic {np.mean(high_share['bicubic']):.2%}")
'''),
    md('''
## 5. Training patches

`superres data patches` cuts HR patches on a regular grid (top-left origin, full patches only),
makes each LR patch with MATLAB bicubic from the HR patch alone, and writes two uncompressed NumPy
archives: `hr_images.npz` (`hr`: N x H x H x C) and `hr_lr_images.npz` (`hr` and `lr`).
`--max-patches` picks a random subset (seeded) and reduces the stride when the grid is too sparse.
The command runs here exactly as in a shell, through the current interpreter.
'''),
    code('''
import subprocess

PATCHES = WORK / "patches"
command = [sys.executable, "-m", "superres", "data", "patches", *map(str, TRAIN), "--out", str(PATCHES),
           "--hr-size", str(PATCH), "--scale", str(SCALE), "--seed", str(SEED)]
if MAX_PATCHES:
    command += ["--max-patches", str(MAX_PATCHES)]
print("$ superres", " ".join(command[3:]))
result = subprocess.run(command, capture_output=True, text=True)
print(result.stdout + result.stderr)
result.check_returncode()
'''),
    code('''
from superres.data import load_patches

hr_only, none = load_patches(PATCHES / "hr_images.npz")
hr_patches, lr_patches = load_patches(PATCHES / "hr_lr_images.npz")
print(f"hr_images.npz:    hr {hr_only.shape} {hr_only.dtype}, lr {none}")
print(f"hr_lr_images.npz: hr {hr_patches.shape} {hr_patches.dtype}, lr {lr_patches.shape} {lr_patches.dtype}")
assert np.array_equal(hr_only, hr_patches)
# Each LR patch is the MATLAB bicubic downscale of its own HR patch:
assert all(np.array_equal(lr_patches[i], imresize(hr_patches[i], 1 / SCALE)) for i in range(min(8, len(hr_patches))))

picked = np.sort(np.random.default_rng(SEED).choice(len(hr_patches), size=min(8, len(hr_patches)), replace=False))
fig, axes = plt.subplots(2, len(picked), figsize=(1.8 * len(picked), 4), squeeze=False)
for column, index in enumerate(picked):
    axes[0, column].imshow(as_rgb(hr_patches[index]), cmap="gray")
    axes[0, column].set_title(f"#{index}", fontsize="small")
    axes[1, column].imshow(as_rgb(lr_patches[index]), cmap="gray", interpolation="nearest")
for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
axes[0, 0].set_ylabel(f"HR {PATCH}x{PATCH}")
axes[1, 0].set_ylabel(f"LR {PATCH // SCALE}x{PATCH // SCALE}")
fig.tight_layout()
'''),
    md('''
## Next

`0.1-modeling-and-training.ipynb` trains the `baseline` and `enhanced` models on such a patch file
(it makes its own if this notebook has not run with the same `SUPERRES_NOTEBOOK_OUT`). For the real
thing from a shell:

```bash
superres data patches ../shared/data/train/T91 ../shared/data/train/BSD200 ../shared/data/train/General100 \\
    --out data/x4 --hr-size 96 --scale 4
superres data stats ../shared/data/train --plot train-stats.png
```
'''),
]


# =========================================================================== 0.1 modelling
MODELLING: list[Cell] = [
    md('''
# 0.1: Models and training

1. the three datasets: `PatchDataset` (the `.npz` patches of notebook 0.0), `HRFolderDataset`
   (random crops of image folders, LR on the fly) and `PairedFolderDataset` (a benchmark folder);
2. the `baseline` and `enhanced` architectures: structure, parameters and FLOPs;
3. training both with the package's trainer (`superres.training.train`, the loop behind
   `superres train`) from the presets in `configs/`;
4. validation during training (PSNR-Y and SSIM-Y against bicubic, from each run's `metrics.csv`)
   and the training curves;
5. visual comparison LR | bicubic | baseline | enhanced | HR, zoomed crops and error maps;
6. the shipped models (`superres models`) scored beside the live runs, and what this run showed;
7. where to go next: a model from the zoo.

With `SUPERRES_SMALL=1` (the default, and what CI runs) the models are narrower than the presets
and train for a few tens of seconds each, so the scores say little about the architectures: the
point is the workflow. `SUPERRES_SMALL=0` trains the presets unchanged (30 minutes per model on a CPU).
'''),
    code(PARAMETERS_COMMON + '''
PATCH = 64 if SMALL else 96              # HR patch side (the configs/ presets train on 96)
MAX_PATCHES = 256 if SMALL else None     # patches in the SMALL patch file
SECONDS = 25.0 if SMALL else None        # training wall time per model; None: the preset's budget
ZOO_SECONDS = 10.0 if SMALL else 300.0   # training wall time of the zoo model in the last section
THREADS = 1 if SMALL else 0              # torch intra-op threads; 0: torch's default (one per core)
''', "parameters"),
    code(SETUP),
    md('''
## 1. Datasets

All three keep images as integers in memory and hand out `float32` `C x H x W` tensors in `[0, 1]`.
The patch file is the one notebook 0.0 wrote into the same work folder; when it is missing (or was
made for another patch size or scale) it is made again here with `make_patch_files`, the function
behind `superres data patches`.

SMALL mode runs torch on one thread (`THREADS`): the tensors of the small models are so small that
splitting each operation over threads costs more than it saves, and on a busy machine a thread that
waits for a core stalls every operation (measured here: tens of times slower with two threads on
two loaded cores).
'''),
    code('''
import torch
from torch.utils.data import DataLoader

if THREADS:
    torch.set_num_threads(THREADS)

from superres.data import HRFolderDataset, PairedFolderDataset, PatchDataset, load_patches, make_patch_files

PATCH_FILE = WORK / "patches" / "hr_lr_images.npz"


def patch_file_fits(path: Path) -> bool:
    if not path.is_file():
        return False
    hr, lr = load_patches(path)
    return lr is not None and hr.shape[1] == PATCH and hr.shape[1] == SCALE * lr.shape[1]


if patch_file_fits(PATCH_FILE):
    print(f"using {PATCH_FILE} from notebook 0.0")
else:
    summary = make_patch_files(TRAIN, PATCH_FILE.parent, hr_size=PATCH, scale=SCALE, max_patches=MAX_PATCHES, seed=SEED)
    print(f"made {summary['count']} patch pairs from {summary['images']} images (stride {summary['stride']})")


def show_pairs(lr: torch.Tensor, hr: torch.Tensor, title: str, count: int = 8) -> None:
    """LR (top, nearest-neighbour) and HR (bottom) of the first ``count`` items of a batch."""
    count = min(count, len(hr))
    fig, axes = plt.subplots(2, count, figsize=(1.7 * count, 3.8), squeeze=False)
    for i in range(count):
        for row, batch in enumerate((lr, hr)):
            image = batch[i].permute(1, 2, 0).clamp(0, 1).numpy()
            axes[row, i].imshow(image[:, :, 0] if image.shape[2] == 1 else image, cmap="gray", interpolation="nearest")
            axes[row, i].set_xticks([])
            axes[row, i].set_yticks([])
    axes[0, 0].set_ylabel(f"LR {tuple(lr.shape[-2:])}")
    axes[1, 0].set_ylabel(f"HR {tuple(hr.shape[-2:])}")
    fig.suptitle(title)
    fig.tight_layout()


patches = PatchDataset(PATCH_FILE, augment=True, seed=SEED)
lr, hr = next(iter(DataLoader(patches, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(SEED))))
print(f"PatchDataset: {len(patches)} pairs, scale {patches.scale}, batch lr {tuple(lr.shape)} hr {tuple(hr.shape)}")
show_pairs(lr, hr, f"PatchDataset ({PATCH_FILE.name}), random flips/rotations")
'''),
    code('''
crops = HRFolderDataset(TRAIN, patch_size=PATCH, scale=SCALE, augment=True, seed=SEED)
lr, hr = next(iter(DataLoader(crops, batch_size=8)))
# The LR of every crop is the MATLAB bicubic of that (augmented) crop, on uint8 as the benchmark files:
from superres.resize import imresize

lr_u8 = np.round(lr.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
hr_u8 = np.round(hr.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
assert all(np.array_equal(lr_u8[i], imresize(hr_u8[i], 1 / SCALE)) for i in range(len(hr)))
print(f"HRFolderDataset: {len(crops.paths)} images, {len(crops)} crops per epoch, {crops.channels} channels, "
      f"{crops.bit_depth}-bit, {len(crops.skipped)} skipped (smaller than {PATCH} px)")
show_pairs(lr, hr, "HRFolderDataset: random crops, LR made on the fly")
'''),
    code('''
val_set = PairedFolderDataset(VAL, SCALE)
source = "LR_bicubic files" if val_set.lr_dir is not None else "LR made with MATLAB bicubic (no LR_bicubic folder)"
print(f"PairedFolderDataset {VAL}: {len(val_set)} images at x{SCALE}, {source}")
for item in val_set.items:
    print(f"  {item['name']:<12} HR {item['hr'].shape[1]}x{item['hr'].shape[0]}  LR {item['lr'].shape[1]}x{item['lr'].shape[0]}")
'''),
    md('''
## 2. The two architectures

* `baseline`: conv head, residual blocks, a pixel-shuffle upsampler and a conv tail. It produces the
  whole HR image itself, and the stages after the first upsampling run at 2x and 4x resolution.
* `enhanced`: all heavy convolutions at LR, one projection to `C x scale^2` channels and a pixel
  shuffle, **added to a bicubic upscale of the input** (global residual): it only has to learn the
  detail bicubic misses, and it starts out as good as bicubic.

The configurations come from `configs/baseline_x4.yaml` and `configs/enhanced_x4.yaml`. In SMALL
mode the widths and depths are reduced so that a few tens of seconds of CPU training do something;
the table lists both. FLOPs are for one 32x32 LR input (`count_flops`, 2 FLOPs per multiply-add).
'''),
    code('''
from superres.config import config_from_dict, config_to_dict, load_config, resolve_paths
from superres.models import build
from superres.models.complexity import count_flops, count_parameters


def preset(file: str, changes: dict) -> "superres.config.Config":
    """A configs/ preset with dotted-key ``changes``, relative paths resolved from the repository root."""
    raw = config_to_dict(load_config(REPO / "configs" / file))
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = raw
        for part in parents:
            node = node[part]
        node[last] = value
    return resolve_paths(config_from_dict(raw, source=f"configs/{file} + notebook changes"), base=REPO)


SMALL_OPTIONS = {"baseline": {"channels": 32, "num_blocks": 2}, "enhanced": {"channels": 32, "num_blocks": 4}}
PRESETS = {"baseline": "baseline_x4.yaml", "enhanced": "enhanced_x4.yaml"}

models = {}
print(f"{'model':<10}{'configuration':<40}{'parameters':>12}{'GFLOPs (32x32 LR)':>20}")
for name, file in PRESETS.items():
    full = preset(file, {"model.scale": SCALE}).model
    used = dict(full.options, **SMALL_OPTIONS[name]) if SMALL else full.options
    for label, options in (("preset", full.options), ("used here", used)):
        model = build(name, scale=SCALE, in_channels=full.in_channels, **options)
        flops = count_flops(model, (1, full.in_channels, 32, 32))
        print(f"{name:<10}{label + ' ' + str(options):<40}{count_parameters(model):>12,}{flops / 1e9:>20.3f}")
    models[name] = model  # the configuration used here (the last one built)
'''),
    code('''
print(models["enhanced"])
'''),
    code('''
print(models["baseline"])
'''),
    md('''
## 3. Training

Both models are trained by `superres.training.train(config, run_dir=...)`, the same loop as
`superres train --config ...`: Adam, warm-up + cosine schedule, EMA of the weights, validation on
the benchmark folder under the paper protocol (PSNR-Y/SSIM-Y, `scale` pixels shaved) next to
bicubic, `metrics.csv`, `curves.png`, checkpoints, and the exported `model.safetensors`.
`train.max_seconds` stops a run after that much wall time; the cosine schedule then follows the
clock, so a short run still ends at the minimum learning rate.

**Loss.** `baseline` trains with L1. `enhanced` trains with L1 plus a small perceptual term
(`configs/enhanced_x4_perceptual.yaml`: VGG19 `conv5_4` features) **when the VGG19 ImageNet weights
are available**: torchvision's `vgg19-dcbb9e9d.pth` (548 MB) in the torch hub cache, or a file named
by `SUPERRES_VGG19_WEIGHTS`. The package never bundles them and an offline machine cannot download
them, so without the file `enhanced` trains with L1 only (the `configs/enhanced_x4.yaml` preset), as
the next cell says. A perceptual term trades PSNR for sharper texture: judge it by eye, not by PSNR.
'''),
    code('''
from superres.losses import VGG19_FILENAME
from superres.training import train

vgg_file = Path(os.environ.get("SUPERRES_VGG19_WEIGHTS") or Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILENAME)
HAVE_VGG = vgg_file.is_file()
if HAVE_VGG:
    print(f"VGG19 weights found at {vgg_file}: enhanced trains with L1 + perceptual (conv5_4).")
else:
    print(f"No VGG19 weights at {vgg_file} (offline, nothing to download them from): the perceptual loss "
          "cannot be built, so enhanced trains with L1 only. Put vgg19-dcbb9e9d.pth there or set "
          "SUPERRES_VGG19_WEIGHTS to use configs/enhanced_x4_perceptual.yaml.")

# The data this notebook chose (the presets name ../shared/data relative to the repository root).
common = {"model.scale": SCALE, "train.seed": SEED, "data.train": [str(p) for p in TRAIN], "data.val": str(VAL)}
if SECONDS is not None:
    common["train.max_seconds"] = SECONDS
if SMALL:
    common.update({
        "data.train": [str(PATCH_FILE)], "data.patch_size": PATCH, "data.batch_size": 8,
        "train.iterations": 100_000,  # the time budget ends the run
        "train.val_every": 60, "train.log_every": 10, "train.save_every": 100_000, "schedule.warmup": 20,
    })

runs = {}
stamp = time.strftime("%Y%m%d-%H%M%S")
for name in ("baseline", "enhanced"):
    file = "enhanced_x4_perceptual.yaml" if name == "enhanced" and HAVE_VGG else PRESETS[name]
    changes = dict(common)
    if SMALL:
        changes["model.options"] = dict(preset(file, {}).model.options, **SMALL_OPTIONS[name])
    if file.endswith("perceptual.yaml"):  # the preset's loss terms, pointed at the weights file found above
        changes["loss"] = [dict(term, weights_path=str(vgg_file)) if term["type"] == "perceptual" else term
                           for term in preset(file, {}).loss]
    config = preset(file, changes)
    run_dir = WORK / "runs" / f"{name}-{stamp}"
    print(f"\\n=== {name}: {file}, loss {[t['type'] for t in config.loss]}, options {config.model.options} -> {run_dir}")
    started = time.monotonic()
    runs[name] = train(config, run_dir=run_dir)
    print(f"{name}: {time.monotonic() - started:.0f} s, model file {runs[name]}")
'''),
    md('''
## 4. Validation during training

Each run's `metrics.csv` has a row every `log_every` iterations (loss, learning rate) and, every
`val_every` iterations and at the end, the validation PSNR-Y/SSIM-Y of the (EMA) model and of
bicubic. Below they are read back with `superres.training.logging.read_metrics` and drawn against
the iteration; then each run's own `curves.png`.
'''),
    code('''
from superres.training.logging import read_metrics

metrics = {name: read_metrics(path.parent / "metrics.csv") for name, path in runs.items()}
fig, (ax_loss, ax_psnr, ax_ssim) = plt.subplots(1, 3, figsize=(16, 4.2))
for (name, rows), colour in zip(metrics.items(), ("tab:orange", "tab:blue")):
    its = sorted(rows)
    loss = [(i, rows[i]["loss"]) for i in its if "loss" in rows[i]]
    val = [(i, rows[i]["val_psnr_y"], rows[i]["val_ssim_y"]) for i in its if "val_psnr_y" in rows[i]]
    ax_loss.plot(*zip(*loss), color=colour, label=name)
    ax_psnr.plot([v[0] for v in val], [v[1] for v in val], "o-", ms=3, color=colour, label=name)
    ax_ssim.plot([v[0] for v in val], [v[2] for v in val], "o-", ms=3, color=colour, label=name)
bicubic_row = next(r for r in metrics["enhanced"].values() if "bicubic_psnr_y" in r)
ax_psnr.axhline(bicubic_row["bicubic_psnr_y"], ls="--", color="gray", label="bicubic")
ax_ssim.axhline(bicubic_row["bicubic_ssim_y"], ls="--", color="gray", label="bicubic")
ax_loss.set(xlabel="iteration", ylabel="training loss", title="loss", yscale="log")
ax_psnr.set(xlabel="iteration", ylabel="dB", title=f"validation PSNR-Y ({Path(VAL).name}, x{SCALE})")
ax_ssim.set(xlabel="iteration", ylabel="SSIM", title="validation SSIM-Y")
for ax in (ax_loss, ax_psnr, ax_ssim):
    ax.grid(True, alpha=0.3)
    ax.legend()
fig.tight_layout()

print(f"{'model':<10}{'iterations':>11}{'seconds':>9}{'PSNR-Y':>9}{'SSIM-Y':>9}{'vs bicubic':>12}")
for name, rows in metrics.items():
    last = rows[max(i for i in rows if "val_psnr_y" in rows[i])]
    print(f"{name:<10}{int(last['iteration']):>11}{last['elapsed_s']:>9.0f}{last['val_psnr_y']:>9.2f}"
          f"{last['val_ssim_y']:>9.4f}{last['val_psnr_y'] - last['bicubic_psnr_y']:>+11.2f}")
print(f"{'bicubic':<10}{'':>20}{bicubic_row['bicubic_psnr_y']:>9.2f}{bicubic_row['bicubic_ssim_y']:>9.4f}")
'''),
    code('''
for name, path in runs.items():
    print(name)
    display(ShowImage(filename=str(path.parent / "curves.png")))
'''),
    md('''
## 5. What the models do to an image

The validation image with the most detail (largest mean gradient of its HR luma), upscaled by each
model with `superres.upscale` (`superres.load_model` reads the exported file back) and quantised to
8 bits as a saved file would be. Top: whole images; middle: the busiest square, enlarged; bottom:
the absolute error of the luma against the HR on one colour scale. Scores are PSNR-Y/SSIM-Y under
the paper protocol (`superres.metrics.score`).
'''),
    code('''
from superres.inference import upscale
from superres.metrics import score, to_y
from superres.modelfile import load_model


def luma(array: np.ndarray) -> np.ndarray:
    x = array.astype(np.float64) / 255.0
    return to_y(x) if x.shape[2] == 3 else 255.0 * x[:, :, 0]


def mean_gradient(array: np.ndarray) -> float:
    gy, gx = np.gradient(luma(array))
    return float(np.hypot(gx, gy).mean())


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


item = max(val_set.items, key=lambda it: mean_gradient(it["hr"]))
lr_u8, hr_u8 = item["lr"], item["hr"]
outputs = {"LR": lr_u8, "bicubic": imresize(lr_u8, SCALE)}
for name, path in runs.items():
    outputs[name] = to_uint8(upscale(load_model(path), lr_u8.astype(np.float32) / 255.0, tile=0))
outputs["HR"] = hr_u8

# The busiest square of the HR (largest summed gradient), a quarter of the shorter side.
gy, gx = np.gradient(luma(hr_u8))
g = np.hypot(gx, gy)
side = max(16, min(g.shape) // 4)
integral = np.pad(g.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
sums = integral[side:, side:] - integral[:-side, side:] - integral[side:, :-side] + integral[:-side, :-side]
top, left = np.unravel_index(np.argmax(sums), sums.shape)

errors = {k: np.abs(luma(v) - luma(hr_u8)) for k, v in outputs.items() if k not in ("LR", "HR")}
emax = max(np.percentile(e, 99.5) for e in errors.values())
fig, axes = plt.subplots(3, len(outputs), figsize=(3.3 * len(outputs), 10.5), squeeze=False)
for column, (label, image) in enumerate(outputs.items()):
    shown = image[:, :, 0] if image.shape[2] == 1 else image
    factor = 1 if label != "LR" else SCALE
    h, w = hr_u8.shape[:2]
    axes[0, column].imshow(shown, cmap="gray", interpolation="nearest", extent=(0, w, h, 0))
    axes[0, column].add_patch(plt.Rectangle((left, top), side, side, fill=False, color="yellow", lw=1.5))
    t, l, s = top // factor, left // factor, max(1, side // factor)
    axes[1, column].imshow(shown[t:t + s, l:l + s], cmap="gray", interpolation="nearest")
    title = label
    if label in errors:
        scores = score(image, hr_u8, SCALE)
        title += f"\\n{scores['psnr_y']:.2f} dB / {scores['ssim_y']:.4f}"
        axes[2, column].imshow(errors[label], cmap="inferno", vmin=0, vmax=emax)
        axes[2, column].set_title(f"|Y error|, mean {errors[label].mean():.2f}", fontsize="small")
    axes[0, column].set_title(title)
for ax in axes.ravel():
    ax.axis("off")
fig.suptitle(f"{item['name']} (x{SCALE}); error maps on one scale, 0 to {emax:.0f} grey levels")
fig.tight_layout()
'''),
    md('''
## 6. The shipped models beside the live runs

The package ships trained weights (`superres models` lists them; `superres.load_model(NAME)` loads
one). `baseline-x4` and `enhanced-x4` are the same two presets trained for their 30 minutes on one
CPU thread (docs/BENCHMARKS.md), so in the full mode of this notebook the live runs above should
land close to them; `enhanced-x4-perceptual` adds the EfficientNet-Lite0 perceptual term (sharper
texture, a little lower PSNR) and `edsr-baseline-x4` is EDSR's small model, trained longer. All are
scored here on the validation set (and, in full mode with the shared data, on Set14 too) by the same
code: `superres.upscale`, 8-bit output, PSNR-Y/SSIM-Y with `scale` pixels shaved. The last cell
writes its conclusion from these figures, so the text and the table cannot disagree.
'''),
    code('''
from IPython.display import Markdown

SHIPPED = ("baseline-x4", "enhanced-x4", "enhanced-x4-perceptual", "edsr-baseline-x4") if SCALE == 4 else ()
score_sets = {Path(VAL).name: val_set}
if USE_SHARED and not SMALL:
    score_sets["Set14"] = PairedFolderDataset(SHARED / "Set14", SCALE)


def mean_scores(run) -> dict[str, tuple[float, float]]:
    """Mean PSNR-Y and SSIM-Y of ``run`` (a function LR uint8 -> SR uint8) on each scoring set."""
    result = {}
    for set_name, dataset in score_sets.items():
        rows = [score(run(it["lr"]), it["hr"], SCALE) for it in dataset.items]
        result[set_name] = (float(np.mean([r["psnr_y"] for r in rows])), float(np.mean([r["ssim_y"] for r in rows])))
    return result


def with_model(model):
    return lambda lr: to_uint8(upscale(model, lr.astype(np.float32) / 255.0, tile=0))


table = {"bicubic": mean_scores(lambda lr: imresize(lr, SCALE))}
for name, path in runs.items():
    table[f"{name} (this run)"] = mean_scores(with_model(load_model(path)))
for name in SHIPPED:
    table[f"{name} (shipped)"] = mean_scores(with_model(load_model(name)))

header = "".join(f"{set_name + ' PSNR-Y':>16}{'SSIM-Y':>8}" for set_name in score_sets)
print(f"{'model':<32}{header}")
for label, scores_by_set in table.items():
    print(f"{label:<32}" + "".join(f"{p:>16.2f}{s:>8.4f}" for p, s in scores_by_set.values()))
'''),
    code('''
first = next(iter(score_sets))
psnr = {label: scores_by_set[first][0] for label, scores_by_set in table.items()}
live_e, live_b, bic = psnr["enhanced (this run)"], psnr["baseline (this run)"], psnr["bicubic"]
lines = [
    f"**What this run showed** ({'SMALL' if SMALL else 'full'} mode, {first} x{SCALE}, PSNR-Y): "
    f"`enhanced` {live_e:.2f} dB, `baseline` {live_b:.2f} dB, bicubic {bic:.2f} dB, so `enhanced` is "
    f"{live_e - bic:+.2f} dB over bicubic and {live_e - live_b:+.2f} dB over `baseline`."
]
if "enhanced-x4 (shipped)" in psnr:
    lines.append(
        f"The shipped `enhanced-x4` scores {psnr['enhanced-x4 (shipped)']:.2f} dB and `baseline-x4` "
        f"{psnr['baseline-x4 (shipped)']:.2f} dB: this run is {live_e - psnr['enhanced-x4 (shipped)']:+.2f} dB "
        f"and {live_b - psnr['baseline-x4 (shipped)']:+.2f} dB from them."
    )
if SMALL:
    lines.append("SMALL mode trains narrow models for seconds: these figures show the workflow, not the architectures.")
display(Markdown(" ".join(lines)))
'''),
    md('''
## 7. Where to go next

**The model zoo.** `superres.models.names()` lists the registered architectures; every one is built
with `superres.models.build(name, scale=..., in_channels=..., **options)` and trains with the same
`superres.training.train`. Below, ESPCN (Shi et al. 2016: three convolutions at LR and one sub-pixel
shuffle) trains for a few seconds from the `enhanced` preset with the model swapped, and, when the
peer weights in `../shared/peers` are present, FSRCNN (Dong et al. 2016) with the weights from pull
request 6 of yjn870/FSRCNN-pytorch (provenance in `../shared/peers/SOURCES.md`) is scored on the same
validation set. FSRCNN works on the
luma only: `superres.upscale` runs it on Y and upscales the chroma with bicubic.

**Full runs.** The presets in `configs/` are the starting points (`baseline_x4.yaml`,
`enhanced_x4.yaml`, `enhanced_x4_perceptual.yaml`); from the repository root:

```bash
superres train --config configs/enhanced_x4.yaml                       # 30 min of CPU wall time
superres train --config configs/enhanced_x4.yaml model.name=espcn model.options={} --out runs/espcn
superres eval --model runs/enhanced_x4/model.safetensors --data ../shared/data/Set14 --scale 4
superres upscale photo.png --model runs/enhanced_x4/model.safetensors
```
'''),
    code('''
from superres.models import names

print("registered architectures:", ", ".join(names()))
zoo_config = preset(PRESETS["enhanced"], dict(common, **{"model.name": "espcn", "model.options": {},
                                                           "train.max_seconds": ZOO_SECONDS, "train.val_every": 10**6}))
zoo_dir = WORK / "runs" / f"espcn-{stamp}"
zoo_model_file = train(zoo_config, run_dir=zoo_dir)
zoo_last = read_metrics(zoo_dir / "metrics.csv")
zoo_last = zoo_last[max(zoo_last)]
print(f"espcn: {int(zoo_last['iteration'])} iterations in {zoo_last['elapsed_s']:.0f} s, "
      f"PSNR-Y {zoo_last['val_psnr_y']:.2f} dB vs bicubic {zoo_last['bicubic_psnr_y']:.2f} dB")
'''),
    code('''
from superres.models.fsrcnn import load_yjn870_state_dict

peer_file = SHARED.parent / "peers" / f"yjn870-pr6_fsrcnn_x{SCALE}.pth"
if peer_file.is_file():
    fsrcnn = build("fsrcnn", scale=SCALE, in_channels=1)
    load_yjn870_state_dict(fsrcnn, torch.load(peer_file, map_location="cpu", weights_only=True))
    rows = []
    for it in val_set.items:
        sr = to_uint8(upscale(fsrcnn, it["lr"].astype(np.float32) / 255.0, tile=0))
        rows.append((score(sr, it["hr"], SCALE)["psnr_y"], score(imresize(it["lr"], SCALE), it["hr"], SCALE)["psnr_y"]))
    fsrcnn_psnr, bicubic_psnr = np.mean(rows, axis=0)
    print(f"FSRCNN (peer weights {peer_file.name}) on {Path(VAL).name} x{SCALE}: PSNR-Y {fsrcnn_psnr:.2f} dB, "
          f"bicubic {bicubic_psnr:.2f} dB ({fsrcnn_psnr - bicubic_psnr:+.2f} dB)")
else:
    print(f"{peer_file} is not here: skipping the pretrained FSRCNN (the zoo model above needs no download).")
'''),
    code('''
print(f"everything this notebook wrote is in {WORK}")
'''),
]

NOTEBOOKS: dict[str, list[Cell]] = {
    "0.0-exploratory.ipynb": EXPLORATORY,
    "0.1-modeling-and-training.ipynb": MODELLING,
}


# =========================================================================== writing
def build(name: str) -> NotebookNode:
    """The notebook ``name`` (a key of :data:`NOTEBOOKS`): no outputs, no execution counts, fixed ids."""
    stem = Path(name).stem.split("-")[0].replace(".", "")  # "0.0-exploratory" -> "00"
    cells = []
    for index, (kind, source, tags) in enumerate(NOTEBOOKS[name]):
        metadata = {"tags": list(tags)} if tags else {}
        cell_id = f"nb{stem}-{index:02d}"  # stable ids: a rebuild changes only the cells that changed
        if kind == "markdown":
            cell = nbformat.v4.new_markdown_cell(source, metadata=metadata, id=cell_id)
        else:
            cell = nbformat.v4.new_code_cell(source, metadata=metadata, id=cell_id)
        cells.append(cell)
    notebook = nbformat.v4.new_notebook(cells=cells, metadata=METADATA)
    notebook.nbformat, notebook.nbformat_minor = 4, 5
    nbformat.validate(notebook)
    return notebook


def source_differences(name: str, notebook: NotebookNode) -> list[str]:
    """How ``notebook``'s cells differ from the sources here (ids, kinds, sources, tags); outputs are not compared."""
    expected = build(name).cells
    found = notebook.cells
    problems = []
    if len(found) != len(expected):
        problems.append(f"{len(found)} cells, the sources here have {len(expected)}")
    for want, got in zip(expected, found):
        where = f"cell {want.id}"
        if got.get("id") != want.id:
            problems.append(f"{where}: found id {got.get('id')!r}")
        elif got.cell_type != want.cell_type:
            problems.append(f"{where}: a {got.cell_type} cell, the sources here have {want.cell_type}")
        elif got.source != want.source:
            problems.append(f"{where}: the source differs")
        elif list(got.metadata.get("tags", [])) != list(want.metadata.get("tags", [])):
            problems.append(f"{where}: tags {got.metadata.get('tags', [])} instead of {want.metadata.get('tags', [])}")
    return problems


def merge_outputs(name: str, committed: NotebookNode | None) -> NotebookNode:
    """The notebook from the sources here, keeping the committed outputs of every code cell whose source is unchanged.

    A changed cell loses its outputs (and execution count); ``tests/test_notebooks.py`` then asks for a
    new full run (``--execute full``), so a committed notebook never mixes outputs of two versions.
    """
    notebook = build(name)
    if committed is None:
        return notebook
    old = {cell.get("id"): cell for cell in committed.cells}
    for cell in notebook.cells:
        previous = old.get(cell.id)
        if cell.cell_type == "code" and previous is not None and previous.source == cell.source:
            cell.outputs = previous.outputs
            cell.execution_count = previous.execution_count
    return notebook


#: Largest PNG kept in a committed notebook, and the largest notebook file (both checked by the test).
MAX_PNG_BYTES = 400_000
MAX_NOTEBOOK_BYTES = 5_000_000


#: A PNG output larger than this is stored with a 256-colour palette (photos in a figure: about 3x smaller).
SHRINK_PNG_ABOVE = 300_000


def _shrink_png(data: str) -> str:
    """A base64 PNG, re-encoded with an adaptive 256-colour palette when it is over :data:`SHRINK_PNG_ABOVE` bytes."""
    import base64
    import io

    from PIL import Image as PILImage

    raw = base64.b64decode(data)
    if len(raw) <= SHRINK_PNG_ABOVE:
        return data
    buffer = io.BytesIO()
    PILImage.open(io.BytesIO(raw)).convert("RGB").quantize(colors=256).save(buffer, "PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii") + "\n"


def _settle_carriage_returns(text: str) -> str:
    """Each line as a terminal would leave it: the text after its last carriage return (progress bars)."""
    lines = [line.rsplit("\r", 1)[-1] for line in text.split("\n")]
    return "\n".join(line for i, line in enumerate(lines) if line.strip() or i == len(lines) - 1)


def _strip(notebook: NotebookNode) -> NotebookNode:
    """Only the kernelspec/language name and cell tags as metadata; outputs small and readable.

    Consecutive stream outputs of one cell are joined and their progress-bar redraws settled to the
    final state of each line; large PNGs get a palette (:func:`_shrink_png`); transient parts go.
    """
    notebook.metadata = nbformat.from_dict(METADATA)
    for cell in notebook.cells:
        cell.metadata = nbformat.from_dict({"tags": cell.metadata["tags"]} if cell.metadata.get("tags") else {})
        outputs = []
        for output in cell.get("outputs", []):
            output.pop("transient", None)
            if output.get("output_type") == "stream" and outputs and outputs[-1].get("output_type") == "stream" \
                    and outputs[-1]["name"] == output["name"]:
                outputs[-1]["text"] += output["text"]
                continue
            if "image/png" in output.get("data", {}):
                output["data"]["image/png"] = _shrink_png(output["data"]["image/png"])
            outputs.append(output)
        for output in outputs:
            if output.get("output_type") == "stream":
                output["text"] = _settle_carriage_returns(output["text"])
        if cell.cell_type == "code":
            cell.outputs = outputs
    return notebook


def execute(name: str, *, small: bool, work: Path, timeout: int = 3600) -> NotebookNode:
    """Run notebook ``name`` from the sources here in a fresh kernel of this interpreter; return it stripped.

    The kernel's working directory is ``notebooks/`` (as Jupyter's), its work folder ``work`` and
    ``SUPERRES_SMALL`` set from ``small``. A cell that raises stops the run (nbclient's
    ``CellExecutionError``, with the cell's source and traceback).
    """
    import nbclient
    from jupyter_client.manager import KernelManager

    with tempfile.TemporaryDirectory(prefix="superres-kernels-") as kernels:
        notebook = build(name)
        env = dict(os.environ, SUPERRES_SMALL="1" if small else "0", SUPERRES_NOTEBOOK_OUT=str(work))
        env.pop("MPLBACKEND", None)  # the inline backend, so figures become PNG outputs
        client = nbclient.NotebookClient(
            notebook, km=KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=kernel_specs(Path(kernels))),
            timeout=timeout, record_timing=False, resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
        )
        client.execute(env=env)  # CellExecutionError (cell source + traceback) propagates
    return _strip(notebook)


#: The kernel :func:`execute` runs: this interpreter's ipykernel, found only in :func:`kernel_specs`.
KERNEL_NAME = "superres-build"


def kernel_specs(folder: Path) -> KernelSpecManager:
    """A kernelspec manager that knows one kernel, :data:`KERNEL_NAME`: ``sys.executable -m
    ipykernel_launcher``, written into ``folder``, so neither the PATH nor an installed ``python3``
    kernelspec can pick another Python."""
    import json

    from jupyter_client.kernelspec import KernelSpecManager

    spec_dir = folder / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "superres (this interpreter)", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    return KernelSpecManager(kernel_dirs=[str(folder)])


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and rename, so a notebook is never half-written."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; a notebook is an ordinary source file
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed notebook's cells differ from their sources here")
    parser.add_argument("--execute", choices=("full", "small"), help="run the notebooks (SUPERRES_SMALL=0 or 1) and commit them with their outputs")
    parser.add_argument("--only", choices=sorted(NOTEBOOKS), help="one notebook instead of all")
    parser.add_argument("--work", type=Path, help="work folder of the executed notebooks (default: a new temporary folder)")
    args = parser.parse_args(argv)
    names = [args.only] if args.only else list(NOTEBOOKS)
    stale = []
    for name in names:
        path = NOTEBOOK_DIR / name
        committed = nbformat.read(path, as_version=nbformat.NO_CONVERT) if path.is_file() else None
        if args.check:
            problems = ["missing"] if committed is None else source_differences(name, committed)
            if problems:
                stale.append(f"{name} ({'; '.join(problems)})")
            continue
        if args.execute:
            work = args.work or Path(tempfile.mkdtemp(prefix="superres-notebook-"))
            started = time.monotonic()
            notebook = execute(name, small=args.execute == "small", work=work / Path(name).stem)
            print(f"ran {name} ({args.execute}) in {time.monotonic() - started:.0f} s; work folder {work}")
        else:
            notebook = merge_outputs(name, committed)
        text = nbformat.writes(notebook) + "\n"
        if committed is None or text != path.read_text(encoding="utf-8"):
            NOTEBOOK_DIR.mkdir(parents=True, exist_ok=True)
            _write_atomic(path, text)
            print(f"wrote {path.relative_to(REPO)} ({len(text.encode()) / 1e6:.2f} MB)")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python scripts/build_notebooks.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
