"""Robust runs at scale (issue 10): bounded memory whatever the scale, one run per output,
stale locks taken over, leftovers cleaned, reruns with other settings reported, logs that suit
a file, and bugs that are never reported as bad input. Real GeoTIFFs, real CLI processes."""

from __future__ import annotations

import importlib
import json
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from _rasters import LR_PIXEL, pair, terrain, write
from click.testing import CliRunner
from mmsr_geo_cli.main import main as cli_main
from test_batch import (  # noqa: F401 (fixture)
    REPO,
    cli_command,
    cli_env,
    load_report,
    make_pair,
    one_thread,
    read,
    run_cli,
)

from mmsr_geo import PRESETS, FitConfig
from mmsr_geo.errors import InputError
from mmsr_geo.run import upscale_raster

pytestmark = pytest.mark.usefixtures("one_thread")  # in-process CLI runs, as the subprocesses

FAST = ["--iterations", "2", "--features", "4", "--device", "cpu"]


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli_command(*args), cwd=REPO, env=cli_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )


def _wait_for_checkpoint(process: subprocess.Popen[str], work: Path) -> None:
    deadline = time.monotonic() + 120
    while not list(work.glob("tile_*.npz")):
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint within 2 minutes"
        time.sleep(0.02)


def _slow_pair(tmp_path: Path) -> tuple[Path, Path]:
    """24x24 source in 36 tiles of 6 pixels: a run of several seconds."""
    source, guide, _ = pair(tmp_path)
    return source, guide


SLOW_TILES = ["-s", "2", "--tile-size", "6", "--overlap", "2", "--iterations", "25",
              "--features", "4", "--device", "cpu"]


# --- 1. memory bounded by the output tile -------------------------------------------------


def test_a_tile_too_big_for_the_memory_is_refused_at_once(tmp_path: Path):
    source, guide, _ = pair(tmp_path)
    started = time.monotonic()
    result = run_cli("upscale", str(source), "-g", str(guide), "-s", "100", "--tile-size", "32",
                     "--iterations", "100000", "--device", "cpu", "-o", str(tmp_path / "o.tif"))
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert "a tile of 2400x2400 output pixels" in error and "GiB" in error, error
    assert "use --tile-size" in error
    assert time.monotonic() - started < 60
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dem.tif", "rgb.tif"]


def test_scale_100_runs_in_bounded_memory_with_the_default_tiles(tmp_path: Path):
    lr, _ = terrain(12, 12, 2)
    source = write(tmp_path / "dem.tif", lr)
    _, fine = terrain(60, 60, 2)  # a guide at 1 m over the 120 m source: coarser than 0.1 m
    guide = write(tmp_path / "rgb.tif", fine, pixel=1.0)
    probe = (
        "import resource, subprocess, sys; "
        "code = subprocess.call(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe,
         *cli_command("upscale", str(source), "-g", str(guide), "-s", "100", "--iterations",
                      "1", "--features", "4", "--device", "cpu", "-q",
                      "-o", str(tmp_path / "x100.tif"))],
        cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    peak_mib = int(result.stdout.split()[-1]) / 1024
    assert peak_mib < 3000, f"peak RSS {peak_mib:.0f} MiB"
    with rasterio.open(tmp_path / "x100.tif") as out:
        assert (out.width, out.height) == (1200, 1200)
        settings = json.loads(out.tags()["MMSR_SETTINGS"])
    assert settings["tile_size"] == 4 and settings["overlap"] == 1  # 400 and 100 output px


# --- 2. one output, one run ---------------------------------------------------------------


def test_a_second_run_on_the_same_output_is_refused_while_the_first_finishes(tmp_path: Path):
    source, guide = _slow_pair(tmp_path)
    output = tmp_path / "out.tif"
    args = ["upscale", str(source), "-g", str(guide), *SLOW_TILES, "-o", str(output)]
    first = _start(*args)
    _wait_for_checkpoint(first, tmp_path / "out.tif.mmsr-work")
    second = run_cli(*args)
    assert second.returncode == 1
    assert f"is being made by PID {first.pid}" in second.stderr, second.stderr
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert read(output).shape == (48, 48)
    assert not (tmp_path / "out.tif.mmsr-work").exists()


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path: Path):
    source, guide = _slow_pair(tmp_path)
    output = tmp_path / "out.tif"
    work = tmp_path / "out.tif.mmsr-work"
    args = ["upscale", str(source), "-g", str(guide), *SLOW_TILES, "-o", str(output)]
    killed = _start(*args)
    _wait_for_checkpoint(killed, work)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    assert json.loads((work / "lock").read_text())["pid"] == killed.pid
    rerun = run_cli(*args, "-v")
    assert rerun.returncode == 0, rerun.stderr
    assert f"taking over the work folder of PID {killed.pid}" in rerun.stderr
    assert read(output).shape == (48, 48) and not work.exists()


