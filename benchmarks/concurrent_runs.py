"""Two independent ``mmsr-geo upscale`` runs at once on one machine vs one run alone.

Why: torch's OpenMP threads and numba's spin while they wait for work; with two runs on a
2-core machine each run's spinning threads steal the cores the other computes on, and both
were ~10x slower per iteration than one alone. The command line now sets
``OMP_WAIT_POLICY=PASSIVE`` before torch loads (waiting threads sleep); ``--threads`` lets
concurrent runs split the cores. The target: two runs at once each take at most ~2.2x the time
of one run alone (2x is the fair share of the cores).

Each row runs real CLI processes on a generated raster (48x48 source, x4, one 192x192 tile,
kernels 5/3, 64 features) and reads each run's fit time from its ``--progress json`` "done"
event (process start-up excluded).

    python benchmarks/concurrent_runs.py --iterations 60 --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from _report import machine_description, write_section  # noqa: E402


def _rasters(folder: Path) -> tuple[Path, Path]:
    yy, xx = np.mgrid[0:192, 0:192].astype(np.float64)
    hr = 10 * np.sin(xx / 7) + yy / 5 + 4 * np.cos((xx + yy) / 11)
    lr = hr.reshape(48, 4, 48, 4).mean((1, 3)).astype(np.float32)
    guide = np.stack([np.sin(xx / 7), np.cos((xx + yy) / 11), yy / 192]).astype(np.float32)
    source, guide_path = folder / "dem.tif", folder / "rgb.tif"
    for path, data, pixel in ((source, lr[None], 4.0), (guide_path, guide, 1.0)):
        with rasterio.open(
            path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
            count=data.shape[0], dtype="float32", crs="EPSG:32633",
            transform=from_origin(500_000, 4_000_000, pixel, pixel),
        ) as ds:
            ds.write(data)
    return source, guide_path


def _start(source: Path, guide: Path, output: Path, iterations: int, extra: list[str],
           env: dict[str, str]) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "mmsr_geo_cli", "upscale", str(source), "-g", str(guide),
               "-s", "4", "--iterations", str(iterations), "--device", "cpu", "--overwrite",
               "--progress", "json", "-o", str(output), *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def _seconds(process: subprocess.Popen[str]) -> float:
    _, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(stderr)
    done = [json.loads(line) for line in stderr.splitlines() if '"event": "done"' in line]
    return float(done[-1]["seconds"])


def _run(folder: Path, copies: int, iterations: int, extra: list[str],
         env: dict[str, str]) -> list[float]:
    source, guide = folder / "dem.tif", folder / "rgb.tif"
    processes = [
        _start(source, guide, folder / f"out{i}.tif", iterations, extra, env)
        for i in range(copies)
    ]
    return [_seconds(p) for p in processes]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    base_env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY",)}
    rows = [
        ("one run alone", 1, [], base_env),
        ("two at once (default: passive waiting)", 2, [], base_env),
        (f"two at once, --threads {max(1, cores // 2)} each", 2,
         ["--threads", str(max(1, cores // 2))], base_env),
        ("two at once, OMP_WAIT_POLICY=ACTIVE (spinning, as before)", 2, [],
         {**base_env, "OMP_WAIT_POLICY": "ACTIVE"}),
    ]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _rasters(folder)
        _run(folder, 1, 2, [], base_env)  # numba cache, imports
        for label, copies, extra, env in rows:
            times = []
            for _ in range(args.repeats):
                times.extend(_run(folder, copies, args.iterations, extra, env))
            results.append((label, copies, float(np.median(times))))
            print(f"{label}: {np.median(times):.1f} s per run ({times})", flush=True)
    alone = results[0][2]
    lines = [
        "## Concurrent runs (`benchmarks/concurrent_runs.py`)",
        "",
        f"`mmsr-geo upscale` of a 48x48 source x4 (one 192x192 tile, kernels 5/3, 64 features, "
        f"{args.iterations} iterations, CPU) as real processes; seconds = each run's fit time "
        f"from its JSON 'done' event, median over {args.repeats} repeats (and both runs of a "
        "pair). Target: two at once each at most ~2.2x one alone.",
        "",
        f"Machine: {machine_description()}",
        "",
        "| runs | s per run | x one alone |",
        "|---|---:|---:|",
    ]
    lines += [f"| {label} | {seconds:.1f} | {seconds / alone:.2f}x |"
              for label, _, seconds in results]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(args.write, "concurrent_runs", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
