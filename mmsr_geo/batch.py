"""Many rasters in one run: pair discovery, output naming, per-pair error isolation, reports.

A batch is a list of (source, guide, output) pairs, found by a glob plus a guide naming rule or
read from a CSV manifest. Every pair goes through :func:`mmsr_geo.pipeline.upscale_raster`
with the same settings and executor; a pair that fails is recorded and the others go on, and
an output whose provenance tags record the same settings is skipped, so rerunning a batch
after a crash or a fix only does what is left. After every pair the JSON report and a GeoJSON
index of the output footprints are rewritten atomically, so both describe the run even when it
is killed.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import glob
import inspect
import json
import logging
import os
import re
import tempfile
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

from ._version import __version__
from .devices import resolve_device
from .errors import InputError, MmsrGeoError
from .executors import SerialExecutor, TileExecutor
from .fit import FitConfig
from .pipeline import default_output_path, file_fingerprint, upscale_raster
from .writer import read_settings

log = logging.getLogger(__name__)

DFC_GUIDE_RULE = r"s/_(DSM|AGL)\./_RGB./"
"""Data Fusion Contest naming: ``JAX_004_006_DSM.tif`` / ``..._AGL.tif`` -> ``..._RGB.tif``."""

REPORT_NAME = "batch-report.json"
INDEX_NAME = "batch-index.geojson"

Status = Literal["ok", "skipped", "failed"]


@dataclass(frozen=True)
class Pair:
    """One raster to super-resolve; ``output`` None means "named after the source"."""

    source: Path
    guide: Path
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
    with its data); a relative output is relative to the batch's output directory. Blank lines
    and lines starting with ``#`` are ignored.
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
        pairs.append(
            Pair(
                base / Path(cells[0]).expanduser(),
                base / Path(cells[1]).expanduser(),
                Path(cells[2]).expanduser() if cells[2] else None,
            )
        )
    if not pairs:
        raise InputError(f"manifest {path} lists no pair")
    return pairs


def output_path(pair: Pair, output_dir: Path, scale: int) -> Path:
    """Where a pair's result goes: its manifest output, else ``<source stem>_x<scale>.tif`` (the
    name ``upscale`` gives), in ``output_dir``.

    The suffix keeps an output directory equal to the input folder from overwriting sources.
    """
    if pair.output is not None:
        return pair.output if pair.output.is_absolute() else output_dir / pair.output
    return output_dir / default_output_path(pair.source, scale).name


def resolve_outputs(pairs: Sequence[Pair], output_dir: Path, scale: int) -> list[Path]:
    """Output paths of all pairs, refusing clashes before anything runs (two sources with the
    same name in different folders would otherwise overwrite each other's result)."""
    outputs = [output_path(p, output_dir, scale) for p in pairs]
    seen: dict[Path, Path] = {}
    inputs = {p.source.resolve() for p in pairs} | {p.guide.resolve() for p in pairs}
    for pair, out in zip(pairs, outputs, strict=True):
        key = out.resolve()
        if key in seen:
            raise InputError(
                f"{seen[key]} and {pair.source} would both be written to {out}: "
                "use a manifest with an output column"
            )
        if key in inputs:
            raise InputError(f"output {out} would overwrite an input raster")
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
                "failed": self.failed,
                "seconds": round(self.seconds, 3),
            },
            "settings": self.settings,
            "pairs": [asdict(r) for r in self.records],
        }


def _write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON beside ``path`` and rename it over: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def footprint_wgs84(path: Path) -> dict[str, Any] | None:
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
        geometry = footprint_wgs84(Path(candidate))
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


def _expected_settings(
    pair: Pair, scale: int, config: FitConfig, options: Mapping[str, Any]
) -> dict[str, Any]:
    """The provenance settings an output of this pair made now would carry, as far as they
    are known without opening the rasters (band, guide bands and nodata only when given).

    Defaults come from :func:`upscale_raster`'s signature so they cannot drift from it. The
    requested device ("auto") is left out: the resolved one decides the result.
    """
    params = inspect.signature(upscale_raster).parameters

    def option(name: str) -> Any:
        return options.get(name, params[name].default)

    config_fields = dataclasses.asdict(config)
    del config_fields["device"]
    expected: dict[str, Any] = {
        "version": __version__,
        "source_file": file_fingerprint(pair.source),
        "guide_file": file_fingerprint(pair.guide),
        "scale": scale,
        "tile_size": option("tile_size"),
        "overlap": option("overlap"),
        "aoi": option("aoi"),
        "dtype": option("dtype"),
        **config_fields,
        "resolved_device": str(resolve_device(config.device)),
    }
    for name in ("band", "nodata"):
        if option(name) is not None:
            expected[name] = option(name)
    if option("guide_bands") is not None:
        expected["guide_bands"] = list(option("guide_bands"))
    return expected


