"""Fit modes on real pairs, through the real run: a network per tile, one network for the
raster, and that network fine-tuned per tile (issue 21).

Why: fitting every tile from scratch costs area x iterations. One network trained on crops
sampled across the raster costs a fixed budget plus a forward pass per pixel; the question is
what it costs in quality, on data with real tiles and blending, against the per-tile default.

How: the paper's protocol (LR = the reference average-pooled by the scale, RMSE against the
reference over its valid pixels) on the RMNP DEM (x2, x4), Middlebury depth pairs (160 x 160
centre crops, x4), the synthetic pairs of ``quality.py`` and ``mosaic``: 3 x 3 Middlebury crops
of 240 side by side, the one real pair here that covers 16 default tiles (the issue's
done-when; per-tile with the remote-sensing preset it projects to about 1.9 hours on 2 cores:
16 x 300 iterations at 1.39 s). The LR source and the guide (on the reference's grid) are
written as GeoTIFFs, and each mode runs
:func:`mmsr_geo.run.upscale_raster` with the default schedule (``auto``) and a tile size that
cuts the raster into at least 4 tiles (the largest tile, at most the default, with 2 or more
tiles a side), one run at a time. Every run is a line of the JSON-lines log (``--resume``
skips what it holds); the table gives the RMSE of each mode, the change against the per-tile
fit, and the CPU seconds of the process (``time.process_time``), beside bicubic and the
paper's 1000-iteration fit of the whole image from ``quality.jsonl`` where it was logged.
With ``--work`` a run's files stay in a folder of their own, so a run stopped with Ctrl-C
(a per-tile mosaic run outlasts a session) goes on from its checkpointed tiles when the command
is run again; its time is then the sum over its processes, and the table says how much of it
may be work that no checkpoint kept.

    python benchmarks/fit_modes.py --log benchmarks/fit_modes.jsonl --resume \\
        --datasets rmnp,synthetic,middlebury --middlebury-limit 4 --write BENCHMARKS.md
    python benchmarks/fit_modes.py --log benchmarks/fit_modes.jsonl --resume \\
        --datasets mosaic --modes raster,hybrid,tile --work benchmarks/.fits/fit_modes \\
        --write BENCHMARKS.md
    python benchmarks/fit_modes.py --log benchmarks/fit_modes.jsonl --tables-only \\
        --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # quality, _report

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from _report import append_log, cpu_model, read_log, utc_stamp  # noqa: E402
from quality import (  # noqa: E402
    DEFAULT_MIDDLEBURY,
    Case,
    bicubic_rmse,
    middlebury_cases,
    paper_fits,
    protocol_inputs,
    rmnp_cases,
    synthetic_cases,
)

from mmsr_geo.checkpoints import checkpointed_tiles, work_dir_for  # noqa: E402
from mmsr_geo.degradation import centre_crop  # noqa: E402
from mmsr_geo.fit_config import FitConfig  # noqa: E402
from mmsr_geo.loaders import load_middlebury_dir, middlebury_names  # noqa: E402
from mmsr_geo.memory import default_overlap, default_tile_size  # noqa: E402
from mmsr_geo.metrics import rmse  # noqa: E402
from mmsr_geo.run import upscale_raster  # noqa: E402
from mmsr_geo.strategies import AUTO, SCHEDULES, Schedule  # noqa: E402
from mmsr_geo.tiling import plan_tiles  # noqa: E402

MODES = ("tile", "raster", "hybrid")
QUALITY_LOG = Path(__file__).resolve().parent / "quality.jsonl"


def middlebury_mosaic(data: Path, side: int = 3, crop: int = 240,
                      preset: str = "remote-sensing") -> list[Case]:
    """``side`` x ``side`` centre crops of the first Middlebury pairs (by name) laid side by
    side: a real RGB-D pair large enough for default tiles (at x4, 3 x 3 crops of 240 make a
    720 x 720 reference, a 180 x 180 source: 16 tiles of 64 source pixels). Each crop is real
    depth and its real photo; the seams between crops are steps like object edges."""
    if not data.is_dir():
        print(f"middlebury mosaic: {data} not found, skipped", file=sys.stderr)
        return []
    names = middlebury_names(data)[: side * side]
    crops = [centre_crop(reference, guide, crop)
             for _, reference, guide in load_middlebury_dir(data, names)]
    grid = [crops[i:i + side] for i in range(0, len(crops), side)]
    reference = np.block([[r for r, _ in row] for row in grid])
    guide = np.block([[g for _, g in row] for row in grid])  # (C, H, W): tiled over H, W
    name = f"mosaic-{side}x{side}-{crop}-{preset}"
    return [Case("middlebury", name, 4, reference, guide, np.ones(reference.shape, bool),
                 preset)]


def tile_size_for(case: Case) -> tuple[int, int]:
    """(tile size, overlap) in source pixels: the default, or smaller so that the raster has
    at least 2 tiles a side."""
    h, w = (s // case.scale for s in case.reference.shape)
    size = min(default_tile_size(case.scale), (min(h, w) * 3) // 5)
    return size, default_overlap(case.scale, size)


def write_case(case: Case, folder: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """``lr.tif`` (pooled reference, nodata where a block has none) and ``guide.tif`` on the
    reference's grid (pixel-aligned, no CRS); returns their paths, the reference and mask."""
    reference, mask, guide, lr, valid = protocol_inputs(case)
    profile = {"driver": "GTiff", "tiled": False, "dtype": "float32"}
    lr_path, guide_path = folder / "lr.tif", folder / "guide.tif"
    with rasterio.open(
        lr_path, "w", **profile, width=lr.shape[1], height=lr.shape[0], count=1,
        nodata=-9999.0,
    ) as dst:
        dst.write(np.where(valid, lr, -9999.0).astype(np.float32), 1)
    with rasterio.open(
        guide_path, "w", **profile, width=guide.shape[2], height=guide.shape[1],
        count=guide.shape[0],
    ) as dst:
        dst.write(guide.astype(np.float32))
    return lr_path, guide_path, reference, mask


