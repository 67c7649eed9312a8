"""Video files and animated images through ``superres upscale``.

* **Video** (``.mp4``, ``.mkv``, ``.mov``, ``.webm``, ``.avi``, ``.m4v``; PyAV, the ``[video]``
  extra): decoded in one thread, upscaled on the model's device in the calling thread (in batches
  of frames on a GPU, one by one on the CPU: :func:`default_batch`) and encoded in another thread,
  the three stages overlapping, with bounded queues between them, so memory holds a few batches,
  not the clip. Every frame keeps its timestamp (the output video stream has the input's time base
  and frame rate) and the audio streams are copied packet by packet, not re-encoded. Codec: H.264
  (``libx264``, ``yuv420p``) for MP4/MKV/MOV/AVI, VP9 for WebM; ``--codec`` and ``--crf`` (default
  18, visually lossless for H.264) change it. The output is written to a hidden temporary file and
  renamed at the end, so an interrupted run (or a failure in any stage) leaves no half-written
  video; ``--skip-existing`` then resumes a folder of clips at the first one missing.
* **Animations** (GIF, animated WebP) are in :mod:`superres.animation`.
* **torchrun**: clips are shared between ranks as whole files; with fewer clips than ranks, each
  clip is split by frame ranges (one part per rank, joined by rank 0 with the audio).

The output size follows :class:`superres.outputs.OutputSize` as for images; H.264 and VP9 in
4:2:0 need even sizes, so a video's size is rounded down to even numbers.
"""

from __future__ import annotations

import queue
import sys
import threading
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
from superres.precision import resolve_precision
from superres.resize import imresize
from superres.speed import auto_tile, choose_default_model

if TYPE_CHECKING:
    import torch

    from superres.inference import Model
    from superres.outputs import OutputSize

__all__ = ["VIDEO_SUFFIXES", "is_video", "videos_in", "plan_videos", "default_batch", "upscale_video", "upscale_videos"]

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v")
#: Default constant rate factor (x264/VP9): visually lossless for H.264.
DEFAULT_CRF = 18
#: Frames upscaled together on a GPU (one batch on the model's device). On a CPU a batch of one is
#: faster per frame (a 720p frame's activations already fill the caches; 4 frames at once measured
#: 3-17% slower per frame with one thread, docs/BENCHMARKS.md), so ``batch=None`` means 1 there.
DEFAULT_BATCH = 4


def default_batch(net: "Model") -> int:
    """Frames per model call for ``batch=None``: :data:`DEFAULT_BATCH` on a GPU, 1 on the CPU."""
    import torch

    return 1 if _model_device(net, torch.device("cpu")).type == "cpu" else DEFAULT_BATCH


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
def _upscale_batch(net: "Model", frames: Sequence[np.ndarray], *, tile: int, tile_overlap: int, half: bool,
                   precision: str = "fp32") -> "torch.Tensor":
    """``N`` uint8 ``H x W x 3`` frames -> the model's float ``N x 3 x H' x W'`` output (unclamped, on
    the model's device; :func:`_to_frames` makes frames of it). A 3-channel model runs on the whole
    batch at once (:func:`superres.inference.upscale_tensor`); other models frame by frame through
    :func:`superres.inference.upscale` (the channel rules)."""
    import torch

    if _model_channels(net) == 3:
        x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().div_(255.0)
        return upscale_tensor(net, x, tile=tile, tile_overlap=tile_overlap, half=half, precision=precision)
    return torch.stack([
        torch.from_numpy(upscale(net, f.astype(np.float32) / 255.0, tile=tile, tile_overlap=tile_overlap,
                                 device="cpu", half=half, precision=precision)).permute(2, 0, 1)
        for f in frames
    ])


