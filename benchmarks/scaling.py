"""Time and peak memory against the raster's area, per fit mode (issue 21).

Why: fitting every tile makes the cost area x iterations; the raster-level fit trains one
network on a fixed budget of crops and then costs a forward pass per tile, so its time should
grow far slower than the area, and its memory not at all.

How: the real 1 m NRW DSM (1000 x 1000) average-pooled x4 to a 250 x 250 source with its 1 m
hillshade as the guide (``memory.py``'s inputs: a guide derived from the raster is enough for
time and memory, not for quality), at 1x, 4x, 16x and 64x the area as n x n mosaics (GDAL
VRTs of the same files: 25, 81, 324 and 1296 default tiles of 256 x 256 output pixels). Each
run is the real CLI in its own process, one at a time, with the default settings but
``--fit``: its wall seconds, CPU seconds (the child's rusage) and peak RSS. The per-tile fit
is run at 1x only, twice with few iterations (the time of a fit is linear in its iterations:
``bench_fit.py``), and its time at the default 300 iterations and at larger areas is
projected from those two runs and the tile counts, and labelled so.

    python benchmarks/scaling.py --write BENCHMARKS.md
    python benchmarks/scaling.py --areas 1,4 --quick    # a short check
    python benchmarks/scaling.py --log scaling.jsonl --resume --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # memory, _report

from _report import (  # noqa: E402
    append_log,
    machine_description,
    read_log,
    utc_stamp,
    write_section,
)
from memory import DEFAULT_DSM, cli_command, write_inputs, write_mosaic_vrt  # noqa: E402

from mmsr_geo.memory import default_overlap, default_tile_size  # noqa: E402
from mmsr_geo.tiling import plan_tiles  # noqa: E402

SCALE = 4
AREAS = (1, 4, 16, 64)
DEFAULT_ITERATIONS = 300
"""The default schedule's budget with the remote-sensing kernels."""
TILE_PROBE_ITERATIONS = (4, 12)
"""Iterations of the two per-tile runs the per-tile time is projected from."""


def run_child(
    command: list[str], log: Path, env: dict[str, str] | None = None
) -> dict[str, float]:
    """Wall seconds, CPU seconds (user + system; system alone too) and peak RSS (MB) of one
    child, its output in ``log``."""
    started = time.perf_counter()
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({code}):\n{log.read_text()[-2000:]}")
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "sys_seconds": usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }


