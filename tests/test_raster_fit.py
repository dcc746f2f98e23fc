"""The raster-level fit (issue 21): one network trained on crops sampled across the raster,
applied to every tile, or fine-tuned per tile. Arrays, real GeoTIFFs and real ``mmsr-geo``
subprocesses (kill -9 during training and during inference, then the rerun)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from _rasters import pair, terrain, write
from test_batch import REPO, cli_command, cli_env, one_thread, run_cli  # noqa: F401 (fixture)

from mmsr_geo.distributed import LocalProcessExecutor
from mmsr_geo.errors import InputError
from mmsr_geo.executors import SerialExecutor
from mmsr_geo.fit import fit
from mmsr_geo.fit_config import FitConfig
from mmsr_geo.levels import LEVEL_SIGMA
from mmsr_geo.metrics import rmse
from mmsr_geo.model import context_radius
from mmsr_geo.normalisation import normalisation_stats
from mmsr_geo.raster_fit import (
    CropBudget,
    array_crops,
    fit_raster,
    predict_many,
    train_network,
)
from mmsr_geo.run import UpscaleRequest, plan_run, upscale_raster
from mmsr_geo.run.crops import sample_crops
from mmsr_geo.run.statistics import raster_statistics

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = FitConfig(iterations=6, features=8, s2g_kernel=3, g2s_kernel=3, device="cpu")
RASTER = ["-s", "2", "--iterations", "60", "--features", "8", "--tile-size", "8", "--overlap",
          "2", "--device", "cpu", "--seed", "0", "--schedule", "residual-cosine",
          "--crop-size", "8", "--progress", "json"]
"""A 32 x 32 source in 25 tiles; the training: 180 steps of 2 crops of 8 x 8 source pixels, a
few seconds: long enough to be killed in the middle of it."""


def _pixels(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def _run_facts(path: Path) -> dict:
    with rasterio.open(path) as src:
        return json.loads(src.tags()["MMSR_RUN"])


# --- arrays -----------------------------------------------------------------------------------


def test_training_is_seeded_and_beats_an_untrained_start() -> None:
    lr, guide = terrain(24, 24, 2)
    stats = normalisation_stats(lr.astype(np.float64), guide)
    budget = CropBudget(steps=100, crop_size=8, crops_per_step=2, pool=9)
    crops = array_crops(lr, guide, 2, budget, seed=0)
    assert len(crops) == 9 and {c.source.shape for c in crops} == {(8, 8)}
    config = FitConfig(iterations=100, features=8, s2g_kernel=3, g2s_kernel=3, device="cpu",
                       residual="none", schedule="paper")
    first = train_network(crops, 2, config, budget, stats)
    again = train_network(crops, 2, config, budget, stats)
    assert first.fingerprint == again.fingerprint and first.intact()
    other = train_network(crops, 2, FitConfig(**{**config.__dict__, "seed": 1}), budget, stats)
    assert other.fingerprint != first.fingerprint

    (trained,) = predict_many(first, [lr], [guide], 2, config, masks=[None], stats=[stats])
    short = CropBudget(steps=1, crop_size=8, crops_per_step=2, pool=9)
    untrained = train_network(crops, 2, FitConfig(**{**config.__dict__, "iterations": 1}),
                              short, stats)
    (start,) = predict_many(untrained, [lr], [guide], 2, config, masks=[None], stats=[stats])
    assert trained.iterations == 0 and trained.prediction.shape == (48, 48)
    # the whole raster (not only the crops) is reproduced better after training
    assert first.final_loss < 0.7 * untrained.final_loss, (first.final_loss, untrained.final_loss)
    assert trained.cycle_rmse < start.cycle_rmse, (trained.cycle_rmse, start.cycle_rmse)


def test_crops_cover_the_pair_and_skip_invalid_areas() -> None:
    lr, guide = terrain(40, 40, 2)
    mask = np.ones(lr.shape, bool)
    mask[:, :20] = False  # the left half has no data
    crops = array_crops(lr, guide, 2, CropBudget(steps=1, crop_size=8, pool=16), mask=mask)
    assert crops and all(c.valid.mean() >= 0.25 for c in crops)
    assert len(crops) < 16  # crops in the left half were left out
    small = array_crops(lr[:5, :6], guide[:, :10, :12], 2, CropBudget(steps=1, crop_size=8))
    assert {c.source.shape for c in small} == {(5, 6)}  # smaller than a crop: trained whole


def test_fit_raster_is_close_to_the_per_image_fit() -> None:
    lr, guide = terrain(24, 24, 2)
    yy, xx = np.mgrid[0:48, 0:48].astype(np.float64)
    truth = 10 * np.sin(xx / 5) + yy / 3 + 5 * np.cos((xx + yy) / 9)
    config = FitConfig(iterations=40, features=8, s2g_kernel=3, g2s_kernel=3, device="cpu",
                       residual="bicubic", schedule="cosine")
    per_image = fit(lr, guide, 2, config)
    raster = fit_raster(lr, guide, 2, config, budget=CropBudget(40, 12, 2, 16))
    hybrid = fit_raster(lr, guide, 2, config, budget=CropBudget(40, 12, 2, 16), finetune=5)
    scores = [rmse(r.prediction, truth) for r in (per_image, raster, hybrid)]
    assert scores[1] < 1.5 * scores[0] and scores[2] < 1.5 * scores[0], scores


@pytest.mark.parametrize(
    ("scale", "kernels", "level_sigma", "residual"),
    [(2, (3, 3), 0.0, "none"), (4, (5, 3), 0.0, "bilinear"), (4, (11, 5), 2.0, "none"),
     (8, (5, 3), 0.0, "none")],
)
def test_a_window_read_with_its_context_predicts_what_the_whole_raster_does(
    scale: int, kernels: tuple[int, int], level_sigma: float, residual: str
) -> None:
    """The raster mode's tiles read context_radius source pixels around them: their core is
    then the whole raster's prediction (no seam), while a tile read without it is not."""
    h, w = 40, 36
    lr, guide = terrain(h, w, scale)
    config = FitConfig(iterations=2, features=8, s2g_kernel=kernels[0], g2s_kernel=kernels[1],
                       residual=residual, level_sigma=level_sigma, device="cpu")
    stats = normalisation_stats(lr, guide, np.ones(lr.shape, bool))
    crops = array_crops(lr, guide, scale, CropBudget(steps=2, crop_size=8, pool=4))
    weights = train_network(crops, scale, config, CropBudget(steps=2, crop_size=8), stats)
    whole = predict_many(weights, [lr], [guide], scale, config, masks=[None], stats=[stats])
    margin = context_radius(scale, *kernels, level_sigma)
    r, c, size = 14, 12, 10  # a window well inside the raster

    def window_prediction(m: int) -> np.ndarray:
        rows, cols = slice(r - m, r + size + m), slice(c - m, c + size + m)
        hr_rows = slice(rows.start * scale, rows.stop * scale)
        hr_cols = slice(cols.start * scale, cols.stop * scale)
        (part,) = predict_many(weights, [lr[rows, cols]], [guide[:, hr_rows, hr_cols]], scale,
                               config, masks=[None], stats=[stats])
        core = slice(m * scale, (m + size) * scale)
        return part.prediction[core, core]

    expected = whole[0].prediction[r * scale:(r + size) * scale, c * scale:(c + size) * scale]
    np.testing.assert_allclose(window_prediction(margin), expected, rtol=0, atol=1e-4)
    assert np.abs(window_prediction(0) - expected).max() > 1e-3


