"""The settings of a run, built once and used everywhere a run is identified.

One frozen :class:`RunSettings` decides three things that must agree: whether tile
checkpoints left by an interrupted run can be reused (:meth:`RunSettings.result_key`), whether
an existing output is a finished result of the same request so a batch may skip it
(:meth:`RunSettings.output_key`), and what the output's provenance tags say. Before it existed
the pipeline and the batch each built their own copy and the copies disagreed (the requested
device "auto" against the resolved one), so finished outputs were never skipped.

Inputs are identified by file name and a hash of their content, never by directory, size or
modification time: tags do not leak where a user keeps data, and copying inputs and outputs
to another machine keeps finished results finished. The device is not part of a run's identity
(a result made on a GPU is a finished result on a CPU-only login node); it is recorded in the
tags as a fact of the run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._version import __version__
from .fit_config import FitConfig

_CHUNK = 4 << 20


@dataclass(frozen=True)
class InputFile:
    """An input as recorded: its name, a content fingerprint and, only on request, its path."""

    name: str
    fingerprint: str
    path: str | None = None

    def as_dict(self) -> dict[str, str]:
        record = {"name": self.name, "fingerprint": self.fingerprint}
        if self.path is not None:
            record["path"] = self.path
        return record


_FINGERPRINTS: dict[tuple[str, int, int], str] = {}


def content_fingerprint(path: str | os.PathLike[str]) -> str:
    """BLAKE2b of the file's bytes (128 bits, hex), memoised per (path, size, mtime) in this
    process: about 1 s per GB, paid once per input and run."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FINGERPRINTS:
        digest = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
        _FINGERPRINTS[key] = digest.hexdigest()
    return _FINGERPRINTS[key]


def input_file(path: str | os.PathLike[str], record_path: bool = False) -> InputFile:
    """How an input file is recorded in a run's settings."""
    path = Path(path)
    return InputFile(
        name=path.name,
        fingerprint=content_fingerprint(path),
        path=str(path.resolve()) if record_path else None,
    )


@dataclass(frozen=True)
class RunSettings:
    """Everything that decides an output, resolved (no "auto" and no defaults left open)."""

    source: InputFile
    band: int
    guide: InputFile
    guide_bands: tuple[int, ...]
    scale: int
    tile_size: int
    """Source pixels per tile edge."""
    overlap: int
    """Source pixels shared by neighbouring tiles."""
    aoi: str | None
    """WKT as given, or the AOI file's name and content fingerprint."""
    dtype: str
    nodata: float
    fit: FitConfig
    """The fit's settings; its ``device`` is not part of the run's identity. With schedule
    ``auto`` its iteration and schedule fields are replaced by the chosen strategy's."""
    schedule: str = "custom"
    """``custom`` (``fit`` exactly), a strategy name, or ``auto`` (chosen from the data)."""
    budget: int | None = None
    """Iterations asked for ``auto``'s strategy (None: the strategy's own); recorded as the
    ``iterations`` setting."""
    creation_options: tuple[tuple[str, str], ...] = ()
    cog: bool = False
    version: str = __version__
    fit_mode: str = "tile"
    """How tiles are fitted as asked (``tile``, ``raster``, ``hybrid``, ``auto``)."""
    register: str = "off"
    """Guide registration as asked (``auto`` or ``off``)."""
    consistency: str = "off"
    """The output's projection onto the source (``exact`` or ``off``): decided after the
    tiles, so it is part of the output's identity, not of the tiles' checkpoints."""
    confidence: bool = False
    """Whether the uncertainty band is written beside the output (part of the output's
    identity, like ``consistency``)."""
    raster_fit: tuple[tuple[str, float | None], ...] = ()
    """The raster-level training's settings as asked (crop size, crops per step, fine-tune
    iterations, local-level sigma; None: the default)."""

    def result_fields(self) -> dict[str, Any]:
        """The fields that decide the output's pixel values (plain data)."""
        fit = dataclasses.asdict(self.fit)
        del fit["device"]
        if self.schedule == "auto":  # the chosen strategy sizes the rest; what was asked counts
            fit["iterations"] = self.budget
        return {
            "version": self.version,
            "source": self.source.name,
            "source_fingerprint": self.source.fingerprint,
            "band": self.band,
            "guide": self.guide.name,
            "guide_fingerprint": self.guide.fingerprint,
            "guide_bands": list(self.guide_bands),
            "scale": self.scale,
            "tile_size": self.tile_size,
            "overlap": self.overlap,
            "aoi": self.aoi,
            "dtype": self.dtype,
            "nodata": self.nodata,
            **fit,
            "schedule": self.schedule,
            # a per-tile fit records what it recorded before raster-level fits existed, so
            # its outputs and checkpoints keep their keys
            **(
                {"fit_mode": self.fit_mode, **dict(self.raster_fit)}
                if self.fit_mode != "tile"
                else {}
            ),
            **({"register": self.register} if self.register != "off" else {}),
        }

    def output_fields(self) -> dict[str, Any]:
        """The result fields plus the file format (creation options, COG)."""
        return {
            **self.result_fields(),
            "creation_options": dict(self.creation_options),
            "cog": self.cog,
            **({"consistency": self.consistency} if self.consistency != "off" else {}),
            **({"confidence": True} if self.confidence else {}),
        }

    def result_key(self) -> str:
        """Hash of :meth:`result_fields`: tile checkpoints are reusable under the same key."""
        return _hash(self.result_fields())

    def output_key(self) -> str:
        """Hash of :meth:`output_fields`: an output with this key is this request, done."""
        return _hash(self.output_fields())

    def record(self) -> dict[str, Any]:
        """What the output's ``MMSR_SETTINGS`` tag holds: the output fields, both keys and the
        input paths when they were asked for."""
        record = {
            **self.output_fields(),
            "result_key": self.result_key(),
            "output_key": self.output_key(),
        }
        for role, item in (("source_path", self.source), ("guide_path", self.guide)):
            if item.path is not None:
                record[role] = item.path
        return record


def _hash(fields: Mapping[str, Any]) -> str:
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def describe_changes(recorded: Mapping[str, Any], wanted: Mapping[str, Any]) -> str:
    """``"iterations 1000 -> 300, scale 2 -> 4"``: how a recorded run differs from a request
    (keys of ``wanted`` only; fingerprints are summarised as "content changed")."""
    changes = []
    for key, value in wanted.items():
        old = recorded.get(key)
        if old == value or (isinstance(value, tuple) and old == list(value)):
            continue
        if key.endswith("_fingerprint"):
            changes.append(f"{key.removesuffix('_fingerprint')} file content changed")
        else:
            changes.append(f"{key} {_short(old)} -> {_short(value)}")
    return ", ".join(changes) if changes else "no difference in the recorded settings"


def _short(value: Any) -> str:
    text = "not recorded" if value is None else json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."
