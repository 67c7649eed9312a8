"""What the real-world degradation (``data.degradation.kind: realworld``) adds to a CPU training step.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/degrade_speed.py

One process, one torch thread, interleaved rounds, the median of ``--rounds``. At a batch of
``--batch`` HR patches of ``--patch`` pixels at ``--scale`` it times:

* the degradation of one batch (:class:`superres.degrade.Degrader`, each preset; each round a new
  iteration, so new kernels, sizes, noise and JPEG qualities);
* the MATLAB-bicubic LR the image-folder dataset makes per item (the ``kind: bicubic`` data cost);
* one training step (forward, L1, backward, Adam step) of ``lumanet`` and ``edsr-baseline``;

and prints each degradation as a share of each step: the figure docs/BENCHMARKS.md reports
("Real-world degradations on the CPU").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _step(name: str, batch: int, patch: int, scale: int) -> Callable[[], None]:
    import torch
    import torch.nn.functional as F

    from superres.models import build

    torch.manual_seed(0)
    model = build(name, scale=scale)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    lr = torch.rand(batch, 3, patch // scale, patch // scale)
    hr = torch.rand(batch, 3, patch, patch)

    def run() -> None:
        opt.zero_grad(set_to_none=True)
        F.l1_loss(model(lr), hr).backward()
        opt.step()

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=128, help="HR patch side")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--models", nargs="+", default=["lumanet", "edsr-baseline"])
    args = parser.parse_args()

    import numpy as np
    import torch

    from superres.config import DegradationConfig
    from superres.degrade import PRESETS, Degrader
    from superres.devices import cpu_name
    from superres.resize import imresize

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    # natural-ish content (smooth structure + texture) so that JPEG and the noise draws do real work
    y, x = np.mgrid[0 : args.patch, 0 : args.patch]
    base = 0.5 + 0.3 * np.sin(0.11 * x[..., None] + np.arange(3)) * np.cos(0.07 * y[..., None])
    hr_u8 = np.clip((base[None] + 0.15 * rng.random((args.batch, args.patch, args.patch, 3))) * 255, 0, 255).astype(np.uint8)
    hr = torch.from_numpy(hr_u8).permute(0, 3, 1, 2).float() / 255

    jobs: dict[str, Callable[[int], None]] = {}
    for preset in PRESETS:
        d = Degrader(DegradationConfig(kind="realworld", preset=preset), scale=args.scale, seed=0)
        jobs[f"degrade {preset}"] = lambda i, d=d: d(hr, i, range(args.batch))
    jobs["bicubic LR (per item)"] = lambda i: [imresize(a, 1.0 / args.scale) for a in hr_u8]
    for name in args.models:
        step = _step(name, args.batch, args.patch, args.scale)
        step()  # warm-up (allocator, Adam state)
        jobs[f"step {name}"] = lambda i, step=step: step()

    times: dict[str, list[float]] = {k: [] for k in jobs}
    for i in range(1, args.rounds + 1):
        for label, job in jobs.items():
            t0 = time.perf_counter()
            job(i)
            times[label].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}

    print(f"CPU: {cpu_name()}; torch {torch.__version__}; 1 thread; batch {args.batch}, HR patch {args.patch}, "
          f"x{args.scale}; median of {args.rounds} rounds")
    print(f"{'work':<26}{'ms / batch':>12}{'ms / patch':>12}")
    for label, t in med.items():
        print(f"{label:<26}{1000 * t:>12.1f}{1000 * t / args.batch:>12.2f}")
    print()
    steps = [k for k in med if k.startswith("step ")]
    print(f"{'degradation / step':<26}" + "".join(f"{k[5:]:>16}" for k in steps))
    for label in [k for k in med if k.startswith("degrade ")]:
        print(f"{label:<26}" + "".join(f"{100 * med[label] / med[s]:>15.1f}%" for s in steps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
