"""Does tiling leave seams or cost accuracy? One tile vs 2 x 2 blended tiles (issue 3).

Why: :func:`mmsr_geo.run.upscale_raster` fits every tile on its own (own network, own
seed, zero padding at the tile's border) and cross-fades the overlaps. If the blending were
wrong, the output would show lines along the tile boundaries, and the RMSE would suffer. The
issue's target: the tiled RMSE within 3 % of the one-tile RMSE, and no visible seam.

How: a Middlebury pair (``guide/NAME.png`` RGB, ``target/NAME.png`` depth 0-255, 320 x 320) is
average-pooled x4 to an 80 x 80 LR source (:func:`mmsr_geo.degradation.pool`, the paper's
degradation), source and guide are written as georeferenced GeoTIFFs (EPSG:32632, 4 m and 1 m
pixels, one origin) and run through ``upscale_raster`` twice with the same iterations,
kernels (11/5, depth), features and seed: once as a single tile and once as 2 x 2 tiles
(checked with :func:`mmsr_geo.tiling.plan_tiles`). Both outputs and bicubic upsampling
(:func:`mmsr_geo.degradation.bicubic_upsample`) are scored against the 320 x 320 target.

Seams are measured, not eyeballed, on the depth and on its hillshade (which shows kinks), at
the 2 x 2 run's blend zones (the overlaps of neighbouring tiles), in both outputs: the one-tile
output at the same positions is the control for what the image content alone gives there.

* *Blend-zone ratio*: per column j the mean over rows of ``|z[:, j+1] - z[:, j]|``, averaged
  over the blend zone / over all other columns (rows likewise). Broad roughness of the overlap.
* *Line contrast*: the same with the median over rows (a seam runs along the whole boundary,
  depth edges only cross it), divided by the median of its values 3-10 pixels to either side;
  the largest value in the blend zone and its position. A thin seam line is a spike there.

    python benchmarks/seams.py --iterations 5 --features 8           # smoke test
    python benchmarks/seams.py --iterations 300 --write BENCHMARKS.md
    python benchmarks/seams.py --iterations 300 --keep runs/seams --reuse   # re-measure only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # _report

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from rasterio.crs import CRS  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402

from mmsr_geo.degradation import bicubic_upsample, pool  # noqa: E402
from mmsr_geo.fit import FitConfig  # noqa: E402
from mmsr_geo.loaders import load_middlebury_dir, middlebury_names  # noqa: E402
from mmsr_geo.metrics import rmse  # noqa: E402
from mmsr_geo.preview import hillshade  # noqa: E402
from mmsr_geo.run import upscale_raster  # noqa: E402
from mmsr_geo.tiling import TilePlan, plan_tiles  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "middlebury"
PREFERRED_NAMES = ("05", "art")
CRS_CODE = "EPSG:32632"
ORIGIN = (500000.0, 5700000.0)
SCALE = 4
LR_PIXEL = 4.0
LINE_NEIGHBOURS = 10
"""A position's line contrast compares it with its neighbours 3 to this many pixels away."""
RASTER_BORDER = 8
"""HR pixels at the raster's own border left out of every seam statistic."""
TARGET = 0.03


def _machine() -> str:
    """The shared machine description (benchmarks/_report.py) or, without it, the platform."""
    try:
        from _report import machine_description
    except ImportError:
        return f"{platform.machine()} {platform.platform()} (benchmarks/_report.py missing)"
    return machine_description()


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def write_inputs(lr: np.ndarray, guide: np.ndarray, folder: Path) -> tuple[Path, Path]:
    """The LR source (4 m) and the HR guide (1 m) as GeoTIFFs sharing one origin."""
    crs = CRS.from_string(CRS_CODE)
    source_path, guide_path = folder / "source.tif", folder / "guide.tif"
    profile = {"driver": "GTiff", "crs": crs, "dtype": "float32"}
    with rasterio.open(
        source_path,
        "w",
        **profile,
        width=lr.shape[1],
        height=lr.shape[0],
        count=1,
        transform=from_origin(*ORIGIN, LR_PIXEL, LR_PIXEL),
    ) as dst:
        dst.write(lr.astype(np.float32), 1)
    hr_pixel = LR_PIXEL / SCALE
    with rasterio.open(
        guide_path,
        "w",
        **profile,
        width=guide.shape[2],
        height=guide.shape[1],
        count=guide.shape[0],
        transform=from_origin(*ORIGIN, hr_pixel, hr_pixel),
    ) as dst:
        dst.write(guide.astype(np.float32))
    return source_path, guide_path


def read_output(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1).astype(np.float64)


