"""Training throughput in patches per second: device-resident data next to the DataLoader path.

Usage (from the repository root)::

    python benchmarks/train_throughput.py                                  # GPU defaults, ../shared/data/train
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/train_throughput.py --threads 1 \\
        --batch 4 --patch 48 --iters 8 --warmup 2 --paths device,loader0   # a small CPU run

What is measured. Each row is a real ``superres.training.train`` run (the trainer's own step:
forward, L1 loss, backward, optimizer, and the batch of each iteration made by the data path under
test), timed from the end of iteration ``warmup`` to the end of iteration ``warmup + iters`` through
the trainer's per-iteration callback (on CUDA after a device synchronisation at both ends, so queued
kernels are counted). Start-up (reading the images, building the model) and the final save/export
fall outside that window. Rows:

* models ``edsr-baseline``, ``enhanced`` and ``lumanet`` (the compact model; 3-channel), at ``--scale``, random init;
* data paths ``device`` (``data.device_resident: true``: the images stay on the training device and
  each batch is cut there), ``loader0`` (the DataLoader path in the training process,
  ``data.workers: 0``) and ``loaderN`` (the DataLoader with N worker processes);
* a data-only figure per path: the same batches made and moved to the device, without a model.

Both paths give identical batches (``tests/test_device_data.py``), so the rows differ in speed only.
On CUDA the defaults are bf16 autocast and channels_last (``--amp``, ``--channels-last``).
``--amp none,bf16`` times each model and path under both, side by side (bf16 applies on CUDA and
on CPUs with native bf16, where the trainer uses channels_last with it; a row the trainer ran
without autocast says ``none``);
``--step plain,graph`` times each row with the ordinary step and with the whole step captured in one
CUDA graph (``train.cuda_graph``; on the CPU the same step function without a graph);
``--compile [MODE]`` adds ``torch.compile`` (its compilation falls in the warm-up; ``reduce-overhead``
replays the steps from CUDA graphs). ``--profile-iters N``
(CUDA) then profiles N more iterations with ``torch.profiler`` and reports the share of wall time
in which some GPU kernel or copy runs ("GPU busy"). ``--host-profile FILE`` profiles those
iterations on the host as well, on any device: where the host's time goes (ops by self CPU time)
and, on CUDA, how many kernels and CUDA graphs each iteration launches. cuDNN picks its fastest kernels
(``train.deterministic: false``) unless ``--deterministic`` is given.

Images come from ``--data`` (folders or files; default ``../shared/data/train``); folders of
lossless WebP made by ``benchmarks/gpu_time_to_quality.py pack`` are unpacked to a temporary folder
first. Output: a Markdown table on stdout (and ``--markdown``), the full figures as JSON (``--json``).
``patches/s`` and ``ms/iteration`` come from the whole synchronised window (the figures to quote);
``median ms/iteration`` is the median of single iterations on the host clock, which shrugs off
bursts of other processes on a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))
DEFAULT_DATA = REPO.parent / "shared" / "data" / "train"
DEFAULT_MODELS = "edsr-baseline,enhanced,lumanet"


# --------------------------------------------------------------------------- helpers
def resolve_data(sources: list[str], workdir: Path) -> list[str]:
    """The training sources, with packed (WebP) folders unpacked into ``workdir`` first."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gpu_time_to_quality import is_packed, unpack

    out = []
    for i, source in enumerate(sources):
        path = Path(source)
        if path.is_dir() and is_packed(path):
            out.append(str(unpack(path, workdir / f"data{i}")))
        else:
            out.append(str(path))
    return out


def cuda_sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gpu_busy_share(prof: Any, wall_s: float) -> float:
    """Share of ``wall_s`` covered by at least one GPU event (kernels, copies, memsets) of ``prof``:
    the union of their time intervals, so kernels running side by side are not counted twice."""
    from torch.autograd import DeviceType

    intervals = sorted(
        (e.time_range.start, e.time_range.end)
        for e in prof.events()
        if e.device_type == DeviceType.CUDA and e.time_range.end > e.time_range.start
    )
    if not intervals:
        raise RuntimeError("the profiler recorded no CUDA events")
    busy, cur_start, cur_end = 0.0, intervals[0][0], intervals[0][1]
    for start, end in intervals[1:]:
        if start > cur_end:
            busy += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    busy += cur_end - cur_start
    return busy / 1e6 / wall_s  # event times are in microseconds


