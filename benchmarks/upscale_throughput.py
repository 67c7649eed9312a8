"""Throughput of `superres upscale` against a naive loop over files with the same model, on the CPU.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/upscale_throughput.py --threads 1 --images 6 --frames 100 --repeats 4

Each job is run by both methods in the same process, ``--repeats`` rounds, the order of the two
swapped every round. Reported per job: the rate of each method's fastest pass, the ratio of the
two fastest passes, the ratio of each round (naive time over superres time) and their median, and
how many CPUs each method kept busy (process CPU time over wall time, median of the rounds) with
the bound that gives: both methods do about the same CPU work, so with every CPU busy the naive
time could shrink at most by (CPUs) / (CPUs the naive loop kept busy), corrected by the ratio of
the two methods' CPU times.

Both methods run the model as ``superres upscale`` does by default: the precision ``--precision
auto`` resolves to for the model here (``superres.precision.resolve_precision``: bf16 for the
shipped models with a bf16 profile on a CPU with native bf16, fp32 otherwise) and, for the video
jobs, the tile ``--tile auto`` gives (the naive loop is handed that tile; the pipeline resolves
``auto`` itself). Jobs (``--jobs``, default all):

* **photos**: ``--images`` 1 MP (1000 x 1000) PNG photos (crops and flips of scikit-image's
  astronaut and coffee), upscaled x4 by ``--model`` (default ``lumanet-x4``) at tile 256 into PNGs
  at each of ``--png-levels`` (zlib levels; 1 is ``superres upscale``'s default, 6 Pillow's), a row
  each. *naive*: for each file ``read_image`` -> ``superres.upscale`` -> ``write_image``, one after
  the other. *superres*: :func:`superres.inference.upscale_files` (the result of one image is
  encoded by a background thread while the next runs). Images/s.
* **video**: a 720p (1280 x 720) H.264 clip of ``--frames`` frames at 25 fps, upscaled by a tiny
  RGB x2 network (``enhanced``, 8 channels, one block; random weights: speed does not depend on
  them; no bf16 profile, so fp32) to 2560 x 1440 H.264 (``--crf 23``). *naive*: decode a frame,
  ``superres.upscale`` it, encode it, in one thread. *superres*: :func:`superres.video.upscale_video`
  (a decode thread, the model on batches of frames in the main thread, an encode thread; bounded
  queues between them). Frames/s.
* **video360**: the same at 640 x 360 with the shipped ``--video-model`` (default ``lumanet-x4``,
  x4 to 2560 x 1440). Frames/s.

``--threads`` is torch's thread count for both methods (FFmpeg's decoder and libx264 pick their
own threads, the same in both); ``--batch`` sets the video batch; ``--compare-writer`` adds a third
method to the photo rounds, ``superres upscale`` with its background PNG writer deflating on every
CPU (as before 2026-12-06), and its row against the same naive passes.

Prints Markdown tables with the CPU (``superres.devices.cpu_name``), the thread count and the load
average before and after, for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def make_photos(folder: Path, count: int) -> list[Path]:
    from skimage import data
    from skimage.transform import resize

    from superres.io import Image, write_image

    sources = [resize(data.astronaut(), (1000, 1000)), resize(data.coffee(), (1000, 1000))]
    paths = []
    for k in range(count):
        img = sources[k % 2]
        if k // 2 % 2:
            img = img[:, ::-1]
        if k // 4 % 2:
            img = img[::-1]
        path = folder / f"photo{k:02d}.png"
        write_image(path, Image(np.ascontiguousarray(img, dtype=np.float32), None, 8))
        paths.append(path)
    return paths


def make_clip(path: Path, frames: int, width: int = 1280, height: int = 720) -> None:
    import av

    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        yy, xx = np.mgrid[0:height, 0:width]
        for k in range(frames):
            rgb = np.stack([(xx + 4 * k) % 256, (yy + 2 * k) % 256, (xx // 5 + yy // 7 + k) % 256], -1)
            frame = av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")
            frame.pts = k
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)


def naive_photos(net, paths: list[Path], out: Path, png_level: int) -> None:
    from superres import upscale
    from superres.io import read_image, write_image

    for path in paths:
        write_image(out / path.name, upscale(net, read_image(path), tile=256, precision="auto"), png_level=png_level)


def ours_photos(model: str, paths: list[Path], out: Path, png_level: int, **writer) -> None:
    """``superres upscale``'s path; ``png_threads=None`` runs its background writer with every CPU
    (``superres.threads.writer_threads`` replaced for the call), the behaviour before 2026-12-06."""
    import superres.inference as inference
    from superres.inference import upscale_files

    if writer:
        real = inference.writer_threads
        inference.writer_threads = lambda: writer["png_threads"]
        try:
            return ours_photos(model, paths, out, png_level)
        finally:
            inference.writer_threads = real
    upscale_files([paths[0].parent], model=model, out_dir=out, tile=256, device="cpu", progress=False,
                  existing="overwrite", png_level=png_level)


def naive_video(net, src: Path, dst: Path, crf: int, tile: int, precision: str, out_size: tuple[int, int]) -> None:
    import av

    from superres import upscale

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vs = inp.streams.video[0]
        ovs = out.add_stream("libx264", rate=vs.average_rate)
        (ovs.width, ovs.height), ovs.pix_fmt = out_size, "yuv420p"
        ovs.options = {"crf": str(crf)}
        for frame in inp.decode(vs):
            rgb = frame.to_ndarray(format="rgb24").astype(np.float32) / 255
            sr = np.round(upscale(net, rgb, tile=tile, precision=precision) * 255).astype(np.uint8)
            new = av.VideoFrame.from_ndarray(sr, format="rgb24")
            for packet in ovs.encode(new):
                out.mux(packet)
        for packet in ovs.encode():
            out.mux(packet)


def rounds(methods: dict, repeats: int) -> dict:
    """Run each of ``methods`` (name -> callable) once per round, ``repeats`` rounds, the order
    reversed every other round; ``{name: [(wall s, process CPU s), ...]}``."""
    runs = {name: [] for name in methods}
    names = list(methods)
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            t, c = time.perf_counter(), time.process_time()
            methods[name]()
            runs[name].append((time.perf_counter() - t, time.process_time() - c))
    return runs


def row(job: str, units: int, runs: dict) -> str:
    """One Markdown row: rates of the fastest passes, their ratio, each round's ratio and the
    median, CPUs kept busy and the bound they give (module docstring)."""
    naive, ours = runs["naive"], runs["superres"]
    ratios = [a[0] / b[0] for a, b in zip(naive, ours)]
    busy = {k: statistics.median(c / t for t, c in v) for k, v in runs.items()}
    cpus = len(os.sched_getaffinity(0))
    work = statistics.median(c for _, c in naive) / statistics.median(c for _, c in ours)
    bound = cpus / busy["naive"] * work
    fast_naive, fast_ours = min(t for t, _ in naive), min(t for t, _ in ours)
    return (f"| {job} | {units / fast_naive:.3f} | {units / fast_ours:.3f} | {fast_naive / fast_ours:.2f}x | "
            f"{', '.join(f'{x:.2f}' for x in ratios)} | **{statistics.median(ratios):.2f}x** | "
            f"{busy['naive']:.2f} / {busy['superres']:.2f} of {cpus} | {bound:.2f}x |")


def video_job(net, model: str, clip: Path, size: tuple[int, int], scale: int, tmp: Path, repeats: int,
              batch: dict) -> tuple[str, dict]:
    """Both methods on one clip (:func:`rounds`), the model run as ``superres upscale`` runs it
    (module docstring). Returns ``("precision, tile", runs)``."""
    import torch

    from superres.precision import resolve_precision
    from superres.speed import auto_tile
    from superres.video import upscale_video

    cpu = torch.device("cpu")
    precision, _ = resolve_precision("auto", cpu, model)
    w, h = size
    tile = auto_tile(net, h, w, 3, cpu)
    runs = rounds({
        "naive": lambda: naive_video(net, clip, tmp / "naive.mp4", 23, tile, precision, (w * scale, h * scale)),
        "superres": lambda: upscale_video(net, clip, tmp / "superres.mp4", tile="auto", crf=23, progress=False,
                                          precision=precision, **batch),
    }, repeats)
    return f"{precision}, tile {tile}", runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", default="lumanet-x4")
    parser.add_argument("--jobs", nargs="+", choices=("photos", "video", "video360"),
                        default=["photos", "video", "video360"], help="which jobs to run (default: all three)")
    parser.add_argument("--video-model", default="lumanet-x4",
                        help="shipped model of the video360 job (default lumanet-x4)")
    parser.add_argument("--png-levels", type=int, nargs="+", default=[1, 6],
                        help="PNG zlib levels of the photo job, each run by both methods (default: 1, the "
                             "default of superres upscale, and 6, Pillow's)")
    parser.add_argument("--compare-writer", action="store_true",
                        help="photos: also run superres upscale with its PNG writer deflating on every CPU (a row of its own)")
    parser.add_argument("--batch", type=int, default=None, help="frames per model batch for the video job "
                        "(default: upscale_video's)")
    args = parser.parse_args()

    import torch

    from superres.devices import cpu_name
    from superres.inference import load_for_backend
    from superres.models import build
    from superres.modelfile import save_model

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "photos" in args.jobs:
            (tmp / "photos").mkdir()
            paths = make_photos(tmp / "photos", args.images)
            net = load_for_backend(args.model)
            for level in args.png_levels:
                for name in ("naive", "superres"):
                    (tmp / f"out_{name}_{level}").mkdir()
                methods = {
                    "naive": lambda: naive_photos(net, paths, tmp / f"out_naive_{level}", level),
                    "superres": lambda: ours_photos(args.model, paths, tmp / f"out_superres_{level}", level),
                }
                if args.compare_writer:  # the writer as before 2026-12-06 16:10 UTC: deflate on every CPU
                    methods["every CPU"] = lambda: ours_photos(args.model, paths, tmp / f"out_superres_{level}",
                                                               level, png_threads=None)
                runs = rounds(methods, args.repeats)
                size = sum(p.stat().st_size for p in (tmp / f"out_superres_{level}").iterdir()) / len(paths) / 1e6
                job = f"{args.images} photos 1000x1000 PNG -> x4 PNG ({args.model}), PNG level {level}, {size:.1f} MB per output"
                table.append(row(f"{job}; images/s", args.images, runs))
                if args.compare_writer:
                    table.append(row(f"{job}, the writer deflating on every CPU; images/s", args.images,
                                     {"naive": runs["naive"], "superres": runs["every CPU"]}))
        batch = {} if args.batch is None else {"batch": args.batch}
        if args.frames and "video" in args.jobs:
            clip = tmp / "clip.mp4"
            make_clip(clip, args.frames)
            torch.manual_seed(0)
            model_file = save_model(tmp / "tiny.safetensors", build("enhanced", scale=2, channels=8, blocks=1),
                                    arch="enhanced", args={"channels": 8, "blocks": 1})
            tiny = load_for_backend(str(model_file))
            how, runs = video_job(tiny, str(model_file), clip, (1280, 720), 2, tmp, args.repeats, batch)
            table.append(row(f"{args.frames} frames 1280x720 H.264 -> x2 H.264 (tiny enhanced, {how}); frames/s",
                             args.frames, runs))
        if args.frames and "video360" in args.jobs:
            clip = tmp / "clip360.mp4"
            make_clip(clip, args.frames, 640, 360)
            net = load_for_backend(args.video_model)
            scale = int(getattr(net, "scale", 4))
            how, runs = video_job(net, args.video_model, clip, (640, 360), scale, tmp, args.repeats, batch)
            table.append(row(f"{args.frames} frames 640x360 H.264 -> x{scale} H.264 ({args.video_model}, {how}); "
                             "frames/s", args.frames, runs))
    load_after = os.getloadavg()
    print(f"CPU: {cpu_name()}; torch threads: {args.threads}; load average (1 min) {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after; {args.repeats} rounds, the order swapped every round\n")
    print("| job; unit | naive loop (fastest) | superres upscale (fastest) | ratio (fastest) | ratio per round | "
          "median ratio | CPUs busy, naive / superres | CPU bound |")
    print("|---|---:|---:|---:|---|---:|---|---:|")
    for line in table:
        print(line)


if __name__ == "__main__":
    main()
