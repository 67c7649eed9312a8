"""Video files and animated images through ``superres upscale``.

* **Video** (``.mp4``, ``.mkv``, ``.mov``, ``.webm``, ``.avi``, ``.m4v``; PyAV, the ``[video]``
  extra): decoded, upscaled in batches of frames (on the model's device) and encoded frame by
  frame, so memory holds one batch, not the clip. Every frame keeps its timestamp (the output video
  stream has the input's time base and frame rate) and the audio streams are copied packet by packet,
  not re-encoded. Codec: H.264 (``libx264``, ``yuv420p``) for MP4/MKV/MOV/AVI, VP9 for WebM;
  ``--codec`` and ``--crf`` (default 18, visually lossless for H.264) change it. The output is
  written to a hidden temporary file and renamed at the end, so an interrupted run leaves no
  half-written video; ``--skip-existing`` then resumes a folder of clips at the first one missing.
* **Animations** (GIF, animated WebP) are in :mod:`superres.animation`.
* **torchrun**: clips are shared between ranks as whole files; with fewer clips than ranks, each
  clip is split by frame ranges (one part per rank, joined by rank 0 with the audio).

The output size follows :class:`superres.outputs.OutputSize` as for images; H.264 and VP9 in
4:2:0 need even sizes, so a video's size is rounded down to even numbers.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from superres.devices import resolve_device
from superres.errors import SuperresError
from superres.inference import (
    _check_half,
    _check_out_dir,
    _model_channels,
    _model_device,
    _model_scale_attr,
    load_for_backend,
    upscale,
    upscale_tensor,
)
from superres.io import atomic_write
from superres.outputs import OutputSize, rank_and_world, recorded, rename_outputs, shard
from superres.resize import imresize
from superres.speed import auto_tile, choose_default_model

if TYPE_CHECKING:
    from superres.inference import Model
    from superres.outputs import OutputSize

__all__ = ["VIDEO_SUFFIXES", "is_video", "videos_in", "plan_videos", "upscale_video", "upscale_videos"]

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v")
#: Default constant rate factor (x264/VP9): visually lossless for H.264.
DEFAULT_CRF = 18
#: Frames upscaled together (one batch on the model's device).
DEFAULT_BATCH = 4


def is_video(path: Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def videos_in(folder: Path) -> list[Path]:
    """Video files under ``folder`` (recursive, hidden files and folders skipped, links to folders
    not followed), sorted."""
    import os

    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / f for f in files if not f.startswith(".") and Path(f).suffix.lower() in VIDEO_SUFFIXES]
    return sorted(found)


def plan_videos(inputs: Sequence[Path], out_dir: Path) -> list[tuple[Path, Path]]:
    """(source, destination) pairs: a video file keeps its name, a folder's videos their layout."""
    pairs = []
    for source in map(Path, inputs):
        if source.is_dir():
            pairs += [(p, Path(out_dir) / p.relative_to(source)) for p in videos_in(source)]
        elif source.is_file():
            pairs.append((source, Path(out_dir) / source.name))
        else:
            raise SuperresError(f"{source}: no such video file")
    return pairs


def _import_av():
    try:
        import av
    except ImportError:
        raise SuperresError("video needs PyAV: pip install 'superres[video]' (or pip install av)") from None
    return av


