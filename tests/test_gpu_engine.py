"""The GPU engine's parts that run (and are tested) on the CPU: many tiles per optimisation
step, the precision policy, out-of-memory halving and splitting (with an injected CUDA OOM
error), and a core that imports without GDAL (issue 8)."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from _rasters import pair
from test_batch import REPO, cli_env, one_thread, read, run_cli  # noqa: F401 (fixture)

from mmsr_geo import jobs as jobs_module
from mmsr_geo.errors import DeviceOutOfMemoryError, InputError
from mmsr_geo.fit import FitConfig, fit, fit_many
from mmsr_geo.jobs import TileJob, fit_tiles
from mmsr_geo.normalisation import normalisation_stats

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = FitConfig(iterations=15, features=8, device="cpu")


def _pairs(n: int, h: int = 8, w: int = 10, scale: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : h * scale, 0 : w * scale]
    sources, guides = [], []
    for i in range(n):
        hr = np.sin(xx / (3 + i)) * 10 + yy * 0.5 + rng.normal(0, 0.3, xx.shape)
        sources.append(hr.reshape(h, scale, w, scale).mean((1, 3)))
        guides.append(np.stack([np.sin(xx / (3 + i)), yy / yy.max()]).astype(np.float32))
    return sources, guides


def test_fit_many_equals_fit_per_pair():
    sources, guides = _pairs(3)
    masks = [None, np.ones((8, 10), bool), np.arange(80).reshape(8, 10) % 7 != 0]
    many = fit_many(sources, guides, 2, CONFIG, masks=masks, seeds=[4, 5, 6])
    for i in range(3):
        one = fit(sources[i], guides[i], 2, dataclasses.replace(CONFIG, seed=4 + i), mask=masks[i])
        np.testing.assert_allclose(many[i].prediction, one.prediction, rtol=0, atol=1e-4)
        assert abs(many[i].cycle_rmse - one.cycle_rmse) < 1e-4
        assert many[i].precision == "fp32" and many[i].iterations == 15
    different = fit_many(sources, guides, 2, CONFIG, seeds=[4, 4, 4])
    assert not np.allclose(different[1].prediction, many[1].prediction, atol=1e-3)


def test_fit_many_checks_its_arguments():
    sources, guides = _pairs(2)
    small, small_guides = _pairs(1, h=4, w=4)
    with pytest.raises(InputError, match="one shape"):
        fit_many([sources[0], small[0]], [guides[0], small_guides[0]], 2, CONFIG)
    with pytest.raises(InputError, match="one entry per pair"):
        fit_many(sources, guides, 2, CONFIG, seeds=[1])
    with pytest.raises(InputError, match="precision"):
        FitConfig(precision="fp8")


def test_bf16_runs_and_stays_close_to_fp32():
    sources, guides = _pairs(1)
    config = dataclasses.replace(CONFIG, iterations=30)
    full = fit(sources[0], guides[0], 2, config)
    half = fit(sources[0], guides[0], 2, dataclasses.replace(config, precision="bf16"))
    assert half.precision == "bf16" and full.precision == "fp32"
    assert fit(sources[0], guides[0], 2, dataclasses.replace(config, precision="tf32")).precision \
        == "fp32"  # no TensorFloat-32 on the CPU
    spread = float(np.std(full.prediction))
    assert float(np.sqrt(np.mean((half.prediction - full.prediction) ** 2))) < 0.1 * spread


def _jobs(n: int, h: int = 12) -> list[TileJob]:
    sources, guides = _pairs(n, h=h, w=h)
    stats = normalisation_stats(np.stack(sources), np.concatenate(guides, axis=1))
    return [
        TileJob(
            index=i,
            lr_window=None,
            hr_window=None,
            source=s,
            source_valid=np.ones(s.shape, bool),
            guide=g,
            output_valid=np.ones(g.shape[1:], bool),
            scale=2,
            stats=stats,
            config=dataclasses.replace(CONFIG, seed=i),
        )
        for i, (s, g) in enumerate(zip(sources, guides, strict=True))
    ]


def _inject_oom(monkeypatch, max_tiles: int, max_size: int) -> list[tuple[int, int]]:
    """Make fit_many raise CUDA's out-of-memory error above ``max_tiles`` tiles or above
    ``max_size`` source pixels of edge, as a GPU with little memory would; returns the
    (tiles, edge) of every call."""
    calls: list[tuple[int, int]] = []
    real = jobs_module.fit_many

    def limited(sources, guides, scale, config, **kwargs):
        calls.append((len(sources), sources[0].shape[0]))
        if len(sources) > max_tiles or sources[0].shape[0] > max_size:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(sources, guides, scale, config, **kwargs)

    monkeypatch.setattr(jobs_module, "fit_many", limited)
    return calls


def test_out_of_memory_halves_the_batch_then_splits_the_tile(monkeypatch, caplog):
    jobs = _jobs(4)
    expected = fit_tiles(jobs[:1])[0].prediction
    calls = _inject_oom(monkeypatch, max_tiles=1, max_size=8)
    with caplog.at_level(logging.WARNING, logger="mmsr_geo.jobs"):
        results = fit_tiles(jobs)
    assert [r.index for r in results] == [0, 1, 2, 3]
    assert calls[:3] == [(4, 12), (2, 12), (1, 12)]  # halved twice, then the tile is split
    assert (1, 7) in calls  # 2 x 2 parts of 12 // 2 + 1 overlapping source pixels
    assert len(caplog.records) == 1 and "retrying in batches of 2" in caplog.text
    for result in results:
        assert result.prediction.shape == (24, 24) and np.isfinite(result.prediction).all()
    # the blended parts describe the same surface as the tile fitted whole (15 iterations of
    # 8-feature networks: similar, not equal)
    assert np.corrcoef(results[0].prediction.ravel(), expected.ravel())[0, 1] > 0.7
    assert abs(results[0].prediction.mean() - expected.mean()) < 0.2 * expected.std()


def test_a_part_that_never_fits_is_a_clear_error(monkeypatch):
    _inject_oom(monkeypatch, max_tiles=1, max_size=2)
    with pytest.raises(DeviceOutOfMemoryError, match="does not fit the device's memory"):
        fit_tiles(_jobs(1))


def test_batched_upscale_and_precision_are_recorded(tmp_path: Path):
    source, guide, _ = pair(tmp_path)
    common = ["-s", "2", "--tile-size", "12", "--overlap", "3", "--iterations", "3",
              "--features", "4", "--device", "cpu", "-q"]
    one = run_cli("upscale", str(source), "-g", str(guide), *common, "-o", str(tmp_path / "a.tif"))
    many = run_cli("upscale", str(source), "-g", str(guide), *common, "--batch-tiles", "4",
                   "-o", str(tmp_path / "b.tif"))
    assert one.returncode == many.returncode == 0, one.stderr + many.stderr
    np.testing.assert_allclose(read(tmp_path / "a.tif"), read(tmp_path / "b.tif"), atol=1e-3)
    bf16 = run_cli("upscale", str(source), "-g", str(guide), *common, "--precision", "bf16",
                   "-o", str(tmp_path / "c.tif"))
    assert bf16.returncode == 0, bf16.stderr
    with rasterio.open(tmp_path / "c.tif") as out:
        settings = json.loads(out.tags()["MMSR_SETTINGS"])
        facts = json.loads(out.tags()["MMSR_RUN"])
    assert settings["precision"] == "bf16" and facts["precisions"] == ["bf16"]
    assert facts["iterations"] == {"min": 3, "median": 3.0, "max": 3}


def test_the_core_imports_and_fits_without_gdal():
    """The GPU machine's image has torch, numpy, numba and Pillow but no rasterio, shapely or
    dask: the core must import and fit there."""
    script = textwrap.dedent(
        """
        import importlib.abc, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("rasterio", "shapely", "dask", "distributed",
                                          "affine"):
                    raise ImportError(f"{name} is blocked for this test")
                return None

        sys.meta_path.insert(0, Block())
        import numpy as np
        import mmsr_geo, mmsr_geo.ops, mmsr_geo.model, mmsr_geo.fit, mmsr_geo.evaluation
        from mmsr_geo.evaluation import evaluate_pair
        yy, xx = np.mgrid[0:16, 0:16]
        reference = np.sin(xx / 3.0) * 5 + yy
        guide = np.stack([np.sin(xx / 3.0), yy / 16.0]).astype(np.float32)
        config = mmsr_geo.FitConfig(iterations=2, features=4, device="cpu")
        scores = evaluate_pair(reference, guide, 2, config)
        assert np.isfinite(scores.rmse)
        assert not any(m.split(".")[0] == "rasterio" for m in sys.modules)
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=cli_env(), capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
