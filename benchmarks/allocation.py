"""Freed memory kept for reuse (``mmsr_geo.allocation``): what it saves, and what it costs.

Why: glibc unmaps a freed block above its mmap threshold (at most 32 MiB) at once, and a fit
iteration or a forward pass allocates and frees such blocks (64-channel feature maps of a
tile) every time, each new one page-faulted and zeroed by the kernel again.

How: fresh processes, the setting on and off in turn (on, off, on, off, ...), one at a time:

1. ``fit``: one tile of 256 x 256 output pixels (x4, kernels 5/3, 64 features, a 3-band
   guide), 3 iterations of warm-up then 10 timed: seconds and system seconds per iteration,
   and the process's peak RSS. "on" calls ``keep_freed_memory()`` first, "off" does not.
2. ``raster`` and ``tile``: the real CLI on the NRW 1 m DSM pooled x4 with its hillshade as
   the guide (``memory.py``'s inputs; 1 MP of output, 25 default tiles), ``--fit raster
   --iterations 2`` (a training of 6 steps: the time is the forward passes and the stages
   around them) and ``--fit tile --iterations 4``; "off" runs with
   ``MMSR_GEO_KEEP_FREED_MEMORY=0``. Wall, CPU and system seconds and peak RSS of the child
   (``scaling.run_child``), and whether the two outputs are the same bit for bit.

    python benchmarks/allocation.py --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # memory, scaling, _report

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from _report import append_log, machine_description, read_log, write_section  # noqa: E402
from memory import DEFAULT_DSM, cli_command, write_inputs  # noqa: E402
from scaling import run_child  # noqa: E402

from mmsr_geo.allocation import OPT_OUT, SETTINGS  # noqa: E402


def fit_child(on: bool) -> dict[str, float]:
    """In this process: the ``fit`` part's timed iterations."""
    if on:
        from mmsr_geo.allocation import keep_freed_memory

        assert keep_freed_memory(), "glibc's allocator only"
    import resource

    from mmsr_geo.fit import fit
    from mmsr_geo.fit_config import FitConfig

    rng = np.random.default_rng(0)
    source = rng.normal(size=(64, 64))
    guide = rng.normal(size=(3, 256, 256)).astype(np.float32)
    fit(source, guide, 4, FitConfig(s2g_kernel=5, g2s_kernel=3, iterations=3, device="cpu"))
    config = FitConfig(s2g_kernel=5, g2s_kernel=3, iterations=10, device="cpu")
    before, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    fit(source, guide, 4, config)
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - wall
    return {
        "seconds": wall / 10,
        "sys_seconds": (after.ru_stime - before.ru_stime) / 10,
        "peak_rss_mb": after.ru_maxrss / 1024,
    }


def _env(on: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS and k != OPT_OUT}
    return env if on else {**env, OPT_OUT: "0"}


def fit_part(runs: int) -> list[dict]:
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "fit.log"
        for i in range(2 * runs):
            on = i % 2 == 0
            run_child([sys.executable, __file__, "--fit-child", "on" if on else "off"], log,
                      _env(True))
            measured = json.loads(log.read_text().strip().splitlines()[-1])
            record = {"part": "fit", "on": on, **measured}
            records.append(record)
            print(json.dumps(record), flush=True)
    return records


def cli_part(dsm: Path, runs: int, modes: list[str]) -> list[dict]:
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source, guide = write_inputs(dsm, folder)
        for mode in modes:
            iterations = "2" if mode == "raster" else "4"
            outputs = {}
            for i in range(2 * (runs if mode == "raster" else 1)):
                on = i % 2 == 0
                output = folder / f"{mode}-{'on' if on else 'off'}.tif"
                command = [*cli_command(), "upscale", str(source), "-g", str(guide), "-s", "4",
                           "-o", str(output), "--fit", mode, "--iterations", iterations,
                           "--device", "cpu", "-q", "--overwrite"]
                child = run_child(command, folder / f"{mode}.log", _env(on))
                with rasterio.open(output) as src:
                    outputs[on] = src.read(1)
                record = {"part": mode, "on": on, **child}
                records.append(record)
                print(json.dumps(record), flush=True)
            same = bool(np.array_equal(outputs[True], outputs[False], equal_nan=True))
            for record in records:
                if record["part"] == mode:
                    record["same_output"] = same
    return records