# --------------------------------------------------------------------------- frames
def _upscale_batch(net: "Model", frames: Sequence[np.ndarray], *, tile: "int | str", tile_overlap: int, half: bool,
                   out_hw: tuple[int, int]) -> np.ndarray:
    """``N`` uint8 ``H x W x 3`` frames -> uint8 ``N x H' x W' x 3`` at ``out_hw``. A 3-channel model
    runs on the whole batch at once (:func:`superres.inference.upscale_tensor`); other models frame
    by frame through :func:`superres.inference.upscale` (the channel rules)."""
    import torch


    if tile == "auto":  # the largest tile whose memory fits the budget, for this batch of frames
        h, w = frames[0].shape[:2]
        tile = auto_tile(net, h * len(frames), w, _model_channels(net), _model_device(net, torch.device("cpu")),
                         tile_overlap=tile_overlap)
    if _model_channels(net) == 3:
        x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().div_(255.0)
        y = upscale_tensor(net, x, tile=tile, tile_overlap=tile_overlap, half=half)
    else:
        y = torch.stack([
            torch.from_numpy(upscale(net, f.astype(np.float32) / 255.0, tile=tile, tile_overlap=tile_overlap,
                                     device="cpu", half=half)).permute(2, 0, 1)
            for f in frames
        ])
    with torch.inference_mode():
        y = y.clamp(0.0, 1.0)
        if tuple(y.shape[-2:]) != tuple(out_hw):
            y = imresize(y.float(), size=tuple(out_hw)).clamp_(0.0, 1.0)
        return y.mul_(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _native_scale(net: "Model") -> int:
    return _model_scale_attr(net)


# --------------------------------------------------------------------------- video
def _default_codec(dst: Path) -> str:
    return "libvpx-vp9" if dst.suffix.lower() == ".webm" else "libx264"


def upscale_video(net: "Model", src: Path, dst: Path, *, tile: int = 0, tile_overlap: int = 16, half: bool = False,
                  output_size: "OutputSize | None" = None, codec: str | None = None, crf: int | None = None,
                  batch: int = DEFAULT_BATCH, progress: bool = True,
                  frame_range: "tuple[int, int | None] | None" = None) -> dict[str, Any]:
    """Upscale the first video stream of ``src`` into ``dst`` frame by frame, copying the audio.
    Returns ``{"frames": n, "size": (w, h), "codec": name}``.

    ``frame_range=(lo, hi)`` (timestamps of the video stream; ``hi`` None: to the end) writes only
    the frames with ``lo <= pts < hi``, without audio and without B-frames, as one part of a clip
    shared between ``torchrun`` ranks (:func:`upscale_videos` joins the parts)."""
    av = _import_av()

    size = output_size if output_size is not None else OutputSize()
    codec = codec or _default_codec(dst)
    crf = DEFAULT_CRF if crf is None else int(crf)
    if not 0 <= crf <= 63:
        raise SuperresError(f"--crf {crf}: must be between 0 and 63")
    try:
        av.codec.Codec(codec, "w")
    except Exception:  # noqa: BLE001
        raise SuperresError(f"--codec {codec}: this FFmpeg build (PyAV) has no such encoder") from None
    try:
        inp = av.open(str(src))
    except Exception as exc:  # noqa: BLE001
        raise SuperresError(f"{src}: cannot open the video ({' '.join(str(exc).split())})") from None
    with inp:
        if not inp.streams.video:
            raise SuperresError(f"{src}: no video stream")
        vs = inp.streams.video[0]
        vs.thread_type = "AUTO"
        audio = list(inp.streams.audio) if frame_range is None else []
        lo, hi = frame_range if frame_range is not None else (None, None)
        if lo is not None:
            inp.seek(lo, stream=vs, backward=True)  # the keyframe at or before lo
        h, w = vs.codec_context.height, vs.codec_context.width
        out_h, out_w = size.target(h, w, _native_scale(net), str(src))
        out_h, out_w = max(2, out_h - out_h % 2), max(2, out_w - out_w % 2)
        rate = vs.average_rate or vs.guessed_rate or Fraction(25)
        total = (vs.frames or None) if frame_range is None else None
        from tqdm import tqdm

        bar = tqdm(total=total, desc=Path(src).name, unit="frame", disable=not progress, file=sys.stderr)
        count = 0
        with atomic_write(dst) as tmp:
            out = av.open(str(tmp), "w")
            try:
                ovs = out.add_stream(codec, rate=rate)
                ovs.width, ovs.height = out_w, out_h
                ovs.pix_fmt = "yuv420p"
                ovs.time_base = vs.time_base
                ovs.codec_context.time_base = vs.time_base
                ovs.options = {"crf": str(crf)} if codec in ("libx264", "libx265", "libvpx-vp9") else {}
                if codec == "libvpx-vp9":
                    ovs.options.update({"b": "0"})
                if frame_range is not None:
                    ovs.options.update({"bf": "0"})  # parts joined end to end need increasing dts
                oas = {a.index: out.add_stream_from_template(a) for a in audio}
                pending: list = []
                # Encoding and muxing run in one worker thread, in submission order (PyAV releases
                # the GIL in FFmpeg calls), so a batch is encoded while the next one is upscaled.
                # At most two upscaled batches wait, which bounds memory (audio packets are small).
                from collections import deque
                from concurrent.futures import ThreadPoolExecutor

                encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="superres-encode")
                queued: deque = deque()
                batches: deque = deque()

                def later(fn, *fn_args) -> None:
                    future = encoder.submit(fn, *fn_args)
                    queued.append(future)
                    if fn is encode:
                        batches.append(future)
                    while len(batches) > 2:
                        batches.popleft().result()
                    while queued and queued[0].done():
                        queued.popleft().result()  # raises an encoder error here

                def encode(frames_out: list) -> None:
                    for new in frames_out:
                        for packet in ovs.encode(new):
                            out.mux(packet)

                def flush() -> None:
                    nonlocal count
                    if not pending:
                        return
                    arrays = [f.to_ndarray(format="rgb24") for f in pending]
                    result = _upscale_batch(net, arrays, tile=tile, tile_overlap=tile_overlap, half=half,
                                            out_hw=(out_h, out_w))
                    frames_out = []
                    for frame, pixels in zip(pending, result):
                        new = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
                        new.pts, new.time_base = frame.pts, frame.time_base
                        frames_out.append(new)
                    later(encode, frames_out)
                    count += len(pending)
                    bar.update(len(pending))
                    pending.clear()

                done = False
                for packet in inp.demux(vs, *audio):
                    if packet.stream.type == "audio":
                        if packet.dts is None:
                            continue
                        packet.stream = oas[packet.stream.index]
                        later(out.mux, packet)
                        continue
                    for frame in packet.decode():
                        if lo is not None and (frame.pts is None or frame.pts < lo):
                            continue
                        if hi is not None and frame.pts >= hi:
                            done = True
                            break
                        pending.append(frame)
                        if len(pending) >= batch:
                            flush()
                    if done:
                        break
                flush()
                later(encode, [None])  # flush the encoder
                for future in queued:
                    future.result()
            except SuperresError:
                raise
            except av.error.FFmpegError as exc:
                raise SuperresError(f"{src}: video decode/encode failed ({' '.join(str(exc).split())})") from None
            finally:
                if "encoder" in locals():
                    encoder.shutdown(wait=True, cancel_futures=True)
                out.close()
                bar.close()
    return {"frames": count, "size": (out_w, out_h), "codec": codec}


