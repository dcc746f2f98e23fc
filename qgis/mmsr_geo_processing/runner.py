"""Run mmsr-geo in a subprocess and turn its ``--progress json`` stream
(docs/progress-json.md) into Processing feedback; stop it when the user cancels.

- stdout and stderr are read by two threads into one queue, so that neither pipe can fill up
  and block the tool; the feedback is only touched from the algorithm's own thread.
- The tool runs in a session (process group) of its own, so that a stop reaches the worker
  processes it may have started. SIGINT comes first: mmsr-geo takes it as Ctrl-C, removes its
  temporary files, releases its lock and exits with 130. SIGTERM follows after 10 s (a process
  started in the background by some shells ignores SIGINT), SIGKILL after 5 more. Finished
  tiles are checkpointed atomically, so after any of the three a rerun with the same
  settings resumes from them.
- The one-line ``error`` event is the message of a failure; plain lines (a usage error, a
  crash before the JSON reporting starts) are shown as console output and the last ones are
  added to the message when there is no ``error`` event.

This module does not import QGIS: any object with the feedback methods used here will do.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from typing import IO, Any

STOP_SEQUENCE = (("SIGINT", 10.0), ("SIGTERM", 5.0), ("SIGKILL", 10.0))
"""(signal name, seconds to wait for the exit) in the order they are sent on cancel."""
POLL_SECONDS = 0.1
"""How often a cancel request is looked for while the tool is quiet."""
KEPT_LINES = 20
"""Plain (non-JSON) lines kept for the message of a failure."""


class Canceled(Exception):
    """The user canceled; ``tiles_done`` of ``tiles`` were finished (and checkpointed)."""

    def __init__(self, tiles_done: int, tiles: int) -> None:
        super().__init__(f"canceled with {tiles_done} of {tiles} tiles done")
        self.tiles_done = tiles_done
        self.tiles = tiles


class RunFailed(Exception):
    """mmsr-geo exited with a non-zero status; the message is its error."""


def run(argv: Sequence[str], feedback: Any, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run mmsr-geo (``argv`` includes ``--progress json``) until it exits; returns its
    ``done`` event (empty if it sent none). Raises :class:`Canceled` or :class:`RunFailed`.

    ``env`` defaults to :func:`tool_environment` of this process's environment.
    """
    with subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
        start_new_session=True,
        env=tool_environment(os.environ) if env is None else dict(env),
    ) as process:
        events = _follow(process, feedback)
    if process.returncode != 0:
        raise RunFailed(events.failure(process.returncode))
    return events.done


def tool_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """QGIS's environment without the variables that describe QGIS's own Python
    (``PYTHONHOME``, ``PYTHONPATH``: set by the QGIS bundles of some platforms), which
    would make the Python of mmsr-geo's installation load the wrong standard library or
    packages."""
    return {k: v for k, v in environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}


def _follow(process: subprocess.Popen, feedback: Any) -> _Events:
    """Feed the tool's lines to ``feedback`` until it exits; stop it on cancel."""
    lines: queue.Queue[str | None] = queue.Queue()
    readers = [
        threading.Thread(target=_pump, args=(pipe, lines), daemon=True)
        for pipe in (process.stdout, process.stderr)
    ]
    for reader in readers:
        reader.start()
    events = _Events(feedback)
    canceled = False
    try:
        open_pipes = len(readers)
        while open_pipes or process.poll() is None:
            if feedback.isCanceled() and process.poll() is None:
                stop(process)
                canceled = True
                break
            try:
                line = lines.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if line is None:
                open_pipes -= 1
            else:
                events.handle(line)
    finally:
        if process.poll() is None:  # an error in this thread: leave no tool behind
            stop(process)
        for reader in readers:
            reader.join(timeout=1.0)
    if canceled:
        # what the tool said while it stopped counts too: a tile may have finished meanwhile
        while not lines.empty():
            line = lines.get()
            if line is not None:
                events.handle(line)
        raise Canceled(events.tiles_done, events.tiles)
    return events


def stop(process: subprocess.Popen) -> None:
    """Stop the tool and its process group (module docstring); returns once it has exited,
    or after the last grace period."""
    if os.name != "posix":  # no process groups nor SIGINT for a child here (untested)
        process.kill()
        process.wait()
        return
    for name, grace in STOP_SEQUENCE:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, getattr(signal, name))
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _pump(pipe: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in pipe:
        lines.put(line)
    lines.put(None)


class _Events:
    """Turns the tool's lines into feedback and remembers what the end of a run needs."""

    def __init__(self, feedback: Any) -> None:
        self.feedback = feedback
        self.tiles_done = 0
        self.tiles = 0
        self.error: str | None = None
        self.done: dict[str, Any] = {}
        self.plain: collections.deque[str] = collections.deque(maxlen=KEPT_LINES)

    def handle(self, line: str) -> None:
        line = line.rstrip()
        if not line:
            return
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            self.plain.append(line)
            self.feedback.pushConsoleInfo(line)
            return
        kind = event.get("event")
        if kind == "progress":
            self._progress(event)
        elif kind == "start":
            self.tiles = int(event.get("tiles") or 0)
            self.tiles_done = int(event.get("resumed") or 0)
        elif kind == "log":
            self._log(event)
        elif kind == "done":
            self.done = event
            self.feedback.pushInfo(_summary(event))
        elif kind == "error":
            self.error = str(event.get("message") or "")
        # other events (batch pairs, future ones) are not for this algorithm: ignored

    def _progress(self, event: dict[str, Any]) -> None:
        fraction = event.get("fraction")
        if isinstance(fraction, (int, float)):
            self.feedback.setProgress(100.0 * min(max(fraction, 0.0), 1.0))
        if event.get("phase") == "fit" and isinstance(event.get("tile"), int):
            self.tiles_done = event["tile"]
            self.tiles = int(event.get("tiles") or self.tiles)

    def _log(self, event: dict[str, Any]) -> None:
        message = str(event.get("message", ""))
        level = event.get("level")
        if level in ("warning", "error", "critical"):
            self.feedback.pushWarning(message)
        elif level == "debug":
            self.feedback.pushDebugInfo(message)
        else:
            self.feedback.pushInfo(message)

    def failure(self, returncode: int) -> str:
        """The message of a failed run."""
        if self.error:
            return self.error
        if returncode < 0:
            what = f"mmsr-geo was killed by signal {-returncode}"
            if -returncode == getattr(signal, "SIGKILL", None):
                what += " (out of memory?)"
        else:
            what = f"mmsr-geo failed with exit status {returncode}"
        return "\n".join([what + (":" if self.plain else ""), *self.plain])


def _summary(done: dict[str, Any]) -> str:
    rmse = done.get("mean_cycle_rmse")
    seconds = done.get("seconds")
    return (
        f"Wrote {done.get('output')}. Tiles: {done.get('tiles_fitted')} fitted, "
        f"{done.get('tiles_resumed')} resumed from checkpoints, {done.get('tiles_skipped')} "
        "skipped (no data)"
        + (f" in {seconds:.1f} s" if isinstance(seconds, (int, float)) else "")
        + f" on {done.get('device')}"
        + (f"; mean cycle-consistency RMSE {rmse:.4g}" if isinstance(rmse, (int, float)) else "")
    )
