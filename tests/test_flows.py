"""`superres upscale` the way people work (issue 18): any output scale, folders kept whole with
--suffix/--ext/--skip-existing, a failing file skipped and counted, WebP, ICC/DPI/EXIF carried over,
.onnx recognised, --device auto, animations, torchrun sharding. Video is in tests/test_video.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from superres.cli import main
from superres.io import Image, read_raw, write_image
from superres.models import build

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A tiny 3-channel x2 model (untrained: the tests are about files, not quality)."""
    from superres.modelfile import save_model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model")
    return save_model(folder / "rgb_x2.safetensors", build("enhanced", scale=2, channels=8, num_blocks=1),
                      arch="enhanced", args={"channels": 8, "num_blocks": 1})


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((h, w, 3)).astype(np.float32)


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- 2: any output scale
@pytest.mark.slow
def test_outscale_size_and_width_give_the_requested_size(tmp_path, capsys, model_file):
    src = tmp_path / "a.png"
    write_image(src, Image(_rgb(20, 16), None, 8))
    base = ["upscale", str(src), "--model", str(model_file), "--quiet", "--device", "cpu"]
    for extra, shape in [(["--outscale", "3.5"], (70, 56)), (["--outscale", "1.5"], (30, 24)),
                         (["--outscale", "0.5"], (10, 8)), (["--size", "33x41"], (41, 33)),
                         (["--width", "40"], (50, 40)), ([], (40, 32))]:
        out = tmp_path / ("out" + "_".join(extra).replace(".", "p"))
        code, _, err = _run(capsys, base + ["--out", str(out)] + extra)
        assert code == 0, err
        assert read_raw(out / "a.png").pixels.shape == shape + (3,), extra


def test_outscale_matches_the_model_then_imresize(tmp_path, model_file):
    from superres.inference import upscale
    from superres.resize import imresize

    src = tmp_path / "a.png"
    write_image(src, Image(_rgb(20, 16), None, 8))
    assert main(["upscale", str(src), "--model", str(model_file), "--quiet", "--device", "cpu",
                 "--out", str(tmp_path / "o"), "--outscale", "3"]) == 0
    native = upscale(str(model_file), read_raw(src).pixels.astype(np.float32) / 255, tile=256)
    x = torch.from_numpy(native.transpose(2, 0, 1).copy())
    expected = np.round(np.clip(imresize(x, size=(60, 48)).permute(1, 2, 0).numpy(), 0, 1) * 255)
    got = read_raw(tmp_path / "o" / "a.png").pixels.astype(np.float64)
    assert np.abs(got - expected).max() <= 1


