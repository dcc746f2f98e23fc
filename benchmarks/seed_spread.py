"""How much one fit's RMSE moves with the seed: the default and the paper's fit, seed by seed.

The held-out table (``quality.py --heldout``) compares one default fit with one paper fit per
pair, and its per-pair bound (no pair more than 5 % above the paper) is of the size that the
seed and the CPU's floating-point order move a single fit. This script fits chosen pairs
with several seeds, each method on the same machine, so that a per-pair gap can be told from
that noise: the tool's default (``run_protocol`` as ``mmsr-geo evaluate`` runs it: ``auto``,
``--register auto``, ``--consistency exact``) and the paper's 1000 iterations (no
projection, as published), and optionally the default pipeline given the paper's 1000
iterations (``default-1000``: does a larger budget close a gap?). Every fit goes to a
JSON-lines log at once; a rerun skips what the log holds.

    python benchmarks/seed_spread.py --names 36,88 --seeds 0,1 \\
        --log benchmarks/seed_spread.jsonl --write BENCHMARKS.md
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
from quality import (  # noqa: E402
    DEFAULT_MIDDLEBURY,
    TUNING,
    Case,
    middlebury_cases,
    paper_fits,
    run_case,
)

from mmsr_geo.evaluation import run_protocol  # noqa: E402
from mmsr_geo.fit import FitConfig  # noqa: E402
from mmsr_geo.metrics import rmse  # noqa: E402

METHODS = {"default": None, "default-1000": 1000, "paper": 1000}
"""Each method and the budget it is given (None: the default's own, ``auto_budget``):
``default-1000`` is the default pipeline with the paper's budget, candidates included."""


def fit_once(case: Case, method: str, seed: int) -> dict[str, Any]:
    """One fit of ``case`` by ``method`` with ``seed``: its RMSE against the reference."""
    base = FitConfig.from_preset(case.preset, seed=seed)
    started, cpu = time.perf_counter(), time.process_time()
    if method != "paper":
        run = run_protocol(case.reference, case.guide, case.scale, base, schedule="auto",
                           iterations=METHODS[method], mask=case.mask, name=case.name,
                           consistency="exact")
        score, strategy, iterations = rmse(run.prediction, run.reference, run.valid), \
            run.strategy, run.iterations
    else:
        score = run_case(case, "paper", 1000, False, base)[-1]["rmse"]
        strategy, iterations = "paper", 1000
    return {
        "dataset": case.dataset, "name": case.name, "scale": case.scale, "method": method,
        "seed": seed, "rmse": score, "strategy": strategy, "iterations": iterations,
        "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu,
        "machine": machine_description(),
    }


def spread_table(records: list[dict[str, Any]], heldout_paper: dict[tuple, float]) -> str:
    """One row per pair and method: its RMSE seed by seed, their mean, and the mean's gap to
    the paper's mean (the held-out table's paper fit, marked *, for a pair this log has no
    paper fit of); then per method its mean over the held-out pairs it was fitted on."""
    lines = [
        "| image | scale | split | method | iterations | RMSE per seed | mean | vs paper, "
        "seed means | machine |",
        "|---|---|---|---|---|---|---:|---:|---|",
    ]
    pairs: dict[str, list[tuple[float, float]]] = {m: [] for m in METHODS if m != "paper"}
    for key in dict.fromkeys((r["dataset"], r["name"], r["scale"]) for r in records):
        mine = [r for r in records if (r["dataset"], r["name"], r["scale"]) == key]
        scores = {m: {r["seed"]: r["rmse"] for r in mine if r["method"] == m} for m in METHODS}
        own = bool(scores["paper"])
        paper = float(np.mean(list(scores["paper"].values()))) if own else heldout_paper.get(key)
        for method in (m for m in METHODS if scores[m]):
            mean = float(np.mean(list(scores[method].values())))
            fits = sorted({f"{r['strategy']} {r['iterations']}" for r in mine
                           if r["method"] == method})
            seeds = ", ".join(f"{v:.3f} ({s})" for s, v in sorted(scores[method].items()))
            gap = "" if method == "paper" or paper is None else \
                f"{100 * (mean / paper - 1):+.1f} %{'' if own else ' *'}"
            if method != "paper" and paper is not None and key not in TUNING:
                pairs[method].append((mean, paper))
            machines = ", ".join(sorted({r["machine"].split(",")[0] for r in mine
                                         if r["method"] == method}))
            lines.append(
                f"| {key[1]} | x{key[2]} | {'tuning' if key in TUNING else 'held out'} "
                f"| {method} | {', '.join(fits)} | {seeds} | {mean:.3f} | {gap} | {machines} |"
            )
    for method, both in pairs.items():
        if not both:
            continue
        mine, paper = (float(np.mean(v)) for v in zip(*both, strict=True))
        worst = max(100 * (m / p - 1) for m, p in both)
        lines.append(
            f"| **mean, held out** | {len(both)} pairs | | {method} | | | {mine:.3f} "
            f"| {100 * (mine / paper - 1):+.1f} % (paper {paper:.3f}; worst pair "
            f"{worst:+.1f} %) | |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", required=True, help="Middlebury pairs, e.g. 36,88")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--methods", default="default,paper",
                        help=f"of {', '.join(METHODS)}")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--crop", type=int, default=160, help="centre crop, as quality.py")
    parser.add_argument("--data", type=Path, default=DEFAULT_MIDDLEBURY)
    parser.add_argument("--log", type=Path, default=Path("seed_spread.jsonl"))
    parser.add_argument("--write", type=Path)
    parser.add_argument("--paper-log", type=Path,
                        help="quality.py's log: its paper fits are the reference of pairs "
                        "this log has none of")
    parser.add_argument("--note", default="", help="a sentence on the run for the report")
    parser.add_argument("--tables-only", action="store_true",
                        help="no fit: write the table from the log")
    args = parser.parse_args(argv)
    names = args.names.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    if set(methods) - set(METHODS):
        parser.error(f"--methods: each of {', '.join(METHODS)}")
    records = read_log(args.log)
    done = {(r["name"], r["scale"], r["method"], r["seed"]) for r in records}
    cases = [c for c in middlebury_cases([args.scale], args.data, None, args.crop)
             if c.name in names]
    for case in [] if args.tables_only else cases:
        for method in methods:
            for seed in seeds:
                if (case.name, case.scale, method, seed) in done:
                    continue
                record = fit_once(case, method, seed)
                records.append(record)
                append_log(args.log, record)
                print(f"{case.name} x{case.scale} {method} seed {seed}: RMSE "
                      f"{record['rmse']:.4f} in {record['seconds']:.0f} s", flush=True)
    machines = sorted({r["machine"].split(";")[0] for r in records})
    text = "\n".join([
        "## Seed spread of single fits (`benchmarks/seed_spread.py`)",
        "",
        "Middlebury 160 x 160 centre crops, the paper's protocol, each pair fitted with "
        "several seeds by the tool's default (`auto`, `--register auto`, `--consistency "
        "exact`; `--preset depth`) and by the paper's 1000 iterations (no projection), every "
        f"fit one at a time. Machine(s): {'; '.join(machines)}. {args.note}",
        "",
        spread_table(records, paper_fits(read_log(args.paper_log))),
    ])
    print(text)
    if args.write:
        write_section(args.write, "seed-spread", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
