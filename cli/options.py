"""Option groups shared by ``upscale``, ``batch`` and ``rio mmsr upscale``: one definition
each, so names, units, defaults and help texts cannot drift between commands.

Where rio has a name for the same thing, it is accepted too (``-b/--bidx`` for ``--band``,
``-t`` for ``--dtype``, ``--co NAME=VALUE`` as ``rio --co``), so ``rio`` users need learn no
new spelling; rio's own pieces are used where their meaning is the same (the INPUT OUTPUT
handling and ``-o/--output`` of ``rio mmsr upscale``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mmsr_geo.consistency import CONSISTENCY_MODES, DEFAULT_CONSISTENCY
from mmsr_geo.distributed import executor_from_options
from mmsr_geo.executors import TileExecutor
from mmsr_geo.fit_config import PRECISIONS, FitConfig
from mmsr_geo.presets import PRESETS
from mmsr_geo.registration import REGISTER_MODES
from mmsr_geo.run import FIT_MODES, UpscaleRequest
from mmsr_geo.strategies import AUTO, SCHEDULES
from mmsr_geo.writer import DTYPES

from .params import BAND_LIST, BATCH_TILES, CREATION_OPTION, DEVICE, SCALE

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _group(*options: Decorator) -> Decorator:
    def apply(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            func = option(func)
        return func

    return apply


scale_option = click.option(
    "-s",
    "--scale",
    type=SCALE,
    required=True,
    help="Integer factor >= 2 (e.g. 4 or x4): output pixels are the source's divided by it.",
)

register_option = click.option(
    "--register",
    type=click.Choice(REGISTER_MODES),
    default="auto",
    show_default=True,
    help="auto: find how far the guide's content is displaced from the source (from the "
    "data: the source's structure against the pooled guide) and move it back when the "
    "estimate is trusted; the offset is logged and recorded in the tags (README, "
    "'Misregistered guides'). off: use the guide as given.",
)

consistency_option = click.option(
    "--consistency",
    type=click.Choice(CONSISTENCY_MODES),
    default=DEFAULT_CONSISTENCY,
    show_default=True,
    help="exact: move the output so that every output block averages to its source pixel "
    "(to float round-off; the residual spread smoothly, no block edges), as volumes and "
    "mass balance need; it lowered RMSE on every benchmark pair (README, 'Exact source "
    "consistency'). off: the fit's output as it is (it averages back only approximately).",
)

fit_options = _group(
    click.option(
        "--preset",
        type=click.Choice(sorted(PRESETS)),
        default="remote-sensing",
        show_default=True,
        help="Filter neighbourhoods: depth 11/5 (depth maps), remote-sensing 5/3 "
        "(DEM, DSM, thermal).",
    ),
    click.option(
        "--schedule",
        type=click.Choice(SCHEDULES),
        default=AUTO,
        show_default=True,
        help="How each tile's fit spends its iterations. auto: chosen per raster from the data: "
        "both candidates are fitted on the source pooled once more, and the fit that starts "
        "from bicubic (residual-cosine) is kept unless the fit from scratch (cosine-avg) "
        "reproduces the source more than 5% better (README, 'What it does'); paper: the "
        "paper's exact fit (1000 iterations, step decay); or one strategy by name.",
    ),
    click.option(
        "--iterations",
        type=click.IntRange(min=1),
        help="Optimisation steps per tile, or of the raster-level training [default: the "
        "schedule's: auto 300 (1000 with the depth preset), paper 1000].",
    ),
    click.option(
        "--fit",
        "fit_mode",
        type=click.Choice(FIT_MODES),
        default="auto",
        show_default=True,
        help="How tiles get their network. tile: a network fitted to every tile (the "
        "paper's per-image fit; cost grows with the area); raster: one network trained on "
        "crops sampled across the raster, then a forward pass per tile (a fixed training "
        "cost); hybrid: that network as the start of a short fit of every tile (--finetune); "
        "auto: raster when fitting every tile would cost 4x the raster-level fit or more, "
        "else tile (README, 'Fit modes').",
    ),
    click.option(
        "--crop-size",
        type=click.IntRange(min=4),
        help="Raster-level training: crop edge in SOURCE pixels [default: about 96 output "
        "pixels, e.g. 24 at x4].",
    ),
    click.option(
        "--crops-per-step",
        type=click.IntRange(min=1),
        help="Raster-level training: crops optimised together in every step [default: 2].",
    ),
    click.option(
        "--level-sigma",
        type=click.FloatRange(min=0, min_open=True),
        help="Raster-level training: the network works around the source's local level, a "
        "Gaussian mean of this sigma in SOURCE pixels (3 measured best), for a raster of very "
        "different scenes; it made one DEM worse (README, 'Fit modes') [default: off].",
    ),
    click.option(
        "--finetune",
        type=click.IntRange(min=1),
        help="Hybrid fit: iterations of every tile's fit from the raster network [default: a "
        "tenth of the schedule's iterations].",
    ),
    register_option,
    click.option(
        "--features",
        type=click.IntRange(min=1),
        default=64,
        show_default=True,
        help="Hidden feature channels of the network (fewer: faster, coarser).",
    ),
    click.option(
        "--seed",
        type=int,
        default=0,
        show_default=True,
        help="Random seed; tile i uses seed + i, so reruns give the same output.",
    ),
    click.option(
        "--device",
        type=DEVICE,
        default="auto",
        show_default=True,
        help="auto (first GPU if any, else CPU), cpu, cuda or cuda:N.",
    ),
    click.option(
        "--precision",
        type=click.Choice(PRECISIONS),
        default="auto",
        show_default=True,
        help="fp32; tf32 (TensorFloat-32 convolutions on GPUs that have them); bf16 "
        "(bfloat16 autocast, float32 weights and loss); auto: tf32 on CUDA, fp32 on the CPU. "
        "BENCHMARKS.md gives the RMSE each costs.",
    ),
)

raster_options = _group(
    click.option(
        "-b",
        "--band",
        "--bidx",
        "band",
        type=click.IntRange(min=1),
        help="Source band to super-resolve, from 1 (required if it has several).",
    ),
    click.option(
        "--guide-bands",
        type=BAND_LIST,
        help="Guide bands, e.g. 1,2,3 or 4,3,2 [default: all except alpha].",
    ),
    click.option(
        "--tile-size",
        type=click.IntRange(min=4),
        help="Tile edge in SOURCE pixels; an output tile is scale times larger and its memory "
        "grows with its output pixels (up to 13 KiB each on the CPU) [default: about 256 "
        "output pixels, e.g. 64 at x4].",
    ),
    click.option(
        "--overlap",
        type=click.IntRange(min=0),
        help="Overlap of neighbouring tiles in SOURCE pixels, blended smoothly [default: about "
        "32 output pixels, e.g. 8 at x4].",
    ),
    click.option(
        "--aoi",
        help="Area of interest: a GeoJSON file or http(s) URL (RFC 7946 lon/lat, EPSG:4326, "
        "unless it names a crs) or a WKT polygon in the SOURCE's CRS. Outside it: nodata.",
    ),
)

output_options = _group(
    click.option(
        "-t",
        "--dtype",
        type=click.Choice(DTYPES),
        default="float32",
        show_default=True,
        help="Output data type.",
    ),
    click.option(
        "--nodata",
        type=float,
        help="Output nodata value [default: the source's, else -9999 for floats].",
    ),
    consistency_option,
    click.option(
        "--confidence",
        is_flag=True,
        help="Also write OUTPUT_confidence.tif, a per-pixel uncertainty band on the output's "
        "grid in the source's units: the local |output - bicubic upsampling of the source|, "
        "high where the guide moved the output far from interpolation, where errors "
        "concentrate (README, 'Confidence band').",
    ),
    click.option(
        "--co",
        "creation_options",
        type=CREATION_OPTION,
        multiple=True,
        help="GDAL creation option NAME=VALUE (repeatable), e.g. --co COMPRESS=ZSTD.",
    ),
    click.option("--cog", is_flag=True, help="Write Cloud Optimized GeoTIFFs (GDAL COG driver)."),
    click.option(
        "--record-paths",
        is_flag=True,
        help="Record the inputs' full paths in the output's tags (by default only file names "
        "and content fingerprints, so outputs do not reveal where data is kept).",
    ),
)

guide_option = click.option(
    "-g",
    "--guide",
    required=True,
    help="High-resolution guide raster (RGB, RGBNIR, ...), on any grid or CRS; a file, URL "
    "or GDAL path.",
)

overwrite_option = click.option("--overwrite", is_flag=True, help="Replace an existing output.")

preview_option = click.option(
    "--preview",
    type=click.Path(path_type=Path),
    help="Also write a quick-look PNG (guide, LR, SR, hillshades); checked before any work, "
    "replaced only with --overwrite.",
)

threads_option = click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="CPU threads for fitting, shared by the --workers [default: the cores this process "
    "may use]. Two runs on one machine each run best with half the cores.",
)

executor_options = _group(
    threads_option,
    click.option(
        "--batch-tiles",
        type=BATCH_TILES,
        default="auto",
        show_default=True,
        help="Tiles optimised together in one batched step (each keeps its own network): "
        "1 on the CPU, from the free memory on a GPU (halved automatically if it runs out).",
    ),
    click.option(
        "--workers",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        help="Local worker processes fitting tiles in parallel (1: in this process).",
    ),
    click.option(
        "--scheduler",
        metavar="tcp://HOST:PORT",
        help="Run tiles as tasks on this existing Dask scheduler.",
    ),
    click.option(
        "--scheduler-file",
        type=click.Path(path_type=Path, dir_okay=False),
        help="Dask scheduler file (dask scheduler --scheduler-file, dask-jobqueue).",
    ),
    click.option(
        "--gpu-per-task",
        is_flag=True,
        help="Each Dask task asks for one GPU worker resource (workers started with "
        "--resources GPU=1); implied by --device cuda with a scheduler.",
    ),
)


upscale_options = _group(
    guide_option,
    scale_option,
    raster_options,
    fit_options,
    output_options,
    overwrite_option,
    preview_option,
    executor_options,
)
"""Every option of one raster's run after SOURCE and OUTPUT, as ``upscale`` and ``rio mmsr
upscale`` take them (see :func:`build_request` and :func:`open_executor`)."""


FIT_CONFIG_OPTIONS = ("preset", "features", "seed", "device", "precision")
"""The options of ``fit_options`` that make the base :class:`FitConfig` (``--schedule`` and
``--iterations`` go with it into the request and size it to a strategy)."""
REQUEST_FIELDS = frozenset(f.name for f in dataclasses.fields(UpscaleRequest))
EXECUTOR_OPTIONS = ("scheduler", "scheduler_file", "workers", "gpu_per_task", "threads")


def build_request(
    source: str | os.PathLike[str],
    guide: str | os.PathLike[str],
    output: str | os.PathLike[str] | None,
    options: dict[str, Any],
) -> UpscaleRequest:
    """The one place the command line's options become an :class:`UpscaleRequest`: the
    options that describe the request are taken out of ``options`` (the executor's and the
    command's own stay in it)."""
    preset, features, seed, device, precision = (options.pop(k) for k in FIT_CONFIG_OPTIONS)
    config = FitConfig.from_preset(
        preset, features=features, seed=seed, device=device, precision=precision
    )
    fields = {name: options.pop(name) for name in list(options) if name in REQUEST_FIELDS}
    fields["creation_options"] = dict(fields.get("creation_options", ()))
    return UpscaleRequest(source, guide, output=output, config=config, **fields)


def open_executor(
    options: dict[str, Any], config: FitConfig
) -> contextlib.AbstractContextManager[TileExecutor]:
    """The executor ``executor_options`` describe (taken out of ``options``): a Dask
    scheduler, local worker processes or this process; with ``--device cuda`` each Dask task
    asks for a GPU."""
    scheduler, scheduler_file, workers, gpu_per_task, threads = (
        options.pop(k) for k in EXECUTOR_OPTIONS
    )
    return executor_from_options(
        scheduler,
        str(scheduler_file) if scheduler_file else None,
        workers,
        gpu_per_task or config.device.startswith("cuda"),
        threads,
    )
