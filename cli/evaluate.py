"""``mmsr-geo evaluate``: measure how well MMSR recovers a known high-resolution raster."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import numpy as np

from mmsr_geo.devices import resolve_device
from mmsr_geo.errors import InputError
from mmsr_geo.evaluation import PairScores, evaluate_pair, summarise
from mmsr_geo.fit_config import PRECISIONS, FitConfig
from mmsr_geo.loaders import (
    is_middlebury_dir,
    load_geotiff_pair,
    load_middlebury_dir,
    middlebury_names,
)
from mmsr_geo.presets import PRESETS
from mmsr_geo.progress import Progress
from mmsr_geo.strategies import AUTO, SCHEDULES, Schedule

from .common import reporting_command
from .options import consistency_option, register_option

EPILOG = """
\b
Examples:
  # A DEM you already have at high resolution, and an orthophoto on the same grid:
  mmsr-geo evaluate dsm_1m.tif --guide ortho_1m.tif --scale 4
\b
  # A folder of image pairs (guide/NAME.png + target/NAME.png), first 3 only, as JSON:
  mmsr-geo evaluate data/middlebury --scale 8 --limit 3 --json > scores.json

The reference is degraded by averaging scale x scale blocks (the paper's protocol), then
brought back to full resolution by MMSR and, for comparison, by bicubic interpolation. Errors
are in the reference's units (metres for a DEM, 0-255 for 8-bit depth maps). Slope RMSE (in
degrees) is added for GeoTIFFs, from the pixel size of the geotransform (degrees of a
geographic CRS taken as metres at the centre latitude). The guide may be on another grid or
CRS: it is warped onto the reference's grid as 'upscale' warps it.
"""


def _parse_names(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise click.BadParameter("give at least one image name", param_hint="--names")
    return names


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_table(scores: list[PairScores], mean: PairScores) -> str:
    """Plain aligned text table: one row per image, then the mean row."""
    with_slope = mean.slope_rmse is not None
    header = ["image", "RMSE", "MAE", "bicubic RMSE", "bicubic MAE"]
    if with_slope:
        header += ["slope RMSE", "bicubic slope RMSE"]
    header.append("seconds")

    def row(s: PairScores) -> list[str]:
        cells = [s.name, _fmt(s.rmse), _fmt(s.mae), _fmt(s.bicubic_rmse), _fmt(s.bicubic_mae)]
        if with_slope:
            cells += [_fmt(s.slope_rmse), _fmt(s.bicubic_slope_rmse)]
        cells.append(f"{s.seconds:.1f}")
        return cells

    rows = [header, *(row(s) for s in scores), row(mean)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows[1:-1]), rule, line(rows[-1])])


@click.command(
    epilog=EPILOG,
    short_help="Measure the error against a known high-resolution raster, beside bicubic.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.argument("reference", type=click.Path(path_type=Path))
@click.option(
    "--guide",
    type=click.Path(path_type=Path),
    help="High-resolution guide raster (RGB/multispectral), on any grid or CRS overlapping "
    "REFERENCE: it is warped onto REFERENCE's grid as 'upscale' warps it (averaged when "
    "finer). Required when REFERENCE is a GeoTIFF; not used with a directory.",
)
@click.option(
    "--scale",
    type=click.IntRange(min=2),
    default=4,
    show_default=True,
    help="Resolution factor to test: REFERENCE is averaged over SCALE x SCALE blocks and "
    "super-resolved back.",
)
@click.option(
    "--schedule",
    type=click.Choice(SCHEDULES),
    default=AUTO,
    show_default=True,
    help="How the fit spends its iterations, as for 'upscale' (auto: chosen from the LR "
    "source alone, one scale down; paper: the paper's exact fit).",
)
@click.option(
    "--iterations",
    type=click.IntRange(min=1),
    help="Optimisation steps per image [default: the schedule's: auto 300 (1000 with the "
    "depth preset), paper 1000].",
)
@click.option(
    "--fit",
    "fit_mode",
    type=click.Choice(("tile", "raster", "hybrid")),
    default="tile",
    show_default=True,
    help="tile: one fit of the whole image (the paper's); raster: one network trained on "
    "crops of the image, then applied to all of it (what 'upscale --fit raster' does across "
    "a raster); hybrid: that network fine-tuned on the image for a tenth of the iterations.",
)
@click.option(
    "--level-sigma",
    type=click.FloatRange(min=0, min_open=True),
    help="With --fit raster or hybrid: the network works around the source's local level, "
    "as 'upscale --level-sigma' [default: off].",
)
@register_option
@consistency_option
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    default=None,
    help="Filter neighbourhood sizes: 'depth' (11/5, paper section 4.2) or 'remote-sensing' "
    "(5/3, section 4.4). Default: depth for a directory, remote-sensing for GeoTIFFs.",
)
@click.option(
    "--device",
    default="auto",
    show_default=True,
    help="Where to fit: auto (a GPU if present), cpu, cuda or cuda:N.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed of the fit.")
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="auto",
    show_default=True,
    help="fp32, tf32, bf16 or auto (tf32 on CUDA, fp32 on the CPU): see 'upscale --help'.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Directory only: evaluate the first N images (by name, after --names).",
)
@click.option(
    "--names",
    default=None,
    help="Directory only: comma-separated image names (file names without .png), e.g. 05,36.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Write machine-readable JSON to stdout instead of the table.",
)
@reporting_command
def evaluate(
    reference: Path,
    guide: Path | None,
    scale: int,
    schedule: str,
    iterations: int | None,
    fit_mode: str,
    level_sigma: float | None,
    register: str,
    consistency: str,
    preset: str | None,
    device: str,
    seed: int,
    precision: str,
    limit: int | None,
    names: str | None,
    as_json: bool,
    quiet: bool,
    progress: Progress,
) -> None:
    """Score MMSR against a known high-resolution REFERENCE, beside plain bicubic upsampling.

    REFERENCE is either a GeoTIFF (a DEM/DSM, with --guide) or a directory laid out as
    guide/NAME.png + target/NAME.png (e.g. the Middlebury depth benchmark). Prints RMSE and MAE
    of MMSR and of bicubic per image, then their mean.
    """
    picked = _parse_names(names)
    resolve_device(device)  # an unavailable GPU is an error now, not after loading the data
    if not reference.exists():
        raise InputError(f"{reference}: no such file or directory")

    pairs: Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray | None, Any]]
    if reference.is_dir():
        if guide is not None:
            raise click.UsageError("--guide is for a GeoTIFF REFERENCE; a directory has guide/")
        if not is_middlebury_dir(reference):
            raise InputError(
                f"{reference}: a directory REFERENCE needs guide/ and target/ subfolders "
                "(guide/NAME.png, target/NAME.png)"
            )
        mode = "directory"
        preset = preset or "depth"
        available = middlebury_names(reference)
        selected = picked if picked is not None else available
        unknown = [n for n in selected if n not in set(available)]
        if unknown:
            raise InputError(
                f"{reference}: no image named {', '.join(unknown)} (have: {', '.join(available)})"
            )
        if limit is not None:
            selected = selected[:limit]
        n_images = len(selected)
        pairs = (
            (name, ref, gd, None, None)
            for name, ref, gd in load_middlebury_dir(reference, selected)
        )
    else:
        if guide is None:
            raise click.UsageError("a GeoTIFF REFERENCE needs --guide GUIDE.tif")
        if picked is not None or limit is not None:
            raise click.UsageError("--names and --limit apply to a directory REFERENCE only")
        mode = "geotiff"
        preset = preset or "remote-sensing"
        pair = load_geotiff_pair(reference, guide, scale=scale)
        n_images = 1
        pairs = iter([(pair.name, pair.reference, pair.guide, pair.mask, pair.pixel_size)])

    config = FitConfig.from_preset(preset, seed=seed, device=device, precision=precision)
    budget = Schedule.resolve(config, schedule, iterations).iterations

    scores: list[PairScores] = []
    progress.begin(
        name=Path(reference).name,
        tiles=n_images,
        resumed=0,
        iterations=budget,
        device=str(resolve_device(device)),
        unit="image",
    )
    for name, ref, gd, mask, pixel_size in pairs:
        score = evaluate_pair(
            ref,
            gd,
            scale,
            config,
            pixel_size=pixel_size,
            mask=mask,
            name=name,
            progress=progress.iteration,
            schedule=schedule,
            iterations=iterations,
            fit_mode=fit_mode,
            register=register,
            consistency=consistency,
            level_sigma=level_sigma or 0.0,
        )
        scores.append(score)
        progress.tile_finished(score.seconds)
    progress.close()
    mean = summarise(scores)

    if as_json:
        document = {
            "mode": mode,
            "reference": str(reference),
            "guide": None if guide is None else str(guide),
            "scale": scale,
            "schedule": schedule,
            "iterations": iterations,
            "fit_mode": fit_mode,
            "level_sigma": level_sigma,
            "register": register,
            "consistency": consistency,
            "preset": preset,
            "s2g_kernel": config.s2g_kernel,
            "g2s_kernel": config.g2s_kernel,
            "seed": seed,
            "precision": precision,
            "device": mean.device,
            "images": [s.as_dict() for s in scores],
            "mean": mean.as_dict(),
        }
        click.echo(json.dumps(document, indent=2))
    else:
        click.echo(
            f"x{scale}, schedule {schedule} ({mean.strategy}, "
            f"{mean.iterations_used:g} iterations), fit {fit_mode}, preset {preset} "
            f"({config.s2g_kernel}/{config.g2s_kernel}), device {mean.device}"
        )
        click.echo(format_table(scores, mean))
        for score in scores:  # beside the table, which stays one row per image
            if score.registration is not None and not quiet:
                click.echo(registration_line(score), err=True)


def registration_line(score: PairScores) -> str:
    """``05: guide offset +2.10, -0.40 output pixels: corrected`` (or why not)."""
    found = score.registration or {}
    return (
        f"{score.name}: guide offset {found['dx']:+.2f}, {found['dy']:+.2f} output pixels: "
        f"{found['reason']}"
    )
