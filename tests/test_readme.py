"""Every fenced code block of README.md runs, as a test.

* ``python`` blocks run as written, on a photo the test puts where the README expects it.
* ``bash`` blocks are split into commands (a trailing ``\\`` continues a line); each command runs
  with ``bash`` in a fresh copy of a small world the test makes: the working folder holds the files
  the README names (``photo.png``, ``scans/``, ``clip.mp4``, ``RealESRGAN_x4plus.pth``, ...; small
  images), ``configs/`` is the repository's, and ``../shared/data`` holds small generated Set5,
  Set14 and train folders, so nothing needs the real data and each command takes seconds.
  ``superres`` and ``torchrun`` run this checkout's code.
* ``superres serve`` and the ``curl`` calls of the API run together (:func:`test_readme_server_and_api`).

A command is not run only when :data:`SKIPPED` names it with the reason (installs, the whole test
suite, the minutes-long demo). Trainings run with :data:`SHRUNK`'s extra overrides appended (two
iterations instead of thousands). :func:`test_every_readme_block_is_run_or_listed` fails for a block
in a language no test runs and for list entries the README no longer has; a new bash command
needs no entry: it is run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"

# --------------------------------------------------------------------------- the README's blocks
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.S | re.M)


def blocks() -> list[tuple[str, str, int]]:
    """``(language, body, line)`` of every fenced block in README.md, bodies dedented."""
    text = README.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        indent = len(m["indent"])
        body = "".join(line[indent:] if line[:indent].isspace() else line for line in m["body"].splitlines(True))
        out.append((m["lang"], body, text.count("\n", 0, m.start()) + 1))
    return out


def python_blocks() -> list[str]:
    return [body for lang, body, _ in blocks() if lang == "python"]


def bash_commands() -> list[str]:
    """The commands of every bash block, in README order: continuation lines joined, comment-only
    and blank lines dropped (a trailing ``# comment`` stays: bash ignores it)."""
    commands = []
    for lang, body, _ in blocks():
        if lang != "bash":
            continue
        pending = ""
        for line in body.splitlines():
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1].rstrip() + " "
                continue
            line = pending + line.strip()
            pending = ""
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def key(command: str) -> str:
    """A command without its trailing comment and quoting: how the lists below name it."""
    return " ".join(shlex.split(command, comments=True))


#: Commands not run, with the reason. Only installs, the whole suite and minutes-long runs belong here.
SKIPPED: dict[str, str] = {
    "python3 -m venv .venv && . .venv/bin/activate": "creates a virtual environment to install into (.ci/run does, on a clean clone)",
    "pip install torch==2.13.0": "installs a package (.ci/run runs it)",
    "pip install -e .": "installs the package (.ci/run installs it with the test extra)",
    "pip install -e .[test]": "installs the package (.ci/run runs it)",
    "pip install -e .[serve]": "installs an extra (the test extra has the server's packages)",
    "superres demo": "trains two models for minutes; tests/test_demo.py runs the demo at a tiny size",
    "pytest -q": "the whole test suite, this file included (.ci/run runs it)",
    "pytest -q -m not slow": "the test suite's quick subset, this file's quick tests included",
}

#: Trainings run with these overrides appended (later key=value pairs win): their data is the
#: test's small folders, and thousands of iterations would take minutes.
_TINY_RUN = ["train.iterations=2", "train.max_seconds=null", "data.batch_size=2", "train.val_every=2",
             "train.save_every=2", "train.log_every=1"]
SHRUNK: dict[str, list[str]] = {
    "superres train --config configs/enhanced_x4.yaml train.iterations=2000": _TINY_RUN,
    "superres train --config configs/enhanced_x4.yaml train.iterations=2000 --resume": _TINY_RUN[1:] + ["train.iterations=4"],
    "superres train --config configs/espcn_x4.yaml data.train=[] data.train_pairs=my/pairs data.val=my/benchmark --out runs/espcn_pairs": _TINY_RUN,
}

_TRAIN = "superres train --config configs/enhanced_x4.yaml train.iterations=2000"
_EXPORT = "superres export lumanet-x4 --out lumanet-x4.onnx"
#: Commands that use what earlier README commands make: those run first, in the same folder.
AFTER: dict[str, list[str]] = {
    "superres train --config configs/enhanced_x4.yaml train.iterations=2000 --resume": [_TRAIN],
    "superres eval --model runs/enhanced_x4/model.safetensors --data ../shared/data/Set5 --scale 4": [_TRAIN],
    "superres upscale photo.png --model runs/enhanced_x4/model.safetensors --out upscaled/": [_TRAIN],
    "superres upscale photo.png --model lumanet-x4.onnx --backend onnx --out upscaled/": [_EXPORT],
    "superres upscale camera.jpg --model lumanet-x4.onnx --out upscaled/": [_EXPORT],
}