#: Host calls that start GPU work, counted per iteration by --host-profile.
LAUNCH_CALLS = ("cudaLaunchKernel", "cuLaunchKernel", "cudaGraphLaunch", "cudaLaunchCooperativeKernel")


class Window:
    """Trainer callback: times iterations ``warmup+1 .. warmup+iters``, then profiles ``profile`` more."""

    def __init__(self, device: torch.device, warmup: int, iters: int, profile: int, host: bool = False) -> None:
        self.device, self.warmup, self.iters, self.profile, self.host = device, warmup, iters, profile, host
        self.host_table: str | None = None  # with host=True: the ops by self CPU time (profiler table)
        self.gpu_table: str | None = None  # with host=True on CUDA: ops and kernels by self GPU time
        self.launches: float | None = None  # with host=True on CUDA: kernel and graph launches per iteration
        self.t0 = self.t1 = self.p0 = 0.0
        self.stamps: list[float] = []  # end of each timed iteration (host clock)
        self.prof: Any = None
        self.busy: float | None = None
        self.busy_error: str | None = None

    def __call__(self, iteration: int, model: torch.nn.Module) -> None:
        if iteration == self.warmup:
            cuda_sync(self.device)
            self.t0 = time.perf_counter()
            self.stamps = [self.t0]
        elif self.warmup < iteration < self.warmup + self.iters:
            self.stamps.append(time.perf_counter())
        if iteration == self.warmup + self.iters:
            cuda_sync(self.device)
            self.t1 = time.perf_counter()
            self.stamps.append(self.t1)
            if self.profile:
                self._start_profile()
        if self.profile and iteration == self.warmup + self.iters + self.profile and self.prof is not None:
            self._stop_profile()

    def _start_profile(self) -> None:
        try:
            from torch.profiler import ProfilerActivity, profile

            activities = [ProfilerActivity.CPU] if self.host else []
            if self.device.type == "cuda":
                activities.append(ProfilerActivity.CUDA)
            self.prof = profile(activities=activities)
            self.prof.__enter__()
            self.p0 = time.perf_counter()
        except Exception as exc:  # the profiler is optional: report why it is missing
            self.prof, self.busy_error = None, f"{type(exc).__name__}: {exc}"

    def _stop_profile(self) -> None:
        cuda_sync(self.device)
        wall = time.perf_counter() - self.p0
        try:
            self.prof.__exit__(None, None, None)
            if self.host:
                self.host_table = self.prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=90)
                if self.device.type == "cuda":
                    self.gpu_table = self.prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=30, max_name_column_width=90)
                    names = [e.name for e in self.prof.events()]
                    self.launches = sum(n.startswith(LAUNCH_CALLS) for n in names) / self.profile
            if self.device.type == "cuda":
                self.busy = gpu_busy_share(self.prof, wall)
        except Exception as exc:
            self.busy_error = f"{type(exc).__name__}: {exc}"

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0

    @property
    def median_seconds(self) -> float:
        """Median time of one iteration: robust to other processes' bursts on a shared machine.
        (On CUDA the host runs ahead of the GPU by at most a few iterations, so in steady state this
        is the GPU's pace too; the synchronised mean is the figure to trust there.)"""
        import statistics

        return statistics.median(b - a for a, b in zip(self.stamps, self.stamps[1:]))


def parse_path(name: str) -> tuple[bool, int]:
    """``device`` -> (True, 0); ``loaderN`` -> (False, N)."""
    if name == "device":
        return True, 0
    if name.startswith("loader") and name[6:].isdigit():
        return False, int(name[6:])
    raise SystemExit(f"--paths: unknown data path {name!r} (use device, loader0, loader2, ...)")


def profiled_iterations(args: argparse.Namespace) -> int:
    """Iterations profiled after the timed ones: on CUDA (GPU busy share), or anywhere with --host-profile."""
    return args.profile_iters if (args.cuda or args.host_profile) else 0


