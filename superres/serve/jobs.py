"""Jobs: a bounded queue, a fixed number of worker threads, results kept for a while then removed.

Framework-free (the HTTP layer in :mod:`superres.serve.app` only calls :class:`JobQueue`), so the
queue's rules are testable without a server:

* at most ``workers`` jobs run at once; at most ``queue_depth`` wait. :meth:`JobQueue.submit`
  raises :class:`QueueFull` (the API answers 429 with ``Retry-After``) past that;
* every job has its own folder under the queue's temporary folder; the uploaded file is deleted as
  soon as it is decoded, a failed or cancelled job's folder at once, a finished job's folder
  ``result_ttl`` seconds after it finished; :meth:`JobQueue.close` removes the whole folder;
* a job is cancelled (at its next tile) when it runs longer than ``job_timeout`` seconds, when
  nobody has asked about it for ``abandon_after`` seconds (a client that went away), or on
  :meth:`JobQueue.cancel` (``DELETE /v1/jobs/ID``).
"""

from __future__ import annotations

import atexit
import collections
import logging
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = ["Cancelled", "Job", "JobError", "JobQueue", "QueueFull"]

_log = logging.getLogger("superres.serve")

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"


class QueueFull(Exception):
    """The queue holds ``queue_depth`` waiting jobs; ``retry_after`` is a suggested wait in seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


class Cancelled(Exception):
    """Raised inside a running job (between tiles) once it is cancelled."""


class JobError(Exception):
    """A job failed for a reason the client can act on: ``code`` and a one-line ``message``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Job:
    """One upscaling job. ``folder`` and the file paths are server-side and never sent to clients."""

    id: str
    folder: Path
    options: dict[str, Any]
    input_name: str
    created: float = field(default_factory=time.time)
    state: str = QUEUED
    started: float | None = None
    finished: float | None = None
    tiles_done: int = 0
    tiles_total: int = 0
    result_path: Path | None = None
    result_name: str | None = None
    metadata: dict[str, Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    error: dict[str, str] | None = None
    cancel_reason: str | None = None
    last_seen: float = field(default_factory=time.monotonic)
    started_mono: float | None = None
    finished_mono: float | None = None

    def check_cancelled(self) -> None:
        if self.cancel_reason is not None:
            raise Cancelled(self.cancel_reason)

    def public(self) -> dict[str, Any]:
        """The job as the API shows it."""
        if self.state == DONE:
            progress = 1.0
        elif self.tiles_total:
            progress = round(min(self.tiles_done / self.tiles_total, 0.99), 4)
        else:
            progress = 0.0
        out: dict[str, Any] = {
            "id": self.id,
            "state": self.state,
            "progress": progress,
            "tiles_done": self.tiles_done,
            "tiles_total": self.tiles_total,
            "options": dict(self.options),
            "input_name": self.input_name,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
        }
        out.update(self.info)
        if self.state == DONE:
            out["result_name"] = self.result_name
        if self.error is not None:
            out["error"] = dict(self.error)
        return out


class JobQueue:
    """Bounded queue + ``workers`` threads running ``runner(job)``; see the module docstring."""

    def __init__(
        self,
        runner: Callable[[Job], None],
        *,
        workers: int = 1,
        queue_depth: int = 8,
        result_ttl: float = 600.0,
        job_timeout: float = 600.0,
        abandon_after: float = 300.0,
        janitor_interval: float = 1.0,
    ) -> None:
        if workers < 1 or queue_depth < 0:
            raise ValueError("workers must be >= 1 and queue_depth >= 0")
        self.runner = runner
        self.workers = workers
        self.queue_depth = queue_depth
        self.result_ttl = result_ttl
        self.job_timeout = job_timeout
        self.abandon_after = abandon_after
        self.janitor_interval = janitor_interval
        self.root = Path(tempfile.mkdtemp(prefix="superres-serve-"))
        atexit.register(shutil.rmtree, self.root, ignore_errors=True)  # also when the server stops without a clean shutdown
        self._jobs: dict[str, Job] = {}
        self._waiting: collections.deque[Job] = collections.deque()
        self._running = 0
        self._lock = threading.Condition()
        self._closed = False
        self._durations: collections.deque[float] = collections.deque(maxlen=20)
        self._threads = [threading.Thread(target=self._work, name=f"superres-job-{i}", daemon=True) for i in range(workers)]
        self._threads.append(threading.Thread(target=self._janitor, name="superres-janitor", daemon=True))
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------ client side
    def new_job(self, options: dict[str, Any], input_name: str) -> Job:
        """A job with its own (empty) folder, not yet queued: the caller puts the upload in it, then
        :meth:`submit` or :meth:`discard`."""
        job_id = secrets.token_hex(16)
        folder = self.root / job_id
        folder.mkdir()
        return Job(id=job_id, folder=folder, options=options, input_name=input_name)

    def discard(self, job: Job) -> None:
        shutil.rmtree(job.folder, ignore_errors=True)

    def reserve(self) -> None:
        """Raise :class:`QueueFull` when a job submitted now would not fit (checked before an upload
        is copied, and again by :meth:`submit`)."""
        with self._lock:
            self._check_room()

    def _check_room(self) -> None:
        if self._closed:
            raise QueueFull(5)
        # Free workers take waiting jobs at once, so the room is the depth plus the idle workers.
        if len(self._waiting) >= self.queue_depth + max(0, self.workers - self._running):
            raise QueueFull(self._retry_after())

    def _retry_after(self) -> int:
        typical = sorted(self._durations)[len(self._durations) // 2] if self._durations else 2.0
        ahead = len(self._waiting) + self._running
        return max(1, min(600, round(typical * ahead / self.workers)))

    def submit(self, job: Job) -> None:
        with self._lock:
            try:
                self._check_room()
            except QueueFull:
                self.discard(job)
                raise
            self._jobs[job.id] = job
            self._waiting.append(job)
            self._lock.notify_all()  # the janitor waits on the same condition: wake a worker for sure

    def get(self, job_id: str) -> Job | None:
        """The job (``None`` when unknown or expired); counts as the client still being there."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                job.last_seen = time.monotonic()
            return job

    def cancel(self, job_id: str, reason: str = "cancelled by the client") -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            self._cancel_locked(job, reason)
            return job

    def _cancel_locked(self, job: Job, reason: str) -> None:
        if job.state == QUEUED:
            self._waiting.remove(job)
            self._finish_locked(job, CANCELLED, {"code": "cancelled", "message": reason})
        elif job.state == RUNNING and job.cancel_reason is None:
            job.cancel_reason = reason  # the worker stops at the next tile

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "workers": self.workers,
                "running": self._running,
                "waiting": len(self._waiting),
                "queue_depth": self.queue_depth,
                "jobs": len(self._jobs),
            }

    def close(self) -> None:
        """Cancel everything, stop the threads and remove the temporary folder."""
        with self._lock:
            self._closed = True
            for job in list(self._jobs.values()):
                self._cancel_locked(job, "the server is shutting down")
            self._lock.notify_all()
        for t in self._threads:
            t.join(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ worker side
    def _finish_locked(self, job: Job, state: str, error: dict[str, str] | None = None) -> None:
        # The folder goes first and the state last: a reader that sees a failed or cancelled state
        # (even one that looks without the lock) never finds the folder still there.
        if state != DONE:
            shutil.rmtree(job.folder, ignore_errors=True)
            job.result_path = None
        job.error = error
        job.finished = time.time()
        job.finished_mono = time.monotonic()
        job.state = state

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                job = self._waiting.popleft()
                job.state = RUNNING
                job.started = time.time()
                job.started_mono = time.monotonic()
                self._running += 1
            state, error = DONE, None
            try:
                self.runner(job)
            except Cancelled as exc:
                state, error = CANCELLED, {"code": "cancelled", "message": str(exc)}
            except JobError as exc:
                state, error = FAILED, {"code": exc.code, "message": exc.message}
            except MemoryError:
                state, error = FAILED, {"code": "out_of_memory", "message": "the server ran out of memory for this image; try a smaller one"}
            except Exception as exc:  # noqa: BLE001 - never a traceback to the client; the server's log has it
                _log.exception("job %s failed", job.id)
                state, error = FAILED, {"code": "internal_error", "message": f"the job failed ({type(exc).__name__})"}
            with self._lock:
                self._running -= 1
                if job.started_mono is not None and state == DONE:
                    self._durations.append(time.monotonic() - job.started_mono)
                self._finish_locked(job, state, error)

    def _janitor(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                now = time.monotonic()
                for job in list(self._jobs.values()):
                    if job.state == RUNNING and job.started_mono is not None and now - job.started_mono > self.job_timeout:
                        self._cancel_locked(job, f"the job ran longer than this server's limit of {self.job_timeout:g} s")
                    elif job.state in (QUEUED, RUNNING) and now - job.last_seen > self.abandon_after:
                        self._cancel_locked(job, f"nobody asked about the job for {self.abandon_after:g} s")
                    elif job.finished_mono is not None and now - job.finished_mono > self.result_ttl:
                        del self._jobs[job.id]
                        shutil.rmtree(job.folder, ignore_errors=True)
                self._lock.wait(self.janitor_interval)
