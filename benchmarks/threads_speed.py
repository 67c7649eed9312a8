"""1 against 2 (or N) threads for inference, with and without a competing busy process, old and new pool settings.

Usage (from the repository root)::

    PYTHONPATH=. python benchmarks/threads_speed.py --threads 1 2 --rounds 3 --out threads.md

Each measurement is a fresh subprocess (OpenMP reads its wait policy once, at start) that upscales one
256x256 RGB crop of scikit-image's astronaut photo at x4 (1 output MP) ``--reps`` times with
:func:`superres.inference.upscale` (whole image, fp32) and reports the median ms per output MP:

* ``lumanet-x4 onnx``: the compact model through onnxruntime (the network) and torch (the
  conversions around it): both thread pools alive in one process;
* ``enhanced-x4 torch``: a mid-size model through PyTorch alone.

Thread counts: ``--threads`` values, ``0`` meaning the default of ``superres upscale --threads``
(:func:`superres.threads.default_threads`: the physical cores not busy when the run starts).

Pool settings: ``new`` = this code (``superres.threads``: torch and onnxruntime set to the same count,
``OMP_WAIT_POLICY=PASSIVE``, onnxruntime ``allow_spinning=0``; with more than one thread a compact
onnx model runs in horizontal bands, one per thread while the cores are free of other processes,
:class:`superres.export.OnnxModel`); ``fixed`` = bands on every thread whatever the other processes
do (the band split before it followed the load); ``pool`` = the same without the band split
(onnxruntime's pool splits each layer); ``bands2`` = two bands per thread; ``old`` = the settings before this work (OpenMP's default wait policy, onnxruntime's
spinning workers, no bands). Scenarios: ``idle`` (nothing else
started by the benchmark; the machine's own load is recorded) and ``busy`` (one extra process spinning
on a core for the whole measurement). Rounds are interleaved over all rows; the table gives the median
over rounds.

``--paired`` measures the ratio itself in one process: the worker makes the model with 1 thread and
with N (the largest ``--threads``; 0 is the default count) under the ``new`` settings and alternates
calls between them, so the spread between processes (the same code ran at 44 and 53 ms per MP in two
processes here) cancels out of each round's ratio; the table gives each round's ratio and their median.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parent.parent
CASES = (("lumanet-x4", "onnx"), ("enhanced-x4", "torch"))


def worker(args: argparse.Namespace) -> None:
    import numpy as np
    import torch
    from skimage import data as samples

    from superres.inference import load_for_backend, upscale
    from superres.threads import apply_threads

    apply_threads(args.threads or None)  # 0: the default (superres.threads.default_threads)
    if args.settings in ("pool", "old"):  # no band split: onnxruntime's pool splits each layer
        import superres.export

        superres.export.MAX_BAND_HALO = -1
    net = load_for_backend(args.model, backend=args.backend)
    if args.settings == "bands2":
        net.bands_per_thread = 2
    if args.settings == "fixed" and getattr(net, "banded", False):  # bands on every thread, whatever the load
        net._load, net.active_threads = None, net.threads
    if args.settings == "old" and args.backend == "onnx":  # the session as made before superres.threads
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        path = Path(args.tmp) / "model.onnx"
        from superres.export import export_onnx

        if not path.is_file():
            export_onnx(args.model, path)
        net.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    image = samples.astronaut()[128:384, 128:384].astype(np.float32) / 255.0
    if args.paired:  # the same model made with 1 thread too; calls alternate between the two
        counts = {"one": 1, "many": net.threads if hasattr(net, "threads") else torch.get_num_threads()}
        apply_threads(1)
        nets = {"one": load_for_backend(args.model, backend=args.backend), "many": net}
        paired: dict[str, list[float]] = {"one": [], "many": []}
        bands: list[int] = []  # the bands of each N-thread call of a banded onnx model
        for _ in range(args.reps + 1):  # the first pass warms both up
            for key, model in nets.items():
                torch.set_num_threads(counts[key])
                t = time.perf_counter()
                out = upscale(model, image, tile=0, precision="fp32")
                paired[key].append((time.perf_counter() - t) / (out.shape[0] * out.shape[1] / 1e6))
            if getattr(net, "banded", False):
                bands.append(net.active_threads)
        print(json.dumps({key: 1000.0 * statistics.median(v[1:]) for key, v in paired.items()}
                         | {"threads": counts["many"], "bands": bands[1:]}))
        return
    upscale(net, image, tile=0, precision="fp32")  # warm-up
    times = []
    for _ in range(args.reps):
        t = time.perf_counter()
        out = upscale(net, image, tile=0, precision="fp32")
        times.append((time.perf_counter() - t) / (out.shape[0] * out.shape[1] / 1e6))
    print(json.dumps({"ms_per_mp": 1000.0 * statistics.median(times)}))


def run_one(model: str, backend: str, threads: int, settings: str, reps: int, tmp: str, paired: bool = False) -> Any:
    """ms per output MP of one fresh worker process (``paired``: a dict, 1 thread and ``threads``)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY"):
        env.pop(key, None)
    if settings != "old":
        env["OMP_WAIT_POLICY"] = "PASSIVE"  # what superres.cli sets before torch is imported
    cmd = [sys.executable, __file__, "--worker", "--model", model, "--backend", backend, "--threads", str(threads),
           "--settings", settings, "--reps", str(reps), "--tmp", tmp] + (["--paired"] if paired else [])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return result if paired else float(result["ms_per_mp"])


