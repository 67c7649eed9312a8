"""One CPU thread pool for inference: ``--threads`` (default: the idle physical cores this process may use).

PyTorch (OpenMP) and onnxruntime each keep a pool of worker threads. Left alone, onnxruntime sizes
its pool to every core and its workers spin between parallel sections, and OpenMP's default wait
policy spins too; with both pools alive (an on-the-fly ONNX export runs PyTorch before onnxruntime)
or another process on the machine, spinning workers take the cores the computing ones need. So:

* :func:`default_threads` counts the physical cores (SMT siblings once) that are idle at the start;
* :func:`apply_threads` sets torch's intra-op threads and remembers the count for onnxruntime
  sessions made afterwards (:func:`session_options`), so both use the same number;
* :func:`session_options` turns onnxruntime's spinning off (``session.intra_op.allow_spinning = 0``,
  also for inter-op) and runs one inter-op thread;
* :func:`prefer_passive_waits` sets ``OMP_WAIT_POLICY=PASSIVE`` when the user has not chosen a policy;
  it only takes effect before torch is first imported (the CLI calls it before any handler runs).

``benchmarks/threads_speed.py`` measures 1 against 2 threads, idle and beside a busy process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from superres.errors import SuperresError
from superres.pngenc import usable_cpus

__all__ = [
    "physical_cores", "idle_cpus", "OtherLoad", "default_threads", "apply_threads", "current_threads", "session_options",
    "prefer_passive_waits",
]

_threads: int | None = None  # the count set by apply_threads; None: follow torch


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (SMT siblings counted once).

    Reads the CPU affinity and ``/sys/devices/system/cpu/cpuN/topology/thread_siblings_list``;
    falls back to the number of usable logical CPUs where the topology is not readable.
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
    cores: set[str] = set()
    for cpu in cpus:
        path = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            cores.add(path.read_text().strip())
        except OSError:
            return max(1, len(cpus))
    return max(1, len(cores))


def _cpu_ticks() -> tuple[int, int] | None:
    """(total, idle + iowait) clock ticks of the whole machine from ``/proc/stat``, or None."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return None
    return sum(values), values[3] + values[4]


def idle_cpus(window: float = 0.2) -> float | None:
    """How many CPUs were idle over the next ``window`` seconds (``/proc/stat``), or None where not readable.

    Counts the whole machine, so a process confined to fewer CPUs sees an upper bound.
    """
    import time

    before = _cpu_ticks()
    time.sleep(window)
    after = _cpu_ticks()
    if before is None or after is None or after[0] <= before[0]:
        return None
    return (os.cpu_count() or 1) * (after[1] - before[1]) / (after[0] - before[0])


class OtherLoad:
    """How many CPUs other processes keep busy, measured while this process works.

    :meth:`poll` compares the machine's busy CPU time (``/proc/stat``) with this process's own CPU
    time (``time.process_time``, all its threads) over the wall time since the last window closed, and
    returns the difference in CPUs once the window is at least ``min_window`` seconds long (``/proc/stat``
    counts in clock ticks, 10 ms, so shorter windows are mostly noise); until then, and where
    ``/proc/stat`` is not readable, it returns None. Unlike :func:`idle_cpus` it needs no pause: the
    window is the time the caller spent working anyway.
    """

    def __init__(self, min_window: float = 0.1) -> None:
        import time

        self.min_window = float(min_window)
        self._clock = time.perf_counter
        self._own = time.process_time
        self._tick = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
        self._start = self._snapshot()

    def _snapshot(self) -> tuple[float, float, float] | None:
        ticks = _cpu_ticks()
        if ticks is None:
            return None
        return self._clock(), (ticks[0] - ticks[1]) / self._tick, self._own()

    def poll(self) -> float | None:
        """CPUs kept busy by other processes since the last window closed, or None (window too short)."""
        now = self._snapshot()
        if now is None or self._start is None:
            self._start = now
            return None
        wall = now[0] - self._start[0]
        if wall < self.min_window:
            return None
        busy, own = now[1] - self._start[1], now[2] - self._start[2]
        self._start = now
        return max(0.0, (busy - own) / wall)


def default_threads() -> int:
    """The default ``--threads``: the physical cores, less the cores other processes keep busy now.

    OpenMP splits each convolution evenly over its threads, so a thread that shares its core with a
    busy process holds back all the others: two threads on two cores, one of them busy, ran slower
    than one thread (docs/BENCHMARKS.md, "Threads"). Taking only the idle cores keeps more cores
    from ever making a run slower. The count is fixed for the run.
    """
    cores = physical_cores()
    if cores == 1:
        return 1
    idle = idle_cpus()
    if idle is None:
        return cores
    return max(1, min(cores, int(idle + 0.5)))


def apply_threads(threads: int | None = None) -> int:
    """Use ``threads`` intra-op threads (None: :func:`default_threads`) in torch and in every
    onnxruntime session made afterwards; returns the count."""
    import torch

    global _threads
    n = default_threads() if threads is None else int(threads)
    if n < 1:
        raise SuperresError(f"--threads {threads}: must be >= 1")
    torch.set_num_threads(n)
    _threads = n
    return n


def current_threads() -> int:
    """The count set by :func:`apply_threads`, else torch's current intra-op thread count."""
    if _threads is not None:
        return _threads
    import torch

    return torch.get_num_threads()


def writer_threads() -> int:
    """Threads for the work done beside a running model, such as deflating the previous result's PNG
    in ``superres upscale``'s background writer: the usable CPUs (affinity) less the model's
    threads (:func:`current_threads`), at least 1. Deflating on every CPU there took time from the
    model's own threads: with one deflate thread beside a one-thread model on two CPUs the photo
    job's median ratio to the naive loop rose from 1.18x to 1.29x (docs/BENCHMARKS.md, "upscale
    throughput")."""
    return max(1, usable_cpus() - current_threads())


def session_options(ort: Any, threads: int | None = None) -> Any:
    """onnxruntime ``SessionOptions``: ``threads`` intra-op threads (None: :func:`current_threads`),
    one inter-op thread, no spinning workers, errors-only logging."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads if threads is not None else current_threads())
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def prefer_passive_waits() -> None:
    """``OMP_WAIT_POLICY=PASSIVE`` unless the user set a policy (effective before torch is imported)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
