"""Raster-level super-resolution in stages: prepare -> fit -> write.

:func:`prepare` validates everything it can before any work (files, bands, scale, overlap,
AOI, output and preview paths, creation options, memory) and returns a :class:`PreparedRun`
that holds the open files, the output grid, the tile plan and the one
:class:`~mmsr_geo.settings.RunSettings`. :func:`execute` then takes the output's lock, fits
the tiles that no checkpoint holds yet (through any executor), blends the checkpointed tiles
block by block into a temporary file and puts it in place. Memory is bounded by the tile and
block sizes, never by the raster's; a rerun after a crash resumes from the checkpoints.
:func:`upscale_raster` is the two in one call; a batch prepares each pair first to find the
outputs that are already done.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.features import geometry_mask
from rasterio.io import DatasetReader
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds
from rasterio.windows import transform as window_transform
from shapely.geometry.base import BaseGeometry

from .aoi import Aoi, read_aoi
from .atomic import atomic_file, remove_leftovers
from .blending import blend_block
from .checkpoints import TileCheckpoints, TileFacts, work_dir_for
from .devices import resolve_device
from .errors import InputError, OutputExistsError, OverlapError
from .executors import SerialExecutor, TileExecutor
from .fit import FitConfig
from .grid import OutputGrid, output_grid
from .guide import (
    AlignedGuide,
    check_overlap,
    fill_guide,
    guide_holes,
    max_hole_pixels,
    pixel_aligned,
)
from .jobs import TileJob, fit_tiles
from .locks import OutputLock
from .memory import (
    check_tile_memory,
    default_batch_tiles,
    default_overlap,
    default_tile_size,
)
from .normalisation import Normalisation, normalisation_stats
from .progress import Progress, count
from .raster_io import (
    band_encoding,
    is_remote,
    open_raster,
    read_band,
    read_decimated,
    remote_name,
    select_band,
    select_guide_bands,
)
from .selection import Choice, choose_auto
from .settings import InputFile, RunSettings, input_file
from .strategies import AUTO, auto_budget, auto_fallback, resolve_schedule, strategy
from .tiling import TilePlan, plan_tiles, tile_intersects
from .writer import (
    BLOCK_SIZE,
    DTYPES,
    EncodeCounts,
    OutputEncoding,
    atomic_raster,
    choose_nodata,
    is_float,
    output_profile,
    provenance_tags,
    validate_profile,
)
from .writer import creation_options as gdal_creation_options

log = logging.getLogger(__name__)

TILE_CACHE_SIZE = 16
"""Checkpointed tiles held in memory while blending (the blocks walk row by row)."""
OUTPUT_SUFFIXES = (".tif", ".tiff")
PREVIEW_SUFFIXES = (".png",)


@dataclass(frozen=True)
class UpscaleRequest:
    """What the user asked for, as given (``None`` means "choose for me")."""

    source: str | os.PathLike[str]
    """LR raster: a local path, a URL or a GDAL path (``/vsicurl/...``, ``s3://...``)."""
    guide: str | os.PathLike[str]
    """HR guide raster on any grid/CRS overlapping the source."""
    scale: int
    output: str | os.PathLike[str] | None = None
    """Local GeoTIFF to write; default ``<source stem>_x<scale>.tif``
    (:func:`default_output_path`)."""
    config: FitConfig | None = None
    """Fit settings (tile i uses seed ``config.seed + i``); None: the tool's default, i.e.
    :class:`FitConfig` with the ``auto`` schedule. Given without a ``schedule``, used exactly."""
    schedule: str | None = None
    """``auto`` (chosen per raster by self-validation one scale down, see
    :mod:`mmsr_geo.selection`), a strategy of :data:`mmsr_geo.strategies.STRATEGIES`
    (``paper``: the paper's exact fit), or None (see ``config``)."""
    iterations: int | None = None
    """Iterations for the schedule's strategy (None: its own budget)."""
    band: int | None = None
    """1-based source band (required if the source has several)."""
    guide_bands: tuple[int, ...] | None = None
    """1-based guide bands (default: all but alpha)."""
    tile_size: int | None = None
    """Tile edge in source pixels (default: about 256 output pixels)."""
    overlap: int | None = None
    """Overlap of neighbouring tiles in source pixels (default: about 32 output pixels)."""
    aoi: str | None = None
    """GeoJSON file or http(s) URL (EPSG:4326 unless it names a crs) or WKT (source CRS)."""
    dtype: str = "float32"
    nodata: float | None = None
    """Output nodata (default: the source's, else -9999 for floats)."""
    creation_options: Mapping[str, str] = field(default_factory=dict)
    cog: bool = False
    overwrite: bool = False
    preview: str | os.PathLike[str] | None = None
    """PNG quick-look to write after the output."""
    record_paths: bool = False
    """Record the inputs' full paths in the output's tags (file names only by default)."""
    batch_tiles: int | None = None
    """Tiles fitted together in one optimisation (default: 1 on the CPU, from the free memory
    on a GPU, see :func:`mmsr_geo.memory.default_batch_tiles`)."""

    def output_path(self) -> Path:
        if self.output is not None:
            return Path(self.output)
        return default_output_path(self.source, self.scale)


@dataclass(frozen=True)
class UpscaleReport:
    """What a run did."""

    output: Path
    tiles_total: int
    tiles_fitted: int
    """Tiles fitted by this run."""
    tiles_resumed: int
    """Tiles taken from the checkpoints of an earlier, interrupted run."""
    tiles_skipped: int
    """Tiles with no valid output pixel (nodata, outside the guide or the AOI)."""
    seconds: float
    mean_cycle_rmse: float
    """Mean over the fitted and resumed tiles of their cycle RMSE (source units); NaN if none."""
    device: str
    """Devices the tiles were fitted on (comma-separated)."""
    strategy: str = "custom"
    """How the tiles were fitted (the strategy ``auto`` chose, or the one asked for)."""
    expected_gain: float | None = None
    """With ``auto``: 1 - RMSE(choice) / RMSE(bicubic) one scale down."""

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def default_output_path(source: str | os.PathLike[str], scale: int) -> Path:
    """``dem.tif`` -> ``dem_x4.tif`` beside a local source, in the current folder for a
    remote one (always a GeoTIFF)."""
    text = os.fspath(source)
    if is_remote(text):
        stem = Path(remote_name(text)).stem or "output"
        return Path.cwd() / f"{stem}_x{scale}.tif"
    path = Path(text)
    return path.with_name(f"{path.stem}_x{scale}.tif")


# --------------------------------------------------------------------------------------------
# prepare
# --------------------------------------------------------------------------------------------


class PreparedRun:
    """A validated request with its files open: what the fit and write stages share.

    Use as a context manager (or call :meth:`close`) to close the files.
    """

    def __init__(self, request: UpscaleRequest) -> None:
        self.request = request
        self.output = request.output_path()
        self.preview = Path(request.preview) if request.preview is not None else None
        self._stack = contextlib.ExitStack()
        self.source: DatasetReader
        self.guide_dataset: DatasetReader
        self.band: int
        self.guide_bands: tuple[int, ...]
        self.grid: OutputGrid
        self.guide: AlignedGuide
        self.common: BaseGeometry
        self.aoi: BaseGeometry | None = None
        self.schedule, self.base = resolve_schedule(
            request.config, request.schedule, request.iterations
        )
        self.choice: Choice | None = None
        self.plan: TilePlan
        self.encoding: OutputEncoding
        self.settings: RunSettings
        self.profile: dict[str, Any]
        self.cog_options: dict[str, str] | None = None

    @property
    def work_dir(self) -> Path:
        return work_dir_for(self.output)

    @property
    def config(self) -> FitConfig:
        """The fit's configuration: the base one, or the chosen strategy's once ``auto`` has
        chosen (:func:`choose_strategy`)."""
        if self.schedule == AUTO and self.choice is not None:
            budget = auto_budget(self.base, self.request.iterations)
            return strategy(self.choice.strategy).config(self.base, budget)
        return self.base

    @property
    def strategy_name(self) -> str:
        """The strategy the tiles are fitted with (``custom``: a FitConfig as given)."""
        if self.schedule == AUTO:
            return self.choice.strategy if self.choice is not None else AUTO
        return self.schedule

    @functools.cached_property
    def statistics(self) -> tuple[Normalisation, tuple[float, float]]:
        """Whole-raster z-score statistics and the source's (min, max), from decimated reads
        so that all tiles share them."""
        return _statistics(self)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> PreparedRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prepare(request: UpscaleRequest) -> PreparedRun:
    """Open and validate everything a run needs, before any tile is fitted.

    Raises :class:`~mmsr_geo.errors.InputError` (and subclasses) for anything wrong with the
    inputs or the output-side options; nothing is written.
    """
    run = PreparedRun(request)
    try:
        _prepare(run)
    except BaseException:
        run.close()
        raise
    return run


def _check_path_option(path: Path, what: str, suffixes: Sequence[str]) -> None:
    """A file name the option can write: a known suffix (an output may have none), not a
    folder, in a folder that exists."""
    if path.suffix.lower() not in suffixes and not (what == "output" and not path.suffix):
        raise InputError(
            f"the {what} {path} must end in {' or '.join(suffixes)}"
            + (": mmsr-geo writes GeoTIFFs" if what == "output" else "")
        )
    if path.is_dir():
        raise InputError(f"the {what} {path} is a directory")
    if not path.parent.is_dir():
        raise InputError(f"the {what}'s folder {path.parent} does not exist")


def _same_file(a: Path, b: str | os.PathLike[str]) -> bool:
    if is_remote(b):
        return False
    return a.resolve() == Path(b).resolve()


def _prepare(run: PreparedRun) -> None:
    request = run.request
    if request.dtype not in DTYPES:
        raise InputError(
            f"unsupported output dtype {request.dtype!r}: choose one of {', '.join(DTYPES)}"
        )
    inputs = [request.source, request.guide]
    for what, path in (("output", request.output), ("preview", request.preview)):
        if path is not None and is_remote(path):
            raise InputError(
                f"the {what} {os.fspath(path)} must be a local file: mmsr-geo reads URLs and GDAL "
                "paths but writes local files (copy the result where it should go)"
            )
    _check_path_option(run.output, "output", OUTPUT_SUFFIXES)
    if any(_same_file(run.output, p) for p in inputs):
        raise InputError(f"the output {run.output} would overwrite an input")
    if run.preview is not None:
        _check_path_option(run.preview, "preview", PREVIEW_SUFFIXES)
        if any(_same_file(run.preview, p) for p in [*inputs, run.output]):
            raise InputError(f"the preview {run.preview} would overwrite an input or the output")
        if run.preview.exists() and not request.overwrite:
            raise OutputExistsError(f"{run.preview} exists: use --overwrite to replace it")

    stack = run._stack
    run.source = stack.enter_context(open_raster(request.source, "source"))
    run.guide_dataset = stack.enter_context(open_raster(request.guide, "guide"))
    run.band = select_band(run.source, request.band)
    run.guide_bands = select_guide_bands(run.guide_dataset, request.guide_bands)
    run.grid = grid = output_grid(run.source, request.scale)
    if grid.has_transform and not grid.georeferenced:
        log.warning(
            "the source %s has a geotransform but no CRS: the output keeps the transform "
            "(refined by the scale) and has no CRS either",
            run.source.name,
        )
    if pixel_aligned(run.guide_dataset, grid):
        log.warning(
            "source or guide is not georeferenced: assuming the guide is exactly %d x the "
            "source's pixel grid",
            grid.scale,
        )
    run.guide = stack.enter_context(AlignedGuide(run.guide_dataset, run.guide_bands, grid))
    run.common = check_overlap(run.guide_dataset, grid)
    aoi: Aoi | None = None
    if request.aoi is not None:
        aoi = read_aoi(request.aoi)  # a file is read and a URL fetched once, here
        run.aoi = aoi.geometry(grid.crs)
        if not run.aoi.intersects(run.common):
            raise OverlapError("the AOI does not overlap the area covered by source and guide")

    tile_size = request.tile_size or default_tile_size(grid.scale)
    overlap = (
        request.overlap if request.overlap is not None else default_overlap(grid.scale, tile_size)
    )
    run.plan = plan_tiles(grid.lr_width, grid.lr_height, grid.scale, tile_size, overlap)
    run.encoding = _encoding(run)
    run.settings = RunSettings(
        source=_input_record(request.source, request.record_paths),
        band=run.band,
        guide=_input_record(request.guide, request.record_paths),
        guide_bands=run.guide_bands,
        scale=grid.scale,
        tile_size=tile_size,
        overlap=overlap,
        aoi=aoi.record() if aoi is not None else None,
        dtype=request.dtype,
        nodata=run.encoding.nodata,
        fit=run.base,
        schedule=run.schedule,
        budget=request.iterations,
        creation_options=tuple(sorted(request.creation_options.items())),
        cog=request.cog,
    )
    gtiff = gdal_creation_options(request.dtype, None if request.cog else request.creation_options)
    run.profile = output_profile(grid, request.dtype, run.encoding.nodata, gtiff)
    if request.cog:
        run.cog_options = gdal_creation_options(request.dtype, request.creation_options, cog=True)
    validate_profile(run.profile, run.cog_options)


def _input_record(path: str | os.PathLike[str], record_path: bool) -> InputFile:
    """A local input by name and content; a remote one by its address, as given (its bytes
    are not downloaded just to be hashed, so a remote file changed in place is not noticed).

    The address is recorded as a hash unless the paths are asked for: like a local folder, a
    host, bucket or signed query string is not written into every output.
    """
    if is_remote(path):
        text = os.fspath(path)
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()
        return InputFile(
            name=remote_name(text) or text,
            fingerprint=f"address:{digest}",
            path=text if record_path else None,
        )
    return input_file(path, record_path)


def _encoding(run: PreparedRun) -> OutputEncoding:
    """Output type, nodata and (for an integer output of a scaled source) scale and offset."""
    request = run.request
    source_nodata = run.source.nodatavals[run.band - 1]
    scale, offset = band_encoding(run.source, run.band)
    keep_encoding = not is_float(request.dtype) and (scale, offset) != (1.0, 0.0)
    nodata = choose_nodata(source_nodata, request.dtype, request.nodata)
    if keep_encoding:
        return OutputEncoding(request.dtype, nodata, scale, offset)
    return OutputEncoding(request.dtype, nodata)


def _statistics(run: PreparedRun) -> tuple[Normalisation, tuple[float, float]]:
    """Whole-raster z-score statistics from decimated reads (the guide sampled on its own grid
    over the area it shares with the source), and the source's range."""
    values, valid = read_decimated(run.source, [run.band], role="source")
    if not valid.any():
        raise InputError(f"the source {run.source.name} has no valid pixel (all nodata)")
    guide = run.guide_dataset
    window = Window(0, 0, guide.width, guide.height)
    if not pixel_aligned(guide, run.grid):
        bounds = transform_bounds(run.grid.crs, guide.crs, *run.common.bounds, densify_pts=21)
        shared = from_bounds(*bounds, transform=guide.transform).round_offsets().round_lengths()
        with contextlib.suppress(ValueError):  # no intersection: keep the whole guide
            window = window.intersection(shared)
    guide_values, guide_valid = read_decimated(guide, run.guide_bands, window, role="guide")
    if not guide_valid.any():
        raise InputError(f"the guide {guide.name} has no valid pixel where it meets the source")
    samples = guide_values[:, guide_valid][:, None, :]
    source_values = values[0][valid]
    stats = normalisation_stats(values[0], samples, valid)
    return stats, (float(source_values.min()), float(source_values.max()))


def check_value_range(run: PreparedRun) -> None:
    """Refuse a source without valid pixels, and an integer output type that cannot hold the
    source's values (they would all be clipped, and the output would be garbage), before any
    tile is fitted."""
    _, (low, high) = run.statistics
    if is_float(run.encoding.dtype):
        return
    lo, hi = run.encoding.physical_range()
    if low < lo or high > hi:
        raise InputError(
            f"the source's values ({low:.6g} to {high:.6g}) do not fit --dtype "
            f"{run.encoding.dtype} (which holds {lo:.6g} to {hi:.6g}"
            + (
                f" with the source's scale {run.encoding.scale:g} and offset "
                f"{run.encoding.offset:g}"
                if (run.encoding.scale, run.encoding.offset) != (1.0, 0.0)
                else ""
            )
            + "): use float32 or an integer type that holds them"
        )


def check_output_free(run: PreparedRun) -> None:
    """An existing output is only replaced with ``overwrite``."""
    if run.output.exists() and not run.request.overwrite:
        raise OutputExistsError(f"{run.output} exists: use --overwrite to replace it")


CHOICE_NAME = "choice.json"


def choose_strategy(run: PreparedRun) -> None:
    """For the ``auto`` schedule: pick the strategy one scale down on the tile nearest the
    raster's centre (:func:`mmsr_geo.selection.self_validate`), once per raster. The choice is
    kept in the work folder, so a resumed run fits its remaining tiles the same way."""
    if run.schedule != AUTO or run.choice is not None:
        return
    saved = run.work_dir / CHOICE_NAME
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        record = json.loads(saved.read_text(encoding="utf-8"))
        run.choice = Choice(strategy=record["strategy"], scores=record["scores"])
        return
    job = _sample_job(run)
    choice = (
        Choice(strategy=auto_fallback(run.base))
        if job is None
        else choose_auto(
            job.source,
            job.guide,
            run.grid.scale,
            run.base,
            mask=job.source_valid,
            stats=job.stats,
            iterations=run.request.iterations,
        )
    )
    run.choice = choice
    if not choice.scores:
        log.info("too little data to choose one scale down: using %s", choice.strategy)
    else:
        gain = choice.expected_gain
        log.info(
            "schedule %s, chosen one scale down (RMSE %s)%s",
            choice.strategy,
            ", ".join(f"{name} {value:.4g}" for name, value in choice.scores.items()),
            f": expect about {100 * gain:.0f}% below bicubic" if gain is not None else "",
        )
    with atomic_file(saved) as tmp:
        tmp.write_text(
            json.dumps({"strategy": run.choice.strategy, "scores": run.choice.scores}),
            encoding="utf-8",
        )


SAMPLE_MIN = 16
"""Self-validation samples at least this many x scale source pixels a side (the pooled pair
then has 16 pixels a side), or the whole raster when it is smaller."""


def _sample_job(run: PreparedRun) -> TileJob | None:
    """The source window self-validation looks at: a tile's size (at least
    :data:`SAMPLE_MIN` x scale pixels a side) at the raster's centre, or, when that one has no
    valid output, the first tile of the plan that has."""
    grid, plan = run.grid, run.plan
    side = max(plan.tile_size, SAMPLE_MIN * grid.scale)
    width, height = min(side, grid.lr_width), min(side, grid.lr_height)
    centre = Window(
        (grid.lr_width - width) // 2, (grid.lr_height - height) // 2, width, height
    )
    job = _read_job(run, -1, centre)
    if job is not None:
        return job
    return next(_jobs(run, set(range(len(plan))), lambda index: None), None)


# --------------------------------------------------------------------------------------------
# execute: fit, then write
# --------------------------------------------------------------------------------------------


def execute(
    run: PreparedRun,
    executor: TileExecutor | None = None,
    progress: Progress | None = None,
) -> UpscaleReport:
    """Fit the run's missing tiles and write the output (see the module docstring).

    Holds the output's lock throughout, so a second run on the same output is refused while
    this one works; a kill leaves checkpoints from which the same call resumes.
    """
    started = time.perf_counter()
    executor = executor or SerialExecutor()
    progress = progress or Progress()
    with OutputLock(run.work_dir, run.output):
        for leftover in remove_leftovers(run.output):
            log.info("removed %s, left by a run that was killed", leftover.name)
        checkpoints = TileCheckpoints(
            run.work_dir, run.settings.result_key(), run.settings.result_fields()
        )
        try:
            done = checkpoints.open()
            batch_tiles = _batch_size(run, executor)
            _check_memory(run, executor, batch_tiles)
            check_value_range(run)
            choose_strategy(run)
            device = _device_label(run.config, executor)
            log.info(
                "%s of %dx%d source pixels (%d already done), %d iterations each, on %s",
                count(len(run.plan), "tile"),
                run.plan.tile_width,
                run.plan.tile_height,
                len(done),
                run.config.iterations,
                device,
            )
            progress.begin(
                name=run.output.name,
                tiles=len(run.plan),
                resumed=len(done),
                iterations=run.config.iterations,
                device=device,
            )
            pending = set(range(len(run.plan))) - done
            fitted, skipped = _fit_stage(
                run, pending, checkpoints, executor, progress, batch_tiles
            )
            facts = _write_stage(run, checkpoints, progress)
        except BaseException:
            if not checkpoints.done():
                checkpoints.remove()
            raise
        checkpoints.remove()
    if run.preview is not None:
        from .preview import write_preview

        write_preview(run, overwrite=run.request.overwrite)
    if skipped == len(run.plan):
        log.warning("every tile was skipped (nodata, outside the guide or AOI): output is empty")
    rmse = [f.cycle_rmse for f in facts.values()]
    devices = sorted({f.device for f in facts.values() if f.device}) or [device]
    report = UpscaleReport(
        output=run.output,
        tiles_total=len(run.plan),
        tiles_fitted=fitted,
        tiles_resumed=len(done),
        tiles_skipped=skipped,
        seconds=time.perf_counter() - started,
        mean_cycle_rmse=float(np.mean(rmse)) if rmse else float("nan"),
        device=",".join(devices),
        strategy=run.strategy_name,
        expected_gain=None if run.choice is None else run.choice.expected_gain,
    )
    progress.end(report.as_dict())
    return report


def upscale_raster(
    source: str | os.PathLike[str],
    guide: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    scale: int,
    config: FitConfig | None = None,
    executor: TileExecutor | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> UpscaleReport:
    """Super-resolve a raster band by ``scale`` with a high-resolution guide.

    ``options`` are the other fields of :class:`UpscaleRequest` (band, guide_bands,
    tile_size, overlap, aoi, dtype, nodata, creation_options, cog, overwrite, preview,
    record_paths). ``executor`` runs the tile fits (default: serially in this process);
    ``progress`` receives the progress (default: nothing is reported).
    """
    if "guide_bands" in options and options["guide_bands"] is not None:
        options["guide_bands"] = tuple(options["guide_bands"])
    request = UpscaleRequest(source, guide, scale, output=output, config=config, **options)
    with prepare(request) as run:
        check_output_free(run)
        return execute(run, executor, progress)


def _device_label(config: FitConfig, executor: TileExecutor) -> str:
    """The device tiles run on, as far as this process knows: resolved for in-process fits;
    workers elsewhere resolve "auto" themselves (a CPU-only login node may send tiles to GPU
    workers)."""
    if getattr(executor, "in_process", False):
        return str(resolve_device(config.device))
    return config.device


def _check_memory(run: PreparedRun, executor: TileExecutor, batch_tiles: int) -> None:
    """The memory guard (:mod:`mmsr_geo.memory`) for tiles fitted on this machine's CPU,
    ``batch_tiles`` at a time per local worker; tiles on a GPU or another machine are guarded
    there."""
    local = getattr(executor, "local_tiles", None)
    if local is None:
        return
    if getattr(executor, "in_process", False) and resolve_device(run.config.device).type != "cpu":
        return
    scale = run.grid.scale
    check_tile_memory(
        run.plan.tile_height * scale,
        run.plan.tile_width * scale,
        features=run.config.features,
        scale=scale,
        tile_size=run.plan.tile_size,
        concurrent=local * batch_tiles,
    )


def _jobs(
    run: PreparedRun, pending: set[int], on_skip: Callable[[int], None]
) -> Iterator[TileJob]:
    """Read each pending tile into a job, lazily; tiles without a valid output pixel are
    reported to ``on_skip`` (with their index) instead."""
    for tile in run.plan:
        if tile.index not in pending:
            continue
        job = None
        if tile_intersects(tile, run.aoi, run.grid.lr_transform):
            job = _read_job(run, tile.index, tile.lr_window)
        if job is None:
            on_skip(tile.index)
        else:
            yield job


def _read_job(run: PreparedRun, index: int, lr_window: Window) -> TileJob | None:
    """The job of one LR window (and its HR counterpart), or None when no output pixel of it
    would be valid (no source data, no guide, outside the AOI)."""
    grid, s = run.grid, run.grid.scale
    values, source_valid = read_band(run.source, run.band, lr_window)
    if not source_valid.any():
        return None
    hr_window = grid.hr_window(lr_window)
    hr_transform = window_transform(hr_window, grid.transform)
    guide_values, guide_valid = run.guide.read(hr_window)
    shape = guide_valid.shape
    covered = geometry_mask([run.common], out_shape=shape, transform=hr_transform, invert=True)
    usable = guide_valid | (guide_holes(guide_valid, max_hole_pixels(s)) & covered)
    output_valid = np.repeat(np.repeat(source_valid, s, axis=0), s, axis=1) & usable
    if run.aoi is not None:
        output_valid &= geometry_mask(
            [run.aoi], out_shape=shape, transform=hr_transform, invert=True
        )
    if not output_valid.any():
        return None
    return TileJob(
        index=index,
        lr_window=lr_window,
        hr_window=hr_window,
        source=values,
        source_valid=source_valid,
        guide=fill_guide(guide_values, guide_valid),
        output_valid=output_valid,
        scale=s,
        stats=run.statistics[0],
        config=dataclasses.replace(run.config, seed=run.config.seed + index),
    )


def _batch_size(run: PreparedRun, executor: TileExecutor) -> int:
    """Tiles per optimisation: as asked, else 1 on the CPU, from the free memory of a GPU fitted
    in this process, and 8 for GPU tiles fitted elsewhere (halved there if they do not fit).
    Decided once per run: free GPU memory moves, and the memory guard must check the batch
    size the fit stage then uses."""
    if run.request.batch_tiles is not None:
        return run.request.batch_tiles
    config, scale = run.config, run.grid.scale
    if getattr(executor, "in_process", False):
        device = str(resolve_device(config.device))
        return default_batch_tiles(
            device,
            run.plan.tile_height * scale,
            run.plan.tile_width * scale,
            config.features,
            config.precision,
        )
    return 8 if config.device.startswith("cuda") else 1


def batched(jobs: Iterable[TileJob], size: int) -> Iterator[list[TileJob]]:
    """Group jobs into batches of up to ``size`` tiles of one shape, lazily (at most ``size``
    jobs per shape held); tiles of other shapes (a raster smaller than a tile) form their own
    batches."""
    waiting: dict[Any, list[TileJob]] = {}
    for job in jobs:
        group = waiting.setdefault(job.shape_key, [])
        group.append(job)
        if len(group) >= size:
            yield waiting.pop(job.shape_key)
    yield from waiting.values()


def _fit_stage(
    run: PreparedRun,
    pending: set[int],
    checkpoints: TileCheckpoints,
    executor: TileExecutor,
    progress: Progress,
    batch_tiles: int,
) -> tuple[int, int]:
    """Run the pending tiles through the executor in batches of up to ``batch_tiles``,
    checkpointing each result; returns (tiles fitted, tiles skipped)."""
    skipped: list[int] = []

    def on_skip(index: int) -> None:
        skipped.append(index)
        progress.tile_finished(None)

    fn = (
        functools.partial(fit_tiles, progress=progress.iteration)
        if getattr(executor, "in_process", False)
        else fit_tiles
    )
    batches = batched(_jobs(run, pending, on_skip), batch_tiles)
    fitted = 0
    for results in executor.map_unordered(fn, batches):
        for result in results:
            checkpoints.save(result)
            fitted += 1
            log.debug(
                "tile %d fitted in %.1f s, cycle RMSE %.4g",
                result.index,
                result.seconds,
                result.cycle_rmse,
            )
            progress.tile_finished(result.seconds)
    return fitted, len(skipped)


class _TileCache:
    """A small LRU of checkpointed tile predictions, recording each tile's facts."""

    def __init__(self, checkpoints: TileCheckpoints, size: int = TILE_CACHE_SIZE) -> None:
        self._checkpoints = checkpoints
        self._size = size
        self._tiles: OrderedDict[int, np.ndarray] = OrderedDict()
        self.facts: dict[int, TileFacts] = {}

    def get(self, index: int) -> np.ndarray:
        if index in self._tiles:
            self._tiles.move_to_end(index)
            return self._tiles[index]
        prediction, facts = self._checkpoints.load(index)
        self.facts[index] = facts
        self._tiles[index] = prediction
        if len(self._tiles) > self._size:
            self._tiles.popitem(last=False)
        return prediction


def _blocks(width: int, height: int, size: int) -> list[Window]:
    return [
        Window(col, row, min(size, width - col), min(size, height - row))
        for row in range(0, height, size)
        for col in range(0, width, size)
    ]


def _blend_size(plan: TilePlan, block: int) -> int:
    """Blend windows: whole GTiff blocks, at least one tile stride wide, so each checkpoint
    is loaded only a few times."""
    stride = max(1, plan.tile_size - plan.overlap) * plan.scale
    return block * max(1, math.ceil(stride / block))


def _write_stage(
    run: PreparedRun, checkpoints: TileCheckpoints, progress: Progress
) -> dict[int, TileFacts]:
    """Blend the checkpointed tiles block by block into the output (placed atomically);
    returns the facts of every tile."""
    done = checkpoints.done()
    plan, grid = run.plan, run.grid
    block = int(run.profile.get("blockxsize", BLOCK_SIZE))
    cache = _TileCache(checkpoints)
    ramp = plan.overlap * plan.scale
    counts = EncodeCounts()
    windows = _blocks(grid.width, grid.height, _blend_size(plan, block))
    with atomic_raster(
        run.output,
        run.profile,
        overwrite=run.request.overwrite,
        cog=run.request.cog,
        cog_options=run.cog_options,
    ) as dst:
        for number, window in enumerate(windows, start=1):
            contributions = [
                (tile.hr_window, cache.get(tile.index))
                for tile in plan.tiles_touching(window)
                if tile.index in done
            ]
            values, valid = blend_block(window, contributions, ramp)
            stored, block_counts = run.encoding.encode(values, valid)
            counts.add(block_counts)
            dst.write(stored, 1, window=window)
            progress.blocks_written(number, len(windows))
        dst.update_tags(**provenance_tags(run.settings.record(), _run_facts(run, cache)))
        description = run.source.descriptions[run.band - 1] or f"band {run.band}"
        dst.set_band_description(1, f"{description} x{grid.scale} (MMSR)")
        units = run.source.units[run.band - 1] if run.source.units else None
        if units:
            dst.set_band_unit(1, units)
        if (run.encoding.scale, run.encoding.offset) != (1.0, 0.0):
            dst.scales = (run.encoding.scale,)
            dst.offsets = (run.encoding.offset,)
    _report_counts(counts, run.encoding)
    return cache.facts


def _run_facts(run: PreparedRun, cache: _TileCache) -> dict[str, Any]:
    """Facts of the result for the ``MMSR_RUN`` tag: the strategy (and, when ``auto`` chose
    it, every candidate's score one scale down), devices, precisions, tiles with data, cycle
    RMSE, iterations used.

    Only what the result determines (no timings, no count of resumed tiles), so a resumed
    run writes the very bytes of an uninterrupted one.
    """
    facts = list(cache.facts.values())
    iterations = [f.iterations for f in facts]
    return {
        "strategy": run.strategy_name,
        "selection": None if run.choice is None else run.choice.scores,
        "devices": sorted({f.device for f in facts if f.device}),
        "precisions": sorted({f.precision for f in facts}),
        "tiles_with_data": len(facts),
        "mean_cycle_rmse": float(np.mean([f.cycle_rmse for f in facts])) if facts else None,
        "iterations": {
            "min": int(np.min(iterations)),
            "median": float(np.median(iterations)),
            "max": int(np.max(iterations)),
        }
        if facts
        else None,
    }


def _report_counts(counts: EncodeCounts, encoding: OutputEncoding) -> None:
    if counts.clipped:
        lo, hi = encoding.physical_range()
        log.warning(
            "%d valid output pixels were outside what %s holds (%.6g to %.6g) and were clipped",
            counts.clipped,
            encoding.dtype,
            lo,
            hi,
        )
    if counts.moved_off_nodata:
        log.warning(
            "%d valid output pixels were predicted exactly as the nodata value %g and were "
            "moved one step off it (choose another --nodata to avoid this)",
            counts.moved_off_nodata,
            encoding.nodata,
        )
