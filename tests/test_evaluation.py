"""The evaluation protocol (pool, metrics, slope, loaders), the ``evaluate`` command, and the
acceptance test: on a sharp-edged cross-modal pair the fit must clearly beat bicubic."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from affine import Affine
from click.testing import CliRunner
from mmsr_geo_cli.evaluate import evaluate
from PIL import Image

from mmsr_geo.degradation import bicubic_upsample, pool
from mmsr_geo.errors import InputError
from mmsr_geo.evaluation import PairScores, evaluate_pair, summarise
from mmsr_geo.fit import FitConfig
from mmsr_geo.loaders import load_geotiff_pair, load_middlebury_dir, middlebury_names
from mmsr_geo.metrics import mae, rmse, slope, slope_mask, slope_rmse

ROOT = Path(__file__).resolve().parents[1]
MIDDLEBURY = Path(__file__).resolve().parents[2] / "shared" / "data" / "middlebury"


def run_evaluate(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``evaluate`` in a real Python process (exit code, stdout and stderr as a user sees them)."""
    return subprocess.run(
        [sys.executable, "-m", "mmsr_geo_cli", "evaluate", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ------------------------------------------------------------------------------------------
# pool, bicubic, metrics, slope
# ------------------------------------------------------------------------------------------


def test_pool_averages_blocks() -> None:
    reference = np.arange(16, dtype=np.float64).reshape(4, 4)
    np.testing.assert_allclose(pool(reference, 2), [[2.5, 4.5], [10.5, 12.5]])
    np.testing.assert_allclose(pool(reference, 4), [[7.5]])


def test_pool_crops_to_a_multiple_and_says_so() -> None:
    reference = np.arange(30, dtype=np.float64).reshape(5, 6)
    with pytest.warns(UserWarning, match="cropped to 4x6"):
        lr = pool(reference, 2)
    np.testing.assert_allclose(lr, pool(reference[:4], 2))
    assert lr.shape == (2, 3)


def test_pool_rejects_bad_scale_and_marks_nan_blocks() -> None:
    with pytest.raises(ValueError, match="scale"):
        pool(np.zeros((4, 4)), 1)
    reference = np.ones((4, 4))
    reference[0, 0] = np.nan
    lr = pool(reference, 2)
    assert np.isnan(lr[0, 0]) and np.isfinite(lr.ravel()[1:]).all()


def test_bicubic_upsample_is_pixel_area_aligned() -> None:
    up = bicubic_upsample(np.full((3, 5), 7.0), 4)
    assert up.shape == (12, 20)
    np.testing.assert_allclose(up, 7.0)
    # align_corners=False: on a ramp the interior HR blocks average back to their LR pixel
    # exactly (align_corners=True would shift them), so bicubic and pooling share one grid.
    ramp = np.tile(np.arange(8.0), (8, 1))
    up = bicubic_upsample(ramp, 4)
    np.testing.assert_allclose(pool(up, 4)[2:-2, 2:-2], ramp[2:-2, 2:-2], atol=1e-9)


def test_rmse_and_mae_known_values_and_mask() -> None:
    pred = np.array([[0.0, 0.0], [0.0, 4.0]])
    ref = np.zeros((2, 2))
    assert rmse(pred, ref) == pytest.approx(2.0)
    assert mae(pred, ref) == pytest.approx(1.0)
    mask = np.array([[True, True], [True, False]])
    assert rmse(pred, ref, mask) == 0.0 and mae(pred, ref, mask) == 0.0
    with pytest.raises(ValueError, match="shape"):
        rmse(pred, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="no pixel"):
        rmse(pred, ref, np.zeros((2, 2), bool))


def test_slope_of_planes_in_degrees() -> None:
    yy, xx = np.mgrid[0:8, 0:10].astype(np.float64)
    np.testing.assert_allclose(slope(xx, 1.0), 45.0)  # 1 m rise per 1 m pixel
    np.testing.assert_allclose(slope(xx, 2.0), math.degrees(math.atan(0.5)))
    np.testing.assert_allclose(slope(3 * yy, (1.0, 3.0)), 45.0)  # y pixel 3 m
    np.testing.assert_allclose(slope(np.zeros((4, 4)), 1.0), 0.0)
    assert slope_rmse(xx, np.zeros_like(xx), 1.0) == pytest.approx(45.0)
    # A step changes slope only next to it; an offset changes none.
    assert slope_rmse(xx + 100, xx, 1.0) == pytest.approx(0.0, abs=1e-9)


def test_slope_mask_drops_pixels_next_to_nodata() -> None:
    mask = np.ones((5, 5), bool)
    mask[2, 2] = False
    expected = np.ones((5, 5), bool)
    expected[2, 2] = expected[1, 2] = expected[3, 2] = expected[2, 1] = expected[2, 3] = False
    np.testing.assert_array_equal(slope_mask(mask), expected)
    dem = np.tile(np.arange(5.0), (5, 1))
    broken = dem.copy()
    broken[2, 2] = -9999.0  # nodata value: must not reach the slope score
    assert slope_rmse(broken, dem, 1.0, mask) == pytest.approx(0.0, abs=1e-9)


def test_summarise_is_the_mean_over_images() -> None:
    a = PairScores("a", 1.0, 0.5, 2.0, 1.0, seconds=2.0, device="cpu")
    b = PairScores("b", 3.0, 1.5, 4.0, 3.0, seconds=4.0, device="cpu")
    mean = summarise([a, b])
    assert mean.name == "mean" and (mean.rmse, mean.mae) == (2.0, 1.0)
    assert (mean.bicubic_rmse, mean.bicubic_mae) == (3.0, 2.0)
    assert mean.slope_rmse is None and mean.seconds == 3.0
    with pytest.raises(ValueError):
        summarise([])


# ------------------------------------------------------------------------------------------
# The acceptance test: sharp cross-modal edges, MMSR clearly better than bicubic
# ------------------------------------------------------------------------------------------


def synthetic_pair(size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Depth of four flat shapes over a background, and an RGB guide of the same shapes.

    The guide's colours have no monotone relation to depth (a bright shape may be near or far)
    and it carries a texture and noise that are not in the depth, so the network has to learn
    *where* the edges are from the guide without copying its intensities. Shape edges are off
    the x4 block grid, so bicubic upsampling of the pooled depth blurs every one of them.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) * (64 / size)
    depth = np.full((size, size), 40.0)
    labels = np.zeros((size, size), dtype=int)
    shapes = [
        ((x >= 9) & (x < 30) & (y >= 7) & (y < 34), 200.0),
        ((x - 44) ** 2 + (y - 20) ** 2 < 11.5**2, 120.0),
        ((y > 37) & (y < 58) & (x > 13) & (x - 13 < (y - 37) * 1.7), 170.0),
        ((x >= 39) & (x < 59) & (y >= 41) & (y < 55), 90.0),
    ]
    for label, (inside, value) in enumerate(shapes, start=1):
        depth[inside] = value
        labels[inside] = label
    colours = np.array(
        [[0.2, 0.5, 0.3], [0.9, 0.2, 0.1], [0.1, 0.3, 0.9], [0.95, 0.85, 0.1], [0.6, 0.1, 0.7]]
    )
    guide = colours[labels].transpose(2, 0, 1)
    guide = guide + 0.05 * np.sin(x / 2.3 + y / 3.1)[None] + rng.normal(0, 0.03, guide.shape)
    return depth, (255 * guide).astype(np.float32)


def test_fit_beats_bicubic_on_sharp_cross_modal_edges() -> None:
    depth, guide = synthetic_pair()
    config = FitConfig(iterations=60, s2g_kernel=11, g2s_kernel=5, seed=0, device="cpu")
    started = time.perf_counter()
    scores = evaluate_pair(depth, guide, 4, config, name="shapes")
    elapsed = time.perf_counter() - started
    assert scores.name == "shapes" and scores.device == "cpu"
    assert scores.bicubic_rmse > 10  # the edges really are lost by x4 pooling
    assert scores.rmse < 0.8 * scores.bicubic_rmse, scores
    assert scores.mae < scores.bicubic_mae, scores
    assert scores.slope_rmse is None
    print(
        f"synthetic x4: MMSR {scores.rmse:.2f} vs bicubic {scores.bicubic_rmse:.2f}, {elapsed:.1f}s"
    )


def test_evaluate_pair_masks_nodata_and_scores_slope() -> None:
    yy, xx = np.mgrid[0:24, 0:24].astype(np.float64)
    dem = 0.5 * xx + 0.2 * yy
    guide = np.stack([xx / 24, yy / 24, np.sin(xx / 3)]).astype(np.float32)
    mask = np.ones(dem.shape, bool)
    mask[:5, :5] = False
    dem[~mask] = -9999.0  # a nodata value that must not leak into LR pixels or scores
    config = FitConfig(iterations=2, features=8, s2g_kernel=3, g2s_kernel=3, device="cpu")
    scores = evaluate_pair(dem, guide, 4, config, pixel_size=2.0, mask=mask)
    assert scores.bicubic_rmse < 5 and scores.rmse < 50
    assert scores.slope_rmse is not None and scores.bicubic_slope_rmse is not None
    with pytest.raises(ValueError, match="grid"):
        evaluate_pair(dem, guide[:, :20], 4, config)


# ------------------------------------------------------------------------------------------
# Loaders
# ------------------------------------------------------------------------------------------


def _png(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def test_middlebury_loader_converts_targets_to_one_channel(tmp_path: Path) -> None:
    depth = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 3).astype(np.uint8)
    rgb = np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    _png(tmp_path / "target" / "grey.png", depth)
    _png(tmp_path / "target" / "rgbgrey.png", np.repeat(depth[..., None], 3, axis=2))
    _png(tmp_path / "target" / "la.png", np.stack([depth, np.full_like(depth, 255)], axis=2))
    for name in ("grey", "rgbgrey", "la"):
        _png(tmp_path / "guide" / f"{name}.png", rgb)
    _png(tmp_path / "guide" / "alone.png", rgb)  # no target: skipped, with a warning

    with pytest.warns(UserWarning, match="alone"):
        assert middlebury_names(tmp_path) == ["grey", "la", "rgbgrey"]
    with pytest.warns(UserWarning):
        pairs = list(load_middlebury_dir(tmp_path))
    assert [p[0] for p in pairs] == ["grey", "la", "rgbgrey"]
    for _, reference, guide in pairs:
        assert reference.shape == (8, 8) and guide.shape == (3, 8, 8)
        np.testing.assert_array_equal(reference, depth)
        np.testing.assert_array_equal(guide, rgb.transpose(2, 0, 1))
    with pytest.warns(UserWarning), pytest.raises(InputError, match="nope"):
        list(load_middlebury_dir(tmp_path, ["grey", "nope"]))


def test_middlebury_loader_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="guide/"):
        middlebury_names(tmp_path)
    _png(tmp_path / "target" / "a.png", np.zeros((8, 8), np.uint8))
    _png(tmp_path / "guide" / "a.png", np.zeros((6, 8, 3), np.uint8))
    with pytest.raises(InputError, match="must match"):
        list(load_middlebury_dir(tmp_path))


def _write_tif(path: Path, data: np.ndarray, pixel: float = 2.0, **profile) -> Path:
    data = data if data.ndim == 3 else data[None]
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype.name,
        crs=profile.pop("crs", "EPSG:25832"),
        transform=profile.pop("transform", Affine(pixel, 0, 356_000.0, 0, -pixel, 5_700_000.0)),
        **profile,
    ) as ds:
        ds.write(data)
    return path


