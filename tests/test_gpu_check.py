"""``benchmarks/gpu_check.py --device cpu --quick``: the GPU session's one script runs every
stage end to end (at toy sizes) before any GPU time is spent on it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from test_batch import REPO, cli_env


def test_gpu_check_runs_every_stage_on_the_cpu(tmp_path: Path):
    report = tmp_path / "REPORT.md"
    report.write_text("# Benchmarks\n\nhand-written text stays\n")
    result = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--quick",
         "--out", str(tmp_path / "out"), "--write", str(report)],
        cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    sections = data["sections"]
    assert all(row[-1] for row in sections["ops"]["rows"]), "fused filters match the reference"
    assert {row[1] for row in sections["filter"]["rows"]} == {"cpu", "shifted", "unfold"}
    assert [row[:2] for row in sections["fit"]["rows"]] == [
        [1, "fp32"], [1, "bf16"], [2, "fp32"], [2, "bf16"]
    ]
    assert [row[:2] for row in sections["raster"]["rows"]] == [
        ["training step", 2], ["training step", 4], ["forward pass", 1], ["forward pass", 2]
    ]
    text = report.read_text()
    assert "hand-written text stays" in text and "<!-- gpu_check:start -->" in text
    assert "Quick mode" in text
    if (REPO.parent / "shared" / "data" / "middlebury").is_dir():
        results = sections["middlebury"]["results"]
        assert set(results) == {"fp32 x4", "fp32 x8"}
        assert len(results["fp32 x4"]["images"]) == 2