def test_sigterm_stops_cleanly_and_keeps_the_checkpoints(tmp_path: Path):
    source, guide = _slow_pair(tmp_path)
    work = tmp_path / "out.tif.mmsr-work"
    args = ["upscale", str(source), "-g", str(guide), *SLOW_TILES, "-o", str(tmp_path / "out.tif")]
    stopped = _start(*args)
    _wait_for_checkpoint(stopped, work)
    stopped.send_signal(signal.SIGTERM)
    _, stderr = stopped.communicate(timeout=60)
    assert stopped.returncode == 143 and stderr.rstrip().endswith("Terminated."), stderr
    assert list(work.glob("tile_*.npz")) and not list(tmp_path.glob(".*.tmp"))
    assert run_cli(*args).returncode == 0


# --- 5. leftovers and permissions ---------------------------------------------------------


def test_temporaries_of_a_killed_final_write_are_removed_by_the_rerun(tmp_path: Path):
    source, guide, _ = pair(tmp_path)
    leftovers = [tmp_path / ".out.tif.99999.part.tmp", tmp_path / ".out.tif.99999.part.tmp.aux.xml",
                 tmp_path / ".out.tif.99998.cog.tmp"]
    for path in leftovers:
        path.write_bytes(b"half a GeoTIFF")
    unrelated = tmp_path / ".other.tif.99999.part.tmp"
    unrelated.write_bytes(b"not ours")
    result = run_cli("upscale", str(source), "-g", str(guide), "-s", "2", *FAST,
                     "-o", str(tmp_path / "out.tif"))
    assert result.returncode == 0, result.stderr
    assert not any(p.exists() for p in leftovers)
    assert unrelated.exists()


def test_batch_leaves_no_folder_after_an_early_error_and_reports_are_readable(tmp_path: Path):
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    (data / "b").mkdir()
    make_pair(data / "a", "X")
    make_pair(data / "b", "X", offset=5.0)
    out = tmp_path / "out"
    clash = run_cli("batch", str(data / "*" / "*_DSM.tif"), "-o", str(out), "-s", "2", *FAST)
    assert clash.returncode == 1 and "would both be written" in clash.stderr
    assert not out.exists()

    done = run_cli("batch", str(data / "a" / "*_DSM.tif"), "-o", str(out), "-s", "2", *FAST)
    assert done.returncode == 0, done.stderr
    output_mode = stat.S_IMODE((out / "X_DSM_x2.tif").stat().st_mode)
    for name in ("batch-report.json", "batch-index.geojson"):
        assert stat.S_IMODE((out / name).stat().st_mode) == output_mode, name


# --- 4. reruns with other settings --------------------------------------------------------


def test_a_rerun_with_other_settings_says_so_per_pair_and_keeps_the_outputs(tmp_path: Path):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    for i in range(2):
        make_pair(data, f"JAX_00{i}_00{i}", offset=10.0 * i)
    first = run_cli("batch", str(data / "*_DSM.tif"), "-o", str(out), "-s", "2", *FAST)
    assert first.returncode == 0, first.stderr
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tif")}
    earlier = load_report(out / "batch-report.json")["pairs"]

    changed = run_cli("batch", str(data / "*_DSM.tif"), "-o", str(out), "-s", "2", *FAST,
                      "--iterations", "3")
    assert changed.returncode == 1
    assert "2 outputs made with other settings were kept" in changed.stderr
    records = load_report(out / "batch-report.json")["pairs"]
    assert [r["status"] for r in records] == ["outdated", "outdated"]
    assert all("iterations 2 -> 3" in r["error"] for r in records)
    assert [r["cycle_rmse"] for r in records] == [r["cycle_rmse"] for r in earlier]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tif")} == before

    redo = run_cli("batch", str(data / "JAX_000_*_DSM.tif"), "-o", str(out), "-s", "2", *FAST,
                   "--iterations", "3", "--overwrite")
    assert redo.returncode == 0, redo.stderr
    document = load_report(out / "batch-report.json")
    assert [r["status"] for r in document["pairs"]] == ["ok"]
    assert [Path(r["source"]).name for r in document["earlier_pairs"]] == ["JAX_001_001_DSM.tif"]


