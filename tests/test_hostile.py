"""Hostile and unlucky input at the command line (issue 20): one clear line on stderr and exit 2
(exit 1 and a report hint for a bug), no traceback, nothing half-written, bounded memory.

Each test drives ``superres.cli.main`` as a user would (a subprocess where a real second process or
a fresh memory measurement is needed). Images and models are tiny, so the whole file runs in
seconds on one CPU thread (the slow host-memory test is marked ``slow``).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from superres.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _train_error_line(err: str) -> str:
    """The one ``superres:`` line of a training run's stderr (which also carries its progress bar and notes)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.replace("\r", "\n").splitlines() if "superres:" in line]
    assert len(lines) == 1, err
    return lines[0][lines[0].index("superres:"):]


# --------------------------------------------------------------------------- the catch-all
def test_unexpected_exception_is_one_line_exit_1(capsys, monkeypatch):
    import superres.modelfile as modelfile

    def broken():
        raise ZeroDivisionError("a bug deep inside")

    monkeypatch.setattr(modelfile, "list_models", broken)
    code, _, err = _run(capsys, ["models"])
    assert code == 1
    line = _one_error_line(err)
    assert "ZeroDivisionError: a bug deep inside" in line and "report" in line and "--debug" in line


def test_memory_error_is_exit_2(capsys, monkeypatch):
    import superres.modelfile as modelfile

    def exhausted():
        raise MemoryError()

    monkeypatch.setattr(modelfile, "list_models", exhausted)
    code, _, err = _run(capsys, ["models"])
    assert code == 2 and "out of memory" in _one_error_line(err)


@pytest.mark.parametrize("how", ["option-before", "option-after", "env"])
def test_debug_shows_the_traceback(capsys, monkeypatch, how):
    import superres.modelfile as modelfile

    def broken():
        raise ZeroDivisionError("a bug deep inside")

    monkeypatch.setattr(modelfile, "list_models", broken)
    argv = {"option-before": ["--debug", "models"], "option-after": ["models", "--debug"], "env": ["models"]}[how]
    if how == "env":
        monkeypatch.setenv("SUPERRES_DEBUG", "1")
    code, _, err = _run(capsys, argv)
    assert code == 1
    assert "Traceback (most recent call last)" in err and "in broken" in err
    assert "ZeroDivisionError: a bug deep inside" in err.strip().splitlines()[-1]


# --------------------------------------------------------------------------- configs
def _billion_laughs(path: Path) -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    lines.append("model: {options: {x: *a9}}")
    path.write_text("\n".join(lines) + "\n")


def test_yaml_alias_bomb_is_refused_before_expansion(tmp_path, capsys):
    import time

    config = tmp_path / "laughs.yaml"
    _billion_laughs(config)
    assert config.stat().st_size < 1024
    started = time.monotonic()
    code, _, err = _run(capsys, ["train", "--config", str(config), "train.iterations=2"])
    assert time.monotonic() - started < 5
    assert code == 2
    line = _one_error_line(err)
    assert str(config) in line and "aliases" in line


def test_config_that_is_not_utf8(tmp_path, capsys):
    config = tmp_path / "latin1.yaml"
    config.write_bytes("name: caf\xe9\n".encode("latin-1"))
    code, _, err = _run(capsys, ["train", "--config", str(config)])
    assert code == 2
    line = _one_error_line(err)
    assert str(config) in line and "UTF-8" in line


@pytest.mark.parametrize(
    "override, key",
    [
        ("optim.weight_decay=.nan", "optim.weight_decay"),
        ("optim.lr=.inf", "optim.lr"),
        ("optim.lr=.nan", "optim.lr"),
        ("schedule.min_lr=.nan", "schedule.min_lr"),
        ("schedule.gamma=.inf", "schedule.gamma"),
        ("train.grad_clip=.inf", "train.grad_clip"),
        ("train.max_seconds=.nan", "train.max_seconds"),
    ],
)
def test_non_finite_numbers_in_the_config_are_refused(tmp_path, capsys, override, key):
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{train: [{tmp_path}], patch_size: 8}}\nmodel: {{name: baseline, scale: 2}}\n")
    code, _, err = _run(capsys, ["train", "--config", str(config), override])
    assert code == 2
    line = _one_error_line(err)
    assert f"'{key}'" in line and "finite" in line


