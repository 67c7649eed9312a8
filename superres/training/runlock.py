"""One writer per run folder: ``<run_dir>/.superres.lock``.

A training run holds an exclusive ``flock`` on the lock file for as long as it runs, and writes its
PID, host and start time into it. A second training into the same folder finds the lock held and
stops with a :class:`SuperresError` naming the holder, before it reads or writes anything else.

The kernel releases a ``flock`` when its process dies, however it dies (SIGKILL, power loss of a
local process, OOM killer), so a lock file left behind by a dead run is *stale* by construction: the
next run acquires it, says so in a note (with the dead run's PID), and takes it over. No PID
guessing is involved, so a recycled PID cannot keep a folder locked. The file is removed when the
run ends normally. (``flock`` is advisory and local: it does not protect a folder shared over NFS
between machines.)

The file is hidden (leading dot), so :func:`superres.io.list_images` and ``ls`` skip it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from superres.errors import SuperresError

LOCK_NAME = ".superres.lock"


class RunLock:
    """Context manager holding the run folder's lock; ``note`` says whether a stale lock was taken over.

    ``enabled=False`` (the non-main ranks of a distributed run) makes it a no-op.
    """

    def __init__(self, run_dir: str | os.PathLike[str], *, enabled: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.enabled = enabled
        self.note: str | None = None
        self._fd: int | None = None
        self._created = False

    def __enter__(self) -> "RunLock":
        if self.enabled:
            self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        import fcntl

        self._created = not self.run_dir.exists()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SuperresError(f"{self.run_dir}: cannot create the run folder ({exc.strerror or exc})") from None
        if not self.run_dir.is_dir():
            raise SuperresError(f"{self.run_dir}: the run folder path is not a folder")
        for _ in range(10):  # retried only if the file is replaced between open and flock (see below)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise SuperresError(f"{self.path}: cannot create the run lock ({exc.strerror or exc})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _describe(_read(fd))
                os.close(fd)
                raise SuperresError(
                    f"{self.run_dir}: another training ({holder}) is writing into this run folder; "
                    "wait for it to finish, or choose another folder with --out"
                ) from None
            # The holder may have removed the file (its run ended) after we opened it: then we hold a
            # lock on a deleted file, and must lock the new one instead.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            previous = _read(fd)
            if previous.get("pid") is not None:
                self.note = (
                    f"note: took over the stale lock {self.path} of a training that is no longer running "
                    f"({_describe(previous)})"
                )
            record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
            self._fd = fd
            return
        raise SuperresError(f"{self.path}: the run lock keeps changing; is another training starting in this folder?")

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # while still holding it, so no one locks the file we are removing
        except OSError:
            pass
        os.close(self._fd)  # releases the flock
        self._fd = None
        if self._created:  # a run that failed at start-up leaves no empty folder behind
            try:
                self.run_dir.rmdir()
            except OSError:
                pass


def _read(fd: int) -> dict[str, Any]:
    try:
        data = os.pread(fd, 4096, 0)
        record = json.loads(data.decode("utf-8")) if data.strip() else {}
    except (OSError, ValueError):
        return {"pid": "?"}
    return record if isinstance(record, dict) else {"pid": "?"}


def _describe(record: dict[str, Any]) -> str:
    if not record:
        return "process unknown"
    parts = [f"PID {record.get('pid', '?')}"]
    if record.get("host"):
        parts.append(f"on {record['host']}")
    if record.get("started"):
        parts.append(f"started {record['started']}")
    return " ".join(parts)
