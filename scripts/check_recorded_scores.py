"""Re-score every shipped model on the sets its metadata records and compare with the recorded figures.

    python scripts/check_recorded_scores.py [--data ../shared/data] [--tolerance 1e-6]

Prints one line per (model, set) with the recorded and the measured PSNR-Y / SSIM-Y and exits 1 if
any differs by more than the tolerance (dB for PSNR-Y, absolute for SSIM-Y). A refactoring that
must not change behaviour runs this before and after.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from superres.evaluate import evaluate
from superres.modelfile import WEIGHTS_DIR, read_metadata, shipped_names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parent.parent.parent / "shared" / "data")
    parser.add_argument("--tolerance", type=float, default=1e-6)
    parser.add_argument("--models", nargs="*", default=None, help="shipped names (default: all)")
    args = parser.parse_args(argv)
    worst = 0.0
    for name in args.models or shipped_names():
        meta = read_metadata(WEIGHTS_DIR / f"{name}.safetensors")
        for set_name, recorded in sorted(meta.get("scores", {}).items()):
            report = evaluate(name, args.data / set_name, scale=int(meta["scale"]))
            dp = abs(report["psnr_y"] - recorded["psnr_y"])
            ds = abs(report["ssim_y"] - recorded["ssim_y"])
            worst = max(worst, dp, ds)
            flag = "ok" if max(dp, ds) <= args.tolerance else "DIFFERS"
            print(f"{name:22s} {set_name:6s} recorded {recorded['psnr_y']:.6f} / {recorded['ssim_y']:.6f}  "
                  f"measured {report['psnr_y']:.6f} / {report['ssim_y']:.6f}  {flag}", flush=True)
    print(f"largest difference {worst:.2e} (tolerance {args.tolerance:g})")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