def base_config(args: argparse.Namespace, data: list[str], model: str, path: str, amp: str = "none",
                step: str = "plain") -> Any:
    from superres.config import config_from_dict

    resident, workers = parse_path(path)
    total = args.warmup + args.iters + profiled_iterations(args)
    raw = {
        "name": f"throughput-{model}-{path}",
        "model": {"name": model, "scale": args.scale, "in_channels": 3, "options": json.loads(args.options)},
        "data": {"train": data, "patch_size": args.patch, "batch_size": args.batch, "augment": True,
                 "val": None, "workers": workers, "device_resident": resident},
        "loss": [{"type": "l1", "weight": 1.0}],
        "optim": {"name": "adam", "lr": 2e-4},
        "schedule": {"name": "constant", "warmup": 0},
        # save_every past the end: the trainer's only checkpoint then comes after the last iteration's
        # callback, outside the timed and profiled windows (a save inside the profiled window once
        # halved the "GPU busy" share: host-side copies and a disk write, no kernels)
        "train": {"iterations": total, "save_every": total + 1, "log_every": total, "val_every": total,
                  "ema": args.ema, "amp": amp, "channels_last": args.channels_last_resolved,
                  "compile": args.compile, "seed": 0, "device": args.device, "deterministic": args.deterministic,
                  "cuda_graph": step == "graph"},
    }
    return config_from_dict(raw, source="train_throughput")


def measure_training(args: argparse.Namespace, data: list[str], model: str, path: str, workdir: Path,
                     amp: str = "none", step: str = "plain") -> dict[str, Any]:
    """One row: a short training run of ``model`` on data path ``path`` under autocast ``amp`` with the
    ``plain`` or ``graph`` step, timed by :class:`Window`."""
    from superres.training import train

    config = base_config(args, data, model, path, amp, step)
    window = Window(args.torch_device, args.warmup, args.iters, profiled_iterations(args), host=bool(args.host_profile))
    log = io.StringIO()
    try:
        with contextlib.redirect_stderr(log) if not args.verbose else contextlib.nullcontext():
            model_file = train(config, run_dir=workdir / f"{model}-{path}-{amp}-{step}", callback=window)
    except BaseException:
        sys.stderr.write(log.getvalue())
        raise
    chosen = [line for line in log.getvalue().splitlines() if "data path:" in line]
    ignored = [line.strip() for line in log.getvalue().splitlines() if "train.amp=" in line and "ignored" in line]
    from superres.modelfile import load_model
    from superres.models.complexity import count_parameters

    params = count_parameters(load_model(model_file))
    patches = args.iters * args.batch
    row = {
        "model": model,
        "params": params,
        "path": path,
        "step": step,
        "amp_requested": amp,
        "amp": "none" if ignored else amp,  # what the trainer used (it ignores bf16 on CPUs without it)
        "data_path_logged": chosen[0].split("data path: ", 1)[1] if chosen else None,
        "iterations_timed": args.iters,
        "seconds": round(window.seconds, 4),
        "patches_per_s": round(patches / window.seconds, 2),
        "ms_per_iteration": round(1000 * window.seconds / args.iters, 2),
        "patches_per_s_median": round(args.batch / window.median_seconds, 2),
        "ms_per_iteration_median": round(1000 * window.median_seconds, 2),
    }
    if window.host_table is not None:
        with open(args.host_profile, "a", encoding="utf-8") as fh:
            fh.write(f"## {model}, data path {path}, autocast {amp}, {step} step: {window.profile} iterations, "
                     "ops by self CPU time\n")
            if window.launches is not None:
                fh.write(f"GPU launches (kernels and graphs) per iteration: {window.launches:.1f}\n")
            fh.write(window.host_table + "\n\n")
            if window.gpu_table is not None:
                fh.write(f"## {model}, data path {path}, autocast {amp}, {step} step: ops and kernels by self GPU time\n")
                fh.write(window.gpu_table + "\n\n")
        if window.launches is not None:
            row["launches_per_iteration"] = round(window.launches, 1)
    if args.cuda and args.profile_iters:
        row["gpu_busy"] = None if window.busy is None else round(window.busy, 4)
        if window.busy_error:
            row["gpu_busy_error"] = window.busy_error
    return row


