"""``mmsr-geo upscale``: super-resolve one raster with a guide (a thin layer over
:func:`mmsr_geo.pipeline.upscale_raster`)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import click

from mmsr_geo.fit import FitConfig
from mmsr_geo.pipeline import upscale_raster
from mmsr_geo.presets import PRESETS, preset_kernels
from mmsr_geo.writer import DTYPES

from .common import reporting_command
from .params import BAND_LIST, CREATION_OPTION, DEVICE, SCALE

EXAMPLES = """
\b
Examples:
  mmsr-geo upscale dem_2m.tif ortho_25cm.tif -s 8 -o dem_25cm.tif
  mmsr-geo upscale thermal.tif rgbn.tif -s 4 --guide-bands 1,2,3,4 --cog --preview check.png
  mmsr-geo upscale dsm.tif rgb.tif -s 4 --aoi site.geojson --co COMPRESS=ZSTD
"""


@click.command(
    "upscale",
    epilog=EXAMPLES,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("guide", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Output GeoTIFF [default: SOURCE_x<scale>.tif beside the source].",
)
@click.option(
    "-s",
    "--scale",
    type=SCALE,
    required=True,
    help="Integer factor >= 2: output pixels are the source's divided by it.",
)
@click.option("--band", type=int, help="Source band to super-resolve (required if it has several).")
@click.option(
    "--guide-bands", type=BAND_LIST, help="Guide bands, e.g. 1,2,3 [default: all except alpha]."
)
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    default="remote-sensing",
    show_default=True,
    help="Filter kernels: depth 11/5, remote-sensing 5/3 (DEM, DSM, thermal).",
)
@click.option(
    "--iterations",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Optimisation steps per tile.",
)
@click.option(
    "--features",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Hidden feature channels of the network (fewer: faster, coarser).",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Random seed; tile i uses seed + i."
)
@click.option(
    "--device", type=DEVICE, default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."
)
@click.option(
    "--tile-size",
    type=click.IntRange(min=4),
    default=64,
    show_default=True,
    help="Tile edge in SOURCE pixels (an output tile is scale times larger).",
)
@click.option(
    "--overlap",
    type=click.IntRange(min=0),
    default=8,
    show_default=True,
    help="Overlap of neighbouring tiles in SOURCE pixels, blended smoothly.",
)
@click.option(
    "--aoi",
    help="Area of interest: a GeoJSON file (RFC 7946 lon/lat, EPSG:4326, unless it "
    "names a crs) or a WKT polygon in the SOURCE's CRS. Outside it: nodata.",
)
@click.option(
    "--dtype",
    type=click.Choice(DTYPES),
    default="float32",
    show_default=True,
    help="Output data type.",
)
@click.option(
    "--nodata", type=float, help="Output nodata [default: the source's, else -9999 for floats]."
)
@click.option(
    "--co",
    "creation_options",
    type=CREATION_OPTION,
    multiple=True,
    help="GDAL creation option NAME=VALUE (repeatable), e.g. --co COMPRESS=ZSTD.",
)
@click.option("--cog", is_flag=True, help="Write a Cloud Optimized GeoTIFF.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option(
    "--preview",
    type=click.Path(path_type=Path),
    help="Also write a quick-look PNG (guide, LR, SR, hillshades).",
)
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
    quiet: bool,
) -> None:
    """Super-resolve SOURCE (e.g. a DEM) by --scale using the high-resolution GUIDE image.

    The output has the source's CRS and bounds with pixels --scale times smaller. The guide may
    be on any grid or CRS overlapping the source: it is warped onto the output grid tile by
    tile. Tiles are fitted one by one and checkpointed beside the output
    (OUTPUT.mmsr-work/): rerun the same command after a crash or Ctrl-C to resume.
    """
    kernels = preset_kernels(preset)
    config = FitConfig(
        iterations=iterations,
        s2g_kernel=kernels.s2g,
        g2s_kernel=kernels.g2s,
        features=features,
        seed=seed,
        device=device,
    )
    pipeline_log = logging.getLogger("mmsr_geo.pipeline")
    if not quiet and pipeline_log.getEffectiveLevel() > logging.INFO:
        pipeline_log.setLevel(logging.INFO)  # the tile count and device are always worth seeing
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
