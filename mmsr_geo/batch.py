"""Many rasters in one run: pair discovery, output naming, per-pair error isolation, reports.

A batch is a list of (source, guide, output) pairs, found by a glob plus a guide naming rule or
read from a CSV manifest. Globs are local (there is no listing of a URL); a manifest may list
sources and guides as URLs or GDAL paths (``https://``, ``s3://``, ``/vsizip/``), which are
read where they are, while outputs are always local files. Every pair is prepared by
:func:`mmsr_geo.pipeline.prepare` (so its settings are exactly those the pipeline records) and
run by :func:`mmsr_geo.pipeline.execute` with the same settings and executor; a pair that fails
is recorded and the others go on. An output whose tags record the same settings is skipped, one
made with other settings is kept and reported as outdated, so rerunning a batch after a crash
or a fix only does what is left. Outputs must lie inside the output folder. After every pair
the JSON report and a GeoJSON index of the output footprints are rewritten atomically, so both
describe the run even when it is killed.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import glob
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import rasterio
import rasterio.errors
import shapely
from rasterio.warp import transform_geom
from shapely.geometry import MultiPolygon, box, mapping, shape
from shapely.geometry.polygon import orient

from .atomic import atomic_file
from .errors import InputError, MmsrGeoError, OutputExistsError
from .executors import SerialExecutor, TileExecutor
from .fit import FitConfig
from .pipeline import PreparedRun, UpscaleRequest, default_output_path, execute, prepare
from .progress import Progress
from .raster_io import is_remote
from .settings import describe_changes
from .writer import read_provenance

log = logging.getLogger(__name__)

DFC_GUIDE_RULE = r"s/_(DSM|AGL)\./_RGB./"
"""Data Fusion Contest naming: ``JAX_004_006_DSM.tif`` / ``..._AGL.tif`` -> ``..._RGB.tif``."""

REPORT_NAME = "batch-report.json"
INDEX_NAME = "batch-index.geojson"

Status = Literal["ok", "skipped", "outdated", "failed"]
"""ok: made now; skipped: already made with the same settings; outdated: an output made with
other settings exists and was kept (``overwrite`` replaces it); failed: see the error."""


@dataclass(frozen=True)
class Pair:
    """One raster to super-resolve; ``output`` None means "named after the source".

    A local source or guide is a :class:`~pathlib.Path`; a URL or GDAL path stays the ``str``
    it was given as (``Path`` would fold ``https://`` into ``https:/``).
    """

    source: Path | str
    guide: Path | str
    output: Path | None = None


@dataclass(frozen=True)
class GuideRule:
    """A sed-style substitution ``s/REGEX/REPLACEMENT/`` applied to a source's file name.

    The first character after ``s`` is the delimiter (``s|a|b|`` works too); REGEX is a Python
    regular expression, REPLACEMENT may use ``\\1`` / ``\\g<name>``; only the first match is
    replaced. The guide is looked for in ``guide_dir``, or beside the source when None.
    """

    pattern: re.Pattern[str]
    replacement: str
    guide_dir: Path | None = None

    @classmethod
    def parse(cls, rule: str, guide_dir: str | os.PathLike[str] | None = None) -> GuideRule:
        if len(rule) < 4 or rule[0] != "s":
            raise InputError(f"guide rule {rule!r} must look like s/REGEX/REPLACEMENT/")
        delimiter = rule[1]
        parts = rule[2:].split(delimiter)
        if len(parts) != 3 or parts[2] != "" or not parts[0]:
            raise InputError(
                f"guide rule {rule!r} must look like s{delimiter}REGEX{delimiter}REPLACEMENT"
                f"{delimiter} (use another delimiter if REGEX contains {delimiter!r})"
            )
        try:
            pattern = re.compile(parts[0])
        except re.error as exc:
            raise InputError(f"guide rule {rule!r}: bad regular expression: {exc}") from None
        return cls(pattern, parts[1], Path(guide_dir) if guide_dir is not None else None)

    def guide_for(self, source: Path) -> Path | None:
        """The guide path of ``source``, or None when the rule does not apply to its name."""
        name, count = self.pattern.subn(self.replacement, source.name, count=1)
        if count == 0 or name == source.name:
            return None
        return (self.guide_dir or source.parent) / name


def pairs_from_glob(
    patterns: str | Sequence[str], guide_rule: GuideRule | str = DFC_GUIDE_RULE
) -> list[Pair]:
    """Pairs for every file matching the glob(s) (``**`` recurses) whose name the rule maps.

    Files the rule does not apply to are left out with an info message, so a glob over a
    folder of DSMs and RGBs picks the DSMs only. A guide that does not exist is not an error
    here: that pair fails alone when the batch runs, and the others go on.
    """
    rule = GuideRule.parse(guide_rule) if isinstance(guide_rule, str) else guide_rule
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    sources: dict[Path, None] = {}
    for pattern in patterns:
        if is_remote(pattern):
            raise InputError(
                f"{pattern}: SOURCES are local files or globs (a URL or GDAL path cannot be "
                "listed): give remote pairs in a --manifest"
            )
        matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
        if not matches:
            raise InputError(f"no file matches {pattern!r}")
        sources.update((Path(m), None) for m in matches if os.path.isfile(m))
    pairs = []
    for source in sources:
        guide = rule.guide_for(source)
        if guide is None:
            log.info("%s: the guide rule does not apply to this name, left out", source)
        else:
            pairs.append(Pair(source, guide))
    if not pairs:
        raise InputError(
            f"the guide rule s/{rule.pattern.pattern}/{rule.replacement}/ applies to none of the "
            f"{len(sources)} matching file(s): pass --guide-pattern for your naming"
        )
    return pairs


def pairs_from_manifest(csv_path: str | os.PathLike[str]) -> list[Pair]:
    """Pairs from a CSV with columns source, guide[, output] (a header row is optional).

    Relative source and guide paths are relative to the manifest's folder (so a manifest moves
    with its data); URLs and GDAL paths (``https://...``, ``s3://...``, ``/vsizip/...``) are
    kept as they are. A relative output is relative to the batch's output directory and must
    be local. Blank lines and lines starting with ``#`` are ignored.
    """
    path = Path(csv_path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read manifest {path}: {exc.strerror or exc}") from None
    base = path.parent
    pairs = []
    rows = csv.reader(text.splitlines())
    for line_no, row in enumerate(rows, start=1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if line_no == 1 and cells[0].lower() == "source":
            continue
        cells = cells + [""] * (3 - len(cells))
        if len(row) > 3 or not cells[0] or not cells[1]:
            raise InputError(
                f"{path}, line {line_no}: expected 'source,guide[,output]', got {','.join(row)!r}"
            )
        if is_remote(cells[2]):
            raise InputError(
                f"{path}, line {line_no}: the output {cells[2]} must be a local path (relative "
                "to the output folder): inputs may be URLs, outputs are written locally"
            )
        pairs.append(
            Pair(
                _manifest_input(cells[0], base),
                _manifest_input(cells[1], base),
                Path(cells[2]).expanduser() if cells[2] else None,
            )
        )
    if not pairs:
        raise InputError(f"manifest {path} lists no pair")
    return pairs


def _manifest_input(cell: str, base: Path) -> Path | str:
    """A manifest's source or guide: a URL or GDAL path as written, a local path relative to
    the manifest's folder."""
    if is_remote(cell):
        return cell
    return base / Path(cell).expanduser()


def local_inputs(pairs: Iterable[Pair]) -> set[Path]:
    """The local sources and guides of ``pairs``, resolved (what no output may overwrite)."""
    paths = (p for pair in pairs for p in (pair.source, pair.guide))
    return {Path(p).resolve() for p in paths if not is_remote(p)}


def output_path(pair: Pair, output_dir: Path, scale: int) -> Path:
    """Where a pair's result goes: its manifest output (relative to ``output_dir``), else
    ``<source stem>_x<scale>.tif`` (the name ``upscale`` gives) in ``output_dir``.

    The suffix keeps an output directory equal to the input folder from overwriting sources.
    """
    if pair.output is not None:
        return output_dir / pair.output
    return output_dir / default_output_path(pair.source, scale).name


def output_problem(pair: Pair, output: Path, output_dir: Path, inputs: set[Path]) -> str | None:
    """Why a pair may not write ``output``, or None: it must resolve inside the output folder
    (symbolic links followed; a manifest cannot send results to ``../..`` or ``/etc``), and
    it must not be an input of the batch."""
    target = output.resolve()
    if not target.is_relative_to(output_dir.resolve()):
        return f"output {pair.output or output} resolves outside the output folder {output_dir}"
    if target in inputs:
        return f"output {output} would overwrite an input raster"
    return None


def resolve_outputs(pairs: Sequence[Pair], output_dir: Path, scale: int) -> list[Path]:
    """Output paths of all pairs, refusing clashes before anything runs (two sources with the
    same name in different folders would otherwise overwrite each other's result)."""
    outputs = [output_path(p, output_dir, scale) for p in pairs]
    seen: dict[Path, Path] = {}
    for pair, out in zip(pairs, outputs, strict=True):
        key = out.resolve()
        if key in seen:
            raise InputError(
                f"{seen[key]} and {pair.source} would both be written to {out}: "
                "use a manifest with an output column"
            )
        seen[key] = pair.source
    return outputs


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


def _write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to a temporary name and rename it over: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, allow_nan=False)
        f.write("\n")