# --- 6. logs ------------------------------------------------------------------------------


def test_progress_redirected_to_a_file_is_one_line_per_tile(tmp_path: Path):
    source, guide, _ = pair(tmp_path)
    result = run_cli("upscale", str(source), "-g", str(guide), "-s", "2", "--tile-size", "12",
                     "--overlap", "3", *FAST, "--iterations", "30", "-o", str(tmp_path / "o.tif"))
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) <= 9 + 5, result.stderr  # a line per tile, and five of the run's
    assert sum("/9 tiles done" in line for line in lines) == 9


def test_json_progress_is_one_object_per_line(tmp_path: Path):
    source, guide, _ = pair(tmp_path)
    result = run_cli("upscale", str(source), "-g", str(guide), "-s", "2", "--tile-size", "12",
                     "--overlap", "3", *FAST, "--progress", "json", "-o", str(tmp_path / "o.tif"))
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "log" and "start" in kinds and kinds[-1] == "done"
    start = next(e for e in events if e["event"] == "start")
    assert start["tiles"] == 9 and start["iterations"] == 2
    fits = [e for e in events if e.get("phase") == "fit" and "tile_seconds" in e]
    assert [e["tile"] for e in fits] == list(range(1, 10)) and fits[-1]["fraction"] == 1.0
    assert events[-1]["output"].endswith("o.tif") and events[-1]["tiles_fitted"] == 9

    failed = run_cli("upscale", str(source), "-g", str(guide), "-s", "2", *FAST,
                     "--progress", "json", "--band", "7")
    assert failed.returncode == 1
    error = json.loads(failed.stderr.splitlines()[-1])
    assert error["event"] == "error" and "band 7" in error["message"] and error["exit_code"] == 1


# --- 7. errors never hide bugs ------------------------------------------------------------


def test_an_internal_error_is_not_reported_as_bad_input(tmp_path: Path, monkeypatch):
    source, guide, _ = pair(tmp_path)
    args = ["upscale", str(source), "-g", str(guide), "-s", "2", *FAST, "-o",
            str(tmp_path / "o.tif")]

    def bug(*_args, **_kwargs):
        raise KeyError("tile_index")

    monkeypatch.setattr(importlib.import_module("mmsr_geo.run.execute"), "fit_pending", bug)
    crashed = CliRunner().invoke(cli_main, args)
    assert crashed.exit_code == 70
    assert "internal error: KeyError" in crashed.stderr and "this is a bug" in crashed.stderr

    def bad_input(*_args, **_kwargs):
        raise InputError("the tile is unusable")

    monkeypatch.setattr(importlib.import_module("mmsr_geo.run.execute"), "fit_pending", bad_input)
    refused = CliRunner().invoke(cli_main, args)
    assert refused.exit_code == 1 and "Error: the tile is unusable" in refused.stderr
    assert "internal" not in refused.stderr


# --- 8. defaults of the library -----------------------------------------------------------


def test_library_defaults_are_the_raster_preset(tmp_path: Path):
    kernels = PRESETS["remote-sensing"]
    assert (FitConfig().s2g_kernel, FitConfig().g2s_kernel) == (kernels.s2g, kernels.g2s)
    source, guide, _ = pair(tmp_path, h=12, w=12)
    report = upscale_raster(source, guide, tmp_path / "o.tif", scale=2,
                            config=FitConfig(iterations=1, features=4, device="cpu"))
    with rasterio.open(report.output) as out:
        settings = json.loads(out.tags()["MMSR_SETTINGS"])
    assert (settings["s2g_kernel"], settings["g2s_kernel"]) == (5, 3)
    assert settings["tile_size"] == 128 and settings["overlap"] == 16  # ~256 and 32 output px
    assert np.isfinite(report.mean_cycle_rmse) and LR_PIXEL == 10.0
