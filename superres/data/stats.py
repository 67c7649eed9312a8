"""``superres data stats``: what is in a set of image folders, before you train on it.

Count, sizes, channel counts, bit depths, alpha, and per-channel mean/std and histograms of the
colour/band samples in ``[0, 1]`` (alpha is not counted: it never reaches a model).

The per-channel figures are exact, not estimates, and memory stays small however big the set is:
images are read one at a time, and each integer channel is folded into a full-resolution histogram
on the 16-bit scale (65536 bins; an 8-bit value ``k`` is the 16-bit value ``257 k``, since
``k / 255 == 257 k / 65535``). Sums and sums of squares come from that histogram in Python
integers, so the mean and the (population) standard deviation are rounded once, at the end; the
64-bin histograms are sums of its bins. Float TIFFs, which have no integer scale, are accumulated
with float64 sums and ``numpy.histogram``. Images are grouped by channel count (a set that mixes
gray and RGB gets one group for each), because a "channel 0" of a gray and of an RGB image are not
the same thing.
"""

from __future__ import annotations

import math
from collections import Counter
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from superres.errors import SuperresError
from superres.io import atomic_write, list_images, read_raw
from superres.progress import progress_bar

__all__ = ["HISTOGRAM_BINS", "compute_stats", "format_stats", "plot_stats"]

#: Bins of the per-channel histograms over ``[0, 1]`` (edges ``linspace(0, 1, HISTOGRAM_BINS + 1)``).
HISTOGRAM_BINS = 64
_LEVELS = 65536  # the common integer scale: 16 bit
_BLOCK_VALUES = 1 << 22  # samples per chunk when folding an image in (bounds temporary memory)