@contextlib.contextmanager
def scenario_load(scenario: str) -> Iterator[None]:
    """``busy``: one extra process spinning on a core for the duration; ``idle``: nothing."""
    busy = None
    if scenario == "busy":
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(1.0)
    try:
        yield
    finally:
        if busy is not None:
            busy.terminate()
            busy.wait()


def machine_line(load_before: tuple[float, float, float]) -> str:
    """The CPU, the usable CPUs and the load average before and after, for the table's first line."""
    from superres.devices import cpu_name

    return (f"CPU: {cpu_name()}, {len(os.sched_getaffinity(0))} usable CPUs; load average before: "
            + ", ".join(f"{x:.2f}" for x in load_before) + "; after: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))


def emit(lines: list[str], out: str | None) -> int:
    """Print the table and write it to ``out`` when given."""
    text = "\n".join(lines)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", default="lumanet-x4")
    ap.add_argument("--backend", default="onnx")
    ap.add_argument("--settings", default="new")
    ap.add_argument("--tmp", default="/tmp")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2, 0], help="thread counts; 0: the default of --threads")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--scenarios", nargs="+", default=["idle", "busy"])
    ap.add_argument("--out", default=None)
    ap.add_argument("--paired", action="store_true",
                    help="1 thread against the largest --threads value in the same worker process, calls "
                         "alternating (process-to-process spread cancels out); a ratio per round, the median of rounds")
    args = ap.parse_args()
    if args.worker:
        args.threads = args.threads[0]
        worker(args)
        return 0
    if args.paired:
        return paired_main(args)

    import tempfile

    sys.path.insert(0, str(REPO))

    rows = []
    for scenario in args.scenarios:
        for model, backend in CASES:
            for n in args.threads:
                for settings in ("new", "fixed", "pool", "bands2", "old"):
                    if (n == 1 or n == 0) and settings != "new":
                        continue
                    if backend != "onnx" and settings in ("fixed", "pool", "bands2"):
                        continue
                    rows.append((scenario, model, backend, n, settings))
    results: dict[tuple, list[float]] = {r: [] for r in rows}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in args.scenarios:
            with scenario_load(scenario):
                for _ in range(args.rounds):
                    for row in rows:
                        if row[0] != scenario:
                            continue
                        _, model, backend, n, settings = row
                        results[row].append(run_one(model, backend, n, settings, args.reps, tmp))
                        print(row, f"{results[row][-1]:.0f} ms/MP", file=sys.stderr, flush=True)
    lines = [
        machine_line(load_before),
        "",
        "| scenario | model | threads | pool settings | ms / output MP (median of rounds) | speed-up vs 1 thread |",
        "|---|---|---:|---|---:|---:|",
    ]
    for row in rows:
        scenario, model, backend, n, settings = row
        ms = statistics.median(results[row])
        one = statistics.median(results[(scenario, model, backend, 1, "new")]) if (scenario, model, backend, 1, "new") in results else ms
        label = "default" if n == 0 else str(n)
        lines.append(f"| {scenario} | {model} {backend} | {label} | {settings} | {ms:.0f} | {one / ms:.2f}x |")
    return emit(lines, args.out)


def paired_main(args: argparse.Namespace) -> int:
    """The ``--paired`` table: per scenario and model, 1 thread against N in one process per round."""
    import tempfile

    sys.path.insert(0, str(REPO))

    many = max(args.threads)
    times: dict[tuple, list[tuple[float, float]]] = {}  # (1 thread, N threads) ms per output MP, per round
    calls: dict[tuple, list[int]] = {}  # bands per N-thread call, banded onnx models
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in args.scenarios:
            with scenario_load(scenario):
                for _ in range(args.rounds):
                    for model, backend in CASES:
                        r = run_one(model, backend, many, "new", args.reps, tmp, paired=True)
                        key = (scenario, model, backend, r["threads"])
                        calls.setdefault(key, []).extend(r["bands"])
                        times.setdefault(key, []).append((r["one"], r["many"]))
                        print(key, f"{r['one']:.0f} / {r['many']:.0f} ms/MP", file=sys.stderr, flush=True)
    lines = [
        machine_line(load_before),
        "",
        "| scenario | model | threads | ms / output MP, 1 thread | ms / output MP, N threads | speed-up per round | median "
        "| N-thread calls in bands |",
        "|---|---|---:|---:|---:|---|---:|---|",
    ]
    for key, rounds_ms in times.items():
        values = [t[0] / t[1] for t in rounds_ms]
        scenario, model, backend, n = key
        one = statistics.median(t[0] for t in rounds_ms)
        many_ms = statistics.median(t[1] for t in rounds_ms)
        rounds = ", ".join(f"{v:.2f}" for v in values)
        banded = calls[key]
        share = f"{sum(b > 1 for b in banded)} of {len(banded)}" if banded else "-"
        lines.append(f"| {scenario} | {model} {backend} | {n} | {one:.0f} | {many_ms:.0f} | {rounds} | "
                     f"{statistics.median(values):.2f}x | {share} |")
    return emit(lines, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
