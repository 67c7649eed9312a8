"""``--threads``: one count for torch and onnxruntime, no spinning onnxruntime workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import superres.threads
from superres.errors import SuperresError
from superres.threads import OtherLoad, apply_threads, physical_cores, session_options


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    saved = superres.threads._threads
    yield
    torch.set_num_threads(before)
    superres.threads._threads = saved


def test_physical_cores_counts_smt_siblings_once(monkeypatch) -> None:
    siblings = {0: "0,2", 1: "1,3", 2: "0,2", 3: "1,3"}
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    real_read = Path.read_text

    def read_text(self: Path, *a, **k) -> str:
        if self.name == "thread_siblings_list":
            return siblings[int(self.parent.parent.name[3:])] + "\n"
        return real_read(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", read_text)
    assert physical_cores() == 2
    assert 1 <= superres.threads.default_threads()


@pytest.mark.parametrize("idle, want", [(2.0, 2), (1.6, 2), (1.2, 1), (0.9, 1), (0.0, 1), (None, 2), (5.0, 2)])
def test_default_threads_leaves_out_busy_cores(monkeypatch, idle, want) -> None:
    monkeypatch.setattr(superres.threads, "physical_cores", lambda: 2)
    monkeypatch.setattr(superres.threads, "idle_cpus", lambda window=0.2: idle)
    assert superres.threads.default_threads() == want


def test_idle_cpus_reads_proc_stat() -> None:
    idle = superres.threads.idle_cpus(0.05)
    assert idle is None or 0.0 <= idle <= (os.cpu_count() or 1) + 1e-9


def test_apply_threads_sets_torch_and_onnxruntime_alike() -> None:
    ort = pytest.importorskip("onnxruntime")
    assert apply_threads(1) == 1
    assert torch.get_num_threads() == 1
    options = session_options(ort)
    assert options.intra_op_num_threads == 1
    assert options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    n = apply_threads(None)  # the default: idle physical cores
    assert 1 <= n <= physical_cores() and torch.get_num_threads() == n
    assert session_options(ort).intra_op_num_threads == n
    with pytest.raises(SuperresError, match="--threads 0"):
        apply_threads(0)


def test_onnx_sessions_of_the_backend_use_the_applied_count(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from superres.export import _session, _ort

    apply_threads(1)
    captured = {}
    ort = _ort()
    real = ort.InferenceSession

    class Spy:
        def __init__(self, path, sess_options=None, providers=None):
            captured["options"] = sess_options

    ort.InferenceSession = Spy
    try:
        _session(ort, tmp_path / "x.onnx", threads=None)
    finally:
        ort.InferenceSession = real
    assert captured["options"].intra_op_num_threads == 1
    assert captured["options"].get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_cli_upscale_applies_threads(tmp_path: Path, monkeypatch) -> None:
    import superres.inference
    from superres.cli import main

    seen = {}

    def fake_upscale_files(inputs, **kwargs):
        seen.update(kwargs)
        return []

    monkeypatch.setattr(superres.inference, "upscale_files", fake_upscale_files)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)  # restored after the test
    monkeypatch.setattr(superres.threads, "default_threads", lambda: 2)
    assert main(["upscale", str(tmp_path), "--threads", "1", "--quiet"]) == 0
    assert torch.get_num_threads() == 1 and superres.threads.current_threads() == 1
    assert seen["tile"] == "auto" and seen["precision"] == "auto"
    assert main(["upscale", str(tmp_path), "--tile", "128", "--precision", "fp32", "--quiet"]) == 0
    assert torch.get_num_threads() == 2 and seen["tile"] == 128 and seen["precision"] == "fp32"
    assert main(["eval", "--data", str(tmp_path / "none"), "--scale", "4", "--threads", "1"]) == 2  # applied, then the error
    assert torch.get_num_threads() == 1
    assert os.environ.get("OMP_WAIT_POLICY") == "PASSIVE"


def test_other_load_counts_the_machines_busy_time_less_this_processs_own(monkeypatch) -> None:
    state = {"wall": 0.0, "own": 0.0, "busy_ticks": 0}
    monkeypatch.setattr(superres.threads, "_cpu_ticks", lambda: (10_000 + state["busy_ticks"], 10_000))
    load = OtherLoad(0.1)
    load._clock, load._own, load._tick = (lambda: state["wall"]), (lambda: state["own"]), 100.0
    load._start = load._snapshot()
    state.update(wall=0.05, own=0.05, busy_ticks=5)
    assert load.poll() is None  # the window is shorter than 0.1 s
    state.update(wall=0.1, own=0.1, busy_ticks=10)  # exactly 0.1 s: one CPU busy, all of it ours
    assert load.poll() == pytest.approx(0.0)
    state.update(wall=0.3, own=0.3, busy_ticks=50)  # the next 0.2 s: we used 0.2 CPU-s of 0.4 busy
    assert load.poll() == pytest.approx(1.0)
    monkeypatch.setattr(superres.threads, "_cpu_ticks", lambda: None)
    state.update(wall=1.0)
    assert load.poll() is None  # /proc/stat unreadable


def test_other_load_sees_a_busy_process() -> None:
    load = OtherLoad(0.1)
    if load._start is None:
        pytest.skip("no /proc/stat on this system")
    busy = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 5\nwhile time.time() < end: pass"])
    try:
        time.sleep(0.5)
        load.poll()  # the window closes once the spinner runs
        time.sleep(0.4)
        others = load.poll()
    finally:
        busy.kill()
        busy.wait()
    assert others is not None and others >= 0.7, others


def test_writer_threads_leave_the_model_its_threads(monkeypatch):
    """The background writer's deflate threads: the usable CPUs less the model's threads, at least 1
    (exactly 1 when the model has every CPU, or more than there are)."""
    import superres.threads as threads

    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    for model, expected in ((1, 3), (3, 1), (4, 1), (6, 1)):
        monkeypatch.setattr(threads, "_threads", model)
        assert threads.writer_threads() == expected
