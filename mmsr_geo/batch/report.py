"""The batch's JSON report: one record per pair, rewritten atomically after every pair so
it describes the run even when it is killed; records of an earlier report for outputs a rerun
does not touch are kept."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..atomic import atomic_file

REPORT_NAME = "batch-report.json"

Status = Literal["ok", "skipped", "outdated", "failed"]
"""ok: made now; skipped: already made with the same settings; outdated: an output made with
other settings exists and was kept (``overwrite`` replaces it); failed: see the error."""


@dataclass
class PairRecord:
    """What happened to one pair (a row of the JSON report)."""

    source: str
    guide: str
    output: str
    status: Status
    seconds: float = 0.0
    tiles_total: int | None = None
    tiles_fitted: int | None = None
    """Tiles fitted by this run."""
    tiles_resumed: int | None = None
    """Tiles taken from the checkpoints of an interrupted run."""
    tiles_skipped: int | None = None
    """Tiles with no valid output pixel."""
    cycle_rmse: float | None = None
    device: str | None = None
    strategy: str | None = None
    """How the output's tiles were fitted (the strategy ``auto`` chose, or the one asked)."""
    registration: dict[str, Any] | None = None
    """With ``--register auto``: the guide's estimated offset (output pixels and ground
    units) and whether it was corrected."""
    error: str | None = None


@dataclass
class BatchReport:
    """Per-pair records of a batch, in input order."""

    records: list[PairRecord] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def count(self, status: Status) -> int:
        return sum(r.status == status for r in self.records)

    @property
    def failed(self) -> int:
        return self.count("failed")

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": {
                "pairs": len(self.records),
                "ok": self.count("ok"),
                "skipped": self.count("skipped"),
                "outdated": self.count("outdated"),
                "failed": self.failed,
                "seconds": round(self.seconds, 3),
            },
            "settings": self.settings,
            "pairs": [asdict(r) for r in self.records],
        }


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to a temporary name and rename it over: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, allow_nan=False)
        f.write("\n")


def earlier_records(report_file: Path, outputs: set[str]) -> list[PairRecord]:
    """Records of an earlier report for outputs this batch does not touch, so that a rerun
    over part of the pairs keeps the report of the rest."""
    try:
        document = json.loads(report_file.read_text(encoding="utf-8"))
        rows = [*document.get("pairs", []), *document.get("earlier_pairs", [])]
        names = {f.name for f in dataclasses.fields(PairRecord)}
        records = [PairRecord(**{k: v for k, v in row.items() if k in names}) for row in rows]
    except (OSError, ValueError, TypeError, AttributeError):
        return []
    kept: dict[str, PairRecord] = {}
    for record in records:
        if record.output not in outputs:
            kept.setdefault(record.output, record)
    return list(kept.values())


def json_safe(value: Any) -> Any:
    """NaN and infinities as null (strict JSON has neither), paths and the like as text."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)