def _to_frames(y: "torch.Tensor", out_hw: tuple[int, int]) -> np.ndarray:
    """A float ``N x 3 x H' x W'`` model output -> uint8 ``N x H x W x 3`` frames (contiguous) at
    ``out_hw``: clamped to [0, 1], resized with :func:`superres.resize.imresize` where ``out_hw``
    differs, rounded."""
    import torch

    with torch.inference_mode():
        y = y.clamp(0.0, 1.0)
        if tuple(y.shape[-2:]) != tuple(out_hw):
            y = imresize(y.float(), size=tuple(out_hw)).clamp_(0.0, 1.0)
        return y.mul_(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()


def _clip_tile(net: "Model", hw: tuple[int, int], batch: int, tile_overlap: int) -> int:
    """``--tile auto`` for a clip: the largest tile whose memory fits the budget for a batch of
    ``batch`` frames of ``hw`` (:func:`superres.speed.auto_tile`, one probe pass). A clip's frames
    all have one size, so :func:`upscale_video` resolves it once, not per batch."""
    import torch

    h, w = hw
    return auto_tile(net, h * batch, w, _model_channels(net), _model_device(net, torch.device("cpu")),
                     tile_overlap=tile_overlap)


def _native_scale(net: "Model") -> int:
    return _model_scale_attr(net)


# --------------------------------------------------------------------------- video
def _default_codec(dst: Path) -> str:
    return "libvpx-vp9" if dst.suffix.lower() == ".webm" else "libx264"


def upscale_video(net: "Model", src: Path, dst: Path, *, tile: "int | str" = 0, tile_overlap: int = 16, half: bool = False,
                  output_size: "OutputSize | None" = None, codec: str | None = None, crf: int | None = None,
                  batch: int | None = None, progress: bool = True,
                  frame_range: "tuple[int, int | None] | None" = None, precision: str = "fp32") -> dict[str, Any]:
    """Upscale the first video stream of ``src`` into ``dst`` frame by frame, copying the audio.
    Returns ``{"frames": n, "size": (w, h), "codec": name}``.

    Three stages overlap (:class:`_Pipeline`): a decode thread demuxes, decodes and converts batches
    of ``batch`` frames (None: :func:`default_batch`) to RGB; the calling thread runs the model on
    each batch (``precision``: a resolved :mod:`superres.precision`, applied under autocast); an
    encode thread converts the results to uint8 frames (on a GPU the model stage does that),
    encodes and muxes them and the audio packets. FFmpeg's codecs
    (through PyAV) and torch do their work outside the GIL, so where cores are idle the three run at
    the same time; on a fully busy CPU they only share it (docs/BENCHMARKS.md). The queues between the stages hold at
    most :data:`QUEUE_BATCHES` batches each (a CPU result waits as float32, 12 bytes per output
    pixel), so memory stays bounded whatever the clip's length;
    frames keep their decoding order and timestamps. An error in any stage (or an interruption)
    stops the other two, removes the temporary output (nothing is left at ``dst``) and is raised
    here: an FFmpeg error as :class:`SuperresError` naming ``src``.

    ``frame_range=(lo, hi)`` (timestamps of the video stream; ``hi`` None: to the end) writes only
    the frames with ``lo <= pts < hi``, without audio and without B-frames, as one part of a clip
    shared between ``torchrun`` ranks (:func:`upscale_videos` joins the parts)."""
    av = _import_av()

    size = output_size if output_size is not None else OutputSize()
    codec = codec or _default_codec(dst)
    crf = DEFAULT_CRF if crf is None else int(crf)
    if not 0 <= crf <= 63:
        raise SuperresError(f"--crf {crf}: must be between 0 and 63")
    batch = default_batch(net) if batch is None else batch
    if batch < 1:
        raise SuperresError(f"batch {batch}: must be >= 1")
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
        if tile == "auto":
            tile = _clip_tile(net, (h, w), batch, tile_overlap)
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

                def decoded() -> Iterator[tuple]:
                    """The decode stage: ``("audio", packet)`` (already pointed at its output stream)
                    and ``("video", [(pts, time_base)...], [rgb array...])`` batches, in demux order."""
                    pending: list = []

                    def take() -> tuple:
                        item = ("video", [(f.pts, f.time_base) for f in pending],
                                [f.to_ndarray(format="rgb24") for f in pending])
                        pending.clear()
                        return item

                    for packet in inp.demux(vs, *audio):
                        if packet.stream.type == "audio":
                            if packet.dts is not None:
                                packet.stream = oas[packet.stream.index]
                                yield ("audio", packet)
                            continue
                        for frame in packet.decode():
                            if lo is not None and (frame.pts is None or frame.pts < lo):
                                continue
                            if hi is not None and frame.pts >= hi:
                                if pending:
                                    yield take()
                                return
                            pending.append(frame)
                            if len(pending) >= batch:
                                yield take()
                    if pending:
                        yield take()

                def model(item: tuple) -> tuple:
                    """The model stage (this thread): a batch of RGB frames -> the upscaled batch. On
                    a GPU the batch leaves as uint8 frames (a quarter of the bytes to copy back); on
                    the CPU as the float output, made into frames by the encode stage, so that the
                    model stage, the one that bounds the pipeline, does only the model's work."""
                    nonlocal count
                    if item[0] != "video":
                        return item
                    result = _upscale_batch(net, item[2], tile=tile, tile_overlap=tile_overlap, half=half,
                                            precision=precision)
                    if result.device.type != "cpu":
                        result = _to_frames(result, (out_h, out_w))
                    count += len(item[2])
                    bar.update(len(item[2]))
                    return ("video", item[1], result)

                def encode(item: tuple | None) -> None:
                    """The encode stage: mux an audio packet, or encode a batch (None: flush the encoder)."""
                    if item is None:
                        for packet in ovs.encode(None):
                            out.mux(packet)
                    elif item[0] == "audio":
                        out.mux(item[1])
                    else:
                        pixels = item[2] if isinstance(item[2], np.ndarray) else _to_frames(item[2], (out_h, out_w))
                        _encode_frames(av, ovs, out, item[1], pixels)

                _Pipeline(decoded, model, encode).run()
            except SuperresError:
                raise
            except av.error.FFmpegError as exc:
                raise SuperresError(f"{src}: video decode/encode failed ({' '.join(str(exc).split())})") from None
            finally:
                out.close()
                bar.close()
    return {"frames": count, "size": (out_w, out_h), "codec": codec}


def _encode_frames(av: Any, ovs: Any, out: Any, stamps: Sequence[tuple], pixels: np.ndarray) -> None:
    """Encode upscaled uint8 frames (``N x H x W x 3``) with their ``(pts, time_base)`` and mux the packets."""
    for (pts, time_base), rgb in zip(stamps, pixels):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        for packet in ovs.encode(frame):
            out.mux(packet)


#: Items (batches of frames, audio packets) each queue between two pipeline stages may hold.
QUEUE_BATCHES = 2


class _Stopped(Exception):
    """Raised inside a stage when another stage has failed or the run was interrupted."""


class _Pipeline:
    """``produce`` (a generator, in a decode thread) -> ``transform`` (the calling thread) ->
    ``consume`` (an encode thread; called with ``None`` once at the end), joined by FIFO queues of
    :data:`QUEUE_BATCHES` items, so items keep their order and memory holds a bounded number of them.

    :meth:`run` returns once ``consume(None)`` has returned. The first error of any stage (including
    a ``KeyboardInterrupt`` in the calling thread) stops the others at their next queue operation;
    :meth:`run` joins both threads before it raises that error, so no thread touches the containers
    after it returns.
    """

    _END = object()

    def __init__(self, produce: "Any", transform: "Any", consume: "Any", depth: int = QUEUE_BATCHES) -> None:
        self.produce, self.transform, self.consume = produce, transform, consume
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.inbox: queue.Queue = queue.Queue(maxsize=depth)
        self.outbox: queue.Queue = queue.Queue(maxsize=depth)

    def _put(self, q: Any, item: Any) -> None:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return
            except queue.Full:
                continue
        raise _Stopped

    def _get(self, q: Any) -> Any:
        while not self.stop.is_set():
            try:
                return q.get(timeout=0.05)
            except queue.Empty:
                continue
        raise _Stopped

    def _fail(self, exc: BaseException) -> None:
        if not isinstance(exc, _Stopped):
            self.errors.append(exc)
        self.stop.set()

    def _decode(self) -> None:
        try:
            for item in self.produce():
                self._put(self.inbox, item)
            self._put(self.inbox, self._END)
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            self._fail(exc)

    def _encode(self) -> None:
        try:
            while (item := self._get(self.outbox)) is not self._END:
                self.consume(item)
            self.consume(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            self._fail(exc)

    def run(self) -> None:
        threads = [threading.Thread(target=self._decode, name="superres-decode", daemon=True),
                   threading.Thread(target=self._encode, name="superres-encode", daemon=True)]
        for thread in threads:
            thread.start()
        try:
            while (item := self._get(self.inbox)) is not self._END:
                self._put(self.outbox, self.transform(item))
            self._put(self.outbox, self._END)
            while threads[1].is_alive():  # the encoder flushes; a failure there stops the wait
                threads[1].join(timeout=0.05)
        except BaseException as exc:
            self._fail(exc)
        finally:
            self.stop.set()
            for thread in threads:
                thread.join()
        if self.errors:
            raise self.errors[0]


def upscale_videos(inputs: Sequence[Path], *, model: str | None, out_dir: Path, tile: "int | str" = 0, tile_overlap: int = 16,
                   device: str = "auto", half: bool = False, existing: str = "error", suffix: str = "",
                   ext: str = "auto", output_size: "OutputSize | None" = None, codec: str | None = None,
                   crf: int | None = None, batch: int | None = None, progress: bool = True,
                   failures: list | None = None, on_start: "Any" = None, precision: str = "fp32",
                   note: "Any" = None) -> list[Path]:
    """``superres upscale CLIP.mp4 ...``: each video file (and the videos in folders, their layout
    kept) into ``out_dir`` (same name; ``ext`` other than ``auto`` is not a video container and is
    refused). Under ``torchrun`` the clips are shared
    between ranks. Returns the paths written. ``precision`` (``auto``, ``fp32``, ``bf16``, ``fp16``)
    is resolved for the model before any work (:func:`superres.precision.resolve_precision`: a
    precision the device cannot run is a :class:`SuperresError`); ``note`` receives its one-line
    reason, as for images."""

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
    model = model if model is not None else choose_default_model(dev)[0]
    precision, why = resolve_precision(precision, dev, model)
    if half:
        precision = "fp32"  # --half is float16 autocast on CUDA
    if note is not None:
        note("precision: fp16 (--half)" if half else why or f"precision: {precision}")
    net = load_for_backend(model, device=str(dev))
    if on_start is not None:
        on_start(str(dev))
    options = dict(tile=tile, tile_overlap=tile_overlap, half=half, output_size=output_size, codec=codec, crf=crf,
                   batch=batch, progress=progress, precision=precision)
    if split:
        return _upscale_split(net, pairs, rank, world, failures, options)
    written = []
    for src, dst in pairs:
        with recorded(failures, src):
            upscale_video(net, src, dst, **options)
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
