"""Progress of a run, reported three ways: terminal bars, plain lines for logs, JSON lines.

A run calls one :class:`Progress` object at fixed points (a run begins, an iteration of
the tile fitted in this process ends, a tile is finished, output blocks are written, the run
ends); what is shown is the reporter's business:

- :class:`BarProgress` draws tqdm bars when the stream is a terminal. Redirected to a file,
  bars would write a line fragment per iteration (~80 bytes each, megabytes per raster), so
  it then writes one plain line per finished tile instead.
- :class:`JsonProgress` writes one JSON object per line, for the QGIS algorithm and any
  program that drives mmsr-geo (``--progress json``, documented in docs/progress-json.md).
- :class:`Progress` itself reports nothing (``-q``).
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import IO, Any

from tqdm import tqdm

JSON_MIN_INTERVAL = 0.5
"""Seconds between two iteration events of :class:`JsonProgress` (tile events always go)."""


class Progress:
    """Receives the progress of a run and reports nothing; subclasses report."""

    def begin(
        self,
        *,
        name: str,
        tiles: int,
        resumed: int,
        iterations: int,
        device: str,
        unit: str = "tile",
    ) -> None:
        """A run starts: ``tiles`` in all, ``resumed`` of them from checkpoints (``unit``
        names what is counted: tiles of a raster, images of an evaluation)."""

    def iteration(self, step: int, total: int, loss: float) -> None:
        """An iteration of the tile being fitted in this process ended."""

    def tile_finished(self, seconds: float | None = None) -> None:
        """A tile was fitted (``seconds``) or found to need no fit (None: skipped)."""

    def blocks_written(self, done: int, total: int) -> None:
        """``done`` of the ``total`` output blocks are blended and written."""

    def end(self, summary: dict[str, Any]) -> None:
        """The run finished; ``summary`` is the report as plain data."""

    def event(self, kind: str, **fields: Any) -> None:
        """Anything else worth a line (a batch's pair finished, a tile batch split)."""

    def close(self) -> None:
        """Release terminals or files; called once, also after an error."""


class _Eta:
    """Fraction done and time left of one raster, from the tiles fitted by this run.

    Resumed and skipped tiles cost nothing, so the rate is measured on fitted tiles only.
    """

    def __init__(self) -> None:
        self.tiles = 0
        self.finished = 0
        self.to_fit = 0
        self.fitted = 0
        self.started = time.monotonic()
        self.partial = 0.0

    def begin(self, tiles: int, resumed: int) -> None:
        self.tiles, self.finished, self.to_fit = tiles, resumed, tiles - resumed
        self.fitted, self.partial, self.started = 0, 0.0, time.monotonic()

    def fraction(self) -> float:
        if self.tiles == 0:
            return 1.0
        return min(1.0, (self.finished + self.partial) / self.tiles)

    def seconds_left(self) -> float | None:
        work_done = self.fitted + self.partial
        if work_done <= 0:
            return None
        remaining = max(0.0, self.to_fit - work_done)
        return (time.monotonic() - self.started) / work_done * remaining


class BarProgress(Progress):
    """tqdm bars on a terminal; one line per finished tile when ``stream`` is not one."""

    def __init__(self, stream: IO[str] | None = None, interactive: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        if interactive is None:
            interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interactive = interactive
        self._tiles: tqdm | None = None
        self._iterations: tqdm | None = None
        self._eta = _Eta()
        self._name = ""
        self._unit = "tile"

    def begin(
        self,
        *,
        name: str,
        tiles: int,
        resumed: int,
        iterations: int,
        device: str,
        unit: str = "tile",
    ) -> None:
        self.close()
        self._eta.begin(tiles, resumed)
        self._name, self._unit = name, unit
        if not self.interactive:
            return
        self._tiles = tqdm(
            total=tiles,
            initial=resumed,
            desc=f"{name}: {unit}s",
            unit=unit,
            file=self.stream,
            position=0,
        )

    def iteration(self, step: int, total: int, loss: float) -> None:
        self._eta.partial = step / total
        if self._tiles is None:
            return
        if self._iterations is None:  # only runs that fit in this process show this bar
            self._iterations = tqdm(
                total=total, desc="iterations", unit="it", leave=False, file=self.stream,
                position=1,
            )
        if step == 1:
            self._iterations.reset(total)
        self._iterations.update(1)
        if step % 50 == 0 or step == total:
            self._iterations.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def tile_finished(self, seconds: float | None = None) -> None:
        eta = self._eta
        eta.finished += 1
        eta.partial = 0.0
        if seconds is not None:
            eta.fitted += 1
        if self._tiles is not None:
            self._tiles.update(1)
        elif seconds is not None:
            left = eta.seconds_left()
            tail = f", about {_duration(left)} left" if left is not None else ""
            self.stream.write(
                f"{self._name}: {eta.finished}/{count(eta.tiles, self._unit)} done "
                f"(last in {seconds:.1f} s){tail}\n"
            )
            self.stream.flush()

    def event(self, kind: str, **fields: Any) -> None:
        if self._tiles is None and "message" in fields:
            self.stream.write(f"{fields['message']}\n")
            self.stream.flush()

    def close(self) -> None:
        for bar in (self._iterations, self._tiles):
            if bar is not None:
                bar.close()
        self._iterations = self._tiles = None


class JsonProgress(Progress):
    """One JSON object per line (``event`` names its kind), flushed at once.

    Iteration events come at most every ``min_interval`` seconds; every other event always.
    Fields: ``fraction`` (0-1, of the current raster), ``eta_s`` (seconds left, null until
    the first tile has made progress), ``tile`` / ``tiles`` (finished / in all), ``iteration``
    / ``iterations`` and ``loss`` (the tile fitted in this process).
    """

    def __init__(self, stream: IO[str] | None = None, min_interval: float = JSON_MIN_INTERVAL):
        self.stream = stream or sys.stderr
        self.min_interval = min_interval
        self._eta = _Eta()
        self._last = -math.inf

    def _emit(self, event: str, **fields: Any) -> None:
        fields = {k: _plain(v) for k, v in fields.items()}
        self.stream.write(json.dumps({"event": event, **fields}, allow_nan=False) + "\n")
        self.stream.flush()

    def _position(self) -> dict[str, Any]:
        left = self._eta.seconds_left()
        return {
            "fraction": round(self._eta.fraction(), 4),
            "tile": self._eta.finished,
            "tiles": self._eta.tiles,
            "eta_s": None if left is None else round(left, 1),
        }

    def begin(
        self,
        *,
        name: str,
        tiles: int,
        resumed: int,
        iterations: int,
        device: str,
        unit: str = "tile",
    ) -> None:
        self._eta.begin(tiles, resumed)
        self._emit(
            "start",
            name=name,
            unit=unit,
            tiles=tiles,
            resumed=resumed,
            iterations=iterations,
            device=device,
        )

    def iteration(self, step: int, total: int, loss: float) -> None:
        self._eta.partial = step / total
        now = time.monotonic()
        if now - self._last < self.min_interval and step != total:
            return
        self._last = now
        self._emit(
            "progress",
            phase="fit",
            iteration=step,
            iterations=total,
            loss=round(loss, 6),
            **self._position(),
        )

    def tile_finished(self, seconds: float | None = None) -> None:
        self._eta.finished += 1
        self._eta.partial = 0.0
        if seconds is not None:
            self._eta.fitted += 1
        self._emit(
            "progress",
            phase="fit",
            tile_seconds=None if seconds is None else round(seconds, 3),
            **self._position(),
        )

    def blocks_written(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last < self.min_interval and done != total:
            return
        self._last = now
        self._emit("progress", phase="write", blocks=done, blocks_total=total, fraction=1.0)

    def end(self, summary: dict[str, Any]) -> None:
        self._emit("done", **summary)

    def event(self, kind: str, **fields: Any) -> None:
        self._emit(kind, **fields)


def _plain(value: Any) -> Any:
    """JSON-safe: NaN/inf as null, paths as text."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def count(n: int, word: str) -> str:
    """``"1 tile"``, ``"3 tiles"``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
