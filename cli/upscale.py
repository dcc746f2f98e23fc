"""``mmsr-geo upscale``: super-resolve one raster with a guide (a thin layer over
:func:`mmsr_geo.pipeline.upscale_raster`)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import click

from mmsr_geo.distributed import executor_from_options
from mmsr_geo.pipeline import UpscaleRequest, check_output_free, execute, prepare
from mmsr_geo.progress import JsonProgress, Progress, count

from .common import reporting_command
from .options import (
    executor_options,
    fit_config,
    fit_options,
    output_options,
    raster_options,
    scale_option,
)

EXAMPLES = """
\b
Examples:
  # 2 m DEM + 50 cm orthophoto -> 50 cm DEM
  mmsr-geo upscale dem_2m.tif --guide ortho_50cm.tif --scale 4 -o dem_50cm.tif
  # thermal x5 with a 4-band guide, Cloud Optimized GeoTIFF and a quick-look PNG
  mmsr-geo upscale lst.tif --guide rgbn.tif -s 5 --guide-bands 1,2,3,4 --cog --preview look.png
  # only inside an area, ZSTD compression, on the GPU
  mmsr-geo upscale dsm.tif -g rgb.tif -s 4 --aoi site.geojson --co COMPRESS=ZSTD --device cuda
"""


@click.command(
    "upscale",
    epilog=EXAMPLES,
    short_help="Super-resolve one raster with a high-resolution guide.",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.argument("source")
@click.option(
    "-g",
    "--guide",
    required=True,
    help="High-resolution guide raster (RGB, RGBNIR, ...), on any grid or CRS; a file, URL "
    "or GDAL path.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Output GeoTIFF (.tif) [default: SOURCE_x<scale>.tif beside a local source, in the "
    "current folder for a remote one].",
)
@scale_option
@raster_options
@fit_options
@output_options
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option(
    "--preview",
    type=click.Path(path_type=Path),
    help="Also write a quick-look PNG (guide, LR, SR, hillshades); checked before any work, "
    "replaced only with --overwrite.",
)
@executor_options
@reporting_command
def upscale(
    source: str,
    guide: str,
    output: Path | None,
    scale: int,
    band: int | None,
    guide_bands: tuple[int, ...] | None,
    preset: str,
    iterations: int,
    features: int,
    seed: int,
    device: str,
    precision: str,
    tile_size: int | None,
    overlap: int | None,
    aoi: str | None,
    dtype: str,
    nodata: float | None,
    creation_options: tuple[tuple[str, str], ...],
    cog: bool,
    record_paths: bool,
    overwrite: bool,
    preview: Path | None,
    threads: int | None,
    batch_tiles: int | None,
    workers: int,
    scheduler: str | None,
    scheduler_file: Path | None,
    gpu_per_task: bool,
    quiet: bool,
    progress: Progress,
) -> None:
    """Super-resolve SOURCE (a DEM, DSM, thermal or depth raster) by --scale with --guide.

    SOURCE and GUIDE are files, URLs or GDAL paths (https://..., s3://..., /vsizip/...,
    .vrt). The output has the source's CRS and bounds with pixels --scale times smaller. The
    guide may be on any grid or CRS overlapping the source: it is warped onto the output grid
    tile by tile. Tiles are fitted one by one (or by --workers / a Dask --scheduler) and
    checkpointed beside the output (OUTPUT.mmsr-work/): rerun the same command after a crash
    or Ctrl-C to resume. The output is written under a temporary name and put in place when
    complete; an existing file is only replaced with --overwrite.
    """
    config = fit_config(preset, iterations, features, seed, device, precision)
    pipeline_log = logging.getLogger("mmsr_geo.pipeline")
    if not quiet and pipeline_log.getEffectiveLevel() > logging.INFO:
        pipeline_log.setLevel(logging.INFO)  # the tile count and device are always worth seeing
    request = UpscaleRequest(
        source,
        guide,
        scale,
        output=output,
        config=config,
        band=band,
        guide_bands=guide_bands,
        tile_size=tile_size,
        overlap=overlap,
        aoi=aoi,
        dtype=dtype,
        nodata=nodata,
        creation_options=dict(creation_options),
        cog=cog,
        overwrite=overwrite,
        preview=preview,
        record_paths=record_paths,
        batch_tiles=batch_tiles,
    )
    with prepare(request) as run:
        check_output_free(run)
        with executor_from_options(
            scheduler,
            str(scheduler_file) if scheduler_file else None,
            workers,
            gpu_per_task or device.startswith("cuda"),
            threads,
        ) as executor:
            report = execute(run, executor, progress)
    if not quiet and not isinstance(progress, JsonProgress):
        rmse = (
            f", mean cycle RMSE {report.mean_cycle_rmse:.4g}"
            if not math.isnan(report.mean_cycle_rmse)
            else ""
        )
        click.echo(
            f"Wrote {report.output}: {count(report.tiles_total, 'tile')} "
            f"({report.tiles_fitted} fitted, {report.tiles_resumed} resumed, "
            f"{report.tiles_skipped} skipped) in {report.seconds:.1f} s on {report.device}{rmse}",
            err=True,
        )


if __name__ == "__main__":
    upscale()
