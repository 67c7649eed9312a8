"""``superres benchmark``: our shipped models, bicubic and the peers on the standard test sets.

Every row is scored by :func:`superres.evaluate.evaluate` (the paper protocol of
``docs/PROTOCOL.md``): bicubic and our models through :func:`superres.evaluate.make_upscaler`, the
peers (:mod:`superres.peers`) passed to it as upscalers. So the scoring code is literally the same
for every row and only the upscaler differs.

Each row also has:

* ``params``: parameter count (None for OpenCV's TensorFlow graphs, whose variables OpenCV does not
  expose reliably; 0 for bicubic);
* ``gflops_512``: GFLOPs (2 x multiply-adds, :func:`superres.models.complexity.count_flops`) of one
  pass producing a 512x512 output, i.e. a 128x128 LR at x4, 256x256 at x2, (512/3)^2 at x3. It is
  counted on a 64x64 LR and scaled by the pixel count, which is exact for fully convolutional
  models (every layer's work is proportional to the pixel count). Y-channel models count 1 channel.
* ``ms_per_mp``: wall-clock milliseconds per output megapixel of the upscaler call alone (not file
  reading or scoring), summed over the set's images after one untimed warm-up call, with the thread
  count fixed (``threads``, default 1, applied to torch, onnxruntime and OpenCV alike) and recorded.
  The figure includes each method's own colour handling (e.g. Y/CbCr conversion and chroma resize for
  Y-channel models), as a user would pay it.

Outputs: ``DIR/benchmark.json`` (rows, per-image scores, settings, machine context) and
``DIR/benchmark.md`` (one table per scale), both written atomically.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from superres.devices import cpu_name, resolve_device
from superres.errors import SuperresError
from superres.evaluate import PROTOCOL, evaluate, make_upscaler
from superres.io import atomic_write, list_images, read_array
from superres.modelfile import WEIGHTS_DIR, list_models, load_model, read_metadata
from superres.models.complexity import count_flops, count_parameters
from superres.peers import find_peers
from superres.precision import resolve_precision
from superres.perceptual import build_perceptual
from superres.scales import SCALES

__all__ = ["run_benchmark", "format_markdown", "DEFAULT_SETS", "DEFAULT_SCALES", "FLOPS_OUTPUT_SIDE"]

DEFAULT_SETS = ("Set5", "Set14")
DEFAULT_SCALES = (2, 3, 4)
#: FLOPs are reported for one pass producing a FLOPS_OUTPUT_SIDE^2 output (128x128 -> 512x512 at x4).
FLOPS_OUTPUT_SIDE = 512
_FLOPS_PROBE = 64

_Upscaler = Callable[[np.ndarray, int], np.ndarray]


class _Timed:
    """Wraps an evaluate-style upscaler and accumulates its wall time and output pixels."""

    def __init__(self, upscaler: _Upscaler) -> None:
        self.upscaler = upscaler
        self.seconds = 0.0
        self.pixels = 0

    def warm_up(self, channels: int) -> None:
        """One untimed call on a small image: first-call costs (allocator, graph setup) are not the model's."""
        self.upscaler(np.full((16, 16, channels), 128, dtype=np.uint8), 8)

    def __call__(self, lr: np.ndarray, bit_depth: int) -> np.ndarray:
        start = time.perf_counter()
        sr = self.upscaler(lr, bit_depth)
        self.seconds += time.perf_counter() - start
        self.pixels += int(sr.shape[0]) * int(sr.shape[1])
        return sr

    def ms_per_mp(self) -> float | None:
        return 1e3 * self.seconds / (self.pixels / 1e6) if self.pixels else None


def _flops_512(flops_64: int | None, scale: int) -> float | None:
    """GFLOPs for a FLOPS_OUTPUT_SIDE^2 output from FLOPs counted on a 64x64 LR (linear in pixels)."""
    if flops_64 is None:
        return None
    lr_pixels = (FLOPS_OUTPUT_SIDE / scale) ** 2
    return flops_64 * lr_pixels / _FLOPS_PROBE**2 / 1e9


def _our_models(models: Sequence[str], scale: int) -> list[tuple[str, str]]:
    """(label, name-or-path) of the shipped models at ``scale``, then those of ``models`` (shipped names
    or model files) at ``scale``; a model made for another scale is simply not in that scale's table."""
    chosen = [(e["name"], e["name"]) for e in list_models() if e.get("shipped") and e.get("scale") == scale]
    for m in models:
        shipped = WEIGHTS_DIR / f"{m}.safetensors"
        is_name = "/" not in m and not m.endswith(".safetensors") and shipped.is_file()
        path = shipped if is_name else Path(m)
        if not path.is_file():
            raise SuperresError(f"--models {m}: not a model file and not a shipped model")
        label = m if is_name else path.stem
        if int(read_metadata(path).get("scale", 0)) == scale and label not in {c[0] for c in chosen}:
            chosen.append((label, m))
    return chosen


def _model_costs(model: str) -> tuple[int, int]:
    """(parameters, FLOPs on a 64x64 LR) of a shipped model / model file."""

    net = load_model(model, device="cpu")
    return count_parameters(net), count_flops(net, (1, int(net.in_channels), _FLOPS_PROBE, _FLOPS_PROBE))


