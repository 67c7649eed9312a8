"""Time to quality on one GPU: ``edsr-baseline`` x4 trained for N minutes, minutes to 31.5/31.8 dB on Set5.

Two steps, on two machines::

    # here (once): pack T91 + BSD200 and Set5/Set14 HR as lossless WebP into .gpu/ (git-ignored),
    # and General100 into .gpu_extra/ (a device call carries at most 64 MiB with the tree, so the
    # two travel in two calls to the same warm machine; ignored folders stay there between calls)
    python benchmarks/gpu_time_to_quality.py pack                # 44 MiB, ~75 s on one core
    python benchmarks/gpu_time_to_quality.py pack --train ../shared/data/train/General100 --no-sets --out .gpu_extra

    # on the GPU machine, from the repository root: one call carrying .gpu_extra, then one carrying .gpu:
    python3 benchmarks/gpu_time_to_quality.py run --packed .gpu .gpu_extra --minutes 8 --budget-s 570 --out "$OUT"

``run`` does, in order:

1. unpacks each ``--packed`` folder (``train/``, ``Set5/HR``, ``Set14/HR``; WebP decoded to PNG,
   other files copied) into one scratch folder, in parallel, the ``train/`` folders merged; a
   ``--packed`` folder that is missing is skipped with a note (the second call's machine may be a
   fresh one), and a folder without WebP files is used as it is;
2. (unless ``--no-throughput``) measures training throughput with ``benchmarks/train_throughput.py``
   for ``edsr-baseline`` at the config's batch and patch size, device-resident data next to the
   DataLoader path, and sets ``train.val_every`` so that Set5 is scored about every
   ``--val-seconds`` of training (from the device path's iterations per second);
3. trains with ``superres train --config configs/edsr_baseline_x4_gpu.yaml`` (bf16, channels_last,
   device-resident data, warm-up then cosine over ``train.max_seconds = minutes * 60``), validating
   on Set5 and on Set14 (``data.val_extra``) at each validation;
4. scores the final model on Set5 and Set14 with ``superres eval``;
5. writes into ``--out`` (default ``$OUT``): ``model.safetensors``, ``metrics.csv``, ``config.yaml``,
   ``curves.png``, ``train.log``, ``summary.json`` and ``throughput.{md,json}`` (8 files), and prints
   every validation (training time, Set5 and Set14 PSNR-Y) and the time to 31.5 dB and to 31.8 dB
   PSNR-Y on Set5: the ``elapsed_s`` (training wall time, validation included) of the first
   validation row at or above each threshold.

Extra ``key=value`` arguments are config overrides (e.g. ``train.compile=reduce-overhead``). The run folder
itself (with ``last.pt``) stays in the scratch folder: it is too large to bring back. ``--budget-s``
caps the whole script's wall time (a device call may last 600 s): the training then gets what is
left after unpacking and the throughput step, less :data:`END_RESERVE_S`, if that is under ``--minutes``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"
DEFAULT_CONFIG = REPO / "configs" / "edsr_baseline_x4_gpu.yaml"
THRESHOLDS = (31.5, 31.8)
#: The "291 images" of the protocol. General100 (20 MiB as WebP) would take the packed folder past
#: the 64 MiB that a device call can carry, so it is packed on its own (see above).
DEFAULT_TRAIN = ("T91", "BSD200")
#: Where the final scores and the per-validation table come from: data.val and data.val_extra.
VAL_SETS = ("Set5", "Set14")
#: Seconds that --budget-s keeps for what follows the training loop: the trainer's start-up (images,
#: CUDA, bicubic baseline), its final validation and export, and two `superres eval` processes.
END_RESERVE_S = 75.0
PACKED_SUFFIX = ".webp"


# --------------------------------------------------------------------------- pack / unpack
def _pack_one(job: tuple[str, str]) -> tuple[str, int]:
    """Write one image as lossless WebP when that is exact (8-bit RGB), else copy the file as it is.

    WebP has no grayscale, no 16-bit and its alpha is not what ``read_array`` gives back, so only
    8-bit 3-channel images are converted; every WebP is decoded again and compared, pixel for pixel.
    """
    import numpy as np
    from PIL import Image

    from superres.io import read_array

    src, dest = Path(job[0]), Path(job[1])
    array = np.asarray(read_array(src))
    dest.parent.mkdir(parents=True, exist_ok=True)
    if array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3:
        out = dest.with_suffix(PACKED_SUFFIX)
        Image.fromarray(array).save(out, format="WEBP", lossless=True, quality=80, method=4)
        with Image.open(out) as im:
            if not np.array_equal(np.asarray(im.convert("RGB")), array):
                raise RuntimeError(f"{out}: WebP round trip is not exact")
    else:
        out = dest
        shutil.copyfile(src, out)
    return str(out), out.stat().st_size


def _unpack_one(job: tuple[str, str]) -> str:
    """Decode one packed WebP to PNG (fast compression), or copy any other file."""
    from PIL import Image

    src, dest = Path(job[0]), Path(job[1])
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.suffix.lower() == PACKED_SUFFIX:
        out = dest.with_suffix(".png")
        with Image.open(src) as im:
            im.convert("RGB").save(out, format="PNG", compress_level=1)
    else:
        out = dest
        shutil.copyfile(src, out)
    return str(out)


def _run_jobs(fn: Any, jobs: list[tuple[str, str]], workers: int | None) -> list[Any]:
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1))
    if workers == 1:
        return [fn(j) for j in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, jobs, chunksize=4))


def pack(sources: dict[str, Path], out: Path, workers: int | None = None) -> dict[str, Any]:
    """Pack image folders into ``out/<name>/...`` (``sources``: name -> folder), keeping sub-folders."""
    from superres.io import list_images

    jobs = []
    for name, folder in sources.items():
        for path in list_images([folder]):
            jobs.append((str(path), str(out / name / path.relative_to(folder))))
    results = _run_jobs(_pack_one, jobs, workers)
    size = sum(s for _, s in results)
    return {"files": len(results), "bytes": size}


def is_packed(folder: Path) -> bool:
    """True when ``folder`` holds packed WebP images (anywhere below it)."""
    return any(p.suffix.lower() == PACKED_SUFFIX for p in folder.rglob("*") if p.is_file())


def unpack(folder: Path, dest: Path, workers: int | None = None) -> Path:
    """Unpack ``folder`` (WebP -> PNG, other files copied) into ``dest``; return ``dest``."""
    jobs = [(str(p), str(dest / p.relative_to(folder))) for p in sorted(folder.rglob("*")) if p.is_file()]
    _run_jobs(_unpack_one, jobs, workers)
    return dest


# --------------------------------------------------------------------------- the summary
def time_to(rows: list[dict[str, str]], threshold: float) -> dict[str, Any] | None:
    """The first validation row with ``val_psnr_y >= threshold``: its ``elapsed_s`` and iteration."""
    for row in rows:
        value = row.get("val_psnr_y") or ""
        if value and float(value) >= threshold:
            return {"seconds": float(row["elapsed_s"]), "iteration": int(row["iteration"]), "psnr_y": float(value)}
    return None


def summarise(metrics_csv: Path, batch_size: int) -> dict[str, Any]:
    """Times to each threshold, every validation (time, Set5 and Set14 PSNR-Y), the best and last Set5
    scores, and training throughput from ``metrics.csv``."""
    with open(metrics_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    val = [r for r in rows if r.get("val_psnr_y")]
    last = rows[-1]
    iterations, elapsed = int(last["iteration"]), float(last["elapsed_s"])

    def number(row: dict[str, str], key: str) -> float | None:
        return float(row[key]) if row.get(key) else None

    return {
        "validations_table": [
            {"iteration": int(r["iteration"]), "seconds": float(r["elapsed_s"]),
             "Set5": number(r, "val_psnr_y"), "Set14": number(r, "val_Set14_psnr_y")}
            for r in val
        ],
        "time_to": {f"{t:.1f}": time_to(rows, t) for t in THRESHOLDS},
        "iterations": iterations,
        "elapsed_s": elapsed,
        "patches_per_s_with_validation": round(iterations * batch_size / elapsed, 1) if elapsed > 0 else None,
        "set5_last": float(val[-1]["val_psnr_y"]) if val else None,
        "set5_best": max(float(r["val_psnr_y"]) for r in val) if val else None,
        "validations": len(val),
    }


# --------------------------------------------------------------------------- run
def _python() -> list[str]:
    return [sys.executable]


def _tee(cmd: list[str], log: Path, env: dict[str, str]) -> int:
    """Run ``cmd`` with its output shown and appended to ``log``; return its exit status."""
    with open(log, "a", encoding="utf-8") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True, bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            fh.write(line)
        return proc.wait()


def run(args: argparse.Namespace) -> int:
    from superres.config import load_config

    out = Path(args.out or os.environ.get("OUT") or "gpu-out").resolve()
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="superres-gpu-"))
    scratch.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    log = out / "train.log"
    log.write_text("")
    started = time.monotonic()

    # 1. data
    packed = []
    for folder in map(Path, args.packed):
        if folder.is_dir():
            packed.append(folder)
        else:
            print(f"--packed {folder}: not here, skipped", flush=True)
    folders = {}
    for name, fallback in (("train", SHARED / "train"), ("Set5", SHARED / "Set5"), ("Set14", SHARED / "Set14")):
        sources = [folder / name for folder in packed if (folder / name).exists()] or [fallback]
        if all(src.is_dir() and is_packed(src) for src in sources):
            for src in sources:
                unpack(src, scratch / name, args.workers)  # train/ folders merge: each holds its own sub-folders
            folders[name] = scratch / name
        elif len(sources) == 1:
            folders[name] = sources[0]
        else:
            raise SystemExit(f"{name}: {', '.join(map(str, sources))} must all be packed folders to be merged")
        print(f"{name}: {folders[name]} (from {', '.join(map(str, sources))})", flush=True)
    print(f"data ready in {time.monotonic() - started:.1f} s", flush=True)

    overrides = [
        f"data.train=[{folders['train']}]",
        f"data.val={folders['Set5']}",
        f"data.val_extra=[{folders['Set14']}]",
        f"train.device={args.device}",
        *args.overrides,
    ]
    config = load_config(args.config, overrides)

    # 2. throughput, and the validation interval from it
    throughput: dict[str, Any] | None = None
    if args.throughput:
        cmd = [*_python(), str(REPO / "benchmarks" / "train_throughput.py"), "--data", str(folders["train"]),
               "--models", config.model.name, "--options", json.dumps(config.model.options),
               "--paths", args.throughput_paths, "--batch", str(config.data.batch_size),
               "--patch", str(config.data.patch_size), "--scale", str(config.model.scale),
               "--iters", str(args.throughput_iters), "--warmup", str(args.throughput_warmup),
               "--profile-iters", str(args.throughput_warmup), "--device", args.device,
               "--amp", config.train.amp if config.train.amp != "none" else "none",
               "--channels-last", str(config.train.channels_last).lower(),
               "--json", str(out / "throughput.json"), "--markdown", str(out / "throughput.md")]
        if config.train.compile:
            cmd.append("--compile" if config.train.compile is True else f"--compile={config.train.compile}")
        if _tee(cmd, log, env) != 0:
            print("throughput benchmark failed; training goes on with the config's val_every", flush=True)
        else:
            throughput = json.loads((out / "throughput.json").read_text())
            device_rows = [r for r in throughput["training"] if r["path"] == "device"]
            user_set = any(o.startswith("train.val_every=") for o in args.overrides)
            if device_rows and args.val_seconds > 0 and not user_set:
                per_s = device_rows[0]["patches_per_s"] / config.data.batch_size
                val_every = max(1, round(args.val_seconds * per_s))
                overrides.append(f"train.val_every={val_every}")
                print(f"validation every {val_every} iterations (~{args.val_seconds:g} s at {per_s:.1f} it/s)", flush=True)

    # 3. train, for --minutes or what --budget-s leaves after start-up, final scoring and copies
    minutes = args.minutes
    if args.budget_s is not None:
        left = (args.budget_s - (time.monotonic() - started) - END_RESERVE_S) / 60.0
        if left < minutes:
            print(f"--budget-s {args.budget_s:g}: training for {left:.2f} minutes instead of {minutes:g}", flush=True)
            minutes = max(left, 0.1)
    overrides.append(f"train.max_seconds={minutes * 60.0:.1f}")
    run_dir = scratch / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cmd = [*_python(), "-m", "superres", "train", "--config", str(args.config), *overrides, "--out", str(run_dir)]
    status = _tee(cmd, log, env)
    if status != 0:
        print(f"training failed with exit status {status}; see {log}", flush=True)
        return status

    # 4. scores of the final model
    scores = {}
    for name in VAL_SETS:
        cmd = [*_python(), "-m", "superres", "eval", "--model", str(run_dir / "model.safetensors"),
               "--data", str(folders[name]), "--scale", str(config.model.scale), "--json",
               "--device", "cuda" if _cuda(args.device) else "cpu"]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        with open(log, "a", encoding="utf-8") as fh:
            fh.write("$ " + " ".join(cmd) + "\n" + proc.stdout + proc.stderr)
        scores[name] = json.loads(proc.stdout) if proc.returncode == 0 else {"error": proc.stderr.strip()[-500:]}

    # 5. files and summary
    for name in ("model.safetensors", "metrics.csv", "config.yaml", "curves.png"):
        if (run_dir / name).exists():
            shutil.copyfile(run_dir / name, out / name)
    summary = summarise(run_dir / "metrics.csv", config.data.batch_size)
    data_path = [line for line in log.read_text().splitlines() if "data path:" in line]
    summary.update({
        "minutes": round(minutes, 3),
        "config": str(args.config),
        "overrides": overrides,
        "data_path": data_path[-1].split("data path: ", 1)[1] if data_path else None,
        "final_scores": {k: _brief(v) for k, v in scores.items()},
        "throughput": throughput["training"] if throughput else None,
        "total_wall_s": round(time.monotonic() - started, 1),
    })
    from superres.io import atomic_write

    with atomic_write(out / "summary.json") as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=2) + "\n")
    print_summary(summary)
    return 0


def _cuda(device: str) -> bool:
    import torch

    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def _brief(report: dict[str, Any]) -> dict[str, Any]:
    """PSNR/SSIM of an ``superres eval --json`` report (whatever else it holds is dropped)."""
    if "error" in report:
        return report
    return {k: report[k] for k in ("psnr_y", "ssim_y") if k in report}


def print_summary(summary: dict[str, Any]) -> None:
    print()
    print(f"data path: {summary['data_path']}")
    print(f"trained {summary['iterations']} iterations in {summary['elapsed_s']:.0f} s "
          f"({summary['patches_per_s_with_validation']} patches/s, validation included)")
    print("validations: training time, Set5 / Set14 PSNR-Y")
    for row in summary["validations_table"]:
        set14 = "-" if row["Set14"] is None else f"{row['Set14']:.2f}"
        print(f"  {row['seconds']:7.1f} s  iteration {row['iteration']:6d}  {row['Set5']:.2f} / {set14} dB")
    for key, hit in summary["time_to"].items():
        text = "not reached" if hit is None else f"{hit['seconds']:.0f} s (iteration {hit['iteration']}, {hit['psnr_y']:.2f} dB)"
        print(f"time to {key} dB on Set5: {text}")
    for name, score in summary["final_scores"].items():
        print(f"final {name}: {score}")


# --------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="pack training images and Set5/Set14 HR as lossless WebP")
    p.add_argument("--train", nargs="+", default=[str(SHARED / "train" / n) for n in DEFAULT_TRAIN],
                   help="training folders, each packed as train/<folder name> (default: T91 and BSD200)")
    p.add_argument("--set5", default=str(SHARED / "Set5" / "HR"))
    p.add_argument("--set14", default=str(SHARED / "Set14" / "HR"))
    p.add_argument("--no-sets", dest="sets", action="store_false",
                   help="pack the training folders only (e.g. a second folder for a second device call)")
    p.add_argument("--out", default=str(REPO / ".gpu"))
    p.add_argument("--workers", type=int, default=None)
    r = sub.add_parser("run", help="train for --minutes and report the time to 31.5/31.8 dB on Set5")
    r.add_argument("--packed", nargs="+", default=[str(REPO / ".gpu"), str(REPO / ".gpu_extra")],
                   help="packed folders (train/, Set5/HR, Set14/HR; train/ folders are merged) or plain folders")
    r.add_argument("--minutes", type=float, default=8.0, help="training time budget (train.max_seconds)")
    r.add_argument("--budget-s", type=float, default=None,
                   help="whole-script wall-time limit: trains for less than --minutes when needed to end in time")
    r.add_argument("--out", default=None, help="output folder (default $OUT)")
    r.add_argument("--config", default=str(DEFAULT_CONFIG))
    r.add_argument("--device", default="auto")
    r.add_argument("--work", default=None, help="scratch folder (default: a new temporary folder)")
    r.add_argument("--workers", type=int, default=None, help="unpacking processes (default: one per core)")
    r.add_argument("--val-seconds", type=float, default=30.0, help="validate about this often (needs the throughput step)")
    r.add_argument("--no-throughput", dest="throughput", action="store_false")
    r.add_argument("--throughput-paths", default="device,loader0,loader8")
    r.add_argument("--throughput-iters", type=int, default=20)
    r.add_argument("--throughput-warmup", type=int, default=10)
    r.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_args(argv)
    if args.command == "pack":
        out = Path(args.out)
        sources = {f"train/{Path(t).name}": Path(t) for t in args.train}
        if args.sets:
            sources.update({"Set5/HR": Path(args.set5), "Set14/HR": Path(args.set14)})
        t0 = time.monotonic()
        info = pack(sources, out, args.workers)
        print(f"packed {info['files']} files, {info['bytes'] / 2**20:.1f} MiB, into {out} in {time.monotonic() - t0:.0f} s")
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
