"""Re-score every shipped model on the sets its metadata records and compare with the recorded figures.

    python scripts/check_recorded_scores.py [--data ../shared/data] [--tolerance 1e-6]

Degraded sets (scores recorded with ``degraded: {source, preset, seed}``, ``ship_model.py --degraded``)
are made again from ``--data`` first, as ``superres data degrade`` makes them.

Prints one line per (model, set) with the recorded and the measured PSNR-Y / SSIM-Y and exits 1 if
any differs by more than the tolerance (dB for PSNR-Y, absolute for SSIM-Y). A refactoring that
must not change behaviour runs this before and after.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from superres.degrade import make_degraded_set
from superres.evaluate import evaluate
from superres.modelfile import WEIGHTS_DIR, read_metadata, shipped_names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parent.parent.parent / "shared" / "data")
    parser.add_argument("--tolerance", type=float, default=1e-6)
    parser.add_argument("--models", nargs="*", default=None, help="shipped names (default: all)")
    args = parser.parse_args(argv)
    worst = 0.0
    scratch = tempfile.TemporaryDirectory()
    made: dict[tuple, Path] = {}
    for name in args.models or shipped_names():
        meta = read_metadata(WEIGHTS_DIR / f"{name}.safetensors")
        scale = int(meta["scale"])
        for set_name, recorded in sorted(meta.get("scores", {}).items()):
            degraded = recorded.get("degraded")
            if degraded:
                key = (degraded["source"], degraded["preset"], degraded["seed"], scale)
                if key not in made:
                    made[key] = Path(scratch.name) / f"{len(made)}"
                    make_degraded_set([str(args.data / degraded["source"])], str(made[key]), scale=scale,
                                      preset=degraded["preset"], seed=degraded["seed"])
                report = evaluate(name, made[key], scale=scale, lr=f"LR_{degraded['preset']}")
            else:
                report = evaluate(name, args.data / set_name, scale=scale)
            dp = abs(report["psnr_y"] - recorded["psnr_y"])
            ds = abs(report["ssim_y"] - recorded["ssim_y"])
            worst = max(worst, dp, ds)
            flag = "ok" if max(dp, ds) <= args.tolerance else "DIFFERS"
            print(f"{name:22s} {set_name:13s} recorded {recorded['psnr_y']:.6f} / {recorded['ssim_y']:.6f}  "
                  f"measured {report['psnr_y']:.6f} / {report['ssim_y']:.6f}  {flag}", flush=True)
    print(f"largest difference {worst:.2e} (tolerance {args.tolerance:g})")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