# --------------------------------------------------------------------------- image files
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_bomb(path: Path, width: int, height: int, depth: int) -> None:
    """A PNG of a few kB whose header declares ``width x height`` gray pixels of ``depth`` bits."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0)
    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + width * depth // 8)
    idat = b"".join(comp.compress(row) for _ in range(64)) + comp.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))


def _tiff_bomb(path: Path, width: int, height: int) -> None:
    """A 16-bit TIFF of under 1 kB whose tags declare ``width x height``."""
    import tifffile

    tifffile.imwrite(path, np.zeros((16, 16), np.uint16))
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[0].tags["ImageWidth"].overwrite(width)
        tif.pages[0].tags["ImageLength"].overwrite(height)


# The peak resident memory of this process: VmHWM (the high-water mark of this process's own
# memory map) rather than ru_maxrss, which on Linux carries over the parent's peak from the fork.
_PEAK_RSS_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    from superres.cli import main
    code = main(sys.argv[1:])
    try:
        with open("/proc/self/status") as fh:
            peak_kb = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("PEAK_KB", peak_kb, "CODE", code)
    """
)


def _run_measured(argv: list[str], tmp_path: Path, env: dict | None = None) -> tuple[int, str, int]:
    """``main(argv)`` in a fresh interpreter: (exit code, stderr, peak RSS in MB of that process)."""
    import os
    import subprocess
    import sys

    script = tmp_path / "measure.py"
    script.write_text(_PEAK_RSS_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), *argv], capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )
    fields = proc.stdout.split()
    assert "PEAK_KB" in fields, proc.stdout + proc.stderr
    peak_kb = int(fields[fields.index("PEAK_KB") + 1])
    code = int(fields[fields.index("CODE") + 1])
    assert proc.returncode == 0
    return code, proc.stderr, peak_kb // 1024


@pytest.mark.parametrize("kind", ["png16", "png8", "tiff"])
@pytest.mark.parametrize("command", ["stats", pytest.param("upscale", marks=pytest.mark.slow)])
def test_decompression_bomb_is_refused_before_decoding(tmp_path, kind, command):
    bomb = tmp_path / ("bomb.tif" if kind == "tiff" else "bomb.png")
    if kind == "tiff":
        _tiff_bomb(bomb, 20000, 20000)
    else:
        _png_bomb(bomb, 20000, 20000, 16 if kind == "png16" else 8)
    assert bomb.stat().st_size < 4096
    argv = (["data", "stats", str(bomb)] if command == "stats"
            else ["upscale", str(bomb), "--model", "lumanet-x4", "--out", str(tmp_path / "out"), "--quiet"])
    code, err, peak_mb = _run_measured(argv, tmp_path)
    assert code == 2
    line = _one_error_line(err)
    assert str(bomb) in line and "20000 x 20000" in line and "--max-pixels" in line
    # a decoded 20000 x 20000 16-bit image alone would be 800 MB
    assert peak_mb < 600, peak_mb
    assert not (tmp_path / "out").exists()


def _small_image_files(folder: Path) -> dict[str, Path]:
    """A 40 x 30 image in each format a reader decodes (the WebP is named .png: content decides)."""
    import tifffile
    from PIL import Image as PILImage

    import png

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    files = {}
    for name, fmt in [("png8.png", "PNG"), ("jpeg.jpg", "JPEG"), ("bmp.bmp", "BMP"), ("webp.png", "WEBP")]:
        PILImage.fromarray(rgb).save(folder / name, format=fmt)
        files[name] = folder / name
    gray16 = rng.integers(0, 65536, (30, 40), dtype=np.uint16)
    with open(folder / "png16.png", "wb") as fh:
        png.Writer(40, 30, greyscale=True, bitdepth=16).write(fh, gray16.tolist())
    files["png16.png"] = folder / "png16.png"
    tifffile.imwrite(folder / "tiff.tif", gray16)
    files["tiff.tif"] = folder / "tiff.tif"
    tifffile.imwrite(folder / "float.tif", gray16.astype(np.float32) / 65535)
    files["float.tif"] = folder / "float.tif"
    return files


