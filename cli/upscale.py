"""``mmsr-geo upscale``: super-resolve one raster with a guide (a thin layer over
:func:`mmsr_geo.pipeline.upscale_raster`)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import click

from mmsr_geo.distributed import executor_from_options
from mmsr_geo.pipeline import upscale_raster

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
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "-g",
    "--guide",
    type=click.Path(path_type=Path),
    required=True,
    help="High-resolution guide raster (RGB, RGBNIR, ...), on any grid or CRS.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Output GeoTIFF [default: SOURCE_x<scale>.tif beside the source].",
)
@scale_option
@raster_options
@fit_options
@output_options
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option(
    "--preview",
    type=click.Path(path_type=Path),
    help="Also write a quick-look PNG (guide, LR, SR, hillshades).",
)
@executor_options
@reporting_command
def upscale(
    source: Path,
    guide: Path,
    output: Path | None,
    scale: int,
    band: int | None,
    guide_bands: tuple[int, ...] | None,
    preset: str,
    iterations: int,
    features: int,
    seed: int,
    device: str,
    tile_size: int,
    overlap: int,
    aoi: str | None,
    dtype: str,
    nodata: float | None,
    creation_options: tuple[tuple[str, str], ...],
    cog: bool,
    overwrite: bool,
    preview: Path | None,
    workers: int,
    scheduler: str | None,
    scheduler_file: Path | None,
    gpu_per_task: bool,
    quiet: bool,
) -> None:
    """Super-resolve SOURCE (a DEM, DSM, thermal or depth raster) by --scale with --guide.

    The output has the source's CRS and bounds with pixels --scale times smaller. The guide may
    be on any grid or CRS overlapping the source: it is warped onto the output grid tile by
    tile. Tiles are fitted one by one (or by --workers / a Dask --scheduler) and checkpointed
    beside the output (OUTPUT.mmsr-work/): rerun the same command after a crash or Ctrl-C to
    resume. The output is written under a temporary name and renamed when complete.
    """
    config = fit_config(preset, iterations, features, seed, device)
    pipeline_log = logging.getLogger("mmsr_geo.pipeline")
    if not quiet and pipeline_log.getEffectiveLevel() > logging.INFO:
        pipeline_log.setLevel(logging.INFO)  # the tile count and device are always worth seeing
    with executor_from_options(
        scheduler,
        str(scheduler_file) if scheduler_file else None,
        workers,
        gpu_per_task or device.startswith("cuda"),
    ) as executor:
        report = upscale_raster(
            source,
            guide,
            output,
            scale=scale,
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
            executor=executor,
            show_progress=not quiet,
        )
    if not quiet:
        rmse = (
            f", mean cycle RMSE {report.mean_cycle_rmse:.4g}"
            if not math.isnan(report.mean_cycle_rmse)
            else ""
        )
        click.echo(
            f"Wrote {report.output}: {report.tiles_total} tiles ({report.tiles_fitted} fitted, "
            f"{report.tiles_resumed} resumed, {report.tiles_skipped} skipped) in "
            f"{report.seconds:.1f} s on {report.device}{rmse}",
            err=True,
        )


if __name__ == "__main__":
    upscale()