def measure_data_only(args: argparse.Namespace, data: list[str], path: str) -> dict[str, Any]:
    """Batches per second of a data path alone (made, on the device, synchronised), no model."""
    from superres.training.batches import IterationItems, build_train_dataset, training_batches
    from superres.training.device_data import DeviceBatches

    config = base_config(args, data, "espcn", path)
    resident, workers = parse_path(path)
    dataset = build_train_dataset(config.data, scale=args.scale, in_channels=3, seed=0)
    items = IterationItems(dataset, batch_size=args.batch, seed=0)
    device_batches = DeviceBatches(dataset, seed=0, device=args.torch_device) if resident else None
    n = args.warmup + args.iters
    batches = training_batches(items, device_batches, start=1, stop=n, slots=range(args.batch), workers=workers,
                               pin_memory=args.cuda)
    t0 = 0.0
    for i, (lr, hr) in enumerate(batches, start=1):
        lr = lr.to(args.torch_device, non_blocking=True)
        hr = hr.to(args.torch_device, non_blocking=True)
        if i == args.warmup:
            cuda_sync(args.torch_device)
            t0 = time.perf_counter()
    cuda_sync(args.torch_device)
    seconds = time.perf_counter() - t0
    del batches
    return {"path": path, "patches_per_s": round(args.iters * args.batch / seconds, 2),
            "ms_per_batch": round(1000 * seconds / args.iters, 3)}


def markdown(results: dict[str, Any]) -> str:
    """The table: one row per (model, autocast, step, path), with the ratio to the first DataLoader
    path listed (``--paths``) at the same autocast and step, and to the first autocast and step
    listed (``--amp``, ``--step``) on the same path."""
    rows = results["training"]
    loaders = [r["path"] for r in rows if r["path"] != "device"]
    ref_path = loaders[0] if loaders else None
    base = {(r["model"], r["amp_requested"], r.get("step", "plain")): r["patches_per_s"]
            for r in rows if r["path"] == ref_path}
    first = {}
    for r in rows:
        first.setdefault((r["model"], r["path"]), r)
    gpu = any("gpu_busy" in r for r in rows)
    ref_setting = f"{rows[0]['amp']}, {rows[0].get('step', 'plain')}" if rows else "-"
    head = (f"| model | params | data path | autocast | step | patches/s | ms/iteration | vs {ref_path or '-'} | "
            f"vs {ref_setting} | median ms/iteration |" + (" GPU busy |" if gpu else ""))
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        step = r.get("step", "plain")
        key = (r["model"], r["amp_requested"], step)
        ratio = f"{r['patches_per_s'] / base[key]:.2f}x" if key in base else "-"
        ref = first[(r["model"], r["path"])]
        vs_first = f"{r['patches_per_s'] / ref['patches_per_s']:.2f}x"
        line = (f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['path']} | {r['amp']} | {step} | "
                f"{r['patches_per_s']:.1f} | {r['ms_per_iteration']:.1f} | {ratio} | {vs_first} | "
                f"{r['ms_per_iteration_median']:.1f} |")
        if gpu:
            line += f" {r['gpu_busy']:.0%} |" if r.get("gpu_busy") is not None else " - |"
        lines.append(line)
    lines += ["", "| data path alone | patches/s | ms/batch |", "|---|---|---|"]
    lines += [f"| {d['path']} | {d['patches_per_s']:.1f} | {d['ms_per_batch']:.2f} |" for d in results["data_only"]]
    return "\n".join(lines) + "\n"


