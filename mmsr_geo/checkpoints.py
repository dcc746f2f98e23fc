"""Per-tile checkpoints in a work directory beside the output, for crash-safe resume.

Each finished tile is one ``tile_<index>.npz`` (prediction and cycle RMSE), written to a
temporary name and renamed, so a kill at any moment leaves either a complete checkpoint or
none. ``manifest.json`` holds the run's settings hash: checkpoints made with other settings
are discarded rather than blended into a different run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .jobs import TileResult

_TILE_NAME = re.compile(r"tile_(\d+)\.npz")


def settings_hash(settings: Mapping[str, Any]) -> str:
    """Stable hash of JSON-serialisable settings (key order does not matter)."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def work_dir_for(output: Path) -> Path:
    """The work directory of an output: ``<output>.mmsr-work`` beside it."""
    return output.with_name(output.name + ".mmsr-work")


class TileCheckpoints:
    """The checkpointed tiles of one run (one settings hash)."""

    def __init__(self, directory: Path, settings: Mapping[str, Any]) -> None:
        self.directory = Path(directory)
        self.hash = settings_hash(settings)
        self._settings = dict(settings)

    @property
    def manifest(self) -> Path:
        return self.directory / "manifest.json"

    def open(self) -> set[int]:
        """Create or reuse the directory; returns the indices of tiles already done.

        A manifest with another hash (or none, or unreadable) means the directory belongs to
        a different run: it is emptied.
        """
        if self.directory.exists():
            try:
                manifest = json.loads(self.manifest.read_text(encoding="utf-8"))
                same = manifest.get("hash") == self.hash
            except (OSError, ValueError):
                same = False
            if same:
                return self.done()
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True)
        self._atomic_write(
            self.manifest,
            json.dumps({"hash": self.hash, "settings": self._settings}, indent=1, default=str),
        )
        return set()

    def done(self) -> set[int]:
        indices = set()
        for entry in os.scandir(self.directory):
            match = _TILE_NAME.fullmatch(entry.name)
            if match:
                indices.add(int(match.group(1)))
        return indices

    def path(self, index: int) -> Path:
        return self.directory / f"tile_{index}.npz"

    def save(self, result: TileResult) -> None:
        """Write one tile's checkpoint atomically."""
        final = self.path(result.index)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    prediction=result.prediction,
                    cycle_rmse=np.float64(result.cycle_rmse),
                    seconds=np.float64(result.seconds),
                )
            os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def load(self, index: int) -> tuple[np.ndarray, float]:
        """(prediction, cycle RMSE) of a checkpointed tile."""
        with np.load(self.path(index)) as data:
            return data["prediction"], float(data["cycle_rmse"])

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    @staticmethod
    def _atomic_write(path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