# --- the run ----------------------------------------------------------------------------------


def test_crops_of_a_raster_lie_where_source_and_aoi_are(tmp_path: Path) -> None:
    lr, guide = terrain(32, 32, 2)
    lr[:, :16] = -1.0  # nodata in the left half
    source = write(tmp_path / "dem.tif", lr, nodata=-1.0)
    guide_path = write(tmp_path / "rgb.tif", guide, pixel=5.0)
    request = UpscaleRequest(source, guide_path, 2, output=tmp_path / "o.tif", config=SMALL,
                             tile_size=8, overlap=2, fit_mode="raster", crop_size=6)
    with plan_run(request) as plan:
        stats = raster_statistics(plan)
        crops = sample_crops(plan, stats, SMALL, CropBudget(steps=1, crop_size=6, pool=40))
    assert len(crops) >= 10
    assert all(c.valid.any() for c in crops)
    # every crop's loss pixels are real data: the nodata value never enters
    assert all((c.source[c.valid] != -1.0).all() for c in crops)
    assert all(c.valid.mean() >= 0.25 for c in crops)


def test_raster_and_hybrid_runs_write_the_grid_and_record_the_network(tmp_path: Path) -> None:
    source, guide, _ = pair(tmp_path, 32, 32)  # nodata in the top-left 4 x 4 corner
    reports = {}
    for mode in ("tile", "raster", "hybrid"):
        reports[mode] = upscale_raster(
            source, guide, tmp_path / f"{mode}.tif", scale=2, config=SMALL, schedule="paper",
            iterations=6, tile_size=8, overlap=2, fit_mode=mode, crop_size=8,
            level_sigma=LEVEL_SIGMA, **({"finetune": 2} if mode == "hybrid" else {}),
        ) if mode != "tile" else upscale_raster(
            source, guide, tmp_path / "tile.tif", scale=2, config=SMALL, schedule="paper",
            iterations=6, tile_size=8, overlap=2, fit_mode="tile",
        )
    tile, raster, hybrid = (_pixels(tmp_path / f"{m}.tif") for m in ("tile", "raster", "hybrid"))
    with rasterio.open(tmp_path / "tile.tif") as a, rasterio.open(tmp_path / "raster.tif") as b:
        assert (a.crs, a.transform, a.shape, a.nodata) == (b.crs, b.transform, b.shape, b.nodata)
    nodata = tile == -1.0
    assert nodata[:8, :8].all() and nodata.sum() == 64  # the source's nodata corner, only
    for other in (raster, hybrid):
        assert ((other == -1.0) == nodata).all()
    assert reports["raster"].fit_mode == "raster" and reports["raster"].network
    assert reports["hybrid"].network == reports["raster"].network  # the same training
    facts = _run_facts(tmp_path / "hybrid.tif")
    assert facts["fit_mode"] == "hybrid" and facts["raster_fit"]["finetune"] == 2
    assert facts["raster_fit"]["network"] == reports["raster"].network
    assert facts["raster_fit"]["level_sigma"] == LEVEL_SIGMA  # asked, for a network from scratch
    assert facts["iterations"]["max"] == 2 and _run_facts(tmp_path / "raster.tif")[
        "iterations"]["max"] == 0
    assert "fit_mode" not in _run_facts(tmp_path / "tile.tif")  # --fit tile: as before