# --------------------------------------------------------------------------------------------
# Seam measurement
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Zones:
    """Boolean masks over difference positions (j = between pixel j and j + 1) of one axis."""

    blend: np.ndarray
    """Differences touching the overlap of two neighbouring tiles."""
    other: np.ndarray
    """Positions outside the blend zones and away from the raster border: the baseline."""


def axis_zones(starts: tuple[int, ...], tile: int, length_hr: int, scale: int) -> Zones:
    """Blend-zone masks along one axis from a plan's tile starts (LR pixels)."""
    n = length_hr - 1
    j = np.arange(n)
    blend = np.zeros(n, dtype=bool)
    for a, b in zip(starts[:-1], starts[1:], strict=True):
        first, end = b * scale, (a + tile) * scale  # overlap of the two tiles: [first, end)
        blend |= (j >= first - 1) & (j < end)
    inner = (j >= RASTER_BORDER) & (j < n - RASTER_BORDER)
    return Zones(blend, inner & ~blend)


def _differences(image: np.ndarray, axis: int) -> np.ndarray:
    """|differences| along ``axis`` (1: horizontal, 0: vertical), raster border rows/columns
    across the other axis left out."""
    b = RASTER_BORDER
    d = np.abs(np.diff(image, axis=axis))
    return d[b:-b] if axis == 1 else d[:, b:-b]


def line_contrast(profile: np.ndarray) -> np.ndarray:
    """profile[j] / median of profile at j +-3..10: how much a position stands out from its
    own neighbourhood (a thin line gives a spike; broad content differences cancel)."""
    n = profile.size
    out = np.empty(n)
    for j in range(n):
        k = np.r_[j - LINE_NEIGHBOURS : j - 2, j + 3 : j + LINE_NEIGHBOURS + 1]
        k = k[(k >= 0) & (k < n)]
        out[j] = profile[j] / max(float(np.median(profile[k])), 1e-12)
    return out


def seam_measures(image: np.ndarray, plan: TilePlan) -> dict[str, float]:
    """Per axis (x: vertical boundaries, y: horizontal ones):

    * ``blend``: mean |difference| profile (mean over rows) in the blend zones / elsewhere;
    * ``line``: the largest line contrast in the blend zones of the *median* profile (median
      over rows, so that depth edges crossing a column do not hide a line running all along
      it), and ``line_at`` its position; ``line_elsewhere``: the largest outside them (noise).
    """
    out: dict[str, float] = {}
    for axis, name, starts, tile in (
        (1, "x", plan.col_starts, plan.tile_width),
        (0, "y", plan.row_starts, plan.tile_height),
    ):
        d = _differences(image, axis)
        mean_profile, median_profile = d.mean(axis=1 - axis), np.median(d, axis=1 - axis)
        zones = axis_zones(starts, tile, mean_profile.size + 1, plan.scale)
        if not zones.blend.any():
            for key in ("blend", "line", "line_at", "line_elsewhere"):
                out[f"{key}_{name}"] = float("nan")
            continue
        out[f"blend_{name}"] = float(
            mean_profile[zones.blend].mean() / mean_profile[zones.other].mean()
        )
        contrast = line_contrast(median_profile)
        inside = np.flatnonzero(zones.blend)
        peak = inside[np.argmax(contrast[inside])]
        out[f"line_{name}"] = float(contrast[peak])
        out[f"line_at_{name}"] = float(peak)
        out[f"line_elsewhere_{name}"] = float(contrast[zones.other].max())
    return out


# --------------------------------------------------------------------------------------------
# Figure
# --------------------------------------------------------------------------------------------