def upscale_videos(inputs: Sequence[Path], *, model: str | None, out_dir: Path, tile: int = 0, tile_overlap: int = 16,
                   device: str = "auto", half: bool = False, existing: str = "error", suffix: str = "",
                   ext: str = "auto", output_size: "OutputSize | None" = None, codec: str | None = None,
                   crf: int | None = None, batch: int = DEFAULT_BATCH, progress: bool = True,
                   failures: list | None = None, on_start: "Any" = None) -> list[Path]:
    """``superres upscale CLIP.mp4 ...``: each video file (and the videos in folders, their layout
    kept) into ``out_dir`` (same name; ``ext`` other than ``auto`` is not a video container and is
    refused). Under ``torchrun`` the clips are shared
    between ranks. Returns the paths written."""

    _import_av()
    if ext != "auto":
        raise SuperresError(f"--ext {ext}: is for images; a video keeps its container (use --ext auto)")
    dev = resolve_device(device)
    _check_half(half, dev)
    pairs = rename_outputs(plan_videos(inputs, Path(out_dir)), suffix=suffix, ext="auto")
    rank, world = rank_and_world()
    split = world > 1 and len(pairs) < world  # fewer clips than ranks: each clip by frame ranges
    pairs = _check_out_dir(Path(out_dir), sorted(pairs) if split else shard(sorted(pairs)), existing)
    if not pairs:
        return []
    net = load_for_backend(model if model is not None else choose_default_model(dev)[0], device=str(dev))
    if on_start is not None:
        on_start(str(dev))
    options = dict(tile=tile, tile_overlap=tile_overlap, half=half, output_size=output_size, codec=codec, crf=crf,
                   batch=batch, progress=progress)
    if split:
        return _upscale_split(net, pairs, rank, world, failures, options)
    written = []
    for src, dst in pairs:
        with recorded(failures, src):
            upscale_video(net, src, dst, tile=tile, tile_overlap=tile_overlap, half=half, output_size=output_size,
                          codec=codec, crf=crf, batch=batch, progress=progress)
            written.append(dst)
    return written


