"""Helpers shared by several test files (imported as ``from support import ...``; pytest puts
``tests/`` on ``sys.path``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

#: A training process that kills itself with SIGKILL right after iteration ``argv[3]``: run as
#: ``python kill.py CONFIG RUN_DIR K``. Resume tests compare what a resumed run ends with against an
#: uninterrupted run; SIGKILL (no clean-up, no atexit) is the harshest interruption there is.
KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    torch.set_num_threads(1)
    from superres.config import load_config
    from superres.training import train

    kill_at = int(sys.argv[3])

    def hook(iteration, model):
        if iteration == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    train(load_config(sys.argv[1]), run_dir=sys.argv[2], callback=hook)
    """
)


def train_until_killed(config_file: Path, run_dir: Path, kill_at: int, tmp_path: Path) -> None:
    """Run ``config_file`` into ``run_dir`` in a child process (one thread) that SIGKILLs itself right
    after iteration ``kill_at``; asserts that it died that way."""
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(config_file), str(run_dir), str(kill_at)],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


def run_two_ranks(script_text: str, config_file: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node 2 script.py CONFIG RUN_DIR OUT``
    with one thread per rank (``RUN_DIR`` = ``tmp_path/run``, ``OUT`` = ``tmp_path``); asserts success."""
    script = tmp_path / "script.py"
    script.write_text(script_text)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(config_file), str(tmp_path / "run"), str(tmp_path)]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def l1_fit(model, lr, hr, steps: int, learning_rate: float) -> list[float]:
    """``steps`` Adam steps of ``model`` on the L1 loss of one ``(lr, hr)`` batch; the losses, in order."""
    import torch
    import torch.nn.functional as F

    opt = torch.optim.Adam(model.parameters(), lr=learning_rate)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = F.l1_loss(model(lr), hr)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def model_weights(path) -> dict:
    """The tensors of a model file (safetensors), by name."""
    from safetensors.torch import load_file

    return load_file(str(path))


def assert_same_weights(a: dict, b: dict) -> None:
    """Bit-for-bit equality of two state dicts (same names, ``torch.equal`` tensors)."""
    import torch

    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