class _ChannelGroup:
    """Running per-channel accumulators for the images that have one channel count."""

    def __init__(self, channels: int) -> None:
        self.channels = channels
        self.images = 0
        self.pixels = 0
        self.levels = np.zeros((channels, _LEVELS), dtype=np.int64)  # integer images, 16-bit scale
        self.float_sum = [0.0] * channels
        self.float_sumsq = [0.0] * channels
        self.float_hist = np.zeros((channels, HISTOGRAM_BINS), dtype=np.int64)

    def add(self, pixels: np.ndarray) -> None:
        height, width, channels = pixels.shape
        self.images += 1
        self.pixels += height * width
        rows = max(1, _BLOCK_VALUES // max(1, width * channels))
        for top in range(0, height, rows):
            block = pixels[top : top + rows]
            if block.dtype == np.uint8:
                for c in range(channels):
                    self.levels[c, ::257] += np.bincount(block[:, :, c].ravel(), minlength=256)
            elif block.dtype == np.uint16:
                for c in range(channels):
                    self.levels[c] += np.bincount(block[:, :, c].ravel(), minlength=_LEVELS)
            else:
                values = block.astype(np.float64).reshape(-1, channels)
                for c in range(channels):
                    self.float_sum[c] += float(values[:, c].sum())
                    self.float_sumsq[c] += float(np.square(values[:, c]).sum())
                    self.float_hist[c] += np.histogram(np.clip(values[:, c], 0, 1), HISTOGRAM_BINS, (0.0, 1.0))[0]

    def summary(self) -> dict[str, Any]:
        levels = np.arange(_LEVELS, dtype=np.int64)
        # bin of the 16-bit value v: floor(64 v / 65535), with v = 65535 in the last bin (as numpy does)
        bins = np.minimum(levels * HISTOGRAM_BINS // (_LEVELS - 1), HISTOGRAM_BINS - 1)
        means, stds, hists = [], [], []
        for c in range(self.channels):
            counts = self.levels[c]
            nonzero = np.flatnonzero(counts)
            s1 = sum(int(v) * int(counts[v]) for v in nonzero)
            s2 = sum(int(v) * int(v) * int(counts[v]) for v in nonzero)
            total = Fraction(s1, _LEVELS - 1) + Fraction(self.float_sum[c])
            total_sq = Fraction(s2, (_LEVELS - 1) ** 2) + Fraction(self.float_sumsq[c])
            mean = total / self.pixels
            variance = max(total_sq / self.pixels - mean * mean, Fraction(0))
            means.append(float(mean))
            stds.append(math.sqrt(float(variance)))
            hist = np.zeros(HISTOGRAM_BINS, dtype=np.int64)
            np.add.at(hist, bins[nonzero], counts[nonzero])
            hists.append([int(h) for h in hist + self.float_hist[c]])
        return {
            "images": self.images,
            "pixels": self.pixels,
            "mean": means,
            "std": stds,
            "histogram": hists,
        }


def compute_stats(sources: list[Path], *, progress: bool = False) -> dict[str, Any]:
    """Statistics of the images in ``sources`` (files or folders, searched recursively).

    Returns a JSON-serialisable dict: ``count``; ``sources``; ``formats`` (by suffix); ``width`` and
    ``height`` (``min``/``max``/``mean``); ``pixels`` (total); ``channels`` (images per channel
    count, e.g. ``{"1": 3, "3": 88}``); ``bit_depths``; ``alpha`` (images with an alpha channel);
    ``per_channel`` keyed by channel count, each with ``images``, ``pixels``, and per channel
    ``mean``, ``std`` (population, over all pixels, values in [0, 1]) and ``histogram`` (counts in
    ``histogram_bins`` equal bins over [0, 1]); ``files`` and ``sizes`` (``[width, height]`` per file,
    in the same order). Raises :class:`SuperresError` for a missing source, a folder without
    images, or an unreadable image. ``progress``: a bar over the files on stderr.
    """
    files = list_images(sources)
    groups: dict[int, _ChannelGroup] = {}
    sizes: list[list[int]] = []
    depths: Counter[int] = Counter()
    formats: Counter[str] = Counter()
    with_alpha = 0
    for path in progress_bar(files, enabled=progress, desc="stats", unit="image"):
        raw = read_raw(path)  # one image in memory at a time
        height, width, channels = raw.pixels.shape
        sizes.append([int(width), int(height)])
        depths[raw.bit_depth] += 1
        formats[path.suffix.lower()] += 1
        with_alpha += raw.alpha is not None
        groups.setdefault(channels, _ChannelGroup(channels)).add(raw.pixels)

    widths = np.array([s[0] for s in sizes], dtype=np.int64)
    heights = np.array([s[1] for s in sizes], dtype=np.int64)

    def extent(values: np.ndarray) -> dict[str, float | int]:
        return {"min": int(values.min()), "max": int(values.max()), "mean": float(values.mean())}

    return {
        "count": len(files),
        "sources": [str(s) for s in sources],
        "formats": {k: formats[k] for k in sorted(formats)},
        "width": extent(widths),
        "height": extent(heights),
        "pixels": int((widths * heights).sum()),
        "channels": {str(c): groups[c].images for c in sorted(groups)},
        "bit_depths": {str(d): depths[d] for d in sorted(depths)},
        "alpha": int(with_alpha),
        "histogram_bins": HISTOGRAM_BINS,
        "per_channel": {str(c): groups[c].summary() for c in sorted(groups)},
        "files": [str(f) for f in files],
        "sizes": sizes,
    }


def _channel_names(channels: int) -> list[str]:
    if channels == 1:
        return ["gray"]
    if channels == 3:
        return ["R", "G", "B"]
    return [f"band {i}" for i in range(channels)]


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.2f} Mpx"


def format_stats(stats: dict[str, Any]) -> str:
    """A readable multi-line summary of :func:`compute_stats`' result."""

    def counts(mapping: dict[str, int], unit: str = "") -> str:
        return ", ".join(f"{key}{unit}: {value}" for key, value in mapping.items())

    w, h = stats["width"], stats["height"]
    lines = [
        f"images      {stats['count']} from {', '.join(stats['sources'])}",
        f"formats     {counts(stats['formats'])}",
        f"width       {w['min']} .. {w['max']} (mean {w['mean']:.1f})",
        f"height      {h['min']} .. {h['max']} (mean {h['mean']:.1f})",
        f"pixels      {_megapixels(stats['pixels'])}",
        f"channels    {counts(stats['channels'])}",
        f"bit depth   {counts(stats['bit_depths'], '-bit')}",
        f"alpha       {stats['alpha']} image(s) with an alpha channel (not counted below)",
    ]
    for key, group in stats["per_channel"].items():
        lines.append("")
        lines.append(f"{key}-channel images: {group['images']}, {_megapixels(group['pixels'])}  (values in [0, 1])")
        lines.append(f"  {'channel':<10}{'mean':>9}{'std':>9}")
        for name, mean, std in zip(_channel_names(int(key)), group["mean"], group["std"]):
            lines.append(f"  {name:<10}{mean:>9.4f}{std:>9.4f}")
    return "\n".join(lines)


def plot_stats(stats: dict[str, Any], path: Path) -> None:
    """Per-channel histograms (one panel per channel count) and a width/height scatter, to ``path``.

    Uses matplotlib's Agg canvas directly rather than ``pyplot``, so it neither needs a display nor
    changes the backend of a notebook that calls it. The format comes from the suffix (``.png``,
    ``.pdf``, ``.svg`` ...); the file is written atomically.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    groups = stats["per_channel"]
    panels = len(groups) + 1
    figure = Figure(figsize=(5.0 * panels, 4.0), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    bins = int(stats["histogram_bins"])
    edges = np.linspace(0.0, 1.0, bins + 1)
    palette = {1: ["0.3"], 3: ["tab:red", "tab:green", "tab:blue"]}
    for ax, (key, group) in zip(axes, groups.items()):
        channels = int(key)
        colours = palette.get(channels, [f"C{i % 10}" for i in range(channels)])
        for name, colour, counts in zip(_channel_names(channels), colours, group["histogram"]):
            total = max(1, sum(counts))
            ax.stairs(np.asarray(counts) / total, edges, color=colour, label=name)
        ax.set_title(f"{key}-channel images ({group['images']})")
        ax.set_xlabel("value")
        ax.set_ylabel("fraction of pixels")
        ax.set_xlim(0, 1)
        ax.legend(fontsize="small")
    scatter = axes[-1]
    sizes = np.asarray(stats["sizes"], dtype=float).reshape(-1, 2)
    scatter.scatter(sizes[:, 0], sizes[:, 1], s=12, alpha=0.6)
    scatter.set_title(f"image sizes ({stats['count']})")
    scatter.set_xlabel("width (px)")
    scatter.set_ylabel("height (px)")
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in figure.canvas.get_supported_filetypes():
        raise SuperresError(f"{path}: unsupported plot format {path.suffix or '(no suffix)'!r}; use .png, .pdf or .svg")
    with atomic_write(path) as tmp:
        figure.savefig(tmp, format=fmt, dpi=100)
