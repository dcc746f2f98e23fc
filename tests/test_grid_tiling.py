"""Output grid, tile plan, blending weights, guide alignment, AOI, writer and checkpoints:
everything of the raster pipeline that runs without fitting a network."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
from _rasters import LR_PIXEL, ORIGIN, UTM, terrain, write
from affine import Affine
from rasterio.enums import Resampling
from rasterio.transform import from_origin
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window
from shapely.geometry import box

from mmsr_geo.aoi import load_aoi
from mmsr_geo.blending import WEIGHT_FLOOR, blend_block, weight_window
from mmsr_geo.checkpoints import TileCheckpoints, checkpointed_tiles
from mmsr_geo.errors import InputError, OutputExistsError, OverlapError
from mmsr_geo.grid import output_grid
from mmsr_geo.guide import AlignedGuide, check_overlap
from mmsr_geo.jobs import TileResult
from mmsr_geo.raster_io import open_raster
from mmsr_geo.tiling import plan_tiles
from mmsr_geo.writer import atomic_raster, choose_nodata, overview_factors


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    lr, _ = terrain(20, 30, 2)
    return write(tmp_path / "dem.tif", lr)


def test_output_grid_refines_the_source_grid(source: Path) -> None:
    with rasterio.open(source) as ds:
        grid = output_grid(ds, 4)
    assert (grid.height, grid.width) == (80, 120)
    assert grid.transform == ds.transform @ Affine.scale(1 / 4)
    assert grid.transform.a == LR_PIXEL / 4
    assert grid.crs == ds.crs
    assert grid.bounds == pytest.approx(tuple(ds.bounds))
    assert grid.hr_window(Window(3, 5, 7, 2)) == Window(12, 20, 28, 8)
    with pytest.raises(InputError, match="scale"):
        output_grid(ds, 1)


@pytest.mark.parametrize(("width", "height", "tile", "overlap"), [(50, 37, 16, 4), (10, 70, 16, 8)])
def test_tile_plan_covers_the_raster_with_aligned_windows(width, height, tile, overlap) -> None:
    plan = plan_tiles(width, height, 3, tile, overlap)
    covered = np.zeros((height, width), dtype=int)
    for t in plan:
        lr, hr = t.lr_window, t.hr_window
        assert lr.col_off >= 0 and lr.row_off >= 0
        assert lr.col_off + lr.width <= width and lr.row_off + lr.height <= height
        assert hr == Window(lr.col_off * 3, lr.row_off * 3, lr.width * 3, lr.height * 3)
        covered[lr.row_off : lr.row_off + lr.height, lr.col_off : lr.col_off + lr.width] += 1
    assert covered.min() >= 1
    # index arithmetic agrees with a brute-force scan
    block = Window(20, 33, 40, 50)
    expected = {t.index for t in plan if _intersects(t.hr_window, block)}
    assert {t.index for t in plan.tiles_touching(block)} == expected


def _intersects(a: Window, b: Window) -> bool:
    return (
        a.col_off < b.col_off + b.width
        and b.col_off < a.col_off + a.width
        and a.row_off < b.row_off + b.height
        and b.row_off < a.row_off + a.height
    )


def test_tile_plan_rejects_bad_sizes() -> None:
    with pytest.raises(InputError, match="overlap"):
        plan_tiles(100, 100, 2, 16, 9)
    with pytest.raises(InputError, match="tile size"):
        plan_tiles(100, 100, 2, 2, 0)


def test_weights_are_smooth_and_never_zero() -> None:
    w = weight_window(40, 40, 8)
    assert w.min() > 0
    assert w[20, 20] == 1.0
    assert np.all(w[20, :2] == WEIGHT_FLOOR)  # border pixels (worst fitted) get the floor
    assert np.all(np.diff(w[20, 2:6]) > 0)  # then a cosine rise
    assert np.all(w[20, 6:34] == 1.0)


def test_blending_reproduces_constant_and_linear_predictions_without_seams() -> None:
    scale, plan = 2, plan_tiles(37, 29, 2, 12, 4)
    ramp = plan.overlap * scale
    yy, xx = np.mgrid[0:58, 0:74].astype(np.float64)
    truth = 3 * xx - 2 * yy + 7
    block = Window(0, 0, 74, 58)
    for field in (np.full_like(truth, 42.0), truth):
        contributions = [
            (
                t.hr_window,
                field[
                    t.hr_window.row_off : t.hr_window.row_off + t.hr_window.height,
                    t.hr_window.col_off : t.hr_window.col_off + t.hr_window.width,
                ],
            )
            for t in plan
        ]
        values, valid = blend_block(block, contributions, ramp)
        assert valid.all()
        np.testing.assert_allclose(values, field, rtol=1e-12, atol=1e-9)


def test_blending_two_disagreeing_tiles_crossfades() -> None:
    left = (Window(0, 0, 20, 4), np.zeros((4, 20)))
    right = (Window(12, 0, 20, 4), np.ones((4, 20)))
    values, valid = blend_block(Window(0, 0, 32, 4), [left, right], ramp=8)
    row = values[0]
    assert valid.all()
    assert np.all(np.diff(row) >= -1e-12)  # monotonic cross-fade, no jump
    assert np.abs(np.diff(row)).max() < 0.4  # a cosine over the middle 4 of the 8 pixels
    assert row[:12].max() == 0 and row[20:].min() == 1


def test_nan_marks_nodata_in_blending() -> None:
    pred = np.ones((4, 4))
    pred[0, 0] = np.nan
    values, valid = blend_block(Window(0, 0, 6, 4), [(Window(0, 0, 4, 4), pred)], ramp=1)
    assert not valid[0, 0] and valid[1, 1] and not valid[:, 4:].any()


def _checkerboard(n: int, cell: int) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n]
    board = ((yy // cell + xx // cell) % 2).astype(np.float32) * 100
    return np.stack([board, board.T * 0.5 + 10])


def test_guide_in_another_crs_is_warped_onto_the_output_grid(tmp_path: Path) -> None:
    lr, _ = terrain(16, 16, 2)
    source = write(tmp_path / "dem.tif", lr)  # UTM 33N, 160 m square
    with rasterio.open(source) as src:
        grid = output_grid(src, 4)
    # a Web Mercator checkerboard covering the source with margin, ~2.5 m pixels
    left, bottom, right, top = transform_bounds(UTM, "EPSG:3857", *grid.bounds)
    margin = 40.0
    n = 96
    pixel = (max(right - left, top - bottom) + 2 * margin) / n
    transform = from_origin(left - margin, top + margin, pixel, pixel)
    board = _checkerboard(n, 8)
    guide_path = write(tmp_path / "board.tif", board, crs="EPSG:3857", transform=transform)

    with open_raster(guide_path, "guide") as gds, AlignedGuide(gds, (1, 2), grid) as guide:
        assert guide.mode == "warped"
        values, valid = guide.read(Window(16, 24, 32, 24))
        check_overlap(gds, grid)
    # finer than the output in true metres (the Mercator stretch): averaged, not interpolated
    assert guide.resampling == Resampling.average
    expected = np.zeros((2, grid.height, grid.width), dtype=np.float32)
    reproject(
        board,
        expected,
        src_transform=transform,
        src_crs="EPSG:3857",
        dst_transform=grid.transform,
        dst_crs=grid.crs,
        resampling=guide.resampling,
    )
    assert valid.all()
    want = expected[:, 24:48, 16:48]
    close = np.isclose(values, want, atol=1.0)
    assert close.mean() > 0.99
    # and the squares really moved: not just an unwarped read of the guide
    assert not np.allclose(values, board[:, 24:48, 16:48], atol=1.0)


def test_guide_on_the_grid_is_read_by_windows_with_offset(tmp_path: Path) -> None:
    lr, guide = terrain(10, 10, 2)
    source = write(tmp_path / "dem.tif", lr)
    # guide starts 3 HR pixels left and 2 above the source's origin
    shifted = write(
        tmp_path / "rgb.tif",
        guide,
        pixel=LR_PIXEL / 2,
        origin=(ORIGIN[0] - 3 * LR_PIXEL / 2, ORIGIN[1] + 2 * LR_PIXEL / 2),
    )
    with rasterio.open(source) as src, open_raster(shifted, "guide") as gds:
        grid = output_grid(src, 2)
        with AlignedGuide(gds, (1, 2, 3), grid) as aligned:
            assert aligned.mode == "on-grid"
            values, valid = aligned.read(Window(0, 0, 20, 20))
    np.testing.assert_array_equal(values[:, :18, :17], guide[:, 2:20, 3:20])
    assert valid[:18, :17].all() and not valid[18:, :].any() and not valid[:, 17:].any()


def test_overlap_checks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lr, guide = terrain(10, 10, 2)
    source = write(tmp_path / "dem.tif", lr)
    far = write(tmp_path / "far.tif", guide, pixel=5, origin=(ORIGIN[0] + 1e4, ORIGIN[1]))
    half = write(tmp_path / "half.tif", guide[:, :, :10], pixel=5)
    coarse = write(tmp_path / "coarse.tif", guide, pixel=20)
    with rasterio.open(source) as src:
        grid = output_grid(src, 2)
        with open_raster(far, "guide") as gds, pytest.raises(OverlapError):
            check_overlap(gds, grid)
        with caplog.at_level(logging.WARNING), open_raster(half, "guide") as gds:
            common = check_overlap(gds, grid)
        assert "covers only 50.0%" in caplog.text
        assert common.area == pytest.approx(box(*grid.bounds).area / 2)
        caplog.clear()
        with caplog.at_level(logging.WARNING), open_raster(coarse, "guide") as gds:
            check_overlap(gds, grid)
        assert "coarser" in caplog.text


def test_aoi_loading(tmp_path: Path) -> None:
    square = box(ORIGIN[0] + 20, ORIGIN[1] - 80, ORIGIN[0] + 60, ORIGIN[1] - 20)
    assert load_aoi(square.wkt, rasterio.crs.CRS.from_string(UTM)).equals(square)
    lon_lat = rasterio.warp.transform_geom(UTM, "EPSG:4326", square.__geo_interface__)
    path = tmp_path / "aoi.geojson"
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [{"type": "Feature", "properties": {}, "geometry": lon_lat}],
            }
        )
    )
    loaded = load_aoi(str(path), rasterio.crs.CRS.from_string(UTM))
    assert loaded.symmetric_difference(square).area < 1e-3 * square.area
    named = tmp_path / "named.geojson"
    named.write_text(
        json.dumps(
            {
                "type": "Feature",
                "properties": {},
                "geometry": square.__geo_interface__,
                "crs": {"type": "name", "properties": {"name": UTM}},
            },
            default=list,
        )
    )
    assert load_aoi(str(named), rasterio.crs.CRS.from_string(UTM)).equals(square)
    with pytest.raises(InputError):
        load_aoi("not a polygon", None)
    with pytest.raises(InputError, match="area"):
        load_aoi("POINT (1 2)", None)


def test_nodata_choice() -> None:
    assert choose_nodata(None, "float32", None) == -9999.0
    assert choose_nodata(-1.0, "float32", None) == -1.0
    assert choose_nodata(None, "uint16", None) == 65535
    assert choose_nodata(-9999.0, "uint16", None) == 65535
    assert choose_nodata(None, "int16", 0) == 0
    with pytest.raises(InputError):
        choose_nodata(None, "uint8", -5)


def test_overview_factors() -> None:
    assert overview_factors(200, 100) == []
    assert overview_factors(1000, 300) == [2, 4]


def test_atomic_raster_leaves_nothing_on_error(tmp_path: Path) -> None:
    final = tmp_path / "out.tif"
    profile = {"driver": "GTiff", "width": 8, "height": 8, "count": 1, "dtype": "float32"}
    with pytest.raises(KeyboardInterrupt), atomic_raster(final, profile, overwrite=False) as dst:
        dst.write(np.ones((8, 8), np.float32), 1)
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with atomic_raster(final, profile, overwrite=False) as dst:
        dst.write(np.ones((8, 8), np.float32), 1)
        assert not final.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out.tif"]
    # a file that appeared meanwhile is never clobbered without overwrite
    with pytest.raises(OutputExistsError), atomic_raster(final, profile, overwrite=False) as dst:
        dst.write(np.full((8, 8), 2, np.float32), 1)
    assert [p.name for p in tmp_path.iterdir()] == ["out.tif"]
    with rasterio.open(final) as ds:
        assert ds.read(1)[0, 0] == 1


def test_checkpoints_resume_and_reset_on_other_settings(tmp_path: Path) -> None:
    work = tmp_path / "out.tif.mmsr-work"
    first = TileCheckpoints(work, "key-a", {"scale": 2})
    assert first.open() == set()
    first.save(TileResult(3, np.ones((4, 4), np.float32), 0.5, 1.0, "cpu"))
    assert checkpointed_tiles(work) == {3}  # what a report reads without the run's key
    assert checkpointed_tiles(tmp_path / "no-such.mmsr-work") == set()
    again = TileCheckpoints(work, "key-a", {"scale": 2})
    assert again.open() == {3}
    prediction, facts = again.load(3)
    assert facts.cycle_rmse == 0.5 and facts.device == "cpu" and prediction.shape == (4, 4)
    other = TileCheckpoints(work, "key-b", {"scale": 4})
    assert other.open() == set()
    assert sorted(p.name for p in work.iterdir()) == ["manifest.json"]
