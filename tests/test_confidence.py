"""``--confidence``: the uncertainty band beside the output, on the real RMNP DEM.

On arrays: local (windows with the consistency halo give the whole raster's band), no data
stays no data and does not spread. Through the real command line on a tiled run with a
nodata hole: the band's GeoTIFF is on the output's grid with nodata exactly where the
output has it, equals the band of the output as a whole, leaves the output's pixels as they
are, is recorded in the tags, and is never clobbered without --overwrite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from test_consistency import _dem, dem_with_hole, pieced
from test_rmnp import example_data

from mmsr_geo.confidence import CONFIDENCE_NODATA, confidence_path, uncertainty
from mmsr_geo.degradation import bicubic_upsample


def test_the_band_is_local_and_keeps_no_data_out() -> None:
    dem, _ = _dem()
    source = dem.astype(np.float64)
    s = 4
    rng = np.random.default_rng(0)
    output = bicubic_upsample(source, s) + rng.normal(0, 2.0, (source.shape[0] * s,
                                                               source.shape[1] * s))
    source_valid = np.ones(source.shape, dtype=bool)
    source_valid[20:26, 30:41] = False
    valid = np.repeat(np.repeat(source_valid, s, axis=0), s, axis=1)
    whole = uncertainty(output, valid, source, source_valid, s)
    assert np.array_equal(np.isnan(whole), ~valid)
    assert np.isfinite(whole[valid]).all() and (whole[valid] >= 0).all()

    windowed = pieced(uncertainty, output, valid, source, source_valid, s)
    np.testing.assert_allclose(windowed, whole, rtol=1e-12, atol=1e-9, equal_nan=True)

    # where the output is the interpolation itself, the band is ~0; noise of 2 m raises it
    # to its mean absolute size (2 * sqrt(2 / pi) = 1.6 m)
    smooth = uncertainty(bicubic_upsample(source, s), np.ones_like(valid), source,
                         np.ones_like(source_valid), s)
    assert np.nanmax(smooth) < 1e-9
    assert abs(float(np.nanmean(whole)) - 1.6) < 0.1


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mmsr_geo_cli", *args],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small fit of a real DEM window with a nodata hole, 12 tiles written in 12
    windows, with and without --confidence."""
    source = dem_with_hole(tmp_path_factory.mktemp("confidence"))
    common = ["--guide", str(example_data() / "rmnp-rgb.tif"), "--scale", "4",
              "--iterations", "3", "--features", "8", "--schedule", "residual-cosine",
              "--fit", "tile", "--tile-size", "32", "--overlap", "4",
              "--co", "BLOCKXSIZE=128", "--co", "BLOCKYSIZE=128", "--device", "cpu", "-q"]
    runs = {"source": source, "common": common}
    for name, extra in (("plain", []), ("with", ["--confidence"])):
        runs[name] = source.with_name(f"dem_{name}.tif")
        done = _cli("upscale", str(source), "-o", str(runs[name]), *common, *extra)
        assert done.returncode == 0, done.stderr
    return runs


def test_the_band_is_on_the_output_grid_and_equals_the_whole_raster_s(runs) -> None:
    band_path = confidence_path(runs["with"])
    assert band_path.name == "dem_with_confidence.tif"
    with rasterio.open(runs["with"]) as out, rasterio.open(band_path) as band_file, \
            rasterio.open(runs["plain"]) as plain, rasterio.open(runs["source"]) as src:
        assert (band_file.crs, band_file.transform, band_file.shape) == (
            out.crs, out.transform, out.shape)
        assert band_file.dtypes[0] == "float32" and band_file.nodata == CONFIDENCE_NODATA
        assert out.width > 256 and band_file.block_shapes[0] == (128, 128)
        values = out.read(1, masked=True)
        band = band_file.read(1, masked=True)
        np.testing.assert_array_equal(out.read(1), plain.read(1))  # the output is untouched
        lr = src.read(1, masked=True)
        facts = json.loads(out.tags()["MMSR_RUN"])["confidence"]
        assert json.loads(band_file.tags()["MMSR_RUN"]) == json.loads(out.tags()["MMSR_RUN"])
        assert "uncertainty" in band_file.descriptions[0]
    valid = ~np.ma.getmaskarray(values)
    np.testing.assert_array_equal(~np.ma.getmaskarray(band), valid)  # nodata where the output's
    assert not valid[40:64, 80:124].any()  # the source's hole, x4
    assert (band.compressed() >= 0).all()
    whole = uncertainty(values.filled(0).astype(np.float64), valid,
                        lr.filled(0).astype(np.float64), ~np.ma.getmaskarray(lr), 4)
    # the band is computed before the output is stored as float32 (3000 m: 2.4e-4 steps)
    np.testing.assert_allclose(band.filled(np.nan), whole, atol=1e-3, equal_nan=True)
    assert facts["file"] == band_path.name
    assert facts["mean"] == pytest.approx(float(band.mean()), rel=1e-5)
    assert facts["max"] == pytest.approx(float(band.max()), rel=1e-5)


def test_an_existing_band_is_not_clobbered(runs, tmp_path: Path) -> None:
    output = tmp_path / "dem.tif"
    band = confidence_path(output)
    band.write_bytes(b"keep me")
    done = _cli("upscale", str(runs["source"]), "-o", str(output), *runs["common"],
                "--confidence")
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "use --overwrite" in done.stderr
    assert band.name in done.stderr
    assert band.read_bytes() == b"keep me" and not output.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [band.name]
