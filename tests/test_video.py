"""`superres upscale CLIP.mp4` (issue 18, point 5): a 10-second 360p clip with AAC audio, written
here with PyAV, comes out at the requested scale with the same duration, frame count, frame
timestamps and audio."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

av = pytest.importorskip("av")

from superres.cli import main  # noqa: E402
from superres.models import build  # noqa: E402

FPS = 25
SECONDS = 10
RATE = 44100


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    from superres.modelfile import save_model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model")
    # the smallest useful network: the test is about frames, timestamps and audio, not quality
    return save_model(folder / "rgb_x2.safetensors", build("enhanced", scale=2, channels=4, blocks=0),
                      arch="enhanced", args={"channels": 4, "blocks": 0})


def write_clip(path: Path, width: int = 640, height: int = 360, seconds: int = SECONDS, audio: bool = True) -> None:
    """A moving gradient at 25 fps (H.264) with a 440 Hz stereo tone (AAC)."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"preset": "ultrafast"}
        astream = out.add_stream("aac", rate=RATE, layout="stereo") if audio else None
        yy, xx = np.mgrid[0:height, 0:width]
        for k in range(FPS * seconds):
            rgb = np.stack([(xx + 4 * k) % 256, (yy + 2 * k) % 256, np.full_like(xx, (3 * k) % 256)], -1)
            frame = av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")
            frame.pts = k
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        if astream is not None:
            chunk = 1024
            t = np.arange(RATE * seconds) / RATE
            tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for start in range(0, tone.size, chunk):
                part = np.stack([tone[start:start + chunk]] * 2)
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(part), format="fltp", layout="stereo")
                frame.sample_rate, frame.pts = RATE, start
                for packet in astream.encode(frame):
                    out.mux(packet)
            for packet in astream.encode():
                out.mux(packet)


def probe(path: Path) -> dict:
    with av.open(str(path)) as container:
        vs = container.streams.video[0]
        size, rate = (vs.codec_context.width, vs.codec_context.height), vs.average_rate
        pts = [frame.pts * frame.time_base for frame in container.decode(video=0)]
    with av.open(str(path)) as container:
        audio = [s for s in container.streams.audio]
        samples = sum(f.samples for f in container.decode(audio=0)) if audio else 0
        return {
            "size": size, "frames": len(pts), "pts": pts,
            "duration": float(container.duration / av.time_base), "rate": rate,
            "audio": [(a.codec_context.name, a.sample_rate, a.channels) for a in audio], "samples": samples,
        }