def run_mode(case: Case, mode: str, folder: Path, schedule: str = AUTO,
             level_sigma: float = 0.0, seed: int = 0) -> dict[str, Any]:
    lr_path, guide_path, reference, mask = write_case(case, folder)
    size, overlap = tile_size_for(case)
    output = folder / f"{mode}.tif"
    config = dataclasses.replace(FitConfig.from_preset(case.preset, device="cpu"), seed=seed)
    earlier = _segments(folder, mode)
    wall, cpu = time.perf_counter(), time.process_time()
    before = _tiles_done(output)
    try:
        report = upscale_raster(
            lr_path, guide_path, output, scale=case.scale, config=config, schedule=schedule,
            fit_mode=mode, tile_size=size, overlap=overlap, overwrite=True,
            level_sigma=level_sigma or None,
        )
    except KeyboardInterrupt:  # a long run stopped to go on later (--work): log its cost
        _add_segment(folder, mode, time.perf_counter() - wall, time.process_time() - cpu,
                     before, _tiles_done(output))
        raise
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    _segments_path(folder, mode).unlink(missing_ok=True)  # summed into this run's record
    with rasterio.open(output) as src:
        predicted = src.read(1, masked=True)
    scored = mask & ~np.ma.getmaskarray(predicted)
    plan = plan_tiles(reference.shape[1] // case.scale, reference.shape[0] // case.scale,
                      case.scale, size, overlap)
    return {
        "dataset": case.dataset,
        "name": case.name,
        "scale": case.scale,
        "mode": mode,
        "rmse": rmse(predicted.filled(np.nan), reference, scored),
        "bicubic": bicubic_rmse(case),
        "seconds": wall + sum(s["seconds"] for s in earlier),
        "cpu_seconds": cpu + sum(s["cpu_seconds"] for s in earlier),
        "processes": 1 + len(earlier),
        "lost_cpu_bound": sum(_lost_bound(s) for s in earlier),
        "tiles": len(plan),
        "tile_size": size,
        "overlap": overlap,
        "schedule": schedule,
        **({"level_sigma": level_sigma} if level_sigma else {}),
        "seed": seed,
        "machine": cpu_model(),
        "finished": utc_stamp(),
        "strategy": report.strategy,
        "iterations": Schedule.resolve(config, schedule).iterations,
        "network": report.network,
        "shape": list(reference.shape),
    }


def _tiles_done(output: Path) -> int:
    return len(checkpointed_tiles(work_dir_for(output)))


def _segments_path(folder: Path, mode: str) -> Path:
    return folder / f"{mode}.segments.jsonl"


def _segments(folder: Path, mode: str) -> list[dict[str, Any]]:
    """What earlier, interrupted processes of this run spent (``--work`` keeps them)."""
    return read_log(_segments_path(folder, mode))


def _add_segment(folder: Path, mode: str, seconds: float, cpu_seconds: float, before: int,
                 after: int) -> None:
    record = {"seconds": seconds, "cpu_seconds": cpu_seconds, "tiles_before": before,
              "tiles_after": after}
    print(f"interrupted: {json.dumps(record)}", file=sys.stderr)
    append_log(_segments_path(folder, mode), record)


def _lost_bound(segment: dict[str, Any]) -> float:
    """CPU an interrupted process spent on work no checkpoint kept: at most what one of its
    finished tiles cost on average (or all of it when it finished none)."""
    finished = segment["tiles_after"] - segment["tiles_before"]
    return segment["cpu_seconds"] / max(1, finished)