def footprint_wgs84(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The raster's footprint as a GeoJSON polygon in EPSG:4326 (RFC 7946: lon/lat, exterior
    ring counter-clockwise), or None when the file has no CRS or cannot be read.

    Edges are densified before reprojecting so the polygon follows the curved edges of a
    projected raster's footprint, and the antimeridian is cut so QGIS draws it the right way.
    """
    try:
        with rasterio.open(path) as ds:
            if ds.crs is None:
                return None
            crs = ds.crs
            left, bottom, right, top = ds.bounds
        polygon = shapely.segmentize(
            box(left, bottom, right, top), max(right - left, top - bottom) / 16
        )
        geometry = shape(
            transform_geom(
                crs, "EPSG:4326", mapping(polygon), antimeridian_cutting=True, precision=7
            )
        )
    except (rasterio.errors.RasterioError, ValueError) as exc:
        log.debug("no footprint for %s: %s", path, exc)
        return None
    parts = geometry.geoms if isinstance(geometry, MultiPolygon) else [geometry]
    oriented = [orient(p, sign=1.0) for p in parts]
    return mapping(MultiPolygon(oriented) if len(oriented) > 1 else oriented[0])


def index_feature(record: PairRecord) -> dict[str, Any] | None:
    """A record's footprint feature: the output's when it exists, else the source's, so failed
    pairs show up on the map too."""
    for candidate in (record.output, record.source):
        geometry = footprint_wgs84(candidate)  # a string: a remote source stays a URL
        if geometry is not None:
            return {
                "type": "Feature",
                "geometry": geometry,
                "properties": {
                    "source": record.source,
                    "output": record.output,
                    "status": record.status,
                },
            }
    return None


def write_index(features: Iterable[dict[str, Any] | None], path: Path) -> None:
    """The GeoJSON FeatureCollection of footprints (pairs without a CRS are left out)."""
    collection = [f for f in features if f is not None]
    _write_json_atomic(path, {"type": "FeatureCollection", "features": collection})


PairCallback = Callable[[int, int, PairRecord], None]
"""Called after each pair with (pair number from 1, pairs in all, its record)."""


def run_batch(
    pairs: Sequence[Pair],
    output_dir: str | os.PathLike[str],
    *,
    scale: int,
    config: FitConfig | None = None,
    overwrite: bool = False,
    executor: TileExecutor | None = None,
    report_path: str | os.PathLike[str] | None = None,
    index_path: str | os.PathLike[str] | None = None,
    on_pair: PairCallback | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> BatchReport:
    """Super-resolve every pair with the same settings, isolating failures.

    Args:
        pairs: from :func:`pairs_from_glob` or :func:`pairs_from_manifest`.
        output_dir: created if missing; outputs are named by :func:`output_path`.
        scale, config: as for :func:`~mmsr_geo.pipeline.upscale_raster`.
        overwrite: redo pairs whose output already records the same settings, and replace
            outputs made with other settings (otherwise kept, and their pair is "outdated").
        executor: runs the tiles of each raster (default: serially in this process).
        report_path: JSON report, default ``<output_dir>/batch-report.json``; records of an
            earlier report for outputs this batch does not touch are kept in it.
        index_path: GeoJSON footprint index, default ``<output_dir>/batch-index.geojson``.
        on_pair: callback after each pair.
        progress: receives the progress of each raster and a "pair" event after each pair.
        **options: further :class:`~mmsr_geo.pipeline.UpscaleRequest` fields (band,
            guide_bands, tile_size, overlap, aoi, dtype, nodata, creation_options, cog,
            record_paths).

    A pair's error (:class:`Exception`) is recorded and the batch goes on; Ctrl-C
    (KeyboardInterrupt) stops it after writing the reports of the pairs done so far.
    """
    started = time.perf_counter()
    config = config or FitConfig()
    executor = executor or SerialExecutor()
    progress = progress or Progress()
    out_dir = Path(output_dir)
    outputs = resolve_outputs(pairs, out_dir, scale)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    report_file = Path(report_path) if report_path is not None else out_dir / REPORT_NAME
    index_file = Path(index_path) if index_path is not None else out_dir / INDEX_NAME
    inputs = local_inputs(pairs)
    earlier = _earlier_records(report_file, {str(o) for o in outputs})
    report = BatchReport(
        settings=_json_safe({"scale": scale, **dataclasses.asdict(config), **options}),
    )
    features: list[dict[str, Any] | None] = [index_feature(r) for r in earlier]

    def save() -> None:
        report.seconds = time.perf_counter() - started
        document = report.to_dict()
        document["earlier_pairs"] = [asdict(r) for r in earlier]
        _write_json_atomic(report_file, _json_safe(document))
        write_index(features, index_file)

    try:
        for number, (pair, output) in enumerate(zip(pairs, outputs, strict=True), start=1):
            problem = output_problem(pair, output, out_dir, inputs)
            if problem is not None:
                record = PairRecord(str(pair.source), str(pair.guide), str(output), "failed")
                record.error = problem
            else:
                record = _run_pair(
                    pair, output, scale, config, overwrite, executor, progress, options
                )
            report.records.append(record)
            features.append(index_feature(record))
            save()
            progress.event(
                "pair",
                pair=number,
                pairs=len(pairs),
                source=record.source,
                status=record.status,
                error=record.error,
            )
            if on_pair is not None:
                on_pair(number, len(pairs), record)
    finally:
        if report.records or earlier or not created:
            save()
        else:  # nothing ran (an error before the first pair): leave no empty folder behind
            with contextlib.suppress(OSError):
                out_dir.rmdir()
    return report


def _earlier_records(report_file: Path, outputs: set[str]) -> list[PairRecord]:
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


def _run_pair(
    pair: Pair,
    output: Path,
    scale: int,
    config: FitConfig,
    overwrite: bool,
    executor: TileExecutor,
    progress: Progress,
    options: Mapping[str, Any],
) -> PairRecord:
    """One pair's record; its exceptions become a failed record, with the traceback logged
    at debug level (``-vv``) for bug reports.

    The pair is prepared first (inputs opened and fingerprinted, settings resolved, nothing
    fitted), so the output's recorded settings can be compared with exactly the settings a
    new run would record.
    """
    started = time.perf_counter()
    record = PairRecord(str(pair.source), str(pair.guide), str(output), "ok")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        request = UpscaleRequest(
            pair.source,
            pair.guide,
            scale,
            output=output,
            config=config,
            overwrite=overwrite,
            **options,
        )
        with prepare(request) as run:
            state, detail, facts = output_state(run)
            if state == "done" and not overwrite:
                record.status = "skipped"
                _fill_from_tags(record, facts)
            elif state == "other" and not overwrite:
                record.status = "outdated"
                record.error = detail
                _fill_from_tags(record, facts)
            elif state == "foreign" and not overwrite:
                raise OutputExistsError(detail)
            else:
                result = execute(run, executor, progress)
                record.tiles_total = result.tiles_total
                record.tiles_fitted = result.tiles_fitted
                record.tiles_resumed = result.tiles_resumed
                record.tiles_skipped = result.tiles_skipped
                record.cycle_rmse = result.mean_cycle_rmse
                record.device = result.device
                record.strategy = result.strategy
    except Exception as exc:
        log.debug("%s failed", pair.source, exc_info=True)
        record.status = "failed"
        message = " ".join(str(exc).split())
        record.error = (
            message if isinstance(exc, MmsrGeoError) else (f"{type(exc).__name__}: {message}")
        )
    record.seconds = round(time.perf_counter() - started, 3)
    return record


def output_state(run: PreparedRun) -> tuple[str, str, dict[str, Any]]:
    """What is at a prepared run's output, as (state, message, facts the output records):
    "absent"; "done" when its tags record this very request; "other" when they record
    another (the message says what differs); "foreign" for a file mmsr-geo did not make or
    cannot read."""
    if not run.output.exists():
        return "absent", "", {}
    try:
        recorded, facts = read_provenance(run.output)
    except rasterio.errors.RasterioError:
        recorded, facts = None, None
    if recorded is None:
        return "foreign", (
            f"{run.output} exists and was not made by mmsr-geo: use --overwrite to replace it"
        ), {}
    settings = run.settings
    if recorded.get("output_key") == settings.output_key():
        return "done", "", facts or {}
    changes = describe_changes(recorded, settings.output_fields())
    return "other", (
        f"{run.output.name} exists, made with other settings ({changes}): kept; "
        "use --overwrite to redo it"
    ), facts or {}


def _fill_from_tags(record: PairRecord, facts: Mapping[str, Any]) -> None:
    """A skipped pair's record from what its output recorded when it was made."""
    record.cycle_rmse = facts.get("mean_cycle_rmse")
    record.strategy = facts.get("strategy")
    devices = facts.get("devices")
    record.device = ",".join(devices) if isinstance(devices, list) else None


def _json_safe(value: Any) -> Any:
    """NaN and infinities as null (strict JSON has neither), paths and the like as text."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)