#: Commands the README shows failing on purpose: (exit code, text the message must contain).
REFUSED: dict[str, tuple[int, str]] = {
    "superres upscale photo.jpg --out upscaled/ --device cpu --half": (2, "--half"),
}

#: What some commands must leave in the working folder (besides exiting 0).
WRITES: dict[str, list[str]] = {
    "superres data patches ../shared/data/train --out data/patches --hr-size 128 --scale 4":
        ["data/patches/hr_images.npz", "data/patches/hr_lr_images.npz"],
    "superres data stats ../shared/data/train --plot stats.png": ["stats.png"],
    _TRAIN: ["runs/enhanced_x4/model.safetensors"],
    "superres upscale photo.png scans/ --out upscaled/": ["upscaled/photo.png", "upscaled/2019/a.tif"],
    "superres benchmark --sets Set5 Set14 --scales 4 --out bench/": ["bench/benchmark.md", "bench/benchmark.json"],
    _EXPORT: ["lumanet-x4.onnx"],
    "superres convert RealESRGAN_x4plus.pth --out realesrgan-x4plus.safetensors --scale 4": ["realesrgan-x4plus.safetensors"],
    "superres upscale clip.mp4 --out upscaled/ --model lumanet-x2 --crf 20": ["upscaled/clip.mp4"],
    "superres upscale loop.gif --out upscaled/ --outscale 2": ["upscaled/loop.gif"],
}


def served(command: str) -> bool:
    """Run by :func:`test_readme_server_and_api`, not one by one."""
    return command.startswith("curl ") or command.startswith("superres serve")


def runnable() -> list[str]:
    return [c for c in bash_commands() if key(c) not in SKIPPED and not served(c)]


# --------------------------------------------------------------------------- the world the commands run in
def _photo(h: int, w: int, top: int = 100, left: int = 150) -> np.ndarray:
    from skimage.data import astronaut

    return astronaut()[top : top + h, left : left + w]


def _clip(path: Path, frames: int = 6, width: int = 32, height: int = 24) -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for k in range(frames):
            frame = av.VideoFrame.from_ndarray(_photo(height, width, 50 + 5 * k, 100 + 3 * k).copy(), format="rgb24")
            frame.pts = k
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _rrdbnet_pth(path: Path, scale: int) -> None:
    """A small RRDBNet in the Real-ESRGAN layout (``params_ema``), as community files come."""
    import torch

    from superres.models import build

    torch.manual_seed(scale)
    net = build("rrdbnet", scale=scale, channels=8, blocks=1, growth=4)
    torch.save({"params_ema": net.state_dict()}, path)


def _bench(folder: Path, seed: int) -> None:
    (folder / "HR").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(_photo(40, 44, 60 + 40 * i + seed, 120 + 30 * i)).save(folder / "HR" / f"img{i}.png")


