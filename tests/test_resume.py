"""Resume inside a raster: a batch stopped with Ctrl-C, then killed with SIGKILL mid-raster,
restarts at its unfinished tiles, never leaves a file at the final path before it is complete,
and ends with the output of an uninterrupted run."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from test_batch import REPO, cli_command, cli_env, load_report, make_pair, one_thread, read  # noqa: F401 (fixture)

from mmsr_geo.batch import pairs_from_glob, run_batch
from mmsr_geo.fit import FitConfig
from mmsr_geo.run import template_request
from mmsr_geo.strategies import AUTO_CANDIDATES

pytestmark = pytest.mark.usefixtures("one_thread")

LR = 24
ITERATIONS = 4
SETTINGS = ["-s", "2", "--iterations", str(ITERATIONS), "--features", "4", "--tile-size", "6",
            "--overlap", "2", "--device", "cpu", "--seed", "0", "-q"]
"""A 24x24 source in 36 tiles: long enough to be caught mid-raster, a few seconds in all. The
default schedule (auto): the strategy chosen before the first tile must be the one the resumed
runs use."""
TILES = 36


def _start(data: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli_command("batch", str(data / "*_DSM.tif"), "-o", str(out), *SETTINGS),
        cwd=REPO,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop_after(process: subprocess.Popen[str], work: Path, final: Path, tiles: int, sig: int):
    """Send ``sig`` once ``tiles`` checkpoints exist, checking all along that nothing appears at
    the final path."""
    deadline = time.monotonic() + 120
    while len(list(work.glob("tile_*.npz"))) < tiles:
        assert process.poll() is None, f"finished before it could be stopped: {process.stderr}"
        assert not final.exists(), "a file appeared at the final path before the end"
        assert time.monotonic() < deadline, "no checkpoint within 2 minutes"
        time.sleep(0.01)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    return process.returncode, stderr


def test_interrupted_and_killed_batch_resumes_to_the_uninterrupted_output(tmp_path: Path):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    make_pair(data, "JAX_010_010", lr=LR)
    final = out / "JAX_010_010_DSM_x2.tif"
    work = out / "JAX_010_010_DSM_x2.tif.mmsr-work"

    code, stderr = _stop_after(_start(data, out), work, final, 1, signal.SIGINT)
    assert code == 130 and "Interrupted" in stderr, stderr
    assert not final.exists()
    after_ctrl_c = {p.name for p in work.glob("tile_*.npz")}
    assert after_ctrl_c, "Ctrl-C keeps the checkpoints"

    code, _ = _stop_after(_start(data, out), work, final, len(after_ctrl_c) + 2, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert not final.exists()
    before_restart = {p.name for p in work.glob("tile_*.npz")}
    assert after_ctrl_c < before_restart < {f"tile_{i}.npz" for i in range(TILES)}

    finished = _start(data, out)
    _, stderr = finished.communicate(timeout=240)
    assert finished.returncode == 0, stderr
    record = load_report(out / "batch-report.json")["pairs"][0]
    assert record["status"] == "ok" and record["strategy"] in AUTO_CANDIDATES
    assert record["tiles_resumed"] == len(before_restart)
    assert record["tiles_fitted"] == TILES - len(before_restart)
    assert not work.exists() and not list(out.glob(".*.tmp"))

    uninterrupted = run_batch(
        pairs_from_glob(str(data / "*_DSM.tif")),
        tmp_path / "reference",
        template_request(
            2,
            config=FitConfig(
                iterations=ITERATIONS, features=4, s2g_kernel=5, g2s_kernel=3, device="cpu"
            ),
            tile_size=6,
            overlap=2,
            schedule="auto",
            iterations=ITERATIONS,
        ),
    )
    assert uninterrupted.records[0].tiles_fitted == TILES
    np.testing.assert_array_equal(read(final), read(uninterrupted.records[0].output))