def test_auto_keeps_small_rasters_per_tile_and_says_why(tmp_path: Path) -> None:
    source, guide, _ = pair(tmp_path, 12, 12)
    report = upscale_raster(source, guide, tmp_path / "o.tif", scale=2, config=SMALL,
                            schedule="paper", iterations=6, tile_size=8, overlap=2)
    assert report.fit_mode == "tile" and report.network is None
    facts = _run_facts(tmp_path / "o.tif")
    assert facts["fit_mode"] == "tile" and "would cost" in facts["fit_mode_reason"]


def test_local_processes_get_the_network_once_and_give_the_serial_output(tmp_path: Path):
    source, guide, _ = pair(tmp_path, 24, 24)
    options = dict(scale=2, config=SMALL, schedule="paper", iterations=6, tile_size=8,
                   overlap=2, fit_mode="raster", crop_size=8)
    upscale_raster(source, guide, tmp_path / "serial.tif", executor=SerialExecutor(), **options)
    with LocalProcessExecutor(2, threads=2) as executor:
        upscale_raster(source, guide, tmp_path / "workers.tif", executor=executor, **options)
    np.testing.assert_array_equal(_pixels(tmp_path / "serial.tif"),
                                  _pixels(tmp_path / "workers.tif"))


def test_bad_raster_settings_are_refused_before_any_work(tmp_path: Path) -> None:
    source, guide, _ = pair(tmp_path, 12, 12)
    for changes, message in (
        ({"fit_mode": "tile", "crop_size": 8}, "for --fit raster, hybrid or auto"),
        ({"fit_mode": "raster", "finetune": 3}, "for --fit hybrid"),
        ({"fit_mode": "everything"}, "unknown fit mode"),
        ({"fit_mode": "tile", "level_sigma": 3.0}, "level sigma is for --fit raster"),
        ({"fit_mode": "raster", "level_sigma": 0.0}, "level sigma must be > 0"),
    ):
        request = UpscaleRequest(source, guide, 2, output=tmp_path / "o.tif", **changes)
        with pytest.raises(InputError, match=message):
            plan_run(request)
    result = run_cli("upscale", str(source), "-g", str(guide), "-s", "2", "--fit", "tile",
                     "--crop-size", "8", "-o", str(tmp_path / "o.tif"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error: a crop size")
    assert not (tmp_path / "o.tif").exists()


# --- kill -9, then the rerun ------------------------------------------------------------------


def _killed_when(source: Path, guide: Path, output: Path, ready) -> None:
    """Start the CLI in raster mode and SIGKILL it at the first JSON event ``ready`` accepts."""
    process = subprocess.Popen(
        cli_command("upscale", str(source), "-g", str(guide), "-o", str(output), *RASTER),
        cwd=REPO, env=cli_env(), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )
    deadline = time.monotonic() + 120
    assert process.stderr is not None
    for line in process.stderr:
        assert time.monotonic() < deadline, "not killed within 2 minutes"
        event = json.loads(line) if line.startswith("{") else {}
        if ready(event):
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "finished before it could be killed"
    assert not output.exists()


def test_kill_during_training_or_inference_then_rerun_gives_the_same_file(tmp_path: Path):
    lr, guide = terrain(32, 32, 2)
    source = write(tmp_path / "dem.tif", lr)
    guide_path = write(tmp_path / "rgb.tif", guide, pixel=5.0)
    reference = tmp_path / "reference.tif"
    done = run_cli("upscale", str(source), "-g", str(guide_path), "-o", str(reference), *RASTER)
    assert done.returncode == 0, done.stderr

    during_training = tmp_path / "a.tif"
    _killed_when(source, guide_path, during_training,
                 lambda e: e.get("event") == "progress" and e.get("iteration", 0) >= 2
                 and e.get("tiles") == 1)
    work = Path(f"{during_training}.mmsr-work")
    assert not (work / "network.npz").exists()

    during_inference = tmp_path / "b.tif"
    _killed_when(source, guide_path, during_inference,
                 lambda e: e.get("event") == "progress" and e.get("tiles") == 25
                 and e.get("tile", 0) >= 3)
    work = Path(f"{during_inference}.mmsr-work")
    assert (work / "network.npz").exists() and list(work.glob("tile_*.npz"))

    for output in (during_training, during_inference):
        rerun = run_cli("upscale", str(source), "-g", str(guide_path), "-o", str(output),
                        *RASTER)
        assert rerun.returncode == 0, rerun.stderr
        np.testing.assert_array_equal(_pixels(output), _pixels(reference))
        assert _run_facts(output) == _run_facts(reference)