def make_world(root: Path) -> Path:
    """``root/work`` (returned; the commands' working folder) and ``root/shared/data``."""
    import tifffile

    data = root / "shared" / "data"
    (root / "shared" / "peers").mkdir(parents=True)  # benchmark's default peers folder; no OpenCV peers in it
    _bench(data / "Set5", 0)
    _bench(data / "Set14", 7)
    for i, name in enumerate(["T91", "BSD200", "General100"]):
        (data / "train" / name).mkdir(parents=True)
        Image.fromarray(_photo(136, 132, 60 + 20 * i, 80 + 30 * i)).save(data / "train" / name / f"im{i}.png")

    work = root / "work"
    work.mkdir()
    (work / "configs").symlink_to(REPO / "configs")
    Image.fromarray(_photo(34, 41)).save(work / "photo.png")
    # photo.jpg: --size 1920x1080 and --width 2560 need an input at least 1/16 of that per side
    Image.fromarray(_photo(70, 162, 100, 100)).save(work / "photo.jpg", quality=95)
    Image.fromarray(_photo(30, 36, 200, 200)).save(work / "camera.jpg", quality=95)
    Image.fromarray(_photo(30, 36, 300, 100)).save(work / "frame.png")
    (work / "scans" / "2019").mkdir(parents=True)
    Image.fromarray(_photo(28, 30, 20, 20)).save(work / "scans" / "page.png")
    gray16 = (_photo(26, 30, 250, 250)[:, :, 0].astype(np.uint16) * 257)
    tifffile.imwrite(work / "scans" / "2019" / "a.tif", gray16)
    (work / "photos").mkdir()
    for i in range(4):
        Image.fromarray(_photo(24, 28, 40 * i, 60)).save(work / "photos" / f"p{i}.png")
    frames = [Image.fromarray(_photo(20, 24, 100 + 10 * k, 150)) for k in range(3)]
    frames[0].save(work / "loop.gif", save_all=True, append_images=frames[1:], duration=[80, 120, 100], loop=0)
    _clip(work / "clip.mp4")
    _clip(work / "long.mp4", frames=8)
    _rrdbnet_pth(work / "RealESRGAN_x4plus.pth", 4)
    _rrdbnet_pth(work / "RealESRGAN_x2plus.pth", 2)
    for folder in ("HR", "LR"):
        (work / "my" / "pairs" / folder).mkdir(parents=True)
    for i in range(2):
        hr = _photo(72, 76, 30 + 50 * i, 200)
        Image.fromarray(hr).save(work / "my" / "pairs" / "HR" / f"{i:04d}.png")
        Image.fromarray(hr).resize((19, 18), Image.BICUBIC).save(work / "my" / "pairs" / "LR" / f"{i:04d}x4.png")
    _bench(work / "my" / "benchmark", 3)
    return work


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The template world; each command gets its own copy."""
    pytest.importorskip("av")
    return make_world(tmp_path_factory.mktemp("readme-world"))


def _copy(world: Path, tmp_path: Path) -> Path:
    shutil.copytree(world.parent, tmp_path / "w", symlinks=True)
    return tmp_path / "w" / "work"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp_path: Path) -> dict[str, str]:
    """``superres`` and ``torchrun`` run this checkout with this interpreter, one thread each."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, module in (("superres", "superres"), ("torchrun", "torch.distributed.run")):
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m {module} "$@"\n')
        shim.chmod(0o755)
    path = os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": path,
            "OMP_NUM_THREADS": "1", "PET_MASTER_PORT": str(_free_port())}


