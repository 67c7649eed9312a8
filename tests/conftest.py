"""Shared fixtures. Tests that need the benchmark/training images read them from ../shared/data
(next to the repository) or from $SUPERRES_SHARED_DATA, and skip with a reason when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _shared_data() -> Path | None:
    candidates = [os.environ.get("SUPERRES_SHARED_DATA"), REPO.parent / "shared" / "data"]
    for c in candidates:
        if c and (Path(c) / "Set5" / "HR").is_dir():
            return Path(c)
    return None


SHARED_DATA = _shared_data()
SKIP_NO_SHARED = "../shared/data (Set5/Set14/train) is not present next to the repository"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if SHARED_DATA is None:
        pytest.skip(SKIP_NO_SHARED)
    return SHARED_DATA


@pytest.fixture
def one_thread():
    """One intra-op torch thread for tests that train: faster on a loaded 2-core machine (idle
    threads spin), and the same as the training subprocesses those tests start.
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
