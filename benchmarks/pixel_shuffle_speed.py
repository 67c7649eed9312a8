"""A training step's upsampling stage with ``nn.PixelShuffle`` against superres's ``PixelShuffle``.

Usage (from the repository root)::

    python benchmarks/pixel_shuffle_speed.py                       # CUDA when there is one
    python benchmarks/pixel_shuffle_speed.py --device cpu --batch 2 --repeats 5

What is timed: forward and backward of ``conv 3x3 (F -> F*r^2) -> pixel shuffle (r) -> conv 3x3
(F -> 3)`` on a ``channels_last`` batch (the training layout; bf16 autocast on CUDA), the last
upsampling stage of ``edsr-baseline`` x4 at the training patch size (48 x 48 LR -> 96 -> 192 x 192
HR; the stage here starts at 96 x 96). The two modules give the same values and gradients (checked
before timing). Both are timed in one process, interleaved, and the median of ``--repeats``
synchronised runs is reported, with the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=96, help="side of the stage's input (LR side x 2 at x4)")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--factor", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)

    from superres.models.blocks import PixelShuffle

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    f, c = args.factor, args.channels
    up = nn.Conv2d(c, c * f * f, 3, padding=1).to(device, memory_format=torch.channels_last)
    tail = nn.Conv2d(c, 3, 3, padding=1).to(device, memory_format=torch.channels_last)
    x = torch.randn(args.batch, c, args.size, args.size, device=device).contiguous(memory_format=torch.channels_last)
    shuffles = {"nn.PixelShuffle": nn.PixelShuffle(f), "superres PixelShuffle": PixelShuffle(f)}

    def step(shuffle: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        up.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            out = tail(shuffle(up(x)))
        loss = out.float().square().mean()
        loss.backward()
        return out.detach(), up.weight.grad.detach().clone()

    reference = [step(s) for s in shuffles.values()]
    for (a, ga), (b, gb) in zip(reference, reference[1:]):
        if not (torch.equal(a, b) and torch.equal(ga, gb)):
            raise SystemExit("the two shuffles disagree")

    times: dict[str, list[float]] = {name: [] for name in shuffles}
    for _ in range(3):  # warm-up (cuDNN's choices)
        for s in shuffles.values():
            step(s)
    for _ in range(args.repeats):
        for name, s in shuffles.items():
            if cuda:
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            step(s)
            if cuda:
                torch.cuda.synchronize(device)
            times[name].append(time.perf_counter() - t0)
    where = torch.cuda.get_device_name(device) if cuda else "CPU"
    print(f"# upsampling stage forward + backward, batch {args.batch} x {c} x {args.size}^2, x{f}, channels_last, "
          f"{'bf16 autocast' if cuda else 'fp32'}, {where}, median of {args.repeats}")
    base = statistics.median(times["nn.PixelShuffle"])
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"{name}: {1000 * m:.3f} ms ({m / base:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