def is_done(
    pair: Pair, output: Path, scale: int, config: FitConfig, options: Mapping[str, Any]
) -> bool:
    """True when ``output`` is a readable raster whose tags record this pair's settings.

    The pipeline renames its output into place only when complete, so an existing readable
    file with matching tags is a finished result; anything else (other settings, inputs
    changed since, an unreadable file) is not.
    """
    if not output.is_file():
        return False
    try:
        recorded = read_settings(output)
        expected = _expected_settings(pair, scale, config, options)
    except (rasterio.errors.RasterioIOError, OSError, ValueError):
        return False
    if not recorded:
        return False
    return all(recorded.get(key) == value for key, value in expected.items())


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
    show_progress: bool = False,
    **options: Any,
) -> BatchReport:
    """Super-resolve every pair with the same settings, isolating failures.

    Args:
        pairs: from :func:`pairs_from_glob` or :func:`pairs_from_manifest`.
        output_dir: created if missing; outputs are named by :func:`output_path`.
        scale, config: as for :func:`~mmsr_geo.pipeline.upscale_raster`.
        overwrite: redo pairs whose output already records the same settings (and replace
            outputs made with other settings, which otherwise fail their pair).
        executor: runs the tiles of each raster (default: serially in this process).
        report_path: JSON report, default ``<output_dir>/batch-report.json``.
        index_path: GeoJSON footprint index, default ``<output_dir>/batch-index.geojson``.
        on_pair: progress callback after each pair.
        show_progress: tqdm bars for the tiles of each raster.
        **options: further :func:`~mmsr_geo.pipeline.upscale_raster` keywords (band,
            guide_bands, tile_size, overlap, aoi, dtype, nodata, creation_options, cog).

    A pair's error (:class:`Exception`) is recorded and the batch goes on; Ctrl-C
    (KeyboardInterrupt) stops it after writing the reports of the pairs done so far.
    """
    started = time.perf_counter()
    config = config or FitConfig()
    executor = executor or SerialExecutor()
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report_file = Path(report_path) if report_path is not None else out_dir / REPORT_NAME
    index_file = Path(index_path) if index_path is not None else out_dir / INDEX_NAME
    outputs = resolve_outputs(pairs, out_dir, scale)
    report = BatchReport(
        settings={"scale": scale, **dataclasses.asdict(config), **options},
    )
    features: list[dict[str, Any] | None] = []
    try:
        for number, (pair, output) in enumerate(zip(pairs, outputs, strict=True), start=1):
            record = _run_pair(
                pair, output, scale, config, overwrite, executor, show_progress, options
            )
            report.records.append(record)
            features.append(index_feature(record))
            report.seconds = time.perf_counter() - started
            _write_json_atomic(report_file, _json_safe(report.to_dict()))
            write_index(features, index_file)
            if on_pair is not None:
                on_pair(number, len(pairs), record)
    finally:
        report.seconds = time.perf_counter() - started
        _write_json_atomic(report_file, _json_safe(report.to_dict()))
        write_index(features, index_file)
    return report


def _run_pair(
    pair: Pair,
    output: Path,
    scale: int,
    config: FitConfig,
    overwrite: bool,
    executor: TileExecutor,
    show_progress: bool,
    options: Mapping[str, Any],
) -> PairRecord:
    """One pair's record; its exceptions become a failed record, with the traceback logged
    at debug level (``-vv``) for bug reports."""
    started = time.perf_counter()
    record = PairRecord(str(pair.source), str(pair.guide), str(output), "ok")
    try:
        if not overwrite and is_done(pair, output, scale, config, options):
            record.status = "skipped"
        else:
            result = upscale_raster(
                pair.source,
                pair.guide,
                output,
                scale=scale,
                config=config,
                overwrite=overwrite,
                executor=executor,
                show_progress=show_progress,
                **options,
            )
            record.tiles_total = result.tiles_total
            record.tiles_fitted = result.tiles_fitted
            record.tiles_resumed = result.tiles_resumed
            record.tiles_skipped = result.tiles_skipped
            record.cycle_rmse = result.mean_cycle_rmse
    except Exception as exc:
        log.debug("%s failed", pair.source, exc_info=True)
        record.status = "failed"
        message = " ".join(str(exc).split())
        record.error = (
            message if isinstance(exc, MmsrGeoError) else (f"{type(exc).__name__}: {message}")
        )
    record.seconds = round(time.perf_counter() - started, 3)
    return record


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