@pytest.mark.parametrize("argv, message", [
    (["--outscale", "0"], "--outscale"), (["--outscale", "-2"], "--outscale"), (["--outscale", "nan"], "--outscale"),
    (["--outscale", "100"], "--outscale"), (["--size", "10"], "--size"), (["--size", "0x5"], "--size"),
    (["--width", "-3"], "--width"), (["--outscale", "2", "--width", "30"], "not allowed with"),
    (["--bogus"], "unrecognized arguments: --bogus"), (["--ext", "gif"], "--ext"),
])
def test_nonsense_values_are_usage_errors_of_the_subcommand(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(["upscale", str(tmp_path / "a.png"), "--out", str(tmp_path / "o")] + argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: superres upscale "), err
    assert message in err


# --------------------------------------------------------------------------- 3: folders
def _folder(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    write_image(src / "a.png", Image(_rgb(12, 10, 1), None, 8))
    write_image(src / "sub" / "b.jpg", Image(_rgb(8, 14, 2), None, 8))
    write_image(src / "sub" / "deeper" / "c.tif", Image(_rgb(9, 9, 3), None, 16))
    return src


def test_folder_structure_suffix_ext_and_skip_existing(tmp_path, capsys, model_file):
    src = _folder(tmp_path)
    out = tmp_path / "out"
    argv = ["upscale", str(src), "--model", str(model_file), "--out", str(out), "--device", "cpu", "--suffix", "_x2"]
    code, stdout, err = _run(capsys, argv)
    assert code == 0, err
    assert "wrote 3 file(s)" in stdout
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "a_x2.png", "sub/b_x2.jpg", "sub/deeper/c_x2.tif"]
    assert read_raw(out / "sub" / "deeper" / "c_x2.tif").bit_depth == 16
    # one progress bar over all files, with a rate and an ETA
    assert "upscale: 100%" in err and "3/3" in err and "image/s" in err
    # --ext: every output in one format
    code, _, err = _run(capsys, argv[:-2] + ["--ext", "webp", "--quiet"])
    assert code == 0, err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.webp")) == [
        "a.webp", "sub/b.webp", "sub/deeper/c.webp"]
    # --skip-existing: a re-run after an interruption does only the missing ones
    (out / "sub" / "b_x2.jpg").unlink()
    before = (out / "a_x2.png").stat().st_mtime_ns
    code, stdout, err = _run(capsys, argv + ["--skip-existing"])
    assert code == 0 and "wrote 1 file(s)" in stdout, err
    assert (out / "sub" / "b_x2.jpg").exists() and (out / "a_x2.png").stat().st_mtime_ns == before


def test_ext_collision_is_refused_before_any_work(tmp_path, capsys, model_file):
    src = tmp_path / "in"
    write_image(src / "a.png", Image(_rgb(8, 8), None, 8))
    write_image(src / "a.jpg", Image(_rgb(8, 8), None, 8))
    code, _, err = _run(capsys, ["upscale", str(src), "--model", str(model_file), "--out", str(tmp_path / "o"),
                                 "--ext", "png", "--quiet", "--device", "cpu"])
    assert code == 2 and "would both be written to" in err
    assert not (tmp_path / "o").exists()


def test_out_may_be_the_input_folder_when_a_suffix_makes_new_names(tmp_path, capsys, model_file):
    src = tmp_path / "in"
    write_image(src / "a.png", Image(_rgb(8, 8), None, 8))
    write_image(src / "sub" / "b.png", Image(_rgb(6, 10, seed=1), None, 8))
    before = {p: p.read_bytes() for p in src.rglob("*.png")}
    argv = ["upscale", str(src), "--model", str(model_file), "--out", str(src), "--quiet", "--device", "cpu"]
    code, _, err = _run(capsys, argv)  # no suffix: every output would replace its input
    assert code == 2 and "overwrite an input" in err and "--suffix" in err
    assert {p: p.read_bytes() for p in src.rglob("*.png")} == before
    code, _, err = _run(capsys, argv + ["--suffix", "_x2"])
    assert code == 0, err
    assert sorted(p.relative_to(src).as_posix() for p in src.rglob("*.png")) == ["a.png", "a_x2.png", "sub/b.png", "sub/b_x2.png"]
    assert all(p.read_bytes() == data for p, data in before.items())
    # a suffix that still lands on an input (a.png -> a_x2.png, which is an input now) is refused too
    code, _, err = _run(capsys, argv + ["--suffix", "_x2", "--overwrite"])
    assert code == 2 and "a_x2.png" in err and "overwrite an input" in err


def test_png_level_sets_the_compression_of_png_outputs(tmp_path, capsys, model_file):
    src = tmp_path / "in.png"
    yy, xx = np.mgrid[0:24, 0:32]
    smooth = np.stack([np.sin(xx / 5.0), np.cos(yy / 4.0), np.sin((xx + yy) / 6.0)], -1) * 0.4 + 0.5
    write_image(src, Image(smooth.astype(np.float32), None, 8))
    sizes, pixels = {}, {}
    for level in (None, "0", "1", "9"):
        out = tmp_path / f"out{level}"
        argv = ["upscale", str(src), "--model", str(model_file), "--out", str(out), "--quiet", "--device", "cpu"]
        code, _, err = _run(capsys, argv + ([] if level is None else ["--png-level", level]))
        assert code == 0, err
        sizes[level] = (out / "in.png").stat().st_size
        pixels[level] = read_raw(out / "in.png").pixels
    assert all(np.array_equal(p, pixels["0"]) for p in pixels.values())
    assert sizes["0"] > sizes["1"] > sizes["9"], sizes
    assert (tmp_path / "outNone" / "in.png").read_bytes() == (tmp_path / "out1" / "in.png").read_bytes()  # the default is 1
    with pytest.raises(SystemExit) as exit_info:  # a usage error: argparse exits 2 with the subcommand's usage
        main(["upscale", str(src), "--model", str(model_file), "--out", str(tmp_path / "bad"), "--png-level", "10"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--png-level" in err and "superres upscale" in err
    assert not (tmp_path / "bad").exists()


def test_a_failing_file_is_reported_skipped_and_counted(tmp_path, capsys, model_file):
    src = _folder(tmp_path)
    (src / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, ["upscale", str(src), "--model", str(model_file), "--out", str(out),
                                      "--quiet", "--device", "cpu"])
    assert code == 2
    lines = err.strip().splitlines()
    assert any("broken.png" in line and line.startswith("superres: error:") for line in lines), err
    assert lines[-1].startswith("superres: 1 of 4 file(s) failed and were skipped; 3 written"), err
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["a.png", "b.jpg", "c.tif"]


# --------------------------------------------------------------------------- 4: formats and metadata
def test_webp_in_a_folder_is_upscaled_and_written(tmp_path, capsys, model_file):
    from PIL import Image as PILImage

    src = tmp_path / "in"
    src.mkdir()
    PILImage.fromarray((_rgb(10, 12) * 255).astype(np.uint8)).save(src / "p.webp", lossless=True)
    rgba = (np.random.default_rng(0).random((10, 12, 4)) * 255).astype(np.uint8)
    PILImage.fromarray(rgba).save(src / "q.webp", lossless=True)
    code, stdout, err = _run(capsys, ["upscale", str(src), "--model", str(model_file), "--out",
                                      str(tmp_path / "o"), "--device", "cpu", "--quiet"])
    assert code == 0, err
    p, q = read_raw(tmp_path / "o" / "p.webp"), read_raw(tmp_path / "o" / "q.webp")
    assert p.pixels.shape == (20, 24, 3) and p.alpha is None
    assert q.pixels.shape == (20, 24, 3) and q.alpha is not None


def _write_tagged(folder: Path, pixels: np.ndarray, cases: list) -> bytes:
    """``pixels`` saved in ``folder`` as each ``(name, dpi, has_exif)`` of ``cases``: with an sRGB ICC
    profile, that DPI and, where ``has_exif``, EXIF orientation 6 (rotate 90 degrees clockwise to
    display) and a camera make. Returns the profile."""
    from PIL import Image as PILImage
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = PILImage.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "superres-test-camera"  # Make
    folder.mkdir()
    for name, dpi, has_exif in cases:
        options = {"quality": 95} if name.endswith(".jpg") else {}
        if has_exif:
            options["exif"] = exif
        PILImage.fromarray(pixels).save(folder / name, icc_profile=icc, dpi=(dpi, dpi), **options)
    return icc


def _assert_tagged(folder: Path, cases: list, icc: bytes, size: tuple[int, int]) -> None:
    """Each output of ``cases`` (:func:`_write_tagged`) carries the profile and its DPI; one with EXIF
    is upright (orientation 6 applied, so the ``size`` W x H of the stored pixels at scale comes out
    as H x W) with orientation reset to 1 and the make kept."""
    from PIL import Image as PILImage

    for name, dpi, has_exif in cases:
        with PILImage.open(folder / name) as im:
            assert im.size == (size[::-1] if has_exif else size), name
            assert im.info.get("icc_profile") == icc, name
            assert round(float(im.info["dpi"][0])) == dpi, name
            if has_exif:
                got = im.getexif()
                assert got.get(0x0112) == 1 and got.get(0x010F) == "superres-test-camera", name


def test_icc_dpi_and_exif_are_carried_with_orientation_reset(tmp_path, capsys, model_file):
    from PIL import Image as PILImage

    src = tmp_path / "in"
    cases = [("photo.jpg", 300, True), ("photo2.png", 72, True), ("photo3.tif", 150, False)]
    icc = _write_tagged(src, (_rgb(10, 16) * 255).astype(np.uint8), cases)
    out = tmp_path / "o"
    code, _, err = _run(capsys, ["upscale", str(src), "--model", str(model_file), "--out", str(out),
                                 "--device", "cpu", "--quiet"])
    assert code == 0, err
    _assert_tagged(out, cases, icc, (32, 20))  # 16 x 10 stored, x2
    # --ext webp keeps the profile and the EXIF
    code, _, err = _run(capsys, ["upscale", str(src / "photo.jpg"), "--model", str(model_file), "--out", str(out),
                                 "--device", "cpu", "--quiet", "--ext", "webp"])
    assert code == 0, err
    with PILImage.open(out / "photo.webp") as im:
        assert im.info.get("icc_profile") == icc and im.getexif().get(0x0112) == 1


def test_results_written_in_strips_keep_icc_dpi_and_exif(tmp_path, capsys, model_file, monkeypatch):
    """A result too large for --max-memory is written band by band (PNG rows, TIFF tiles): it
    carries the same ICC profile, DPI and EXIF (orientation applied and reset) as a whole write."""
    import superres.inference as inference

    calls = []
    real = inference._upscale_in_strips

    def spy(model, raw, dst, **kwargs):
        calls.append(dst.name)
        return real(model, raw, dst, **kwargs)

    monkeypatch.setattr(inference, "_upscale_in_strips", spy)
    src = tmp_path / "in"
    cases = [("big.png", 72, True), ("big.tif", 150, False)]
    icc = _write_tagged(src, (_rgb(300, 420) * 255).astype(np.uint8), cases)
    out = tmp_path / "o"
    # 5 MB: less than the whole result needs (about 10 MB), more than strips of 64-pixel tiles (2.4-3.2 MB)
    code, _, err = _run(capsys, ["upscale", str(src), "--model", str(model_file), "--out", str(out), "--device", "cpu",
                                 "--quiet", "--tile", "64", "--max-memory", "5"])
    assert code == 0, err
    assert sorted(calls) == ["big.png", "big.tif"]
    _assert_tagged(out, cases, icc, (840, 600))  # 420 x 300 stored, x2


def test_onnx_model_file_is_recognised_without_backend(tmp_path, capsys, model_file):
    pytest.importorskip("onnxruntime")
    from superres.export import export_onnx

    onnx_file = tmp_path / "m.onnx"
    export_onnx(str(model_file), onnx_file)
    src = tmp_path / "a.png"
    write_image(src, Image(_rgb(12, 10), None, 8))
    code, _, err = _run(capsys, ["upscale", str(src), "--model", str(onnx_file), "--out", str(tmp_path / "o")])
    assert code == 0, err
    assert "superres: device cpu (--device auto)" in err
    assert read_raw(tmp_path / "o" / "a.png").pixels.shape == (24, 20, 3)


# --------------------------------------------------------------------------- 1: devices
def test_device_auto_is_the_default_and_printed_once(tmp_path, capsys, model_file):
    from superres.devices import auto_device

    src = tmp_path / "a.png"
    write_image(src, Image(_rgb(8, 8), None, 8))
    code, _, err = _run(capsys, ["upscale", str(src), "--model", str(model_file), "--out", str(tmp_path / "o")])
    assert code == 0, err
    assert err.count("(--device auto)") == 1
    assert f"superres: device {auto_device()} (--device auto)" in err


def test_half_on_a_machine_without_cuda_is_a_clear_error(tmp_path, capsys, model_file, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    src = tmp_path / "a.png"
    write_image(src, Image(_rgb(8, 8), None, 8))
    code, _, err = _run(capsys, ["upscale", str(src), "--model", str(model_file), "--out", str(tmp_path / "o"),
                                 "--half"])
    assert code == 2 and "--half: half precision needs a CUDA device" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_half_on_the_auto_device_matches_fp32(tmp_path, capsys, model_file):
    src = tmp_path / "a.png"
    write_image(src, Image(_rgb(64, 48), None, 16))
    for name, extra in [("fp32", []), ("half", ["--half"])]:
        code, _, err = _run(capsys, ["upscale", str(src), "--model", str(model_file), "--out", str(tmp_path / name)]
                            + extra)
        assert code == 0 and "superres: device cuda" in err, err
    fp32 = read_raw(tmp_path / "fp32" / "a.png").pixels.astype(np.float64) / 65535
    half = read_raw(tmp_path / "half" / "a.png").pixels.astype(np.float64) / 65535
    assert np.abs(fp32 - half).max() < 5e-3


# --------------------------------------------------------------------------- 5: animations
@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_animation_keeps_frame_timing_and_loop(tmp_path, capsys, model_file, suffix):
    from PIL import Image as PILImage
    from PIL import ImageSequence

    rng = np.random.default_rng(0)
    frames = [PILImage.fromarray((rng.random((12, 10, 3)) * 255).astype(np.uint8)) for _ in range(4)]
    durations = [40, 80, 120, 200]
    src = tmp_path / f"anim{suffix}"
    frames[0].save(src, save_all=True, append_images=frames[1:], duration=durations, loop=3)
    out = tmp_path / "o"
    code, _, err = _run(capsys, ["upscale", str(src), "--model", str(model_file), "--out", str(out),
                                 "--device", "cpu", "--quiet", "--outscale", "1.5"])
    assert code == 0, err
    with PILImage.open(out / src.name) as im:
        assert im.n_frames == 4 and im.size == (15, 18) and im.info.get("loop") == 3
        assert [(f.load(), f.info["duration"])[1] for f in ImageSequence.Iterator(im)] == durations


# --------------------------------------------------------------------------- 6: torchrun
@pytest.mark.slow
def test_torchrun_splits_the_files_between_ranks(tmp_path, model_file):
    src = tmp_path / "in"
    names = []
    for k in range(7):
        sub = src / ("s%d" % (k % 3))
        write_image(sub / f"img{k}.png", Image(_rgb(8, 6, k), None, 8))
        names.append(f"s{k % 3}/img{k}.png")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "superres.cli", "upscale", str(src), "--out", str(out), "--model", str(model_file), "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "wrote 4 file(s)" in proc.stdout and "(rank 0 of 2)" in proc.stdout
    assert "wrote 3 file(s)" in proc.stdout and "(rank 1 of 2)" in proc.stdout
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == sorted(names)


def test_shard_is_disjoint_and_complete():
    from superres.outputs import shard

    items = list(range(23))
    for world in (1, 2, 3, 8, 30):
        parts = [shard(items, r, world) for r in range(world)]
        assert sorted(sum(parts, [])) == items


def test_each_torchrun_rank_takes_its_own_gpu(monkeypatch):
    from superres.outputs import rank_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert rank_device("auto") == rank_device("cuda") == "cuda:1"
    assert rank_device("cpu") == "cpu" and rank_device("cuda:0") == "cuda:0"
    monkeypatch.delenv("LOCAL_RANK")
    assert rank_device("auto") == "auto"


def test_a_write_that_fails_in_the_background_is_counted(tmp_path, capsys, model_file, monkeypatch):
    import superres.io as sio

    src = tmp_path / "in"
    for k, name in enumerate(("a.png", "b.png", "c.png")):
        write_image(src / name, Image(_rgb(8, 8, k), None, 8))
    real, calls = sio._write_pillow, []

    def disk_full_once(tmp, *args, **kwargs):  # the first JPEG written (a.png's: files go in order) fails
        calls.append(tmp)
        if len(calls) == 1:
            tmp.write_bytes(b"partial")
            raise OSError(28, "No space left on device")
        return real(tmp, *args, **kwargs)

    monkeypatch.setattr(sio, "_write_pillow", disk_full_once)
    out = tmp_path / "o"
    code, _, err = _run(capsys, ["upscale", str(src), "--model", str(model_file), "--out", str(out),
                                 "--quiet", "--device", "cpu", "--ext", "jpg"])
    assert code == 2
    assert "a.jpg: cannot write image (No space left on device)" in err and "1 of 3 file(s) failed" in err
    assert sorted(p.name for p in out.iterdir()) == ["b.jpg", "c.jpg"]  # no temporary file left


def test_an_output_that_cannot_hold_the_image_is_refused_before_the_model_runs(tmp_path, capsys, model_file,
                                                                               monkeypatch):
    """Alpha for a JPEG: the file is reported and skipped without running the model on it."""
    import superres.inference as inference

    src = tmp_path / "in"
    write_image(src / "a.png", Image(_rgb(8, 8), np.ones((8, 8, 1), np.float32) * 0.5, 8))  # alpha: not in JPEG
    write_image(src / "b.png", Image(_rgb(8, 8, 1), None, 8))
    runs = []
    real = inference.upscale
    monkeypatch.setattr(inference, "upscale", lambda net, image, **kw: runs.append(image.data.shape) or real(net, image, **kw))
    out = tmp_path / "o"
    code, _, err = _run(capsys, ["upscale", str(src), "--model", str(model_file), "--out", str(out),
                                 "--quiet", "--device", "cpu", "--ext", "jpg"])
    assert code == 2
    assert "a.png" in err and "JPEG cannot hold the alpha channel" in err and "1 of 2 file(s) failed" in err
    assert runs == [(8, 8, 3)]  # b.png only
    assert sorted(p.name for p in out.iterdir()) == ["b.jpg"]


def test_eval_runs_on_the_auto_device_by_default(tmp_path, capsys, model_file):
    import json

    from superres.devices import auto_device

    for k in range(2):
        write_image(tmp_path / "set" / "HR" / f"img{k}.png", Image(_rgb(24, 20, k), None, 8))
    code, out, err = _run(capsys, ["eval", "--model", str(model_file), "--data", str(tmp_path / "set"),
                                   "--scale", "2", "--json"])
    assert code == 0, err
    assert json.loads(out)  # stdout stays one JSON object
    assert err.count("(--device auto)") == 1 and f"superres: device {auto_device()}" in err


@pytest.mark.parametrize("option,value,message", [
    ("--tile", "-1", "expected an integer >= 0, got -1"),
    ("--tile", "x", "expected an integer >= 0, got 'x'"),
    ("--max-memory", "0", "expected a positive integer, got 0"),
    ("--crf", "-2", "expected an integer >= 0, got -2"),
])
def test_integer_options_below_their_minimum_are_usage_errors(tmp_path, capsys, option, value, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["upscale", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), option, value])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"{option}: {message}" in err and "superres upscale" in err, err
