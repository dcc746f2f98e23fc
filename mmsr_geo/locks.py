"""One output, one run: a lock file in the output's work folder.

Two runs making the same output used to both fit every tile, then the second died on the
first's cleanup with a raw ``[Errno 2]``. The lock is an ``flock`` on ``<work>/lock``: the
kernel releases it when its holder dies, even by ``kill -9``, so a lock left by a killed run
never blocks the next one (and the file's PID and host are only there for the message). Where
the file system refuses ``flock``, the recorded PID is checked instead (same host only).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from .errors import OutputLockedError

log = logging.getLogger(__name__)

LOCK_NAME = "lock"


def _holder(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class OutputLock:
    """Held while a run works on an output; use as a context manager around the run."""

    def __init__(self, work_dir: Path, output: Path) -> None:
        self.path = Path(work_dir) / LOCK_NAME
        self.output = output
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`OutputLockedError` naming the live holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._locked(_holder(self.path)) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                os.close(fd)
                raise
            self._check_recorded_holder()
        previous = _holder(self.path)
        if previous.get("pid") and previous.get("pid") != os.getpid():
            log.info(
                "taking over the work folder of PID %s on %s, which is no longer running",
                previous.get("pid"),
                previous.get("host"),
            )
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode("utf-8"), 0)
        self._fd = fd

    def _check_recorded_holder(self) -> None:
        """Without flock: a recorded holder on this host that is still alive keeps the lock."""
        holder = _holder(self.path)
        pid = holder.get("pid")
        if (
            isinstance(pid, int)
            and pid != os.getpid()
            and holder.get("host") == socket.gethostname()
            and _alive(pid)
        ):
            raise self._locked(holder)

    def _locked(self, holder: dict[str, Any]) -> OutputLockedError:
        since = holder.get("started")
        when = (
            f" since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}"
            if isinstance(since, (int, float))
            else ""
        )
        return OutputLockedError(
            f"{self.output} is being made by PID {holder.get('pid', '?')} on "
            f"{holder.get('host', 'an unknown host')}{when}: wait for it to finish (it resumes "
            f"from the same checkpoints), or stop it first"
        )

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