def _bash(command: str, cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _as_run(command: str) -> str:
    """``command`` as the test runs it: with :data:`SHRUNK`'s overrides after its own (so they win)
    and before its options."""
    extra = SHRUNK.get(key(command))
    if not extra:
        return command
    words = shlex.split(command, comments=True)
    last = max(i for i, w in enumerate(words) if re.match(r"^[\w.]+=", w))
    return shlex.join(words[: last + 1] + extra + words[last + 1 :])


# --------------------------------------------------------------------------- tests
def test_every_readme_block_is_run_or_listed() -> None:
    """Every block is Python or bash (the languages run here); every list entry is a README command."""
    found = blocks()
    assert python_blocks(), "README.md has no ```python block"
    other = [(lang or "(none)", line) for lang, _, line in found if lang not in ("python", "bash")]
    assert not other, f"README.md blocks in a language no test runs (language, line): {other}"
    keys = {key(c) for c in bash_commands()}
    listed = set(SKIPPED) | set(SHRUNK) | set(AFTER) | set(REFUSED) | set(WRITES)
    listed |= {c for before in AFTER.values() for c in before}
    stale = sorted(listed - keys)
    assert not stale, f"entries for commands README.md no longer has: {stale}"
    assert any(served(c) for c in bash_commands())


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_block_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    from superres.io import Image as SrImage

    photo = _photo(102, 105)  # 105 px wide: not a multiple of 4, so modcrop matters
    Image.fromarray(photo).save(tmp_path / "photo.png")
    monkeypatch.chdir(tmp_path)
    code = python_blocks()[index]
    names: dict = {"__name__": "__readme__"}
    exec(compile(code, f"README.md python block {index + 1}", "exec"), names)
    out = capsys.readouterr().out
    if "read_image(" in code:  # what the block's comment says read_image returns
        image = names["image"]
        assert isinstance(image, SrImage) and image.bit_depth == 8 and image.alpha is None
        assert image.data.dtype == np.float32 and image.data.shape == photo.shape
        assert 0 <= image.data.min() and image.data.max() <= 1
        np.testing.assert_allclose(image.data * 255, photo, atol=1e-3)
    if "photo_x4.png" in code:
        written = np.asarray(Image.open(tmp_path / "photo_x4.png"))
        assert written.shape == (photo.shape[0] * 4, photo.shape[1] * 4, 3) and written.dtype == np.uint8
    if "modcrop(" in code:
        assert names["hr"].shape[:2] == (photo.shape[0] // 4 * 4, photo.shape[1] // 4 * 4)
    if "metrics.score" in code:
        scores = eval(out.strip().splitlines()[-1])  # the printed dict
        assert set(scores) == {"psnr_y", "ssim_y"} and 20 < scores["psnr_y"] < 60


@pytest.mark.slow
@pytest.mark.parametrize("command", runnable(), ids=key)
def test_readme_command_runs(command: str, world: Path, tmp_path: Path) -> None:
    work = _copy(world, tmp_path)
    env = _env(tmp_path)
    for before in AFTER.get(key(command), []):
        (earlier,) = [c for c in bash_commands() if key(c) == before]
        proc = _bash(_as_run(earlier), work, env)
        assert proc.returncode == 0, f"{earlier}\n{proc.stderr[-3000:]}"
    proc = _bash(_as_run(command), work, env)
    code, message = REFUSED.get(key(command), (0, ""))
    assert proc.returncode == code, f"{_as_run(command)}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-4000:]}"
    assert "Traceback" not in proc.stderr and "Warning:" not in proc.stderr, proc.stderr[-4000:]
    assert message in proc.stderr
    for path in WRITES.get(key(command), []):
        assert (work / path).is_file(), f"{command}: {path} not written ({sorted(p.name for p in work.rglob('*'))})"


def _get_json(url: str, token: str | None = None) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)


def _start(command: str, port: int, work: Path, env: dict[str, str]) -> subprocess.Popen:
    """The README's ``superres serve ...`` on ``port`` (8000 may be taken on the test machine)."""
    code = command.split(" #")[0].rstrip()
    proc = subprocess.Popen(["bash", "-c", f"exec {code} --port {port}"], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    token = shlex.split(code)[shlex.split(code).index("--token") + 1] if "--token" in code else None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{code} exited {proc.returncode}: {proc.stdout.read()[-3000:]}")
        try:
            _get_json(f"http://127.0.0.1:{port}/healthz", token)
            return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"{code}: no answer on port {port} after 120 s")


@pytest.mark.slow
def test_readme_server_and_api(world: Path, tmp_path: Path) -> None:
    """``superres serve`` as the README starts it, then every ``curl`` call of the README against it:
    ``3f2c...`` and ``9a1b...`` stand for the ids of two jobs queued with the README's first call,
    and the calls with a bearer token go to the README's server with ``--token``. Each call runs
    with ``--fail``, so an HTTP error answer fails the test."""
    work = _copy(world, tmp_path)
    env = _env(tmp_path)
    servers = [c for c in bash_commands() if c.startswith("superres serve")]
    calls = [c for c in bash_commands() if c.startswith("curl ")]
    plain = [c for c in servers if "--token" not in c]
    with_token = [c for c in servers if "--token" in c]
    assert len(plain) == 1 and len(with_token) == 1 and calls
    ports = {False: _free_port(), True: _free_port()}
    procs = [_start(plain[0], ports[False], work, env), _start(with_token[0], ports[True], work, env)]
    try:
        def run(call: str, ids: dict[str, str]) -> subprocess.CompletedProcess:
            port = ports["Bearer" in call]
            for placeholder, value in ids.items():
                call = call.replace(placeholder, value)
            call = call.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
            assert call.startswith("curl ")
            # --fail: an HTTP error answer fails the call (curl -s alone exits 0 on a 404)
            proc = _bash("curl --fail " + call[len("curl "):], work, env, timeout=60)
            assert proc.returncode == 0, f"{call}\n{proc.stderr}"
            return proc

        queue = [c for c in calls if "/v1/upscale" in c]
        assert len(queue) == 1
        ids = {p: json.loads(run(queue[0], {}).stdout)["id"] for p in ("3f2c...", "9a1b...")}
        deadline = time.monotonic() + 120
        while {_get_json(f"http://127.0.0.1:{ports[False]}/v1/jobs/{i}")["state"] for i in ids.values()} != {"done"}:
            assert time.monotonic() < deadline, "the README's jobs did not finish in 120 s"
            time.sleep(0.3)
        for call in calls:
            if call is not queue[0]:
                out = run(call, ids).stdout
                if "Bearer" in call or call.split()[-1].endswith("/v1/models"):
                    assert json.loads(out)
        photo = Image.open(work / "photo.png")
        assert Image.open(work / "photo_x4.png").size == (photo.width * 4, photo.height * 4)
        with zipfile.ZipFile(work / "all.zip") as zf:
            assert len(zf.namelist()) == 2
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
