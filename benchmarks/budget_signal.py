"""Can the data say when a depth fit needs more iterations? One scale down, 500 vs 1000.

An adaptive budget (issue 22: "keep fitting while the one-scale-down score still improves")
needs a signal that the LR source alone gives: ``auto``'s own validation, the source and
guide pooled once more and super-resolved back. This script scores the fit from scratch
(``cosine-avg``, the depth kernels' choice) there at 500 and 1000 iterations for named
Middlebury pairs and seeds, so the gain one scale down can be set beside the gain at the
real scale (``seed_spread.py``). Every score goes to a JSON-lines log at once; a rerun skips
what the log holds.

    python benchmarks/budget_signal.py --names 01_1,026,36 --seeds 0 \\
        --log benchmarks/budget_signal.jsonl --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import append_log, machine_description, read_log, write_section  # noqa: E402
from quality import DEFAULT_MIDDLEBURY, TUNING, Case, middlebury_cases, protocol_inputs  # noqa: E402

from mmsr_geo.fit_config import FitConfig  # noqa: E402
from mmsr_geo.normalisation import fill_invalid  # noqa: E402
from mmsr_geo.selection import self_validate  # noqa: E402

BUDGETS = (500, 1000)
STRATEGY = "cosine-avg"


def score_once(case: Case, seed: int, budget: int) -> dict[str, Any]:
    """``STRATEGY``'s RMSE one scale down on ``case``'s LR source, as ``auto`` scores it."""
    _, _, guide, lr, valid = protocol_inputs(case)
    base = FitConfig.from_preset(case.preset, seed=seed)
    started = time.perf_counter()
    choice = self_validate(fill_invalid(np.where(valid, lr, 0.0), valid), guide, case.scale,
                           base, (STRATEGY,), mask=None if valid.all() else valid,
                           iterations=budget)
    if choice is None:
        raise SystemExit(f"{case.name}: too small to validate one scale down")
    return {
        "dataset": case.dataset, "name": case.name, "scale": case.scale, "seed": seed,
        "budget": budget, "rmse": choice.scores[STRATEGY], "bicubic": choice.scores["bicubic"],
        "seconds": time.perf_counter() - started, "machine": machine_description(),
    }


def signal_table(records: list[dict[str, Any]]) -> str:
    """One row per pair and seed: the one-scale-down score at each budget and its gain."""
    lines = [
        "| image | scale | split | seed | bicubic | "
        + " | ".join(f"{STRATEGY} {b}" for b in BUDGETS) + " | 1000 vs 500 | machine |",
        "|---|---|---|---|---:|" + "---:|" * len(BUDGETS) + "---:|---|",
    ]
    for key in dict.fromkeys((r["dataset"], r["name"], r["scale"], r["seed"]) for r in records):
        mine = {r["budget"]: r for r in records
                if (r["dataset"], r["name"], r["scale"], r["seed"]) == key}
        if set(BUDGETS) - set(mine):
            continue
        low, high = (mine[b]["rmse"] for b in BUDGETS)
        split = "tuning" if key[:3] in TUNING else "held out"
        machine = mine[BUDGETS[-1]]["machine"].split(",")[0]
        lines.append(
            f"| {key[1]} | x{key[2]} | {split} | {key[3]} | {mine[BUDGETS[0]]['bicubic']:.3f} | "
            f"{low:.3f} | {high:.3f} | {100 * (high / low - 1):+.1f} % | {machine} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", required=True, help="Middlebury pairs, e.g. 01_1,36")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--crop", type=int, default=160, help="centre crop, as quality.py")
    parser.add_argument("--data", type=Path, default=DEFAULT_MIDDLEBURY)
    parser.add_argument("--log", type=Path, default=Path("budget_signal.jsonl"))
    parser.add_argument("--write", type=Path)
    parser.add_argument("--note", default="", help="a sentence on the run for the report")
    parser.add_argument("--tables-only", action="store_true",
                        help="no fit: write the table from the log")
    args = parser.parse_args(argv)
    names = args.names.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    records = read_log(args.log)
    done = {(r["name"], r["scale"], r["seed"], r["budget"]) for r in records}
    cases = [c for c in middlebury_cases([args.scale], args.data, None, args.crop)
             if c.name in names]
    for case in [] if args.tables_only else cases:
        for seed in seeds:
            for budget in BUDGETS:
                if (case.name, case.scale, seed, budget) in done:
                    continue
                record = score_once(case, seed, budget)
                records.append(record)
                append_log(args.log, record)
                print(f"{case.name} x{case.scale} seed {seed} {budget}: RMSE "
                      f"{record['rmse']:.4f} in {record['seconds']:.0f} s", flush=True)
    text = "\n".join([
        "## Does one scale down say when to fit longer? (`benchmarks/budget_signal.py`)",
        "",
        f"Middlebury {args.crop} x {args.crop} centre crops, `--preset depth`: `{STRATEGY}` "
        "scored as `auto` scores its candidates (source and guide pooled by the scale once "
        "more, super-resolved back, RMSE against the source), at 500 and 1000 iterations, "
        f"one fit at a time. {args.note}",
        "",
        signal_table(records),
    ])
    print(text)
    if args.write:
        write_section(args.write, "budget-signal", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