@pytest.mark.slow
def test_ten_second_360p_clip_with_audio_keeps_duration_frames_and_audio(tmp_path, capsys, model_file):
    clip = tmp_path / "clip.mp4"
    write_clip(clip)
    src = probe(clip)
    assert src["frames"] == FPS * SECONDS and src["size"] == (640, 360) and src["audio"]
    out = tmp_path / "out"
    code = main(["upscale", str(clip), "--model", str(model_file), "--out", str(out), "--device", "cpu",
                 "--outscale", "2", "--tile", "0", "--crf", "28"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "frame/s" in err or "s/frame" in err  # the progress bar counts frames
    got = probe(out / "clip.mp4")
    assert got["size"] == (1280, 720)
    assert got["frames"] == src["frames"]
    assert got["pts"] == src["pts"]  # every frame keeps its timestamp
    assert got["rate"] == src["rate"] == Fraction(FPS)
    assert abs(got["duration"] - src["duration"]) < 1.5 / FPS
    assert got["audio"] == src["audio"] == [("aac", RATE, 2)]
    assert got["samples"] == src["samples"]  # copied packet by packet, not re-encoded


@pytest.mark.slow
def test_video_options_and_failures(tmp_path, capsys, model_file):
    clip = tmp_path / "short.mp4"
    write_clip(clip, 64, 48, seconds=1, audio=False)
    out = tmp_path / "out"
    code = main(["upscale", str(clip), "--model", str(model_file), "--out", str(out), "--device", "cpu",
                 "--quiet", "--codec", "no-such-codec"])
    assert code == 2 and "--codec no-such-codec" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())  # nothing half-written
    code = main(["upscale", str(clip), "--model", str(model_file), "--out", str(out), "--device", "cpu",
                 "--quiet", "--suffix", "_x2", "--crf", "30", "--outscale", "1.5"])
    assert code == 0, capsys.readouterr().err
    got = probe(out / "short_x2.mp4")
    assert got["size"] == (96, 72) and got["frames"] == FPS and got["audio"] == []
    # an existing output stops the run; --skip-existing leaves it
    assert main(["upscale", str(clip), "--model", str(model_file), "--out", str(out), "--quiet",
                 "--suffix", "_x2"]) == 2
    assert "already exist" in capsys.readouterr().err
    assert main(["upscale", str(clip), "--model", str(model_file), "--out", str(out), "--quiet",
                 "--suffix", "_x2", "--skip-existing"]) == 0
    # the clip's own folder as --out: refused without a suffix (it would overwrite the clip), fine with one
    before = clip.read_bytes()
    code = main(["upscale", str(clip), "--model", str(model_file), "--out", str(tmp_path), "--quiet", "--device", "cpu"])
    assert code == 2 and "overwrite an input" in capsys.readouterr().err and clip.read_bytes() == before
    assert main(["upscale", str(clip), "--model", str(model_file), "--out", str(tmp_path), "--quiet", "--device", "cpu",
                 "--suffix", "_up"]) == 0
    assert probe(tmp_path / "short_up.mp4")["size"] == (128, 96) and clip.read_bytes() == before
    # a broken video is one line naming it
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    code = main(["upscale", str(bad), "--model", str(model_file), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "bad.mp4" in err[0]
    assert not (out / "bad.mp4").exists()


@pytest.mark.slow
def test_torchrun_splits_one_clip_by_frame_ranges(tmp_path, model_file):
    """Two ranks (gloo, CPU) share one clip: each upscales half of the frames into a part, rank 0
    joins them with the audio; every source frame is in the result exactly once, in order."""
    import os
    import subprocess
    import sys

    clip = tmp_path / "clip.mp4"
    write_clip(clip, 160, 90, seconds=2)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "superres.cli", "upscale", str(clip), "--out", str(out), "--model", str(model_file),
           "--device", "cpu", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "wrote 1 file(s)" in proc.stdout and "(rank 0 of 2)" in proc.stdout
    assert "wrote 0 file(s)" in proc.stdout and "(rank 1 of 2)" in proc.stdout
    src, got = probe(clip), probe(out / "clip.mp4")
    assert got["size"] == (320, 180)
    assert got["frames"] == src["frames"] == 2 * FPS and got["pts"] == src["pts"]
    assert got["audio"] == src["audio"] and got["samples"] == src["samples"]
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4"]  # the parts are gone
    # the frames are the single-process result's (the same model on every frame)
    single = tmp_path / "single"
    assert main(["upscale", str(clip), "--out", str(single), "--model", str(model_file), "--device", "cpu",
                 "--quiet"]) == 0
    from superres.video import frames

    a, b = list(frames(out / "clip.mp4")), list(frames(single / "clip.mp4"))
    assert len(a) == len(b)
    assert max(np.abs(x.astype(int) - y.astype(int)).mean() for x, y in zip(a, b)) < 3


@pytest.mark.slow
def test_a_folder_of_images_and_clips_keeps_its_layout(tmp_path, capsys, model_file):
    from superres.io import Image, read_raw, write_image

    src = tmp_path / "in"
    write_image(src / "a.png", Image(np.random.default_rng(0).random((8, 6, 3)).astype(np.float32), None, 8))
    (src / "trip").mkdir()
    write_clip(src / "trip" / "clip.mp4", 32, 24, seconds=1, audio=False)
    (src / "only_clips").mkdir()
    write_clip(src / "only_clips" / "b.mov", 32, 24, seconds=1, audio=False)
    out = tmp_path / "out"
    code = main(["upscale", str(src), str(src / "only_clips"), "--model", str(model_file), "--out", str(out),
                 "--device", "cpu", "--skip-existing"])
    err = capsys.readouterr().err
    assert code == 0, err
    # images and clips each resolve the precision: the choice is said once
    assert sum(line.startswith("precision") for line in err.splitlines()) == 1, err
    assert read_raw(out / "a.png").pixels.shape == (16, 12, 3)
    assert probe(out / "trip" / "clip.mp4")["size"] == (64, 48)
    assert probe(out / "only_clips" / "b.mov")["frames"] == FPS
    assert probe(out / "b.mov")["frames"] == FPS  # the folder given on its own: its videos at the top


def test_an_interrupted_clip_leaves_no_partial_file(tmp_path, capsys, model_file, monkeypatch):
    import superres.video as video

    clip = tmp_path / "clip.mp4"
    write_clip(clip, 32, 24, seconds=1)
    real, calls = video._upscale_batch, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(video, "_upscale_batch", interrupted)
    out = tmp_path / "out"
    assert main(["upscale", str(clip), "--model", str(model_file), "--out", str(out), "--quiet"]) == 130
    assert not out.exists() or list(out.iterdir()) == []  # no clip, no hidden temporary file
    monkeypatch.setattr(video, "_upscale_batch", real)
    assert main(["upscale", str(clip), "--model", str(model_file), "--out", str(out), "--quiet",
                 "--skip-existing"]) == 0
    assert probe(out / "clip.mp4")["frames"] == FPS


# --------------------------------------------------------------------------- the decode/model/encode pipeline
def _pipeline_threads() -> list:
    import threading

    return [t for t in threading.enumerate() if t.name in ("superres-decode", "superres-encode")]


def test_pipeline_keeps_order_and_bounds_the_batches_in_flight():
    """Random delays in every stage: items come out in the order they went in, and the encode side
    never has more than the queue's worth (plus the one being encoded, the one being handed over)
    waiting, however slow the encoder."""
    import random
    import time

    import superres.video as video

    rng = random.Random(0)
    produced, upscaled, encoded = [], [], []
    waiting = []

    def produce():
        for k in range(40):
            time.sleep(rng.random() * 0.002)
            produced.append(k)
            yield ("video", k)

    def transform(item):
        time.sleep(rng.random() * 0.002)
        upscaled.append(item[1])
        waiting.append(len(upscaled) - len(encoded))
        return ("video", item[1] * 10)

    def consume(item):
        time.sleep(0.004)  # the slowest stage
        encoded.append(None if item is None else item[1])

    video._Pipeline(produce, transform, consume).run()
    assert encoded == [10 * k for k in range(40)] + [None]
    assert max(waiting) <= video.QUEUE_BATCHES + 2
    assert not _pipeline_threads()


@pytest.mark.parametrize("stage", ["produce", "transform", "consume"])
def test_pipeline_error_in_any_stage_stops_the_others_and_is_raised(stage):
    import superres.video as video

    seen = []

    def produce():
        for k in range(1000):
            if stage == "produce" and k == 5:
                raise OSError(28, "No space left on device")
            yield k

    def transform(item):
        if stage == "transform" and item == 5:
            raise KeyboardInterrupt
        return item

    def consume(item):
        if stage == "consume" and item == 5:
            raise OSError(28, "No space left on device")
        seen.append(item)

    with pytest.raises(KeyboardInterrupt if stage == "transform" else OSError):
        video._Pipeline(produce, transform, consume).run()
    assert not _pipeline_threads()  # both threads joined before the error is raised
    assert None not in seen and len(seen) < 1000  # the encoder was neither flushed nor run to the end


def test_an_encoder_error_is_one_line_and_leaves_no_output(tmp_path, capsys, model_file, monkeypatch):
    """An FFmpeg error in the encode thread (a full disk, here raised on the second batch) stops the
    run: one line naming the clip, exit 2, no clip and no hidden temporary file; a later run works."""
    import superres.video as video

    clip = tmp_path / "clip.mp4"
    write_clip(clip, 32, 24, seconds=1)
    real, calls = video._encode_frames, []

    def full_disk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise av.error.OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(video, "_encode_frames", full_disk)
    out = tmp_path / "out"
    code = main(["upscale", str(clip), "--model", str(model_file), "--out", str(out), "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "clip.mp4" in err[0] and "video decode/encode failed" in err[0] and "No space left" in err[0]
    assert not out.exists() or list(out.iterdir()) == []
    assert not _pipeline_threads()
    monkeypatch.setattr(video, "_encode_frames", real)
    assert main(["upscale", str(clip), "--model", str(model_file), "--out", str(out), "--quiet"]) == 0
    got = probe(out / "clip.mp4")
    assert got["frames"] == FPS and got["pts"] == probe(clip)["pts"]


def test_frames_come_out_in_order_with_their_timestamps(tmp_path, model_file, monkeypatch):
    """Each frame of the clip has its own brightness; batches of 3 with uneven model times: the
    output's frames have the input's timestamps and brightness order (the model with zero weights is
    its bicubic x2 path alone, so brightness is kept)."""
    import random
    import time

    import superres.video as video
    from superres.inference import load_for_backend

    clip = tmp_path / "ramp.mp4"
    n = 20
    with av.open(str(clip), "w") as container:
        vs = container.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = 32, 24, "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "0"}
        for k in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((24, 32, 3), 20 + 10 * k, np.uint8), format="rgb24")
            frame.pts = k
            for packet in vs.encode(frame):
                container.mux(packet)
        for packet in vs.encode():
            container.mux(packet)
    rng, real = random.Random(1), video._upscale_batch

    def uneven(net, frames, **kwargs):
        time.sleep(rng.random() * 0.02)
        return real(net, frames, **kwargs)

    monkeypatch.setattr(video, "_upscale_batch", uneven)
    dst = tmp_path / "out.mp4"
    net = load_for_backend(str(model_file))
    with torch.no_grad():  # zero weights: the model is its bicubic x2 path alone, brightness is kept
        for p in net.parameters():
            p.zero_()
    result = video.upscale_video(net, clip, dst, batch=3, crf=0, progress=False)
    assert result["frames"] == n
    means = [float(f.mean()) for f in video.frames(dst)]
    assert len(means) == n and all(a < b for a, b in zip(means, means[1:]))
    assert probe(dst)["pts"] == probe(clip)["pts"]


def test_frames_are_batched_on_a_gpu_only(model_file):
    import superres.video as video
    from superres.inference import load_for_backend

    net = load_for_backend(str(model_file), device="cpu")
    assert video.default_batch(net) == 1
    assert video.default_batch(net.to("meta")) == video.DEFAULT_BATCH > 1


def test_tile_auto_is_resolved_once_per_clip(tmp_path, model_file, monkeypatch):
    """``--tile auto`` on a clip: one memory probe for the whole clip (its frames share one size),
    sized for a batch of frames, and every batch runs with that tile."""
    import superres.video as video
    from superres.inference import load_for_backend

    clip = tmp_path / "clip.mp4"
    write_clip(clip, width=64, height=48, seconds=1, audio=False)
    probes, tiles = [], []
    real_batch = video._upscale_batch

    def counted(net, height, width, *args, **kwargs):
        probes.append((height, width))
        return 40  # a tile smaller than the frame, so a wrong resolution would show in the tiles

    def seen(net, frames, **kwargs):
        tiles.append(kwargs["tile"])
        return real_batch(net, frames, **kwargs)

    monkeypatch.setattr(video, "auto_tile", counted)
    monkeypatch.setattr(video, "_upscale_batch", seen)
    net = load_for_backend(str(model_file))
    result = video.upscale_video(net, clip, tmp_path / "out.mp4", tile="auto", batch=4, progress=False)
    assert result["frames"] == FPS
    assert probes == [(48 * 4, 64)]  # one probe, for a batch of 4 frames of 48 x 64
    assert tiles == [40] * -(-FPS // 4)  # 7 batches (the last of 1 frame), all with the clip's tile


def test_model_output_becomes_contiguous_uint8_frames():
    """The encode stage's conversion (the model stage hands it the float output on a CPU): clamped,
    x 255 rounded to the nearest level, N x H x W x 3 contiguous, resized with imresize only where the
    requested size differs."""
    import superres.video as video
    from superres.resize import imresize

    y = torch.tensor([-0.5, 0.0, 0.6 / 255, 1.49 / 255, 1.51 / 255, 0.5, 254.6 / 255, 1.0, 1.7]).reshape(1, 1, 3, 3)
    y = y.repeat(2, 3, 1, 1)
    frames = video._to_frames(y.clone(), (3, 3))
    assert frames.shape == (2, 3, 3, 3) and frames.dtype == np.uint8 and frames.flags.c_contiguous
    assert frames[0, :, :, 0].ravel().tolist() == [0, 0, 1, 1, 2, 128, 255, 255, 255]
    assert (frames[1] == frames[0]).all() and (frames[..., 2] == frames[..., 0]).all()
    rng = torch.Generator().manual_seed(0)
    z = torch.rand(1, 3, 8, 10, generator=rng) * 1.2 - 0.1
    resized = video._to_frames(z.clone(), (4, 5))
    expected = imresize(z.clamp(0, 1), size=(4, 5)).clamp(0, 1).mul(255).round().to(torch.uint8)
    assert resized.shape == (1, 4, 5, 3)
    assert (torch.from_numpy(resized).permute(0, 3, 1, 2) == expected).all()