def _context(threads: int) -> dict[str, Any]:
    import torch

    cpu = cpu_name()
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("onnxruntime", "cv2"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "load_average_at_start": [round(v, 2) for v in load] if load else None,
        "versions": versions,
        "platform": platform.platform(),
    }


def _row(report: dict[str, Any], kind: str, timer: _Timed, params: int | None, gflops: float | None, path: str | None) -> dict[str, Any]:
    return {
        "set": report["dataset"],
        "scale": report["scale"],
        "method": report["model"],
        "kind": kind,
        "path": path,
        "psnr_y": report["psnr_y"],
        "ssim_y": report["ssim_y"],
        "count": report["count"],
        "params": params,
        "gflops_512": gflops,
        "ms_per_mp": timer.ms_per_mp(),
        "seconds_upscaling": round(timer.seconds, 4),
        "output_pixels": timer.pixels,
        "images": report["images"],
        "lr_source": report["lr_source"],
    }


def _set_channels(folder: Path) -> int:
    first = read_array(list_images([folder / "HR"])[0])
    return 1 if first.ndim == 2 else int(first.shape[2])


def run_benchmark(
    *,
    sets: Sequence[str] = DEFAULT_SETS,
    scales: Sequence[int] = DEFAULT_SCALES,
    models: Sequence[str] = (),
    peers: bool = True,
    data_root: str | os.PathLike[str] = "../shared/data",
    peers_dir: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] = "benchmark-out",
    threads: int = 1,
    backend: str = "torch",
    precision: str = "fp32",
    command: str | None = None,
    progress: Callable[[str], None] | None = None,
    perceptual: Any = None,
    lr: str = "LR_bicubic",
    device: str = "auto",
    on_start: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Benchmark bicubic, every shipped model (plus ``models``: shipped names or model files) and, with
    ``peers``, the peer models found in ``peers_dir`` (default: ``<data_root>/../peers``) on each of
    ``sets`` (folders under ``data_root``) at each of ``scales``; write ``out/benchmark.json`` and
    ``out/benchmark.md``. Returns the JSON document. ``command`` is recorded as the command line that
    made the table; ``progress`` gets one line per finished row (and each row's images show a
    bar on stderr while it runs). ``perceptual`` (a metric name or a
    metric of :func:`superres.perceptual.build_perceptual`) adds that distance to every row
    (``row[name]``, ``row["perceptual"]``) and to the Markdown cells. ``lr`` names each set's LR folder
    (``LR_<preset>`` of ``superres data degrade``; see :func:`superres.evaluate.evaluate`).
    ``precision`` is our models' autocast (:mod:`superres.precision`; ``auto`` resolved per model).
    ``device`` (``auto``: CUDA, then MPS, then the CPU, :func:`superres.devices.resolve_device`) is
    where our models run (the onnx backend, bicubic and the peers run on the CPU); it is checked
    before any work, recorded as ``doc["device"]``, and ``on_start`` is called with it once every
    option is checked, before the first row. ``ms_per_mp`` is then that device's time.
    """
    import torch


    if threads < 1:
        raise SuperresError(f"--threads {threads}: must be >= 1")
    root = Path(data_root)
    folders = [root / s for s in sets]
    for folder in folders:
        if not (folder / "HR").is_dir():
            raise SuperresError(f"{folder}: benchmark set not found (expected {folder}/HR/*.png; see --data-root)")
    for s in scales:
        if s not in SCALES:
            raise SuperresError(f"--scales {s}: unsupported scale")
    pdir = Path(peers_dir) if peers_dir is not None else root.parent / "peers"
    dev = "cpu" if backend == "onnx" else str(resolve_device(device))
    if precision in ("bf16", "fp16"):  # refused before any work where the device cannot run it
        resolve_precision(precision, torch.device(dev), None, backend=backend)
    if isinstance(perceptual, str):
        perceptual = build_perceptual(perceptual)

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    context = _context(threads)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    t0 = time.perf_counter()
    if on_start is not None:
        on_start(dev)
    try:
        for scale in scales:
            entries: list[tuple[str, str, _Upscaler, int | None, float | None, str | None]] = []
            entries.append(("bicubic", "bicubic", make_upscaler("bicubic", scale), 0, None, None))
            for label, model in _our_models(models, scale):
                params, flops = _model_costs(model)
                up = make_upscaler(model, scale, device=dev, backend=backend, precision=precision)
                entries.append((label, "ours", up, params, _flops_512(flops, scale), model))
            if peers:
                found, skipped = _find_peers(pdir, scale, threads)
                notes += skipped
                for p in found:
                    entries.append((p.name, "peer", _peer_upscaler(p.upscale), p.params, _flops_512(p.flops_64, scale), str(p.path)))
            for label, kind, up, params, gflops, path in entries:
                for folder in folders:
                    timer = _Timed(up)
                    timer.warm_up(_set_channels(folder))
                    report = evaluate(label, folder, scale=scale, upscaler=timer, perceptual=perceptual, lr=lr,
                                      progress=progress is not None)
                    rows.append(_row(report, kind, timer, params, gflops, path))
                    if perceptual is not None:
                        name = report["perceptual"]
                        rows[-1].update({"perceptual": name, name: report[name]})
                    if progress is not None:
                        progress(f"x{scale} {folder.name:<8} {label:<30} {report['psnr_y']:.2f} dB / {report['ssim_y']:.4f}")
    finally:
        torch.set_num_threads(previous_threads)

    doc = {
        "command": command,
        "sets": [f.name for f in folders],
        "scales": list(scales),
        "protocol": PROTOCOL,
        "flops_note": f"GFLOPs (2 x multiply-adds) of one pass producing a {FLOPS_OUTPUT_SIDE}x{FLOPS_OUTPUT_SIDE} output",
        "timing_note": "ms per output megapixel of the upscaling call only, after a warm-up call; "
        f"{threads} thread(s) for torch, onnxruntime and OpenCV",
        "backend": backend,
        "perceptual": None if perceptual is None else perceptual.metric_name,
        "precision": precision,
        "device": dev,
        "context": context,
        "notes": notes,
        "seconds": round(time.perf_counter() - t0, 1),
        "rows": rows,
    }
    out_dir = Path(out)
    with atomic_write(out_dir / "benchmark.json") as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
    with atomic_write(out_dir / "benchmark.md") as tmp:
        tmp.write_text(format_markdown(doc) + "\n")
    return doc


def _find_peers(peers_dir: Path, scale: int, threads: int) -> tuple[list[Any], list[str]]:
    """:func:`superres.peers.find_peers`, imported here so ``--no-peers`` never touches OpenCV."""
    return find_peers(peers_dir, scale, threads=threads)


def _peer_upscaler(fn: Callable[[np.ndarray], np.ndarray]) -> _Upscaler:
    """A peer's ``uint8 -> uint8`` callable in evaluate's ``(lr, hr_bit_depth) -> sr`` form."""

    def run(lr: np.ndarray, bit_depth: int) -> np.ndarray:
        if bit_depth != 8:
            raise SuperresError(f"peers score 8-bit benchmark images only (the HR is {bit_depth}-bit)")
        sr = fn(lr)
        return sr if sr.ndim == 3 else sr[:, :, None]

    return run


def _fmt(value: float | None, spec: str, none: str = "-") -> str:
    return none if value is None else format(value, spec)


def format_markdown(doc: dict[str, Any]) -> str:
    """One Markdown table per scale: method, params, GFLOPs, ms/MP, then PSNR/SSIM per set."""
    sets = doc["sets"]
    ctx = doc["context"]
    lines = [
        "PSNR-Y (dB) / SSIM-Y under the paper protocol (docs/PROTOCOL.md): " + doc["protocol"] + ".",
        f"GFLOPs: one pass producing a {FLOPS_OUTPUT_SIDE}x{FLOPS_OUTPUT_SIDE} output. "
        f"CPU ms/MP: {doc['timing_note']}; averaged over all images of the listed sets.",
        f"Machine: {ctx['cpu']}, {ctx['logical_cpus']} logical CPUs, {ctx['threads']} thread(s), "
        f"load average at start {ctx['load_average_at_start']}; "
        + ", ".join(f"{k} {v}" for k, v in ctx["versions"].items())
        + ".",
    ]
    metric = doc.get("perceptual")
    if metric:
        lines.append(f"Each cell ends with the mean {metric} (perceptual distance, lower is closer; docs/PROTOCOL.md).")
    if doc.get("command"):
        lines.append(f"Command: `{doc['command']}`")
    for scale in doc["scales"]:
        rows = [r for r in doc["rows"] if r["scale"] == scale]
        methods: list[str] = []
        for r in rows:
            if r["method"] not in methods:
                methods.append(r["method"])
        lines += ["", f"**x{scale}**", ""]
        where = "CPU" if doc.get("device", "cpu") == "cpu" else doc["device"]
        header = ["method", "params", "GFLOPs", f"{where} ms/MP"] + sets
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for method in methods:
            mine = [r for r in rows if r["method"] == method]
            first = mine[0]
            seconds = sum(r["seconds_upscaling"] for r in mine)
            pixels = sum(r["output_pixels"] for r in mine)
            ms = 1e3 * seconds / (pixels / 1e6) if pixels else None
            by_set = {r["set"]: r for r in mine}
            cells = [
                method,
                _fmt(first["params"], ",") if first["params"] is not None else "n/a",
                _fmt(first["gflops_512"], ".2f"),
                _fmt(ms, ".0f"),
            ]
            cells += [
                f"{by_set[s]['psnr_y']:.2f} / {by_set[s]['ssim_y']:.4f}"
                + (f" / {by_set[s][metric]:.4f}" if metric and metric in by_set[s] else "")
                if s in by_set else "-"
                for s in sets
            ]
            lines.append("| " + " | ".join(cells) + " |")
    for note in doc.get("notes", []):
        lines.append(f"\nNote: {note}")
    return "\n".join(lines)