def write_figure(
    path: Path, tiled: np.ndarray, single: np.ndarray, plan: TilePlan, pixel: float
) -> None:
    """Hillshades: the tiled output with tile and blend-zone lines, the same unmarked, and the
    one-tile output; small greyscale PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shade_tiled, shade_single = hillshade(tiled, pixel), hillshade(single, pixel)
    fig, axes = plt.subplots(1, 3, figsize=(11.4, 4.0), dpi=90)
    for ax, image, title in zip(
        axes,
        (shade_tiled, shade_tiled, shade_single),
        ("2x2 tiles, tile edges marked", "2x2 tiles", "one tile"),
        strict=True,
    ):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    s = plan.scale
    for tile in plan:
        r0, c0 = tile.hr_window.row_off, tile.hr_window.col_off
        h, w = tile.hr_window.height, tile.hr_window.width
        axes[0].add_patch(
            plt.Rectangle((c0 - 0.5, r0 - 0.5), w, h, fill=False, lw=0.8, ec="red", alpha=0.8)
        )
    for a, b in zip(plan.col_starts[:-1], plan.col_starts[1:], strict=True):
        axes[0].axvspan(b * s - 0.5, (a + plan.tile_width) * s - 0.5, color="yellow", alpha=0.12)
    for a, b in zip(plan.row_starts[:-1], plan.row_starts[1:], strict=True):
        axes[0].axhspan(b * s - 0.5, (a + plan.tile_height) * s - 0.5, color="yellow", alpha=0.12)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, pil_kwargs={"optimize": True})
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# Run
# --------------------------------------------------------------------------------------------


def _fmt(value: float, digits: int = 3) -> str:
    return "-" if not np.isfinite(value) else f"{value:.{digits}f}"


def _pair(ratios: dict[str, float], kind: str, digits: int = 2) -> str:
    return f"{_fmt(ratios[f'{kind}_x'], digits)} / {_fmt(ratios[f'{kind}_y'], digits)}"


def _line(ratios: dict[str, float]) -> str:
    def one(axis: str) -> str:
        value = ratios[f"line_{axis}"]
        if not np.isfinite(value):
            return "-"
        return f"{value:.1f} (@{ratios[f'line_at_{axis}']:.0f})"

    return f"{one('x')} / {one('y')}"


def _run_or_reuse(
    folder: Path,
    args: argparse.Namespace,
    lr: np.ndarray,
    guide: np.ndarray,
    config: FitConfig,
    plans: tuple[TilePlan, ...],
) -> list[tuple[Path, float]]:
    """(output, seconds) per plan: fitted now, or with ``--reuse`` read back from ``folder``
    (the settings recorded there must match)."""
    record = folder / "runs.json"
    key = {**dataclasses.asdict(config), "name": args.name, "plans": [repr(p) for p in plans]}
    if args.reuse:
        saved = json.loads(record.read_text())
        if saved["key"] != json.loads(json.dumps(key)):
            raise SystemExit(f"{record}: made with other settings: {saved['key']}")
        return [(folder / name, seconds) for name, seconds in saved["runs"]]
    source_path, guide_path = write_inputs(lr, guide, folder)
    runs = []
    for plan in plans:
        started = time.perf_counter()
        report = upscale_raster(
            source_path,
            guide_path,
            folder / f"tiles_{len(plan)}.tif",
            scale=SCALE,
            config=config,
            tile_size=plan.tile_size,
            overlap=plan.overlap,
            overwrite=True,
        )
        assert report.tiles_total == len(plan), (report.tiles_total, len(plan))
        runs.append((report.output.name, time.perf_counter() - started))
        print(f"{len(plan)} tile(s): {runs[-1][1]:.0f} s", flush=True)
    record.write_text(json.dumps({"key": key, "runs": runs}))
    return [(folder / name, seconds) for name, seconds in runs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Middlebury folder")
    parser.add_argument("--name", help="image name (default: 05 or the first available)")
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--features", type=int, default=FitConfig.features)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tile-size", type=int, default=48, help="LR pixels, 2x2 tiles")
    parser.add_argument("--overlap", type=int, default=8, help="LR pixels")
    parser.add_argument("--figure", type=Path, default=ROOT / "benchmarks" / "seams.png")
    parser.add_argument("--write", type=Path, help="write section 'seams' into this file")
    parser.add_argument("--keep", type=Path, help="keep inputs and outputs in this folder")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="with --keep: measure the outputs of an earlier run there instead of fitting again",
    )
    args = parser.parse_args(argv)
    if args.reuse and not args.keep:
        parser.error("--reuse needs --keep")

    names = middlebury_names(args.data)
    name = args.name = args.name or next((n for n in PREFERRED_NAMES if n in names), names[0])
    _, reference, guide = next(load_middlebury_dir(args.data, [name]))
    lr = pool(reference, SCALE)
    lr_h, lr_w = lr.shape
    tiled_plan = plan_tiles(lr_w, lr_h, SCALE, args.tile_size, args.overlap)
    if len(tiled_plan) != 4:
        parser.error(
            f"--tile-size {args.tile_size} --overlap {args.overlap} gives {len(tiled_plan)} "
            f"tiles on {lr_w}x{lr_h}, not 2x2"
        )
    single_size = max(lr_w, lr_h)
    single_plan = plan_tiles(lr_w, lr_h, SCALE, single_size, args.overlap)
    assert len(single_plan) == 1
    config = FitConfig(
        iterations=args.iterations,
        s2g_kernel=11,
        g2s_kernel=5,
        features=args.features,
        seed=args.seed,
        device="cpu",
    )

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="mmsr-seams-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        runs = _run_or_reuse(folder, args, lr, guide, config, (single_plan, tiled_plan))
        for (label, plan), (path, seconds) in zip(
            (("one tile", single_plan), ("2x2 tiles", tiled_plan)), runs, strict=True
        ):
            output = read_output(path)
            results[label] = {
                "plan": plan,
                "output": output,
                "rmse": rmse(output, reference),
                "seconds": seconds,
            }

    bicubic = rmse(bicubic_upsample(lr, SCALE), reference)
    single, tiled = results["one tile"], results["2x2 tiles"]
    pixel = LR_PIXEL / SCALE
    relative = tiled["rmse"] / single["rmse"] - 1.0
    # seams are measured at the tiled run's boundaries in both outputs (one tile = control)
    measures = {
        label: {
            "depth": seam_measures(r["output"], tiled_plan),
            "hillshade": seam_measures(hillshade(r["output"], pixel), tiled_plan),
        }
        for label, r in results.items()
    }
    difference = np.abs(tiled["output"] - single["output"])
    write_figure(args.figure, tiled["output"], single["output"], tiled_plan, pixel)

    zones_x = axis_zones(tiled_plan.col_starts, tiled_plan.tile_width, SCALE * lr_w, SCALE)
    blend_cols = np.flatnonzero(zones_x.blend)
    rows = [
        "| run | tiles (LR size, overlap) | RMSE | vs one tile | blend-zone ratio x / y "
        "| hillshade blend-zone ratio x / y | line contrast x / y (@ HR px) "
        "| hillshade line contrast x / y (@ HR px) | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in results.items():
        plan = r["plan"]
        m = measures[label]
        vs = "-" if label == "one tile" else f"{100 * relative:+.2f} %"
        rows.append(
            f"| {label} | {len(plan)} ({plan.tile_width}x{plan.tile_height}, {plan.overlap}) "
            f"| {r['rmse']:.3f} | {vs} | {_pair(m['depth'], 'blend')} "
            f"| {_pair(m['hillshade'], 'blend')} | {_line(m['depth'])} "
            f"| {_line(m['hillshade'])} | {r['seconds']:.0f} |"
        )
    rows.append(f"| bicubic | - | {bicubic:.3f} | - | - | - | - | - | - |")
    noise = measures["one tile"]
    cuts = sorted(
        {b * SCALE for b in tiled_plan.col_starts[1:]}
        | {(a + tiled_plan.tile_width) * SCALE for a in tiled_plan.col_starts[:-1]}
    )
    within = abs(relative) <= TARGET
    direction = "lower" if relative < 0 else "higher"
    markdown = "\n".join(
        [
            f"Middlebury `{name}` x{SCALE} (80x80 LR from average pooling, 320x320 target, RMSE "
            f"in 0-255 units over the full image), `upscale_raster` on georeferenced GeoTIFFs "
            f"({CRS_CODE}, 4 m / 1 m), kernels 11/5, {args.features} features, "
            f"**{args.iterations} iterations** per tile, seed {args.seed} (tile i: seed + i), "
            "CPU.",
            "",
            *rows,
            "",
            f"Tiled RMSE {abs(100 * relative):.2f} % {direction} than one tile: "
            f"{'within' if within else 'outside'} the issue's {100 * TARGET:.0f} % target. "
            f"Mean |tiled - one tile| {difference.mean():.3f} overall, "
            f"{difference[:, blend_cols].mean():.3f} in the vertical blend zone.",
            "",
            "Seam measures (x: along rows, for vertical tile boundaries; y: along columns, for "
            "horizontal ones), at the 2x2 run's blend zones (overlap of neighbouring tiles, HR "
            f"columns/rows {blend_cols.min()}-{blend_cols.max() + 1}), on the depth and on its "
            "hillshade (1 m pixels, sun 315/45, which shows kinks); the one-tile row measures "
            "the same positions of an untiled output, i.e. what the image content alone gives. "
            "*Blend-zone ratio*: the mean over rows of |z[:, j+1] - z[:, j]| per column j, "
            "averaged over the blend zone / averaged over all other columns "
            f"({RASTER_BORDER} HR pixels at the raster border left out); ~1 relative to the "
            "control means the overlap is no rougher than elsewhere. *Line contrast*: the "
            "median over rows of the same |differences| per column (a seam runs along the "
            "whole boundary, depth edges only cross it), divided by the median of its values "
            f"3-{LINE_NEIGHBOURS} pixels to either side; the largest value in the blend zone "
            "and where. ~1 = nothing stands out; a thin seam line is a spike. For scale, the "
            "largest hillshade line contrast *outside* the blend zones (content alone) is "
            f"{_pair(noise['hillshade'], 'line_elsewhere', 1)} (x / y) in the one-tile output. "
            f"Tile cut lines (where a tile starts or ends), HR: {', '.join(map(str, cuts))}. "
            f"Figure: `{_display(args.figure)}`; seconds: fits of this run.",
            "",
            f"Machine: {_machine()}",
        ]
    )
    print(markdown)
    if args.write:
        from _report import write_section

        write_section(args.write, "seams", markdown)
    return 0


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    raise SystemExit(main())