def _video_pts(src: Path) -> list[int]:
    """The timestamps of every frame of the first video stream, in display order (packets only,
    nothing decoded)."""
    av = _import_av()
    try:
        with av.open(str(src)) as container:
            vs = container.streams.video[0]
            return sorted(p.pts for p in container.demux(vs) if p.pts is not None and p.size)
    except (IndexError, av.error.FFmpegError) as exc:
        raise SuperresError(f"{src}: cannot read the video ({' '.join(str(exc).split())})") from None


def _part_path(dst: Path, rank: int, world: int) -> Path:
    return dst.with_name(f".{dst.name}.part{rank:03d}of{world:03d}{dst.suffix}")


def _upscale_split(net: "Model", pairs: Sequence[tuple[Path, Path]], rank: int, world: int,
                   failures: list | None, options: dict) -> list[Path]:
    """Each clip shared between the ``torchrun`` ranks by frame ranges: rank ``r`` upscales frames
    ``[r n / N, (r + 1) n / N)`` into a hidden part file; after a barrier (gloo), rank 0 joins the
    parts packet by packet (no re-encoding), adds the source's audio and removes the parts. Returns
    the clips this rank wrote (rank 0: all of them)."""
    import torch.distributed as dist

    own = not dist.is_initialized()
    if own:
        dist.init_process_group("gloo")
    written = []
    try:
        for src, dst in pairs:
            pts = _video_pts(src)
            n = len(pts)
            a, b = rank * n // world, (rank + 1) * n // world
            with recorded(failures, src):
                if a < b:
                    upscale_video(net, src, _part_path(dst, rank, world),
                                  frame_range=(pts[a], pts[b] if b < n else None), **options)
            dist.barrier()
            if rank == 0:
                parts = [_part_path(dst, r, world) for r in range(world) if r * n // world < (r + 1) * n // world]
                with recorded(failures, src):
                    _join_parts(src, parts, dst)
                    written.append(dst)
                for part in parts:
                    part.unlink(missing_ok=True)
            dist.barrier()
    finally:
        if own:
            dist.destroy_process_group()
    return written


def _join_parts(src: Path, parts: Sequence[Path], dst: Path) -> None:
    """``dst``: the video packets of ``parts`` end to end, then the audio of ``src``, remuxed."""
    av = _import_av()

    missing = [p for p in parts if not p.exists()]
    if missing:
        raise SuperresError(f"{src}: part {missing[0].name} is missing (a rank failed); nothing written")
    with atomic_write(dst) as tmp, av.open(str(src)) as source:
        containers = [av.open(str(p)) for p in parts]
        try:
            with av.open(str(tmp), "w") as out:
                ovs = out.add_stream_from_template(containers[0].streams.video[0])
                oas = {a.index: out.add_stream_from_template(a) for a in source.streams.audio}
                for container in containers:
                    for packet in container.demux(container.streams.video[0]):
                        if packet.dts is None:
                            continue
                        packet.stream = ovs
                        out.mux(packet)
                if oas:
                    for packet in source.demux(*source.streams.audio):
                        if packet.dts is None:
                            continue
                        packet.stream = oas[packet.stream.index]
                        out.mux(packet)
        finally:
            for container in containers:
                container.close()


def frames(path: Path) -> Iterator[np.ndarray]:
    """The RGB frames of a video file (uint8 ``H x W x 3``), for tests and checks."""
    av = _import_av()
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")