def table(records: list[dict]) -> str:
    lines = [
        "| work | setting | runs | wall s | system s | CPU s | peak RSS MB | wall on / off | "
        "peak on / off | outputs |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for part in dict.fromkeys(r["part"] for r in records):
        medians = {}
        for on in (True, False):
            rows = [r for r in records if r["part"] == part and r["on"] == on]
            medians[on] = {
                "seconds": statistics.median(r["seconds"] for r in rows),
                "sys": statistics.median(r["sys_seconds"] for r in rows),
                "cpu": statistics.median(r["cpu_seconds"] for r in rows)
                if part != "fit" else None,
                "peak": statistics.median(r["peak_rss_mb"] for r in rows),
                "runs": len(rows),
                "same": rows[0].get("same_output"),
            }
        what = {
            "fit": "one 256 x 256 tile's fit, s / iteration",
            "raster": "`upscale --fit raster --iterations 2`, 1 MP",
            "tile": "`upscale --fit tile --iterations 4`, 1 MP (25 tiles)",
        }[part]
        for on in (True, False):
            m = medians[on]
            ratio = (f"{m['seconds'] / medians[False]['seconds']:.2f} | "
                     f"{m['peak'] / medians[False]['peak']:.2f}" if on else " | ")
            same = "" if m["same"] is None or not on else (
                "identical" if m["same"] else "DIFFER")
            cpu = "-" if m["cpu"] is None else f"{m['cpu']:.1f}"
            lines.append(
                f"| {what} | {'kept (default)' if on else 'returned (opt-out)'} | {m['runs']} "
                f"| {m['seconds']:.3f} | {m['sys']:.3f} | {cpu} | {m['peak']:.0f} | {ratio} "
                f"| {same} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fit-child", choices=["on", "off"], help=argparse.SUPPRESS)
    parser.add_argument("--dsm", type=Path, default=DEFAULT_DSM)
    parser.add_argument("--runs", type=int, default=3, help="runs of each setting")
    parser.add_argument("--parts", default="fit,raster,tile")
    parser.add_argument("--log", type=Path, help="JSON lines of every run")
    parser.add_argument("--write", type=Path, help="BENCHMARKS.md to update")
    parser.add_argument("--tables-only", action="store_true",
                        help="print the table of --log's runs")
    args = parser.parse_args(argv)
    if args.fit_child:
        print(json.dumps(fit_child(args.fit_child == "on")))
        return 0
    if args.tables_only:
        print(table(read_log(args.log)))
        return 0
    parts = args.parts.split(",")
    records = fit_part(args.runs) if "fit" in parts else []
    modes = [p for p in parts if p in ("raster", "tile")]
    if modes and args.dsm.exists():
        records += cli_part(args.dsm, args.runs, modes)
    elif modes:
        print(f"{args.dsm} not found: the CLI parts are skipped", file=sys.stderr)
    for record in records if args.log else []:
        append_log(args.log, record)
    text = "\n".join([
        "## Freed memory kept for reuse (`benchmarks/allocation.py`)",
        "",
        f"Machine: {machine_description()}; one process at a time, the two settings in turn; "
        "medians. *kept*: what the command line does (`mmsr_geo.allocation`: glibc "
        "`MALLOC_MMAP_MAX_=0`, `MALLOC_TRIM_THRESHOLD_=1 GiB`); *returned*: glibc as it comes "
        f"(`{OPT_OUT}=0`).",
        "",
        table(records),
    ])
    print(text)
    if args.write:
        write_section(args.write, "allocation", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
