"""``mmsr-geo upscale`` and ``rio mmsr upscale``: super-resolve one raster with a guide (thin
layers over :mod:`mmsr_geo.run`).

The two commands differ only in how SOURCE and OUTPUT are given (``mmsr-geo``: SOURCE and an
optional ``-o``; ``rio``: ``INPUT OUTPUT`` or ``INPUT -o OUTPUT``, as every rio command); the
options come from one group (:data:`~mmsr_geo_cli.options.upscale_options`) and the work from
one function, :func:`run_upscale`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path
from typing import Any

import click
from rasterio.rio import options as rio_options
from rasterio.rio.helpers import resolve_inout

from mmsr_geo.progress import JsonProgress, Progress, count
from mmsr_geo.run import check_output_free, execute, plan_run
from mmsr_geo.selection import gain_words

from .common import reporting_command
from .options import build_request, open_executor, upscale_options

EXAMPLES = """
\b
Examples:
  # 2 m DEM + 50 cm orthophoto -> 50 cm DEM
  mmsr-geo upscale dem_2m.tif --guide ortho_50cm.tif --scale 4 -o dem_50cm.tif
  # thermal x5 with a 4-band guide, Cloud Optimized GeoTIFF and a quick-look PNG
  mmsr-geo upscale lst.tif --guide rgbn.tif -s 5 --guide-bands 1,2,3,4 --cog --preview look.png
  # only inside an area, ZSTD compression, on the GPU
  mmsr-geo upscale dsm.tif -g rgb.tif -s 4 --aoi site.geojson --co COMPRESS=ZSTD --device cuda
  # a COG on a web server and a guide in a bucket, read by HTTP ranges; the output is local
  mmsr-geo upscale https://example.org/dem.tif -g s3://bucket/rgb.tif -s 2 -o dem_x2.tif
"""

RIO_EXAMPLES = """
\b
Examples:
  rio mmsr upscale dem_2m.tif dem_50cm.tif --guide ortho_50cm.tif --scale 4
  rio mmsr upscale https://example.org/dem.tif -o dem_x2.tif -g rgb.vrt -s 2 --co COMPRESS=ZSTD
  # rio's AWS session options apply to the inputs
  rio --aws-no-sign-requests mmsr upscale s3://bucket/dem.tif out.tif -g s3://bucket/rgb.tif -s 2

See 'mmsr-geo upscale --help': the same options, defaults and behaviour.
"""

SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def run_upscale(
    source: str,
    guide: str,
    output: str | os.PathLike[str] | None,
    *,
    quiet: bool,
    progress: Progress,
    **options: Any,
) -> None:
    """The run both commands make: the request from the options (those of
    :data:`~mmsr_geo_cli.options.upscale_options`), then plan, refuse an existing output,
    execute on the chosen executor, and a one-line summary."""
    request = build_request(source, guide, output, options)
    run_log = logging.getLogger("mmsr_geo.run")
    if not quiet and run_log.getEffectiveLevel() > logging.INFO:
        run_log.setLevel(logging.INFO)  # the tile count and device are always worth seeing
    with plan_run(request) as plan:
        check_output_free(plan)
        with open_executor(options, request.config) as executor:
            report = execute(plan, executor, progress)
    if not quiet and not isinstance(progress, JsonProgress):
        rmse = (
            f", mean cycle RMSE {report.mean_cycle_rmse:.4g}"
            if not math.isnan(report.mean_cycle_rmse)
            else ""
        )
        gain = (
            f", expected {gain_words(report.expected_gain)}"
            if report.expected_gain is not None
            else ""
        )
        click.echo(
            f"Wrote {report.output}: {count(report.tiles_total, 'tile')} "
            f"({report.tiles_fitted} fitted, {report.tiles_resumed} resumed, "
            f"{report.tiles_skipped} skipped) in {report.seconds:.1f} s on {report.device}, "
            f"schedule {report.strategy}{gain}{rmse}"
            + (f"; uncertainty band {report.confidence}" if report.confidence else ""),
            err=True,
        )


@click.command(
    "upscale",
    epilog=EXAMPLES,
    short_help="Super-resolve one raster with a high-resolution guide.",
    context_settings=SETTINGS,
)
@click.argument("source")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Output GeoTIFF (.tif) [default: SOURCE_x<scale>.tif beside a local source, in the "
    "current folder for a remote one].",
)
@upscale_options
@reporting_command
def upscale(source: str, output: Path | None, guide: str, **options: Any) -> None:
    """Super-resolve SOURCE (a DEM, DSM, thermal or depth raster) by --scale with --guide.

    SOURCE and GUIDE are files, URLs or GDAL paths (https://..., s3://..., /vsizip/...,
    .vrt); the output is a local file. The output has the source's CRS and bounds with pixels
    --scale times smaller. The guide may be on any grid or CRS overlapping the source: it is
    warped onto the output grid tile by tile. Tiles are fitted one by one (or by --workers / a
    Dask --scheduler) and checkpointed beside the output (OUTPUT.mmsr-work/): rerun the same
    command after a crash or Ctrl-C to resume. The output is written under a temporary name
    and put in place when complete; an existing file is only replaced with --overwrite.
    """
    run_upscale(source, guide, output, **options)


@click.command(
    "upscale",
    epilog=RIO_EXAMPLES,
    short_help="Super-resolve one raster with a high-resolution guide (MMSR).",
    context_settings=SETTINGS,
)
@click.argument(  # rio's files_inout_arg, with a usage line that says there is one input
    "files",
    nargs=-1,
    type=click.Path(),
    required=True,
    metavar="INPUT [OUTPUT]",
    callback=rio_options.files_inout_handler,
)
@rio_options.output_opt
@upscale_options
@reporting_command
def rio_upscale(files: tuple[str, ...], output: str | None, guide: str, **options: Any) -> None:
    """Super-resolve INPUT (a DEM, DSM, thermal or depth raster) by --scale with --guide into
    OUTPUT, a GeoTIFF with the input's CRS and bounds and pixels --scale times smaller.

    INPUT and GUIDE are files, URLs or GDAL paths (https://..., s3://..., /vsizip/..., .vrt);
    OUTPUT is a local file, given last or with -o. This is 'mmsr-geo upscale' with rio's way of
    naming files: the same options, checkpoints and resume, and rio's --aws-* session options
    apply to the inputs. An existing OUTPUT is only replaced with --overwrite.
    """
    if len(files) == 1 and output is None:
        raise click.UsageError("give OUTPUT after INPUT, or -o OUTPUT")
    # OUTPUT's existence is checked by the plan (as for mmsr-geo), after the inputs
    output, inputs = resolve_inout(files=files, output=output, overwrite=True, num_inputs=1)
    obj = click.get_current_context().obj
    env = obj.get("env") if isinstance(obj, dict) else None  # rio's GDAL/AWS session
    with env if env is not None else contextlib.nullcontext():
        run_upscale(inputs[0], guide, output, **options)


if __name__ == "__main__":
    upscale()
