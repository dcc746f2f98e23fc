"""Per-tile checkpoints in a work folder beside the output, for crash-safe resume.

Each finished tile is one ``tile_<index>.npz`` (prediction, cycle RMSE, seconds, device,
precision, iterations),
written to a temporary name and renamed, so a kill at any moment leaves either a complete
checkpoint or none. ``manifest.json`` holds the run's result key
(:meth:`mmsr_geo.settings.RunSettings.result_key`): checkpoints made with other settings are
discarded rather than blended into a different result. The folder also holds the run's lock
(:mod:`mmsr_geo.locks`), which outlives the discarding.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_file
from .jobs import TileResult
from .locks import LOCK_NAME

_TILE_NAME = re.compile(r"tile_(\d+)\.npz")


def work_dir_for(output: Path) -> Path:
    """The work folder of an output: ``<output>.mmsr-work`` beside it."""
    return output.with_name(output.name + ".mmsr-work")


def checkpointed_tiles(directory: Path) -> set[int]:
    """Indices of the tiles checkpointed in a work folder (none if it does not exist), for
    whoever reports on a run without being that run (a benchmark, a progress report)."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return set()
    return {
        int(match.group(1))
        for match in (_TILE_NAME.fullmatch(entry.name) for entry in entries)
        if match
    }


class TileCheckpoints:
    """The checkpointed tiles of one run (one result key)."""

    def __init__(self, directory: Path, key: str, settings: Mapping[str, Any]) -> None:
        self.directory = Path(directory)
        self.key = key
        self._settings = dict(settings)

    @property
    def manifest(self) -> Path:
        return self.directory / "manifest.json"

    def open(self) -> set[int]:
        """Create or reuse the folder; returns the indices of tiles already done.

        A manifest with another key (or none, or unreadable) means the tiles belong to a
        different run: they are removed (the lock stays).
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            manifest = json.loads(self.manifest.read_text(encoding="utf-8"))
            same = manifest.get("key") == self.key
        except (OSError, ValueError, AttributeError):
            same = False
        if same:
            return self.done()
        for entry in os.scandir(self.directory):
            if entry.name == LOCK_NAME:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        with atomic_file(self.manifest) as tmp:
            tmp.write_text(
                json.dumps({"key": self.key, "settings": self._settings}, indent=1, default=str),
                encoding="utf-8",
            )
        return set()

    def done(self) -> set[int]:
        return checkpointed_tiles(self.directory)

    def path(self, index: int) -> Path:
        return self.directory / f"tile_{index}.npz"

    def save(self, result: TileResult) -> None:
        """Write one tile's checkpoint atomically."""
        with atomic_file(self.path(result.index)) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh,
                prediction=result.prediction,
                cycle_rmse=np.float64(result.cycle_rmse),
                seconds=np.float64(result.seconds),
                device=np.str_(result.device),
                precision=np.str_(result.precision),
                iterations=np.int64(result.iterations),
            )

    def load(self, index: int) -> tuple[np.ndarray, TileFacts]:
        """(prediction, facts) of a checkpointed tile."""
        with np.load(self.path(index)) as data:
            facts = TileFacts(
                cycle_rmse=float(data["cycle_rmse"]),
                seconds=float(data["seconds"]),
                device=str(data["device"]),
                precision=str(data["precision"]),
                iterations=int(data["iterations"]),
            )
            return data["prediction"], facts

    def remove(self) -> None:
        """Remove the folder (after the output is in place); the lock goes with it."""
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.directory)


@dataclass(frozen=True)
class TileFacts:
    """What a checkpoint records besides the prediction."""

    cycle_rmse: float
    seconds: float
    device: str
    precision: str
    iterations: int