def case_key(record: dict[str, Any]) -> tuple[str, str, int, str, float]:
    """(dataset, image, scale, schedule asked, local-level sigma): the runs one table row
    compares (records logged before ``--schedule`` existed ran ``auto``, before
    ``--level-sigma`` without a level)."""
    return (record["dataset"], record["name"], record["scale"],
            record.get("schedule", AUTO), record.get("level_sigma", 0.0))


def run_key(record: dict[str, Any]) -> tuple[Any, ...]:
    """The case, the mode and the seed (records logged before ``--seed`` used seed 0)."""
    return (*case_key(record), record["mode"], record.get("seed", 0))


def table(records: list[dict[str, Any]]) -> str:
    """One row per case: the latest seed-0 run of each mode."""
    paper = paper_fits(read_log(QUALITY_LOG))
    runs = {(*case_key(r), r["mode"]): r for r in records if r.get("seed", 0) == 0}
    cases = sorted({k[:5] for k in runs}, key=lambda k: (*k[:3], k[3] != AUTO, k[3], k[4]))
    lines = [
        "| dataset | image | scale | tiles | schedule, iterations | bicubic "
        "| paper, 1000 its (whole image) | per-tile (`auto`) | raster | vs per-tile | hybrid "
        "| vs per-tile | CPU s tile / raster / hybrid |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key in cases:
        got = {m: runs.get((*key, m)) for m in MODES}
        if got["tile"] is None and key[4]:  # the per-tile fit has no level
            got["tile"] = runs.get((*key[:4], 0.0, "tile"))
        first = next(r for r in got.values() if r is not None)
        cells = {
            m: "-" if got[m] is None else f"{got[m]['rmse']:.3f}"
            + ("" if got[m]["strategy"] == first["strategy"] else f" ({got[m]['strategy']})")
            for m in MODES
        }
        versus = {
            m: "-" if got[m] is None or got["tile"] is None
            else f"{100 * (got[m]['rmse'] / got['tile']['rmse'] - 1):+.1f} %"
            for m in MODES
        }
        seconds = " / ".join("-" if got[m] is None else f"{got[m]['cpu_seconds']:.0f}"
                             for m in MODES)
        p = paper.get(key[:3])
        schedule = first["strategy"] if key[3] == AUTO else key[3]
        schedule += f", level {key[4]:g}" if key[4] else ""
        schedule += " (asked)" if key[3] != AUTO or key[4] else ""
        lines.append(
            f"| {key[0]} | {key[1]} | x{key[2]} | {first['tiles']} | {schedule}, "
            f"{first['iterations']} | "
            f"{first['bicubic']:.3f} | "
            f"{'-' if p is None else f'{p:.3f}'} | {cells['tile']} | {cells['raster']} | "
            f"{versus['raster']} | {cells['hybrid']} | {versus['hybrid']} | {seconds} |"
        )
    resumed = [r for r in runs.values() if r.get("processes", 1) > 1]
    lines += [""] * bool(resumed) + [
        f"- {r['name']} x{r['scale']} {r['mode']}: run in {r['processes']} processes (stopped "
        f"and resumed); up to {r['lost_cpu_bound']:.0f} of its {r['cpu_seconds']:.0f} CPU s "
        "may be work lost at a stop."
        for r in sorted(resumed, key=lambda r: (r["name"], r["mode"]))
    ]
    return "\n".join(lines)


def spread_table(records: list[dict[str, Any]]) -> str:
    """Every run that names its machine (logged since ``--seed``), by case and mode, for the
    cases run with more than one seed or on more than one machine: how far the seed and the
    CPU's floating-point order move one result."""
    named = [r for r in records if "machine" in r]
    cases: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in named:
        cases.setdefault(case_key(r), []).append(r)
    lines = [
        "| image | scale | schedule | mode | seed | machine | RMSE | CPU s | finished |",
        "|---|---|---|---|---:|---|---:|---:|---|",
    ]
    for key, runs in sorted(cases.items()):
        if len({(r.get("seed", 0), r["machine"]) for r in runs}) < 2:
            continue
        for r in sorted(runs, key=lambda r: (MODES.index(r["mode"]), r["seed"], r["finished"])):
            schedule = key[3] + (f", level {key[4]:g}" if key[4] else "")
            lines.append(
                f"| {key[1]} | x{key[2]} | {schedule} | {r['mode']} | {r['seed']} | "
                f"{r['machine']} | {r['rmse']:.3f} | {r['cpu_seconds']:.0f} | {r['finished']} |"
            )
    return "\n".join(lines) if len(lines) > 2 else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log", type=Path, default=Path("fit_modes.jsonl"))
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--redo", action="store_true",
                        help="with --resume, run the modes asked for again even where the log "
                        "holds them (the table shows the latest run of each)")
    parser.add_argument("--datasets", default="rmnp,synthetic,middlebury")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--level-sigma", type=float, default=0.0,
                        help="the raster and hybrid runs' local-level sigma (0: off); a row "
                        "of its own, whose per-tile column is the same schedule's without it")
    parser.add_argument("--only", help="case names to run (comma-separated; default: all)")
    parser.add_argument("--scales", help="scales to run (comma-separated; default: all)")
    parser.add_argument("--schedule", default=AUTO, choices=SCHEDULES,
                        help="the schedule of every run (default: auto, the tool's default); "
                        "another is a row of its own in the table")
    parser.add_argument("--seed", type=int, default=0,
                        help="the runs' seed; runs of other seeds than 0 go to the spread table "
                        "only")
    parser.add_argument("--middlebury", type=Path, default=DEFAULT_MIDDLEBURY)
    parser.add_argument("--middlebury-limit", type=int, default=None)
    parser.add_argument("--synthetic-count", type=int, default=2)
    parser.add_argument("--mosaic-preset", default="remote-sensing",
                        help="preset of the Middlebury mosaic (16 default tiles at x4)")
    parser.add_argument("--work", type=Path,
                        help="keep each run's files here (not a temporary folder), so that an "
                        "interrupted run (Ctrl-C) goes on where it stopped when run again")
    parser.add_argument("--write", type=Path, help="BENCHMARKS.md to update")
    parser.add_argument("--note", default="", help="a sentence on the runs for the report")
    parser.add_argument("--tables-only", action="store_true", help="write the log's table")
    args = parser.parse_args(argv)
    if args.tables_only:
        args.datasets, args.resume = "", True
    done = set()
    if args.resume and not args.redo:
        done = {run_key(r) for r in read_log(args.log)}
    elif args.log.exists() and not args.resume:
        args.log.unlink()
    modes = args.modes.split(",")
    datasets = [d for d in args.datasets.split(",") if d]
    generators = {
        "rmnp": lambda: rmnp_cases([2, 4]),
        "synthetic": lambda: synthetic_cases([4], args.synthetic_count),
        "middlebury": lambda: middlebury_cases([4], args.middlebury, args.middlebury_limit, 160),
        "mosaic": lambda: middlebury_mosaic(args.middlebury, preset=args.mosaic_preset),
    }
    for dataset in datasets:
        for case in generators[dataset]():
            if args.only and case.name not in args.only.split(","):
                continue
            if args.scales and str(case.scale) not in args.scales.split(","):
                continue
            for mode in modes:
                level = args.level_sigma if mode != "tile" else 0.0
                key = case_key({"dataset": case.dataset, "name": case.name, "scale": case.scale,
                                "schedule": args.schedule, "level_sigma": level})
                if (*key, mode, args.seed) in done:
                    continue
                if args.work is not None:
                    suffix = "" if args.schedule == AUTO else f"-{args.schedule}"
                    suffix += f"-seed{args.seed}" if args.seed else ""
                    folder = args.work / f"{case.name}-x{case.scale}{suffix}"
                    folder.mkdir(parents=True, exist_ok=True)
                    record = run_mode(case, mode, folder, args.schedule, level, args.seed)
                else:
                    with tempfile.TemporaryDirectory() as tmp:
                        record = run_mode(case, mode, Path(tmp), args.schedule, level,
                                          args.seed)
                print(json.dumps(record), flush=True)
                append_log(args.log, record)
    records = read_log(args.log)
    text = table(records)
    spread = spread_table(records)
    if spread:
        text += "\n\nSeeds and machines (every run that names its CPU, by case and mode):\n\n"
        text += spread
    print(text)
    if args.write:
        from _report import machine_description, write_section

        write_section(args.write, "fit-modes", _section(text, machine_description(), args.note))
    return 0


def _section(table_text: str, machine: str, note: str) -> str:
    return "\n".join([
        "## Fit modes: a network per tile, one per raster, or one fine-tuned per tile",
        "",
        f"`benchmarks/fit_modes.py` (machine: {machine}; one run at a time). The paper's "
        "protocol through the real run (`upscale_raster`, schedule `auto`, tiles blended): "
        "RMSE against the reference over its valid pixels, CPU seconds of the process. "
        "Tiles: the largest tile size (at most the default) that cuts the image into 2 or "
        "more tiles a side (the mosaic: 3 x 3 centre crops of 240 pixels of the first nine "
        "Middlebury pairs, 720 x 720, the default 64-pixel tiles); schedule: what `auto` "
        "chose for the raster (in brackets a run's own where it differs). Raster and "
        "hybrid: one network trained for 3x the schedule's iterations on 2 crops a step of "
        "about 96 x 96 output pixels; hybrid then fine-tunes every tile for a tenth of the "
        f"iterations. {note}".rstrip(),
        "",
        table_text,
    ])


if __name__ == "__main__":
    raise SystemExit(main())