@pytest.mark.parametrize("name", ["png8.png", "png16.png", "jpeg.jpg", "bmp.bmp", "webp.png", "tiff.tif", "float.tif"])
def test_pixel_limit_applies_to_every_format(tmp_path, capsys, monkeypatch, name):
    path = _small_image_files(tmp_path)[name]
    code, _, err = _run(capsys, ["--max-pixels", "1199", "data", "stats", str(path)])
    assert code == 2
    line = _one_error_line(err)
    assert str(path) in line and "40 x 30" in line and "--max-pixels" in line
    code, _, err = _run(capsys, ["data", "stats", str(path), "--max-pixels", "1200"])  # exactly at the limit
    assert code == 0, err
    monkeypatch.setenv("SUPERRES_MAX_PIXELS", "1000")
    code, _, err = _run(capsys, ["data", "stats", str(path)])
    assert code == 2 and "SUPERRES_MAX_PIXELS" in _one_error_line(err)
    monkeypatch.setenv("SUPERRES_MAX_PIXELS", "lots")
    code, _, err = _run(capsys, ["data", "stats", str(path)])
    assert code == 2 and "SUPERRES_MAX_PIXELS=lots" in _one_error_line(err)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_tiff_with_a_non_finite_pixel_is_refused(tmp_path, capsys, bad):
    import tifffile

    data = np.full((16, 16, 3), 0.5, np.float32)
    data[5, 7, 1] = bad
    path = tmp_path / "in" / "float.tif"
    path.parent.mkdir()
    tifffile.imwrite(path, data, photometric="rgb")
    out = tmp_path / "out"
    code, _, err = _run(capsys, ["upscale", str(path), "--model", "lumanet-x4", "--out", str(out), "--quiet"])
    assert code == 2
    line = _one_error_line(err)
    assert str(path) in line and "1 of 768 float samples are NaN or infinite" in line
    assert not out.exists() or not any(out.iterdir())
    code, _, err = _run(capsys, ["data", "stats", str(path.parent)])
    assert code == 2 and "NaN or infinite" in _one_error_line(err)


# --------------------------------------------------------------------------- models and training
def _tiny_training_data(root: Path) -> Path:
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    folder = root / "train"
    folder.mkdir(parents=True)
    for i in range(3):
        PILImage.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(folder / f"t{i}.png")
    return folder


def _tiny_config(root: Path, **train: object) -> Path:
    settings = {"iterations": 4, "device": "cpu", "log_every": 2, "save_every": 2, **train}
    config = root / "tiny.yaml"
    config.write_text(textwrap.dedent(f"""
        model: {{name: baseline, scale: 2, options: {{channels: 4, num_blocks: 1}}}}
        data: {{train: [{_tiny_training_data(root)}], patch_size: 8, batch_size: 2}}
        schedule: {{name: constant}}
        train: {{{", ".join(f"{k}: {v}" for k, v in settings.items())}}}
    """))
    return config