def write_atomic(path: str, text: str) -> None:
    from superres.io import atomic_write

    with atomic_write(Path(path)) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=[str(DEFAULT_DATA)], help="training image folders/files (or packed WebP folders)")
    parser.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated registry names (default {DEFAULT_MODELS})")
    parser.add_argument("--options", default="{}", help="JSON model options applied to every model (e.g. for one tiny model)")
    parser.add_argument("--paths", default="device,loader0,loader2", help="comma-separated: device, loader0, loaderN")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=96, help="HR patch side")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--iters", type=int, default=50, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=10, help="untimed iterations first (compilation, cuDNN autotune)")
    parser.add_argument("--profile-iters", type=int, default=10, help="CUDA: profiled iterations after the timed ones (0: none)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    parser.add_argument("--amp", default="auto",
                        help="comma-separated autocast settings, each timed: auto (bf16 on CUDA, none elsewhere), "
                             "none, bf16 (CUDA, or a CPU with native bf16), fp16 (CUDA); e.g. none,bf16")
    parser.add_argument("--channels-last", default="auto", choices=("auto", "true", "false"))
    parser.add_argument("--step", default="plain",
                        help="comma-separated, each timed: plain (the ordinary step), graph (train.cuda_graph: "
                             "the whole step in one CUDA graph; on the CPU the same step without a graph)")
    parser.add_argument("--compile", nargs="?", const=True, default=False, metavar="MODE",
                        help="torch.compile the training model; MODE: a torch.compile mode (reduce-overhead: CUDA graphs)")
    parser.add_argument("--host-profile", default=None, metavar="FILE",
                        help="profile the --profile-iters iterations on the host too (any device): append each row's "
                             "ops by self CPU time, and on CUDA the GPU launches per iteration, to FILE")
    parser.add_argument("--ema", type=float, default=None, help="EMA decay (default: none)")
    parser.add_argument("--deterministic", action="store_true", help="deterministic kernels (default: fastest)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--json", default=None, help="write the figures here as JSON")
    parser.add_argument("--markdown", default=None, help="write the table here")
    parser.add_argument("--verbose", action="store_true", help="show the trainer's progress output")
    args = parser.parse_args(argv)
    if args.iters < 1 or args.warmup < 1:
        parser.error("--iters and --warmup must be >= 1")

    if args.threads:
        torch.set_num_threads(args.threads)
    from superres.devices import resolve_device

    args.torch_device = resolve_device(args.device)
    args.cuda = args.torch_device.type == "cuda"
    amps = []
    for amp in (a for a in args.amp.split(",") if a):
        if amp not in ("auto", "none", "bf16", "fp16"):
            parser.error(f"--amp: unknown autocast {amp!r} (use auto, none, bf16, fp16)")
        amps.append(("bf16" if args.cuda else "none") if amp == "auto" else amp)
    if not amps:
        parser.error("--amp: give at least one of auto, none, bf16, fp16")
    args.channels_last_resolved = {"auto": "auto", "true": True, "false": False}[args.channels_last]
    steps = [s for s in args.step.split(",") if s]
    if not steps or any(s not in ("plain", "graph") for s in steps):
        parser.error(f"--step: give plain, graph or both, not {args.step!r}")
    models = [m for m in args.models.split(",") if m]
    paths = [p for p in args.paths.split(",") if p]
    for p in paths:
        parse_path(p)

    with tempfile.TemporaryDirectory(prefix="train-throughput-") as tmp:
        workdir = Path(tmp)
        data = resolve_data(args.data, workdir)
        from superres.training.batches import build_train_dataset
        from superres.training.device_data import image_bytes

        probe = build_train_dataset(base_config(args, data, models[0], paths[0]).data, scale=args.scale, in_channels=3, seed=0)
        context = {
            "device": torch.cuda.get_device_name(args.torch_device) if args.cuda else f"{platform.processor() or platform.machine()} CPU",
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu_cores": os.cpu_count(),
            "batch": args.batch, "patch": args.patch, "scale": args.scale,
            "iters": args.iters, "warmup": args.warmup,
            "amp": amps, "channels_last": args.channels_last_resolved,
            "compile": args.compile, "ema": args.ema, "deterministic": args.deterministic, "steps": steps,
            "data": [str(d) for d in args.data],
            "images": len(probe.paths), "image_mib": round(image_bytes(probe) / 2**20, 1),
        }
        del probe
        print(f"# training throughput on {context['device']} ({context['threads']} thread(s)), batch {args.batch}, "
              f"patch {args.patch}, x{args.scale}", flush=True)
        results: dict[str, Any] = {"context": context, "data_only": [], "training": []}
        for path in paths:
            results["data_only"].append(measure_data_only(args, data, path))
            print(f"data only {path}: {results['data_only'][-1]}", flush=True)
        for model in models:
            for amp in amps:
                for step in steps:
                    for path in paths:
                        results["training"].append(measure_training(args, data, model, path, workdir, amp, step))
                        print(f"{model} {amp} {step} {path}: {results['training'][-1]}", flush=True)

    table = markdown(results)
    print()
    print(table, end="")
    if args.markdown:
        write_atomic(args.markdown, table)
    if args.json:
        write_atomic(args.json, json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
