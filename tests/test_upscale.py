"""End-to-end ``upscale``: georeferencing, nodata, AOI, errors, atomic writes, resume.

Tiny rasters, 2 iterations and 8 features: these check plumbing, not quality.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from _rasters import LR_PIXEL, ORIGIN, pair, terrain, write
from affine import Affine
from click.testing import CliRunner
from mmsr_geo_cli.upscale import upscale

from mmsr_geo.checkpoints import work_dir_for
from mmsr_geo.errors import InputError
from mmsr_geo.fit import FitConfig
from mmsr_geo.run import upscale_raster
from mmsr_geo.writer import read_settings

FAST = FitConfig(iterations=2, features=8, s2g_kernel=3, g2s_kernel=3, device="cpu")
FAST_ARGS = ["--iterations", "2", "--features", "8", "--device", "cpu", "-q"]
TILES = {"tile_size": 12, "overlap": 3}  # 24x24 LR -> 3x3 tiles


def run(source: Path, guide: Path, output: Path, **kwargs) -> object:
    options = {"scale": 2, "config": FAST, **TILES, **kwargs}
    return upscale_raster(source, guide, output, **options)


def test_output_grid_nodata_and_tags(tmp_path: Path) -> None:
    source, guide, lr = pair(tmp_path)
    report = run(source, guide, tmp_path / "out.tif")
    assert report.tiles_total == 9 and report.tiles_fitted == 9 and report.tiles_skipped == 0
    assert np.isfinite(report.mean_cycle_rmse) and report.device == "cpu"
    with rasterio.open(source) as src, rasterio.open(tmp_path / "out.tif") as out:
        assert out.crs == src.crs
        assert out.transform == src.transform @ rasterio.Affine.scale(0.5)
        assert (out.height, out.width) == (48, 48)
        assert out.dtypes[0] == "float32" and out.nodata == -1.0
        assert out.profile["tiled"] and out.profile["compress"] == "deflate"
        assert out.descriptions[0].endswith("x2 (MMSR)")
        data = out.read(1)
        tags = out.tags()
    assert (data[:8, :8] == -1.0).all()  # source nodata corner stays nodata
    assert (data[8:, 8:] != -1.0).all()
    assert abs(data[8:, 8:].mean() - lr[4:, 4:].mean()) < 3 * lr[4:, 4:].std()
    assert tags["MMSR_SCALE"] == "2" and tags["MMSR_ITERATIONS"] == "2"
    assert tags["MMSR_SOURCE"] == "dem.tif" and tags["MMSR_GUIDE"] == "rgb.tif"
    settings = read_settings(tmp_path / "out.tif")
    assert settings["seed"] == 0 and settings["g2s_kernel"] == 3
    assert not work_dir_for(tmp_path / "out.tif").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dem.tif", "out.tif", "rgb.tif"]


def test_nodata_chosen_and_aoi_clips(tmp_path: Path) -> None:
    source, guide, _ = pair(tmp_path, nodata=None)
    # AOI: the western third of the source (WKT in the source CRS)
    x0, y0 = ORIGIN
    aoi = f"POLYGON(({x0} {y0}, {x0 + 60} {y0}, {x0 + 60} {y0 - 240}, {x0} {y0 - 240}, {x0} {y0}))"
    report = run(source, guide, tmp_path / "out.tif", aoi=aoi)
    assert report.tiles_skipped == 6 and report.tiles_fitted == 3  # only the western column
    with rasterio.open(tmp_path / "out.tif") as out:
        assert out.nodata == -9999.0
        data = out.read(1)
    assert (data[:, :12] != -9999.0).all()  # 60 m = 6 LR px = 12 HR px inside the AOI
    assert (data[:, 12:] == -9999.0).all()


def test_partial_guide_warns_and_masks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source, _, _ = pair(tmp_path)
    _, hr = terrain(24, 24, 2)
    guide = write(tmp_path / "half.tif", hr[:, :24, :], pixel=LR_PIXEL / 2)  # northern half
    with caplog.at_level(logging.WARNING):
        run(source, guide, tmp_path / "out.tif")
    assert "covers only 50.0%" in caplog.text
    with rasterio.open(tmp_path / "out.tif") as out:
        data = out.read(1)
    assert (data[24:] == -1.0).all() and (data[8:24, 8:] != -1.0).all()


def test_non_georeferenced_png_pair(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lr, hr = terrain(16, 16, 2)
    span = lr.max() - lr.min()
    source = write(
        tmp_path / "depth.png",
        ((lr - lr.min()) / span * 255).astype(np.uint8),
        crs=None,
        driver="PNG",
    )
    guide = write(tmp_path / "rgb.png", (np.abs(hr) * 100).astype(np.uint8), crs=None, driver="PNG")
    with caplog.at_level(logging.WARNING):
        report = upscale_raster(source, guide, scale=2, config=FAST, tile_size=16)
    assert "not georeferenced" in caplog.text
    assert report.output == tmp_path / "depth_x2.tif"
    with rasterio.open(report.output) as out:
        assert (out.height, out.width) == (32, 32) and out.crs is None
    # a georeferenced source with a pixel-only guide keeps its georeferencing
    geo_source = write(tmp_path / "dem.tif", lr)
    report = upscale_raster(geo_source, guide, scale=2, config=FAST, tile_size=16)
    with rasterio.open(report.output) as out, rasterio.open(geo_source) as src:
        assert out.crs == src.crs and out.transform == src.transform @ rasterio.Affine.scale(0.5)
    with pytest.raises(InputError, match="exactly 4 x the source"):
        upscale_raster(source, guide, tmp_path / "x4.tif", scale=4, config=FAST)


class _Recorder:
    """An executor that runs tiles in-process, calling ``check`` before each and raising
    KeyboardInterrupt after ``stop_after`` tiles (like Ctrl-C)."""

    in_process = False
    local_tiles = None

    def __init__(self, check: Callable[[], None], stop_after: int | None = None) -> None:
        self.check, self.stop_after, self.ran = check, stop_after, 0

    def map_unordered(self, fn: Callable, jobs: Iterable) -> Iterator:
        for job in jobs:
            if self.stop_after is not None and self.ran == self.stop_after:
                raise KeyboardInterrupt
            self.check()
            self.ran += 1
            yield fn(job)


def test_atomic_write_interrupt_and_identical_resume(tmp_path: Path) -> None:
    source, guide, _ = pair(tmp_path)
    reference = tmp_path / "reference.tif"
    run(source, guide, reference)

    output = tmp_path / "out.tif"

    def final_absent() -> None:
        assert not output.exists()

    with pytest.raises(KeyboardInterrupt):
        run(source, guide, output, executor=_Recorder(final_absent, stop_after=4))
    assert not output.exists()
    work = work_dir_for(output)
    assert len(list(work.glob("tile_*.npz"))) == 4
    assert not list(tmp_path.glob(".out.tif*"))  # no temporary output left

    resumer = _Recorder(final_absent)
    report = run(source, guide, output, executor=resumer)
    assert report.tiles_resumed == 4 and report.tiles_fitted == 5 and resumer.ran == 5
    assert output.read_bytes() == reference.read_bytes()
    assert not work.exists()


def test_other_settings_discard_checkpoints(tmp_path: Path) -> None:
    source, guide, _ = pair(tmp_path)
    output = tmp_path / "out.tif"
    with pytest.raises(KeyboardInterrupt):
        run(source, guide, output, executor=_Recorder(lambda: None, stop_after=2))
    report = run(source, guide, output, config=FitConfig(**{**FAST.__dict__, "seed": 7}))
    assert report.tiles_resumed == 0 and report.tiles_fitted == 9


def test_cli_cog_creation_options_and_preview(tmp_path: Path) -> None:
    source, guide, _ = pair(tmp_path)
    output = tmp_path / "cog.tif"
    args = [
        str(source),
        "--guide",
        str(guide),
        "-s",
        "2",
        "-o",
        str(output),
        "--tile-size",
        "12",
        "--overlap",
        "3",
        "--cog",
        "--co",
        "COMPRESS=ZSTD",
        "--preview",
        str(tmp_path / "look.png"),
        "--dtype",
        "int16",
        *FAST_ARGS,
    ]
    result = CliRunner().invoke(upscale, args)
    assert result.exit_code == 0, result.output
    with rasterio.open(output) as out:
        assert out.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert out.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "ZSTD"
        assert out.dtypes[0] == "int16" and out.nodata == -1
        assert out.tags()["MMSR_SCALE"] == "2"
    assert (tmp_path / "look.png").stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cog.tif",
        "dem.tif",
        "look.png",
        "rgb.tif",
    ]


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    source, guide, lr = pair(tmp_path)
    (tmp_path / "notes.tif").write_text("not a raster")
    _, hr = terrain(24, 24, 2)
    far = write(tmp_path / "far.tif", hr, pixel=5, origin=(ORIGIN[0] + 1e5, ORIGIN[1]))
    multi = write(tmp_path / "multi.tif", np.stack([lr, lr]))
    empty = write(tmp_path / "empty.tif", np.full_like(lr, -1.0), nodata=-1.0)
    exists = tmp_path / "exists.tif"
    exists.write_bytes(b"keep me")
    s, g = str(source), str(guide)
    return {
        "missing": ([str(tmp_path / "nope.tif"), "--guide", g, "-s", "2"], "not found"),
        "not a raster": ([str(tmp_path / "notes.tif"), "--guide", g, "-s", "2"], "not a raster"),
        "no overlap": ([s, "--guide", str(far), "-s", "2"], "does not overlap"),
        "band index": ([s, "--guide", g, "-s", "2", "--band", "3"], "band 3 does not exist"),
        "guide band": (
            [s, "--guide", g, "-s", "2", "--guide-bands", "1,5"],
            "band 5 does not exist",
        ),
        "scale": ([s, "--guide", g, "-s", "1"], "scale must be an integer >= 2"),
        "multi-band": ([str(multi), "--guide", g, "-s", "2"], "choose one with --band"),
        "all nodata": ([str(empty), "--guide", g, "-s", "2"], "no valid pixel"),
        "exists": ([s, "--guide", g, "-s", "2", "-o", str(exists)], "--overwrite"),
    }


def test_bad_inputs_give_one_line_errors_and_no_files(tmp_path: Path) -> None:
    cases = _bad_inputs(tmp_path)
    before = sorted(tmp_path.iterdir())
    for name, (args, message) in cases.items():
        result = CliRunner().invoke(upscale, [*args, *FAST_ARGS])
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
        assert result.exit_code != 0, name
        assert len(errors) == 1 and message in errors[0], (name, result.stderr)
        assert "Traceback" not in result.output + result.stderr, name
        assert sorted(tmp_path.iterdir()) == before, name
    assert (tmp_path / "exists.tif").read_bytes() == b"keep me"


def test_real_subprocess(tmp_path: Path) -> None:
    source, guide, _ = pair(tmp_path)
    command = [sys.executable, "-c", "from mmsr_geo_cli.upscale import upscale; upscale()"]
    ok = subprocess.run(
        [
            *command,
            str(source),
            "--guide",
            str(guide),
            "-s",
            "2",
            "--tile-size",
            "24",
            *FAST_ARGS[:-1],
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "1 tile of 24x24 source pixels" in ok.stderr  # logged before fitting
    assert "1 tile (1 fitted" in ok.stderr and "on cpu" in ok.stderr
    assert (tmp_path / "dem_x2.tif").exists()
    bad = subprocess.run(
        [
            *command,
            str(source),
            "--guide",
            str(guide),
            "-s",
            "2",
            "--band",
            "9",
            "-o",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1
    assert bad.stderr.strip().count("\n") == 0 and "band 9 does not exist" in bad.stderr


def test_thermal_x5_with_chosen_bands_of_a_four_band_guide(tmp_path: Path) -> None:
    """Thermal-style run: x5, a 4-band (NIR-R-G-B) guide of which bands 4,3,2 are used."""
    lr, guide3 = terrain(10, 12, 5)
    noise = np.random.default_rng(0).normal(size=guide3.shape[1:]).astype(np.float32)
    guide4 = np.concatenate([guide3, noise[None]])
    source = write(tmp_path / "lst.tif", lr + 280.0)
    rgbn = write(tmp_path / "rgbn.tif", guide4, pixel=LR_PIXEL / 5)
    output = tmp_path / "lst_x5.tif"
    args = [str(source), "--guide", str(rgbn), "-s", "5", "--guide-bands", "4,3,2"]
    result = CliRunner().invoke(upscale, [*args, "-o", str(output), *FAST_ARGS])
    assert result.exit_code == 0, result.output
    with rasterio.open(source) as src, rasterio.open(output) as out:
        assert (out.width, out.height) == (60, 50)
        assert out.transform.almost_equals(src.transform @ Affine.scale(0.2))
        assert out.tags()["MMSR_SCALE"] == "5"
        assert read_settings(output)["guide_bands"] == [4, 3, 2]
        values = out.read(1)
        assert np.all(np.isfinite(values)) and abs(values.mean() - (lr.mean() + 280.0)) < 5


def test_usage_errors_are_one_line_from_the_real_command(tmp_path: Path) -> None:
    source, guide, _ = pair(tmp_path)
    for args, message in [
        (["-s", "1"], "scale must be an integer >= 2"),
        (["-s", "four"], "is not an integer scale"),
        (["-s", "2", "--guide-bands", "0"], "band numbers start at 1"),
        (["-s", "2", "--co", "COMPRESS"], "is not NAME=VALUE"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "mmsr_geo_cli", "upscale", str(source), "--guide", str(guide)]
            + args,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, args
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dem.tif", "rgb.tif"]