def test_model_file_with_nan_weights_is_refused_at_load(tmp_path, capsys):
    import torch
    from safetensors.torch import load_file, save_file

    from superres.modelfile import METADATA_KEY, WEIGHTS_DIR, read_metadata

    source = WEIGHTS_DIR / "lumanet-x4.safetensors"
    tensors = load_file(str(source))
    name = sorted(k for k, v in tensors.items() if v.is_floating_point())[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    bad_model = tmp_path / "nan.safetensors"
    import json

    save_file(tensors, str(bad_model), metadata={METADATA_KEY: json.dumps(read_metadata(source))})
    image = tmp_path / "in.png"
    _small_image_files(tmp_path)  # writes png8.png among others
    (tmp_path / "png8.png").rename(image)
    out = tmp_path / "out"
    code, _, err = _run(capsys, ["upscale", str(image), "--model", str(bad_model), "--out", str(out), "--quiet"])
    assert code == 2
    line = _one_error_line(err)
    assert str(bad_model) in line and "NaN or infinite" in line and name in line
    assert not out.exists()
    # and save_model refuses to write such weights in the first place
    from superres.errors import SuperresError
    from superres.modelfile import load_model, save_model

    model = load_model("lumanet-x4")
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("inf")
    with pytest.raises(SuperresError, match="not written: the weights hold NaN or infinite values"):
        save_model(tmp_path / "inf.safetensors", model, arch="lumanet", args=model.superres_meta["args"])
    assert not list(tmp_path.glob("*inf.safetensors*"))


def test_divergence_is_caught_before_any_save(tmp_path, capsys):
    import torch

    config = _tiny_config(tmp_path, save_every=1, log_every=50, iterations=20)
    out = tmp_path / "run"
    code, _, err = _run(capsys, ["train", "--config", str(config), "--out", str(out), "optim.lr=1e9"])
    assert code == 2
    line = _train_error_line(err)
    assert "training diverged at iteration" in line and "last.pt was not written" in line
    at = int(line.split("training diverged at iteration ")[1].split(":")[0])
    assert 1 <= at <= 20
    if (out / "last.pt").exists():  # the checkpoints before the divergence are healthy
        state = torch.load(out / "last.pt", weights_only=True)
        assert state["iteration"] < at
        assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (out / "model.safetensors").exists()
    assert not list(out.glob(".*.tmp*"))


@pytest.mark.parametrize("damage", ["missing-key", "wrong-shape", "string-iteration", "not-a-dict-model"])
def test_resume_from_a_damaged_checkpoint(tmp_path, capsys, damage):
    import torch

    config = _tiny_config(tmp_path)
    out = tmp_path / "run"
    assert _run(capsys, ["train", "--config", str(config), "--out", str(out)])[0] == 0
    state = torch.load(out / "last.pt", weights_only=True)
    if damage == "missing-key":
        del state["optimizer"]
    elif damage == "wrong-shape":
        key = next(k for k, v in state["model"].items() if v.ndim == 4)
        state["model"][key] = torch.zeros(3, 3, 3, 3)
    elif damage == "string-iteration":
        state["iteration"] = "four"
    else:
        state["model"] = "weights"
    torch.save(state, out / "last.pt")
    code, _, err = _run(capsys, ["train", "--config", str(config), "train.iterations=6", "--resume", str(out)])
    assert code == 2
    line = _train_error_line(err)
    assert str(out / "last.pt") in line and "cannot resume from this checkpoint" in line


# --------------------------------------------------------------------------- files and folders
def _one_png(path: Path, size: int = 8) -> Path:
    from PIL import Image as PILImage

    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(np.random.default_rng(2).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def no_model_load(monkeypatch):
    """Make loading a model a test failure: checks that must come first are seen to come first."""
    import superres.inference as inference

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(inference, "load_for_backend", refuse)


@pytest.mark.parametrize("loop", ["self", "pair"])
@pytest.mark.parametrize("command", ["upscale", "stats", "patches"])
def test_symlink_loop_in_an_input_folder(tmp_path, capsys, loop, command):
    folder = tmp_path / "in"
    _one_png(folder / "ok.png")
    if loop == "self":
        (folder / "loop.png").symlink_to("loop.png")
        culprit = folder / "loop.png"
    else:
        (folder / "a.png").symlink_to("b.png")
        (folder / "b.png").symlink_to("a.png")
        culprit = folder / "a.png"  # the first in name order
    (folder / "sub").mkdir()
    (folder / "sub" / "up").symlink_to("..")  # a folder link back up: not followed, not an error
    argv = {
        "upscale": ["upscale", str(folder), "--model", "lumanet-x4", "--out", str(tmp_path / "out"), "--quiet"],
        "stats": ["data", "stats", str(folder)],
        "patches": ["data", "patches", str(folder), "--out", str(tmp_path / "out"), "--hr-size", "8", "--scale", "2"],
    }[command]
    code, _, err = _run(capsys, argv)
    assert code == 2
    line = _one_error_line(err)
    assert str(culprit) in line and "symbolic link loop" in line
    assert not (tmp_path / "out").exists()


def test_out_is_an_existing_file(tmp_path, capsys, no_model_load):
    image = _one_png(tmp_path / "in.png")
    out = tmp_path / "out.png"
    out.write_bytes(b"not a folder")
    code, _, err = _run(capsys, ["upscale", str(image), "--out", str(out), "--model", "lumanet-x4", "--quiet"])
    assert code == 2
    line = _one_error_line(err)
    assert f"--out {out}" in line and "not a folder" in line
    assert out.read_bytes() == b"not a folder"


def test_out_cannot_be_created_fails_before_the_model_runs(tmp_path, capsys, no_model_load):
    image = _one_png(tmp_path / "in.png")
    blocker = tmp_path / "file"
    blocker.write_bytes(b"x")
    out = blocker / "sub" / "out"
    code, _, err = _run(capsys, ["upscale", str(image), "--out", str(out), "--model", "lumanet-x4", "--quiet"])
    assert code == 2
    line = _one_error_line(err)
    assert f"--out {out}" in line and "cannot create folder" in line and f"{blocker} is a file" in line


def test_an_output_path_that_is_a_folder(tmp_path, capsys, no_model_load):
    image = _one_png(tmp_path / "in.png")
    (tmp_path / "out" / "in.png").mkdir(parents=True)
    code, _, err = _run(capsys, ["upscale", str(image), "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 2
    assert "the output path is a folder" in _one_error_line(err)


def test_existing_outputs_policy(tmp_path, capsys):
    folder = tmp_path / "in"
    first, second = _one_png(folder / "a.png"), _one_png(folder / "b.png", size=6)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"precious")
    base = ["upscale", str(folder), "--out", str(out), "--model", "lumanet-x4", "--quiet"]
    # default: refuse before any work, naming the file and both options
    code, _, err = _run(capsys, base)
    assert code == 2
    line = _one_error_line(err)
    assert str(out / "a.png") in line and "--overwrite" in line and "--skip-existing" in line
    assert (out / "a.png").read_bytes() == b"precious" and not (out / "b.png").exists()
    # --skip-existing: the existing one is left alone, the missing one is written
    code, _, err = _run(capsys, base + ["--skip-existing"])
    assert code == 0, err
    assert (out / "a.png").read_bytes() == b"precious"
    from PIL import Image as PILImage

    assert PILImage.open(out / "b.png").size == (24, 24)
    # --overwrite: replaced
    code, _, err = _run(capsys, base + ["--overwrite"])
    assert code == 0, err
    assert PILImage.open(out / "a.png").size == (32, 32)
    # the two options exclude each other (argparse: exit 2)
    with pytest.raises(SystemExit) as exit_info:
        main(base + ["--overwrite", "--skip-existing"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("failing_call", [1, 2])
def test_disk_full_during_data_patches(tmp_path, capsys, monkeypatch, failing_call):
    import errno

    import superres.data.patches as patches

    _one_png(tmp_path / "in" / "a.png", size=32)
    real_savez = np.savez
    calls = []

    def savez_until_full(fh, **arrays):
        calls.append(1)
        if len(calls) == failing_call:
            fh.write(b"PK\x03\x04 half an archive")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_savez(fh, **arrays)

    monkeypatch.setattr(patches.np, "savez", savez_until_full)
    out = tmp_path / "out"
    code, _, err = _run(capsys, ["data", "patches", str(tmp_path / "in"), "--out", str(out), "--hr-size", "16", "--scale", "2"])
    assert code == 2
    line = _one_error_line(err)
    assert "No space left on device" in line and ".npz" in line
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if n.startswith(".")]  # no temporary file left behind
    written = ["hr_images.npz"] if failing_call == 2 else []
    assert names == written
    for name in written:  # what was written before the disk filled is complete
        assert np.load(out / name)["hr"].shape == (4, 16, 16, 3)


# --------------------------------------------------------------------------- one writer per run folder
_HOLD_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from superres.config import load_config
    from superres.training import train

    started, release = Path(sys.argv[3]), Path(sys.argv[4])

    def hold(iteration, model):
        if iteration == 1:
            started.write_text("running")
            deadline = time.monotonic() + 120
            while not release.exists() and time.monotonic() < deadline:
                time.sleep(0.05)

    train(load_config(sys.argv[1]), run_dir=sys.argv[2], callback=hold)
    """
)


@pytest.mark.slow
def test_two_trainings_into_one_folder(tmp_path, capsys):
    import os
    import subprocess
    import sys
    import time

    config = _tiny_config(tmp_path)
    run = tmp_path / "run"
    script = tmp_path / "hold.py"
    script.write_text(_HOLD_SCRIPT)
    started, release = tmp_path / "started", tmp_path / "release"
    first = subprocess.Popen(
        [sys.executable, str(script), str(config), str(run), str(started), str(release)],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not started.exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for argv in (["train", "--config", str(config), "--out", str(run)],
                     ["train", "--config", str(config), "--resume", str(run)]):
            code, _, err = _run(capsys, argv)
            assert code == 2
            line = _one_error_line(err)
            assert f"{run}: another training (PID {first.pid}" in line and "--out" in line
    finally:
        release.write_text("go")
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert (run / "model.safetensors").is_file()
    assert not (run / ".superres.lock").exists()  # removed at the end of the run


def test_a_stale_lock_is_taken_over_with_a_note(tmp_path, capsys):
    import json
    import subprocess
    import sys

    config = _tiny_config(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (run / ".superres.lock").write_text(json.dumps({"pid": dead_pid, "host": "somewhere", "started": "yesterday"}))
    code, out, err = _run(capsys, ["train", "--config", str(config), "--out", str(run)])
    assert code == 0, err
    assert f"took over the stale lock {run / '.superres.lock'}" in err and f"PID {dead_pid}" in err
    assert (run / "model.safetensors").is_file() and not (run / ".superres.lock").exists()


def test_a_failed_start_leaves_no_run_folder(tmp_path, capsys):
    config = _tiny_config(tmp_path)
    run = tmp_path / "never"
    code, _, err = _run(capsys, ["train", "--config", str(config), "--resume", str(run)])
    assert code == 2 and "no checkpoint to resume from" in _train_error_line(err)
    assert not run.exists()


# --------------------------------------------------------------------------- host memory
@pytest.fixture
def strip_calls(monkeypatch):
    """Records the outputs written by the strip path of ``superres upscale``."""
    import superres.inference as inference

    calls: list[str] = []
    real = inference._upscale_in_strips

    def spy(model, raw, dst, **kwargs):
        calls.append(dst.name)
        return real(model, raw, dst, **kwargs)

    monkeypatch.setattr(inference, "_upscale_in_strips", spy)
    return calls


@pytest.mark.slow
def test_strips_give_the_same_pixels_as_one_piece(tmp_path, capsys, strip_calls):
    import tifffile
    from PIL import Image as PILImage

    from superres.io import read_raw

    rng = np.random.default_rng(3)
    src = tmp_path / "in"
    src.mkdir()
    PILImage.fromarray(rng.integers(0, 256, (120, 101, 3), dtype=np.uint8)).save(src / "rgb.png")
    PILImage.fromarray(rng.integers(0, 256, (110, 117), dtype=np.uint8)).save(src / "gray.png")  # on an RGB model
    tifffile.imwrite(src / "g16.tif", rng.integers(0, 65536, (105, 98), dtype=np.uint16))
    tifffile.imwrite(src / "float.tif", rng.random((100, 60, 3)).astype(np.float32), photometric="rgb")
    base = ["upscale", str(src), "--model", "lumanet-x4", "--tile", "16", "--tile-overlap", "4", "--quiet"]
    assert _run(capsys, base + ["--out", str(tmp_path / "whole")])[0] == 0
    assert strip_calls == []
    # 1 MB for these images' arrays: more than any takes in strips, less than any takes in one piece
    code, _, err = _run(capsys, base + ["--out", str(tmp_path / "strips"), "--max-memory", "1"])
    assert code == 0, err
    assert sorted(strip_calls) == ["float.tif", "g16.tif", "gray.png", "rgb.png"]
    for name in strip_calls:
        whole, strips = read_raw(tmp_path / "whole" / name), read_raw(tmp_path / "strips" / name)
        assert whole.pixels.dtype == strips.pixels.dtype and whole.pixels.shape == strips.pixels.shape
        assert whole.pixels.shape[:2] == (4 * read_raw(src / name).pixels.shape[0], 4 * read_raw(src / name).pixels.shape[1])
        np.testing.assert_array_equal(whole.pixels, strips.pixels)


@pytest.mark.parametrize("case", ["jpeg", "alpha", "tile0"])
def test_too_large_and_not_writable_in_strips_is_refused_before_the_model_runs(tmp_path, capsys, strip_calls, case):
    from PIL import Image as PILImage

    rng = np.random.default_rng(4)
    channels = 4 if case == "alpha" else 3
    name = "in.jpg" if case == "jpeg" else "in.png"
    PILImage.fromarray(rng.integers(0, 256, (120, 101, channels), dtype=np.uint8).squeeze()).save(tmp_path / name)
    out = tmp_path / "out"
    argv = ["upscale", str(tmp_path / name), "--model", "lumanet-x4", "--out", str(out), "--max-memory", "1", "--quiet"]
    argv += ["--tile", "0"] if case == "tile0" else ["--tile", "16"]
    code, _, err = _run(capsys, argv)
    assert code == 2
    line = _one_error_line(err)
    assert str(tmp_path / name) in line and "404 x 480" in line and "--max-memory" in line
    assert {"jpeg": "write .png or .tif", "alpha": "alpha", "tile0": "--tile 0"}[case] in line
    assert strip_calls == [] and not (out / name).exists()


#: The host-memory bound this test checks, stated in docs/RELIABILITY.md: `superres upscale` of a
#: 6000 x 4000 RGB image at x4 (24000 x 16000 out: 1.15 GB as 8-bit, 4.6 GB as a float32 canvas),
#: written in strips with the default tile, peaks below this many MB of resident memory.
STRIP_PEAK_MB = 1400  # docs/RELIABILITY.md: with --tile auto (384-pixel tiles here); 0.97 GB measured with --tile 256


@pytest.mark.slow
def test_a_6000x4000_x4_upscale_in_strips_stays_below_the_stated_peak(tmp_path):
    import tifffile
    import torch

    from superres.modelfile import save_model
    from superres.models import build

    # A tiny ESPCN (2 features): the point is the memory of the pipeline, not the model's quality.
    torch.manual_seed(0)
    args = {"scale": 4, "in_channels": 3, "features": 2, "hidden": 2}
    model = tmp_path / "tiny.safetensors"
    save_model(model, build("espcn", **args), arch="espcn", args=args)
    image = np.empty((4000, 6000, 3), np.uint8)
    image[:, :, 0] = (np.arange(6000) * 255 // 6000).astype(np.uint8)
    image[:, :, 1] = (np.arange(4000) * 255 // 4000).astype(np.uint8)[:, None]
    image[:, :, 2] = (np.arange(4000)[:, None] + np.arange(6000)) % 256
    tifffile.imwrite(tmp_path / "big.tif", image, photometric="rgb")
    del image
    # --max-memory 1024: as on a machine with 2 GB available; in one piece it would take about 6 GB
    code, err, peak_mb = _run_measured(
        ["upscale", str(tmp_path / "big.tif"), "--model", str(model), "--out", str(tmp_path / "out"),
         "--max-memory", "1024", "--quiet"], tmp_path)
    assert code == 0, err
    assert peak_mb < STRIP_PEAK_MB, peak_mb
    with tifffile.TiffFile(tmp_path / "out" / "big.tif") as tif:  # the header only: the pixels are 1.15 GB
        assert tif.series[0].shape == (16000, 24000, 3) and tif.series[0].dtype == np.uint8
        assert tif.pages[0].is_tiled