def geotiff_pair(tmp_path: Path, size: int = 32) -> tuple[Path, Path, np.ndarray]:
    """dem.tif (2 m, nodata -9999 in the top-left 6x6) and rgb.tif (3 bands, same grid)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dem = 100 + 0.3 * xx + 4 * np.sin(yy / 4) + 6.0 * ((xx > 17) & (yy > 11))
    dem = dem.astype(np.float32)
    dem[:6, :6] = -9999.0
    guide = np.stack([np.sin(yy / 4), xx / size, ((xx > 17) & (yy > 11)).astype(float)])
    guide = (255 * (guide - guide.min()) / np.ptp(guide)).astype(np.uint8)
    reference = _write_tif(tmp_path / "dem.tif", dem, nodata=-9999.0)
    guide_path = _write_tif(tmp_path / "rgb.tif", guide)
    return reference, guide_path, dem


def test_load_geotiff_pair_mask_and_pixel_size(tmp_path: Path) -> None:
    reference, guide, dem = geotiff_pair(tmp_path)
    pair = load_geotiff_pair(reference, guide)
    assert pair.name == "dem" and pair.pixel_size == (2.0, 2.0)
    assert pair.reference.shape == (32, 32) and pair.guide.shape == (3, 32, 32)
    assert not pair.mask[:6, :6].any() and pair.mask[6:, :].all() and pair.mask[:, 6:].all()
    np.testing.assert_array_equal(pair.reference[pair.mask], dem[pair.mask])

    assert pair.guide_resampling == "none"
    # a guide on another grid is warped onto the reference's, as upscale does
    yy, xx = np.mgrid[0:64, 0:64]
    fine = np.stack([xx, yy, xx + yy]).astype(np.uint8)
    finer = _write_tif(tmp_path / "finer.tif", fine, pixel=1.0)
    warped = load_geotiff_pair(reference, finer)
    assert warped.guide_resampling == "average" and warped.guide.shape == (3, 32, 32)
    np.testing.assert_allclose(warped.guide[0, 5, :4], [0.5, 2.5, 4.5, 6.5])
    shifted = _write_tif(
        tmp_path / "shifted.tif",
        np.zeros((3, 32, 32), np.uint8),
        transform=Affine(2.0, 0, 356_001.0, 0, -2.0, 5_700_000.0),
    )
    assert load_geotiff_pair(reference, shifted).guide_resampling == "bilinear"
    far = _write_tif(
        tmp_path / "far.tif", fine, transform=Affine(1.0, 0, 0.0, 0, -1.0, 0.0)
    )
    with pytest.raises(InputError, match="does not overlap"):
        load_geotiff_pair(reference, far)
    with pytest.raises(InputError, match="no such file"):
        load_geotiff_pair(tmp_path / "missing.tif", guide)


# ------------------------------------------------------------------------------------------
# The command
# ------------------------------------------------------------------------------------------


def _reference_bicubic(name: str, scale: int) -> tuple[float, float]:
    """Bicubic RMSE/MAE of one shared Middlebury image, computed here independently."""
    target = np.asarray(Image.open(MIDDLEBURY / "target" / f"{name}.png"), dtype=np.float64)
    hr = torch.from_numpy(target)[None, None]
    up = F.interpolate(F.avg_pool2d(hr, scale), scale_factor=scale, mode="bicubic")
    diff = (up[0, 0] - hr[0, 0]).numpy()
    return float(np.sqrt(np.mean(diff**2))), float(np.mean(np.abs(diff)))


@pytest.mark.slow
def test_evaluate_middlebury_dir_json() -> None:
    if not (MIDDLEBURY / "guide").is_dir():
        pytest.skip(f"shared Middlebury data not found at {MIDDLEBURY}")
    result = run_evaluate(
        str(MIDDLEBURY), "--limit", "2", "--iterations", "3", "--json", "--device", "cpu"
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["mode"] == "directory" and document["preset"] == "depth"
    assert (document["s2g_kernel"], document["g2s_kernel"], document["scale"]) == (11, 5, 4)
    images = document["images"]
    expected = sorted(p.stem for p in (MIDDLEBURY / "target").glob("*.png"))[:2]
    assert [i["name"] for i in images] == expected
    for image in images:
        assert 0 < image["rmse"] < 255 and 0 < image["mae"] <= image["rmse"]
        bicubic_rmse, bicubic_mae = _reference_bicubic(image["name"], 4)
        assert image["bicubic_rmse"] == pytest.approx(bicubic_rmse, rel=1e-9)
        assert image["bicubic_mae"] == pytest.approx(bicubic_mae, rel=1e-9)
        assert image["slope_rmse"] is None and image["seconds"] > 0
    mean = document["mean"]
    for key in ("rmse", "mae", "bicubic_rmse", "bicubic_mae"):
        assert mean[key] == pytest.approx(np.mean([i[key] for i in images]))
    assert "Traceback" not in result.stderr


def test_evaluate_geotiff_pair_table_and_json(tmp_path: Path) -> None:
    reference, guide, _ = geotiff_pair(tmp_path)
    runner = CliRunner()
    args = [str(reference), "--guide", str(guide), "--scale", "4", "--iterations", "2"]
    result = runner.invoke(evaluate, [*args, "--json", "-q", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["mode"] == "geotiff" and document["preset"] == "remote-sensing"
    assert (document["s2g_kernel"], document["g2s_kernel"]) == (5, 3)
    (image,) = document["images"]
    assert image["name"] == "dem"
    for key in ("rmse", "mae", "bicubic_rmse", "bicubic_mae", "slope_rmse", "bicubic_slope_rmse"):
        assert math.isfinite(image[key]) and image[key] >= 0
        assert document["mean"][key] == pytest.approx(image[key])
    # nodata (-9999) must stay out of the scores: it would make every error huge
    assert image["bicubic_rmse"] < 10

    table = runner.invoke(evaluate, [*args, "-q", "--preset", "depth"])
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert "preset depth (11/5)" in lines[0]
    assert lines[1].split()[:3] == ["image", "RMSE", "MAE"] and "slope" in lines[1]
    assert lines[3].split()[0] == "dem" and lines[-1].split()[0] == "mean"
    assert len({len(line) for line in lines[1:]}) == 1  # aligned


def _one_line_error(result) -> str:  # noqa: ANN001 - click Result
    assert result.exit_code not in (0, None), result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_evaluate_bad_input_is_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    line = _one_line_error(runner.invoke(evaluate, [str(tmp_path / "missing.tif"), "--guide", "x"]))
    assert "missing.tif" in line
    (tmp_path / "empty").mkdir()
    line = _one_line_error(runner.invoke(evaluate, [str(tmp_path / "empty")]))
    assert "guide/" in line and "target/" in line
    reference, _, _ = geotiff_pair(tmp_path)
    flat = _write_tif(tmp_path / "flat.tif", np.zeros((3, 64, 64), np.uint8), pixel=1.0)
    line = _one_line_error(runner.invoke(evaluate, [str(reference), "--guide", str(flat)]))
    assert "guide is constant" in line
    usage = runner.invoke(evaluate, [str(reference)])  # GeoTIFF without --guide
    assert usage.exit_code == 2 and "--guide" in usage.output


def test_evaluate_bad_input_in_a_real_process(tmp_path: Path) -> None:
    (tmp_path / "guide").mkdir()  # guide/ but no target/
    result = run_evaluate(str(tmp_path), "-q", timeout=120)
    assert result.returncode == 1
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "target/" in result.stderr
