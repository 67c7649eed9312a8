"""Helpers shared by several test files (imported as ``from support import ...``; pytest puts
``tests/`` on ``sys.path``)."""

from __future__ import annotations

import textwrap

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
