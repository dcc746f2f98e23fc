"""``mmsr-geo batch``: super-resolve many (source, guide) pairs with the same settings (a thin
layer over :func:`mmsr_geo.batch.run_batch`, with one template request for every pair)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import click

from mmsr_geo.batch import (
    DFC_GUIDE_RULE,
    INDEX_NAME,
    REPORT_NAME,
    GuideRule,
    PairRecord,
    pairs_from_glob,
    pairs_from_manifest,
    run_batch,
)
from mmsr_geo.errors import MmsrGeoError
from mmsr_geo.progress import JsonProgress, Progress, count
from mmsr_geo.raster_io import is_remote, remote_name

from .common import reporting_command
from .options import (
    build_request,
    executor_options,
    fit_options,
    open_executor,
    output_options,
    raster_options,
    scale_option,
)

EXAMPLES = """
\b
Examples:
  # Data Fusion Contest names (JAX_004_006_DSM.tif -> JAX_004_006_RGB.tif) out of the box
  mmsr-geo batch 'dfc/*_DSM.tif' -s 2 -o results/
  # guides in another folder, named dem_<id>.tif -> ortho_<id>.tif
  mmsr-geo batch 'dem/*.tif' --guide-pattern 's/^dem_/ortho_/' --guide-dir ortho/ -s 4 -o out/
  # explicit pairs (CSV: source,guide[,output]) on a Dask cluster of GPU workers
  mmsr-geo batch --manifest pairs.csv -s 2 -o out/ --device cuda --scheduler tcp://head:8786
"""


def _echo_pair(number: int, total: int, record: PairRecord) -> None:
    name = remote_name(record.source) if is_remote(record.source) else Path(record.source).name
    if record.status == "failed":
        line = f"failed: {record.error}"
    elif record.status == "skipped":
        line = "skipped (output done with the same settings)"
    elif record.status == "outdated":
        line = f"outdated: {record.error}"
    else:
        rmse = (
            f", cycle RMSE {record.cycle_rmse:.4g}"
            if record.cycle_rmse is not None and not math.isnan(record.cycle_rmse)
            else ""
        )
        line = (
            f"ok: {count(record.tiles_total or 0, 'tile')} ({record.tiles_fitted} fitted, "
            f"{record.tiles_resumed} resumed) in {record.seconds:.1f} s{rmse}"
        )
    click.echo(f"[{number}/{total}] {name}: {line}", err=True)


@click.command(
    "batch",
    epilog=EXAMPLES,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.argument("sources", nargs=-1, metavar="[SOURCES]...")
@click.option(
    "--manifest",
    type=click.Path(path_type=Path, dir_okay=False),
    help="CSV of pairs: source,guide[,output] (header optional; relative paths are relative "
    "to the CSV; sources and guides may be URLs or GDAL paths, outputs are local). Instead of "
    "SOURCES.",
)
@click.option(
    "--guide-pattern",
    default=DFC_GUIDE_RULE,
    show_default=True,
    metavar="s/REGEX/REPLACEMENT/",
    help="How a source's file name becomes its guide's: a sed-style substitution with a "
    "Python regex (\\1 for groups, first match only; any delimiter after 's'). Sources it "
    "does not change are left out. The default maps Data Fusion Contest names "
    "(X_DSM.tif, X_AGL.tif -> X_RGB.tif).",
)
@click.option(
    "--guide-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder of the guides [default: each source's folder].",
)
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Folder for the outputs (<source stem>_x<scale>.tif), the JSON report and the GeoJSON "
    "footprint index.",
)
@scale_option
@raster_options
@fit_options
@output_options
@click.option(
    "--overwrite",
    is_flag=True,
    help="Redo pairs whose output exists (skipped by default when made with the same "
    "settings; other existing outputs fail their pair).",
)
@executor_options
@click.option(
    "--report",
    type=click.Path(path_type=Path, dir_okay=False),
    help=f"JSON report [default: OUTPUT_DIR/{REPORT_NAME}].",
)
@click.option(
    "--index",
    type=click.Path(path_type=Path, dir_okay=False),
    help=f"GeoJSON index of the footprints, EPSG:4326 [default: OUTPUT_DIR/{INDEX_NAME}].",
)
@reporting_command
def batch(
    sources: tuple[str, ...],
    manifest: Path | None,
    guide_pattern: str,
    guide_dir: Path | None,
    output_dir: Path,
    report: Path | None,
    index: Path | None,
    quiet: bool,
    progress: Progress,
    **options: Any,
) -> None:
    """Super-resolve many rasters with the same settings as 'upscale'.

    SOURCES are local files or glob patterns (quote them to use '**'); each source's guide is
    found by --guide-pattern. Remote sources (URLs, GDAL paths) cannot be globbed: list them
    with their guides in a --manifest. A pair that fails is reported and the others go on.
    Rerunning skips outputs made with the same settings and resumes interrupted rasters from
    their tile checkpoints; an output made with other settings is kept and reported as outdated
    (--overwrite redoes it). The exit status is 1 if any pair failed or is outdated.
    """
    if bool(sources) == (manifest is not None):
        raise click.UsageError("give either SOURCES or --manifest")
    batch_log = logging.getLogger("mmsr_geo.batch")
    if not quiet and batch_log.getEffectiveLevel() > logging.INFO:
        batch_log.setLevel(logging.INFO)  # which files were left out, and why
    if manifest is not None:
        pairs = pairs_from_manifest(manifest)
    else:
        pairs = pairs_from_glob(sources, GuideRule.parse(guide_pattern, guide_dir))
    template = build_request("", "", None, options)
    lines = not quiet and not isinstance(progress, JsonProgress)
    with open_executor(options, template.config) as executor:
        result = run_batch(
            pairs,
            output_dir,
            template,
            executor=executor,
            report_path=report,
            index_path=index,
            on_pair=_echo_pair if lines else None,
            progress=progress,
        )
    report_file = report or output_dir / REPORT_NAME
    if lines:
        click.echo(
            f"{result.count('ok')} done, {result.count('skipped')} skipped, "
            f"{result.count('outdated')} outdated, {result.failed} failed in "
            f"{result.seconds:.1f} s; report: {report_file}",
            err=True,
        )
    problems = []
    if result.failed:
        problems.append(f"{result.failed} of {len(result.records)} pairs failed")
    if result.count("outdated"):
        problems.append(
            f"{result.count('outdated')} outputs made with other settings were kept "
            "(--overwrite redoes them)"
        )
    if problems:
        raise MmsrGeoError(f"{'; '.join(problems)}: see {report_file}")