def tiles_at(area: int) -> int:
    side = 250 * int(area**0.5)
    size = default_tile_size(SCALE)
    return len(plan_tiles(side, side, SCALE, size, default_overlap(SCALE, size)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsm", type=Path, default=DEFAULT_DSM)
    parser.add_argument("--areas", default=",".join(map(str, AREAS)))
    parser.add_argument("--modes", default="raster,hybrid,tile")
    parser.add_argument("--hybrid-areas", default="1,4", help="areas the hybrid mode runs at")
    parser.add_argument("--quick", action="store_true", help="20 iterations: a short check")
    parser.add_argument("--log", type=Path, default=None, help="JSON lines of every run")
    parser.add_argument("--resume", action="store_true", help="keep the log's runs, skip them")
    parser.add_argument("--redo", action="store_true",
                        help="with --resume, run what is asked even where the log holds it (the "
                        "table shows the latest run of each)")
    parser.add_argument("--write", type=Path, help="BENCHMARKS.md to update")
    args = parser.parse_args(argv)
    if not args.dsm.exists():
        print(f"{args.dsm} not found: skipped", file=sys.stderr)
        return 0
    areas = [int(a) for a in args.areas.split(",")]
    modes = args.modes.split(",")
    iterations = 20 if args.quick else DEFAULT_ITERATIONS
    records = read_log(args.log) if args.resume else []
    done = set() if args.redo else {(r["area"], r["mode"], r["iterations"]) for r in records}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source, guide = write_inputs(args.dsm, folder)
        for area in areas:
            n = int(area**0.5)
            src = write_mosaic_vrt(folder / f"source_{n}.vrt", source, n) if n > 1 else source
            gde = write_mosaic_vrt(folder / f"guide_{n}.vrt", guide, n) if n > 1 else guide
            runs = [(m, iterations) for m in modes if m == "raster"]
            if "hybrid" in modes and str(area) in args.hybrid_areas.split(","):
                runs.append(("hybrid", iterations))
            if "tile" in modes and area == areas[0]:
                runs += [("tile", k) for k in TILE_PROBE_ITERATIONS]
            for mode, its in runs:
                if (area, mode, its) in done:
                    continue
                output = folder / f"out_{n}_{mode}_{its}.tif"
                command = [*cli_command(), "upscale", str(src), "-g", str(gde), "-s",
                           str(SCALE), "-o", str(output), "--fit", mode, "--iterations",
                           str(its), "--device", "cpu", "-q"]
                record = {"area": area, "tiles": tiles_at(area), "mode": mode,
                          "iterations": its,
                          **run_child(command, folder / f"log_{n}_{mode}_{its}.txt"),
                          "finished": utc_stamp()}
                output.unlink()
                records.append(record)
                print(json.dumps(record), flush=True)
                if args.log:
                    append_log(args.log, record)
    text = table(records, iterations)
    print(text)
    if args.write:
        write_section(args.write, "scaling", _section(text, machine_description()))
    return 0


def table(records: list[dict], iterations: int) -> str:
    """Seconds and peak memory per mode and area (the latest run of each); the per-tile fit
    projected (labelled)."""
    records = list({(r["area"], r["mode"], r["iterations"]): r for r in records}.values())
    probes = sorted((r for r in records if r["mode"] == "tile"), key=lambda r: r["iterations"])
    base_area = min(r["area"] for r in records)
    lines = [
        "| area | default tiles | mode | iterations | wall s | CPU s | peak RSS MB | time vs "
        "1x | finished |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    first: dict[str, float] = {}
    for r in sorted(records, key=lambda r: (r["mode"], r["iterations"], r["area"])):
        if r["mode"] == "tile":
            continue
        first.setdefault(r["mode"], r["seconds"])
        lines.append(
            f"| {r['area']}x | {r['tiles']} | {r['mode']} | {r['iterations']} | "
            f"{r['seconds']:.0f} | {r['cpu_seconds']:.0f} | {r['peak_rss_mb']:.0f} | "
            f"{r['seconds'] / first[r['mode']]:.2f}x | {r.get('finished', '-')} |"
        )
    if len(probes) >= 2:
        (a, b) = probes[0], probes[-1]
        per_iteration = (b["seconds"] - a["seconds"]) / (b["iterations"] - a["iterations"])
        fixed = a["seconds"] - per_iteration * a["iterations"]
        for p in probes:
            lines.append(
                f"| {p['area']}x | {p['tiles']} | tile (measured) | {p['iterations']} | "
                f"{p['seconds']:.0f} | {p['cpu_seconds']:.0f} | {p['peak_rss_mb']:.0f} | | "
                f"{p.get('finished', '-')} |"
            )
        tiles = {r["area"]: r["tiles"] for r in records}
        for area in sorted(tiles):
            projected = fixed + per_iteration * iterations * tiles[area] / tiles[base_area]
            lines.append(
                f"| {area}x | {tiles[area]} | tile (projected) | {iterations} | "
                f"{projected:.0f} | | | {projected / (fixed + per_iteration * iterations):.2f}x | |"
            )
    return "\n".join(lines)


def _section(table_text: str, machine: str) -> str:
    return "\n".join([
        "## Scaling with the area: per-tile, raster-level and hybrid fits",
        "",
        f"`benchmarks/scaling.py` (machine: {machine}; one process at a time). The NRW 1 m DSM "
        "pooled x4 with its hillshade as guide, as 1x, 4x, 16x and 64x mosaics; the real CLI, "
        "default settings but `--fit`. Per-tile rows marked *projected* come from two measured "
        "per-tile runs at 1x with few iterations (a fit's time is linear in its iterations) "
        "and the tile counts.",
        "",
        table_text,
    ])


if __name__ == "__main__":
    raise SystemExit(main())
