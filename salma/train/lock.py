"""One training process per run folder: ``RunLock`` holds ``<run>/lock`` for as long as a run trains.

Two processes training one run would both train to the end, interleave the log and delete each other's
checkpoints. The lock is an ``flock`` on ``<run>/lock``, which records the holder's pid and host: the kernel
drops the lock when its holder dies (even by SIGKILL), so a lock file left by a dead process is simply taken
over, and a live holder is named in the error the second process gets.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path

LOCK_FILE = "lock"


class RunLocked(RuntimeError):
    """Another live process holds the run folder's lock."""


class RunLock:
    """``with RunLock(run_dir):`` the body runs with ``run_dir/lock`` held; raises ``RunLocked`` naming the
    holder's pid when another process holds it."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLocked(
                f"{self.path.parent} is being trained by another process ({holder}; lock file {self.path}): "
                "wait for it to finish, or stop it; its checkpoints are resumed by the next run"
            ) from None
        # the lock is ours: record who holds it (a dead holder's record, if any, is overwritten)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        # the record goes first: a reader then never sees a released lock naming a live-looking holder
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False


def _read_holder(fd: int) -> str:
    """'pid N on HOST' from a held lock file, or a plain phrase when the holder has not written it yet."""
    try:
        record = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {record['pid']} on {record['host']}"
    except (ValueError, KeyError, TypeError):
        return "a process that has just taken the lock"
