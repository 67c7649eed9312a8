"""Every shipped model's CPU speed per precision next to bicubic and OpenCV's FSRCNN/ESPCN graphs, and
how close the networks come to the machine's matmul rate. One process, one thread, interleaved.

Usage (from the repository root; OpenCV from the ``peers`` extra, e.g. in a venv with
``opencv-contrib-python-headless==5.0.0.93``)::

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/shipped_speed.py --repeats 3 --out shipped_speed.md

Rows, all on one 256x256 LR crop of scikit-image's astronaut photo (1 output MP at x4; the x2/x3
models get the same LR):

* ``pipeline``: uint8 RGB in -> :func:`superres.inference.upscale` (whole image, torch backend) ->
  uint8 RGB out, in fp32 and in bf16 (where the CPU has it natively), and through onnxruntime (fp32)
  for the models under 1 s per MP;
* ``network``: the model alone under ``inference_mode`` (channels_last input, as ``upscale`` feeds
  it) in each precision, and the exported graph alone in onnxruntime (the share of the pipeline
  outside the network is ``1 - network / pipeline``), and the ``superres export --io uint8`` graph
  (uint8 NHWC in and out, the conversions inside the graph; RGB models); the torch rows' GFLOP/s (FLOPs from
  :func:`superres.models.complexity.count_flops`) as a fraction of the **matmul rate** measured in the
  same passes in the same precision (8 ``torch.mm`` of 1024x1024 matrices, one thread);
* bicubic (MATLAB-exact, :func:`superres.resize.imresize` on uint8) and OpenCV ``dnn_superres``
  FSRCNN/ESPCN x4 (``../shared/peers``), when ``cv2`` is importable.

Each figure is the fastest of ``--repeats`` passes after a warm-up pass, with the passes of all rows
interleaved, so load from other processes hits every row alike.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
PEERS = REPO.parent / "shared" / "peers"


MATMUL_N = 1024
MATMUL_CALLS = 8


def matmul(dtype):
    """``MATMUL_CALLS`` products of ``MATMUL_N x MATMUL_N`` matrices in ``dtype``, as a timed row."""
    import torch

    a = torch.rand(MATMUL_N, MATMUL_N).to(dtype)
    b = torch.rand(MATMUL_N, MATMUL_N).to(dtype)

    def run() -> int:
        for _ in range(MATMUL_CALLS):
            torch.mm(a, b)
        return 10**6  # timed as "per MP": the row's figure is the time of the calls in ms

    return run


def main() -> int:
    import torch
    from skimage import data as samples

    from superres.devices import cpu_has_native_bf16, cpu_name
    from superres.inference import load_for_backend, upscale
    from superres.io import to_float, to_integer
    from superres.modelfile import load_model, read_metadata, shipped_names, WEIGHTS_DIR
    from superres.models.complexity import count_flops
    from superres.precision import autocast_for
    from superres.resize import imresize
    from superres.speed import choose_default_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--onnx-below-ms", type=float, default=1000.0, help="drop onnx rows slower than this after the warm-up")
    ap.add_argument("--onnx-max-params", type=int, default=400_000, help="onnx rows only for models up to this size")
    ap.add_argument("--out", default=None)
    ap.add_argument("--models", nargs="+", default=None, help="shipped models (default: all)")
    ap.add_argument("--no-uint8-graphs", dest="uint8_graphs", action="store_false",
                    help="leave out the `superres export --io uint8` graphs")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import tempfile

    from superres.export import UINT8_INPUT, UINT8_OUTPUT, _ort, _session
    from superres.graphio import export_uint8_onnx

    tmp = tempfile.TemporaryDirectory(prefix="superres-speed-")
    lr = samples.astronaut()[128:384, 128:384].copy()
    precisions = ["fp32"] + (["bf16"] if cpu_has_native_bf16() else [])
    default_name = choose_default_model(torch.device("cpu"))[0]

    rows: list[tuple[str, str, Callable[[], int]]] = []  # (method, variant, run -> output pixels)

    def add(method: str, variant: str, fn: Callable[[], np.ndarray]) -> None:
        rows.append((method, variant, lambda: int(np.prod(fn().shape[:2]))))

    for prec in precisions:
        rows.append(("matmul", prec, matmul(torch.float32 if prec == "fp32" else torch.bfloat16)))
    add("bicubic x4", "MATLAB imresize, uint8", lambda: imresize(lr, 4))
    try:
        from superres.peers import opencv_peer

        for stem in ("FSRCNN", "ESPCN"):
            peer = opencv_peer(PEERS / f"{stem}_x4.pb", threads=1)
            add(f"OpenCV {stem} x4 (.pb)", "pipeline, uint8 RGB", lambda run=peer.upscale: run(lr))
    except Exception as exc:  # no cv2 or no peers folder: the rows are left out, with the reason
        print(f"OpenCV rows skipped: {exc}", file=sys.stderr)

    flops_per_px: dict[str, float] = {}
    for name in args.models or shipped_names():
        net = load_model(name)
        scale = int(read_metadata(WEIGHTS_DIR / f"{name}.safetensors")["scale"])
        image = lr if net.in_channels == 3 else lr.mean(axis=2, keepdims=True).astype(np.uint8)
        x = torch.from_numpy(to_float(image).transpose(2, 0, 1).copy())[None].contiguous(memory_format=torch.channels_last)
        flops_per_px[name] = count_flops(net, (1, net.in_channels, 64, 64)) / (64 * scale) ** 2
        for prec in precisions:
            add(name, f"pipeline torch {prec}",
                lambda net=net, image=image, prec=prec: to_integer(upscale(net, to_float(image), tile=0, precision=prec), 8))

            def network(net=net, x=x, prec=prec) -> np.ndarray:
                with torch.inference_mode(), autocast_for(torch.device("cpu"), prec):
                    return net(x)[0].permute(1, 2, 0)

            add(name, f"network torch {prec}", network)
        if sum(p.numel() for p in net.parameters()) > args.onnx_max_params:
            continue
        onnx = load_for_backend(name, backend="onnx")
        add(name, "pipeline onnx fp32", lambda onnx=onnx, image=image: to_integer(upscale(onnx, to_float(image), tile=0), 8))
        add(name, "network onnx fp32", lambda onnx=onnx, x=x: onnx(x.contiguous())[0].permute(1, 2, 0))
        if net.in_channels == 3 and args.uint8_graphs:
            u8_path = Path(tmp.name) / f"{name}-u8.onnx"
            export_uint8_onnx(name, u8_path)
            u8 = _session(_ort(), u8_path, threads=1)
            add(name, "graph onnx uint8 in/out", lambda u8=u8, image=image: u8.run([UINT8_OUTPUT], {UINT8_INPUT: image[None]})[0][0])

    best = {i: float("inf") for i in range(len(rows))}
    skip: set[int] = set()
    for rep in range(args.repeats + 1):
        for i, (_, variant, fn) in enumerate(rows):
            if i in skip:
                continue
            t = time.perf_counter()
            pixels = fn()
            ms = (time.perf_counter() - t) * 1000.0 / (pixels / 1e6)
            if rep:
                best[i] = min(best[i], ms)
            elif "onnx" in variant and ms > args.onnx_below_ms:  # the warm-up pass drops slow onnx rows
                skip.add(i)
    rate = {rows[i][1]: 2 * MATMUL_N**3 * MATMUL_CALLS / (best[i] / 1000.0) / 1e9 for i in range(len(rows)) if rows[i][0] == "matmul"}
    load = os.getloadavg()
    fsrcnn = next((best[i] for i, r in enumerate(rows) if r[0].startswith("OpenCV FSRCNN")), None)
    lines = [
        f"CPU: {cpu_name()} (native bf16: {cpu_has_native_bf16()}), 1 thread, torch {torch.__version__}; "
        f"load average after the run: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}",
        f"matmul rate (torch.mm {MATMUL_N}x{MATMUL_N}, 1 thread, fastest of the interleaved passes): " + ", ".join(f"{p} {r:.0f} GFLOP/s" for p, r in rate.items()),
        f"default model of `superres upscale` here: {default_name}",
        "",
        "| method | variant | ms / output MP | x OpenCV FSRCNN x4 | GFLOP/s | of matmul rate |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for i, (method, variant, _) in enumerate(rows):
        if i in skip or method == "matmul":
            continue
        ms = best[i]
        ratio = f"{ms / fsrcnn:.2f}" if fsrcnn else "-"
        gflops = frac = "-"
        if variant.startswith("network torch") and method in flops_per_px:
            g = flops_per_px[method] * 1e6 / (ms / 1000.0) / 1e9
            gflops, frac = f"{g:.0f}", f"{g / rate[variant.rsplit(' ', 1)[1]]:.0%}"
        label = f"**{method}** (default)" if method == default_name else method
        lines.append(f"| {label} | {variant} | {ms:.0f} | {ratio} | {gflops} | {frac} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
