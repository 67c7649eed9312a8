"""``superres upscale`` of a 2000x2000 photo at x4 with the default settings: old code against new, side by side.

Usage (from the repository root)::

    PYTHONPATH=. python benchmarks/upscale_default.py --old-rev 985e2bc --out upscale_default.md

The old code is ``git archive`` of ``--old-rev`` (the commit before issue 21's changes) unpacked into a
temporary folder; the new code is this tree. Each run is a fresh ``python -m superres upscale INPUT
--out DIR`` subprocess with no other options (the defaults of that version), on the same input: a
2000x2000 RGB PNG made from scikit-image's astronaut photo (Lanczos-resized). Reported per run: wall
time, peak RSS of the process (``wait4``), and the output against the old default's output (max and
mean absolute difference in 8-bit levels, PSNR). ``--extra`` adds runs of the new code with extra
options (e.g. the old default model with the new precision/tile/thread defaults).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def make_input(path: Path, side: int) -> None:
    from PIL import Image
    from skimage import data as samples

    Image.fromarray(samples.astronaut()).resize((side, side), Image.LANCZOS).save(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old-rev", default="985e2bc")
    ap.add_argument("--side", type=int, default=2000)
    ap.add_argument("--extra", action="append", default=[], help="options for an extra run of the new code")
    ap.add_argument("--skip-old", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from superres.devices import cpu_name
    from superres.io import read_array

    load_before = os.getloadavg()
    lines = []
    with tempfile.TemporaryDirectory(prefix="superres-bench-") as tmp:
        tmp = Path(tmp)
        old_tree = tmp / "old"
        old_tree.mkdir()
        archive = tmp / "old.tar"
        subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive), args.old_rev], check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(old_tree, filter="data")
        src = tmp / "photo.png"
        make_input(src, args.side)
        runs = [] if args.skip_old else [("old defaults", old_tree, [])]
        runs.append(("new defaults", REPO, []))
        runs += [(f"new, {extra}", REPO, shlex.split(extra)) for extra in args.extra]
        outputs = {}
        for label, tree, extra in runs:
            out_dir = tmp / f"out{len(outputs)}"
            t = time.perf_counter()
            env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
            env["PYTHONPATH"] = str(tree)
            err_path = tmp / f"stderr{len(outputs)}.txt"
            with open(err_path, "w") as err:  # a file, not a pipe: the progress bars cannot fill a pipe and block
                proc = subprocess.Popen([sys.executable, "-m", "superres", "upscale", str(src), "--out", str(out_dir), *extra],
                                        cwd=str(tree), env=env, stdout=subprocess.DEVNULL, stderr=err)
                _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t
            stderr = err_path.read_text()
            if status:
                raise SystemExit(f"{label}: exit status {status}\n{stderr[-2000:]}")
            notes = "; ".join(line for line in stderr.splitlines() if line.startswith(("threads:", "model:", "precision")))
            outputs[label] = (wall, usage.ru_maxrss / 1024.0, notes, out_dir / src.name)
            print(f"{label}: {wall:.1f} s, peak RSS {usage.ru_maxrss / 1024:.0f} MiB; {notes}", file=sys.stderr, flush=True)
        reference = read_array(outputs[runs[0][0]][3]).astype(np.float64)
        old_wall = outputs[runs[0][0]][0]
        lines += [
            f"CPU: {cpu_name()}, {len(os.sched_getaffinity(0))} usable CPUs; input {args.side}x{args.side} RGB at x4; "
            "load average before: " + ", ".join(f"{x:.2f}" for x in load_before) + "; after: "
            + ", ".join(f"{x:.2f}" for x in os.getloadavg()),
            "",
            f"| run | wall time (s) | x faster than {runs[0][0]} | peak RSS (MiB) | max / mean abs diff vs {runs[0][0]} (8-bit levels) | PSNR vs it (dB) | choices printed |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for label, _, _ in runs:
            wall, rss, notes, path = outputs[label]
            out = read_array(path).astype(np.float64)
            diff = np.abs(out - reference)
            mse = float(np.mean(diff**2))
            psnr = "inf" if mse == 0 else f"{10 * np.log10(255.0**2 / mse):.2f}"
            lines.append(f"| {label} | {wall:.1f} | {old_wall / wall:.2f}x | {rss:.0f} | {diff.max():.0f} / {diff.mean():.3f} | {psnr} | {notes} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
