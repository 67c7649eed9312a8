"""Ship a trained model: copy a run's model file into ``superres/weights/NAME.safetensors`` with its
benchmark scores measured now.

Usage (from the repository root, ``../shared/data`` next to it)::

    python scripts/ship_model.py runs/lumanet_x4/model.safetensors lumanet-x4
    python scripts/ship_model.py runs/enhanced_x4_stage2/model.safetensors enhanced-x4 --sets Set5 Set14
    python scripts/ship_model.py runs/enhanced_x4_perceptual_lite/model.safetensors enhanced-x4-perceptual --perceptual
    python scripts/ship_model.py runs/realworld_x4/model.safetensors realworld-x4 --perceptual --purpose photo \
        --degraded Set14/HR:medium Set14/HR:heavy train/BSD200:medium train/BSD200:heavy
    python scripts/ship_model.py runs/realworld_x4_gan/model.safetensors realworld-x4-gan --perceptual --purpose photo \
        --strength-partner realworld-x4 --degraded Set14/HR:medium Set14/HR:heavy train/BSD200:medium train/BSD200:heavy

What the shipped file holds: the same weights (learned parameters stored as float16 unless
``--weights-dtype float32``), and the run's metadata (config, training data,
iterations, wall time, the warm-start lineage) plus

* ``scores``: PSNR-Y / SSIM-Y on each ``--sets`` folder at the model's scale, measured by
  :func:`superres.evaluate.evaluate` (the code behind ``superres eval``, PROTOCOL.md scoring) on the
  weights as stored: float16 by default (``--weights-dtype``; half the file, and PSNR moves by
  about 1e-4 dB). The scores the run itself recorded on its validation set are kept as
  ``training_scores``;
* ``init_from`` and ``total_iterations`` / ``total_wall_time_s`` when the run was a warm start whose
  model file predates the trainer recording them (read from the parent file named by
  ``config.model.init_from``, which must then still exist);
* ``shipped_from``: the run's model file, and ``name``: the shipped name;
* with ``--degraded SRC:PRESET ...``: scores on degraded test sets too, each made here exactly as
  ``superres data degrade DATA_ROOT/SRC --scale S --preset PRESET --seed 0`` does (``--degrade-seed``),
  recorded as ``<SRC name>-<PRESET>`` (a benchmark's ``HR`` folder is named by its set: ``Set14/HR`` gives
  ``Set14-medium``) with ``degraded: {source, preset, seed}`` so that
  ``scripts/check_recorded_scores.py`` can make the set again;
* ``purpose`` (``--purpose photo``: a model for real photos, chosen by ``upscale --for photo``) and
  ``strength_partner`` (``--strength-partner NAME``: the model ``--strength`` blends this one with);
* for an int8 model (``lumanet`` with ``int8``): each set's scores also under ``onnx_int8``, measured
  through onnxruntime's integer kernels (``superres eval --backend onnx``), next to PyTorch's
  (its eval-mode integer pass, which should give the same figures);
* for a model trained with training-only structure (``lumanet`` with ``expand``): the weights are
  folded into the plain model (:func:`superres.models.fold`), and ``trained_as`` keeps the arch and
  args it was trained with;
* with ``--data FOLDER ...``: ``data`` names those folders, for a run that trained on a scratch
  copy of them (``benchmarks/gpu_time_to_quality.py`` unpacks into a temporary folder); the paths
  the run saw are kept as ``data_as_trained``.

``--reship`` re-stores an already shipped file (e.g. at another ``--weights-dtype``): its training
metadata stays as it is, the scores are measured again, and ``reshipped`` notes the change.

The file is written atomically; nothing else in the package changes (the shipped list is the folder).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="the run's model file (runs/NAME/model.safetensors)")
    parser.add_argument("name", help="shipped name, e.g. lumanet-x4 (used as --model NAME)")
    parser.add_argument("--sets", nargs="+", default=["Set5", "Set14"], help="benchmark sets to score on")
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--data", nargs="+", default=None, metavar="FOLDER",
                        help="the training folders the run's data was a copy of (recorded as metadata 'data')")
    parser.add_argument("--weights-dtype", choices=("float16", "float32"), default="float16",
                        help="how the learned weights are stored (default float16: half the size; scored as stored)")
    parser.add_argument("--perceptual", nargs="?", const="effdist", default=None, metavar="METRIC",
                        help="also record a perceptual distance in the scores (default metric: effdist)")
    parser.add_argument("--degraded", nargs="+", default=[], metavar="SRC:PRESET",
                        help="also score on degraded sets made from DATA_ROOT/SRC with the preset (e.g. Set14/HR:medium)")
    parser.add_argument("--degrade-seed", type=int, default=0)
    parser.add_argument("--purpose", choices=("benchmark", "photo"), default=None,
                        help="what the model is for (recorded; upscale --for photo chooses among photo models)")
    parser.add_argument("--strength-partner", default=None, metavar="NAME",
                        help="the shipped model upscale --strength blends this one with (same network)")
    parser.add_argument("--reship", action="store_true",
                        help="SOURCE is a shipped file: keep its training metadata, re-score, store at --weights-dtype")
    args = parser.parse_args(argv)

    from superres import modelfile
    from superres.degrade import make_degraded_set
    from superres.errors import SuperresError
    from superres.evaluate import evaluate
    from superres.modelfile import lineage, load_model, read_metadata, save_model, warm_start_metadata
    from superres.models import fold

    try:
        meta: dict[str, Any] = read_metadata(args.source)
        scale = int(meta["scale"])
        # Training-only structure (lumanet's expand) is folded: the shipped file is the plain model.
        model, model_args = fold(load_model(args.source), meta["args"])
        if model_args != meta["args"]:
            meta["trained_as"] = {"arch": meta["arch"], "args": meta["args"]}
        with tempfile.TemporaryDirectory() as tmp:
            # The scores are those of the weights as stored (--weights-dtype), so stage that file first.
            staged = save_model(Path(tmp) / "staged.safetensors", model, arch=meta["arch"], args=model_args,
                                weights_dtype=args.weights_dtype)
            scores = {}
            metric = None
            if args.perceptual is not None:
                from superres.perceptual import build_perceptual

                metric = build_perceptual(args.perceptual)
            runs: list[tuple[str, Path, str, dict[str, Any] | None]] = [
                (name, args.data_root / name, "LR_bicubic", None) for name in args.sets]
            for spec in args.degraded:
                source, _, preset = spec.partition(":")
                if not preset:
                    raise SuperresError(f"--degraded {spec}: expected SRC:PRESET, e.g. Set14:medium")
                src = Path(source)
                folder = Path(tmp) / f"{src.parent.name if src.name == 'HR' else src.name}-{preset}"
                make_degraded_set([str(args.data_root / source)], str(folder), scale=scale, preset=preset,
                                  seed=args.degrade_seed)
                runs.append((folder.name, folder, f"LR_{preset}",
                             {"source": source, "preset": preset, "seed": args.degrade_seed}))
            for name, folder, lr, degraded in runs:
                report = evaluate(str(staged), folder, scale=scale, perceptual=metric, lr=lr)
                scores[name] = {"psnr_y": report["psnr_y"], "ssim_y": report["ssim_y"], "images": report["count"],
                                "scale": scale, "measured_by": "superres.evaluate (superres eval)"}
                if degraded is not None:
                    scores[name]["degraded"] = degraded
                    scores[name]["measured_by"] = f"superres.evaluate (superres eval --lr {lr})"
                line = f"{args.name}: {name} x{scale}: PSNR-Y {report['psnr_y']:.3f} dB / SSIM-Y {report['ssim_y']:.4f}"
                if metric is not None:
                    scores[name][args.perceptual] = report[args.perceptual]
                    scores[name]["measured_by"] = scores[name]["measured_by"][:-1] + f" --perceptual {args.perceptual})"
                    line += f" / {args.perceptual} {report[args.perceptual]:.4f}"
                print(line)
                if model_args.get("int8"):
                    # Score the int8 engine too: PyTorch's integer pass should match it; the record shows it does.
                    onnx_report = evaluate(str(staged), args.data_root / name, scale=scale, backend="onnx")
                    scores[name]["onnx_int8"] = {"psnr_y": onnx_report["psnr_y"], "ssim_y": onnx_report["ssim_y"],
                                                 "measured_by": "superres eval --backend onnx (QLinearConv in onnxruntime)"}
                    print(f"{args.name}: {name} x{scale}, onnxruntime int8: PSNR-Y {onnx_report['psnr_y']:.3f} dB "
                          f"/ SSIM-Y {onnx_report['ssim_y']:.4f}")
            model = load_model(staged)  # exactly the weights that were scored
        if args.reship:
            meta.setdefault("reshipped", []).append({"from": str(args.source), "weights_dtype": args.weights_dtype})
        else:
            if "scores" in meta:
                meta["training_scores"] = meta["scores"]
            parent_path = (meta.get("config") or {}).get("model", {}).get("init_from")
            if parent_path and "init_from" not in meta:
                parent = lineage(parent_path, read_metadata(parent_path))
                meta.update(warm_start_metadata(parent, int(meta.get("iterations", 0)), float(meta.get("wall_time_s", 0.0))))
            if args.data:
                meta["data_as_trained"] = meta.get("data")
                meta["data"] = list(args.data)
            meta["shipped_from"] = str(args.source)
        meta["scores"] = scores
        meta["name"] = args.name
        if args.purpose is not None:
            meta["purpose"] = args.purpose
        if args.strength_partner is not None:
            partner = read_metadata(modelfile.WEIGHTS_DIR / f"{args.strength_partner}.safetensors")
            if (partner["arch"], partner["args"]) != (meta["arch"], model_args):
                raise SuperresError(f"--strength-partner {args.strength_partner}: a different network "
                                    f"({partner['arch']} {partner['args']}); --strength blends equal networks only")
            meta["strength_partner"] = args.strength_partner
        extra = {k: v for k, v in meta.items() if k not in modelfile._CORE_KEYS}  # save_model writes those
        out = save_model(modelfile.WEIGHTS_DIR / f"{args.name}.safetensors", model,
                         arch=meta["arch"], args=model_args, metadata=extra, weights_dtype=args.weights_dtype)
    except SuperresError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
