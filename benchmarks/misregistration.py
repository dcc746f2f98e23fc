"""What a misregistered guide costs, whether the offset is found, and what correcting it gives.

The paper's protocol (LR = average pooling of the reference, RMSE on the full image), with the
guide's *content* moved by (dx, dy) output pixels (bicubic, edges repeated) while it still
claims to be on the reference's grid, as an orthophoto from another flight would be. Every
case is fitted with the default (``auto`` schedule, per-image fit, no ``--consistency``
projection, so that the fit alone is compared) twice: with the guide as
given (``--register off``) and with the default registration (``--register auto``); a case
whose offset is not corrected (the estimate is untrusted or under half a source pixel) has the same
fit both ways and is fitted once. The estimate alone is cheap and is recorded for every shift,
including those not fitted (``--detect-only``).

A pair is rarely perfectly registered to begin with, so the estimate on the unshifted pair is
the pair's own offset, and an estimate's error is measured against that offset plus the shift.

    python benchmarks/misregistration.py --log benchmarks/misregistration.jsonl --resume \\
        --datasets rmnp --write BENCHMARKS.md
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
    Case,
    middlebury_cases,
    protocol_inputs,
    rmnp_cases,
    synthetic_cases,
)

from mmsr_geo.evaluation import evaluate_pair  # noqa: E402
from mmsr_geo.registration import estimate_offset, translate  # noqa: E402

SHIFTS = "0,0 1,1 2,2 4,4 8,8 2,0 0,2 4,0 0,4 1.5,-0.5 2.5,0"
"""(dx, dy) output pixels: diagonal, along x and y, and sub-pixel."""


def parse_shifts(text: str) -> list[tuple[float, float]]:
    return [tuple(float(v) for v in item.split(",")) for item in text.split()]  # type: ignore


def cases(args: argparse.Namespace) -> list[Case]:
    datasets = args.datasets.split(",")
    found: list[Case] = []
    if "rmnp" in datasets:
        found += rmnp_cases([int(s) for s in args.rmnp_scales.split(",")])
    if "middlebury" in datasets:
        picked = set(args.middlebury_names.split(",")) if args.middlebury_names else None
        found += [c for c in middlebury_cases([4], args.middlebury, args.middlebury_limit,
                                              args.crop) if picked is None or c.name in picked]
    if "synthetic" in datasets:
        found += synthetic_cases([4], args.synthetic_count)
    return found


def key(case: Case, shift: tuple[float, float], kind: str) -> str:
    return f"{case.dataset}/{case.name}/x{case.scale}/{shift[0]:g},{shift[1]:g}/{kind}"


def detect(case: Case, shift: tuple[float, float]) -> dict[str, Any]:
    """The estimate alone (no fit)."""
    _, _, guide, lr, valid = protocol_inputs(case)
    moved = translate(guide.astype(np.float32), *shift)
    found = estimate_offset(np.where(valid, lr, np.nanmean(lr)), moved, case.scale, valid=valid)
    record = found.as_dict()
    record["est_dx"], record["est_dy"] = record.pop("dx"), record.pop("dy")
    return record


def fitted(case: Case, shift: tuple[float, float], register: str) -> dict[str, Any]:
    moved = translate(case.guide.astype(np.float32), *shift)
    started = time.perf_counter()
    scores = evaluate_pair(
        case.reference, moved, case.scale, mask=case.mask, name=case.name, register=register,
        consistency="off",  # the fit itself, as recorded before the projection existed
    )
    return {
        "rmse": scores.rmse,
        "bicubic": scores.bicubic_rmse,
        "strategy": scores.strategy,
        "seconds": time.perf_counter() - started,
        "registration": scores.registration,
    }


def run(args: argparse.Namespace) -> None:
    done = {r["key"] for r in read_log(args.log)} if args.resume else set()
    machine = machine_description()
    shifts = parse_shifts(args.shifts)
    fit_shifts = parse_shifts(args.fit_shifts) if args.fit_shifts else shifts
    for case in cases(args):
        for shift in shifts:
            records = []
            found = detect(case, shift)
            if key(case, shift, "detect") not in done:
                records.append({"kind": "detect", **found})
            if not args.detect_only and shift in fit_shifts:
                for register in ("off", "auto"):
                    if key(case, shift, register) in done:
                        continue
                    if register == "auto" and not found["applied"]:  # the same fit as "off"
                        continue
                    records.append({"kind": register, **fitted(case, shift, register)})
            for record in records:
                record.update(
                    key=key(case, shift, record["kind"]), dataset=case.dataset, name=case.name,
                    scale=case.scale, dx=shift[0], dy=shift[1], machine=machine,
                )
                append_log(args.log, record)
                print(_line(record), flush=True)


def _line(record: dict[str, Any]) -> str:
    where = f"{record['name']} x{record['scale']} shift ({record['dx']:g},{record['dy']:g})"
    if record["kind"] == "detect":
        return (f"{where}: estimate ({record['est_dx']:.2f},{record['est_dy']:.2f}) "
                f"applied={record['applied']} ({record['reason']})")
    return (f"{where}: register {record['kind']} RMSE {record['rmse']:.4g} "
            f"({record['seconds']:.0f} s)")


def table(records: list[dict[str, Any]]) -> str:
    """One row per case and shift: the estimate, its error, and RMSE before and after."""
    by_key = {r["key"]: r for r in records}
    own: dict[tuple, tuple[float, float]] = {}
    for r in records:
        if r["kind"] == "detect" and (r["dx"], r["dy"]) == (0, 0):
            own[(r["dataset"], r["name"], r["scale"])] = (r["est_dx"], r["est_dy"])
    lines = [
        "| pair | scale | shift (dx, dy) | estimate | error | corrected | RMSE aligned "
        "| RMSE as given | RMSE corrected | bicubic | s as given / corrected |",
        "|---|---:|---|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in records:
        if r["kind"] != "detect":
            continue
        case = (r["dataset"], r["name"], r["scale"])
        base = own.get(case, (0.0, 0.0))
        error = float(np.hypot(r["est_dx"] - base[0] - r["dx"], r["est_dy"] - base[1] - r["dy"]))
        stem = r["key"].rsplit("/", 2)[0]
        prefix = r["key"].rsplit("/", 1)[0]
        off, auto = by_key.get(prefix + "/off"), by_key.get(prefix + "/auto")
        if auto is None and not r["applied"]:
            auto = off  # not corrected: the fit with --register auto is the fit as given
        aligned = by_key.get(stem + "/0,0/off")

        def cell(rec: dict[str, Any] | None, field: str = "rmse") -> str:
            return "" if rec is None else f"{rec[field]:.4g}"

        corrected_seconds = None if auto is None else (
            auto["seconds"] if auto is not off else off["seconds"] + r["seconds"]
        )  # not corrected: the fit as given plus the estimate
        seconds = "" if off is None or auto is None else (
            f"{off['seconds']:.0f} / {corrected_seconds:.0f}"
        )
        lines.append(
            f"| {r['name']} | x{r['scale']} | {r['dx']:g}, {r['dy']:g} "
            f"| {r['est_dx']:.2f}, {r['est_dy']:.2f} | {error:.2f} "
            f"| {'yes' if r['applied'] else 'no: ' + r['reason'].split(':')[0]} "
            f"| {cell(aligned)} | {cell(off)} | {cell(auto)} | {cell(off, 'bicubic')} "
            f"| {seconds} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, default=Path("misregistration.jsonl"))
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--datasets", default="rmnp,middlebury,synthetic")
    parser.add_argument("--rmnp-scales", default="2,4")
    parser.add_argument("--middlebury", type=Path, default=DEFAULT_MIDDLEBURY)
    parser.add_argument("--middlebury-limit", type=int, default=None)
    parser.add_argument("--middlebury-names", default=None, help="e.g. 88,026 (default: all)")
    parser.add_argument("--crop", type=int, default=160, help="Middlebury centre crop (px)")
    parser.add_argument("--synthetic-count", type=int, default=2)
    parser.add_argument("--shifts", default=SHIFTS, help="'dx,dy dx,dy ...' output pixels")
    parser.add_argument("--fit-shifts", default=None, help="the shifts that are fitted "
                        "(default: all); the others are detected only")
    parser.add_argument("--detect-only", action="store_true")
    parser.add_argument("--write", type=Path, help="BENCHMARKS.md to update")
    parser.add_argument("--note", default="", help="a sentence on the runs for the report")
    parser.add_argument("--tables-only", action="store_true")
    args = parser.parse_args(argv)
    if not args.tables_only:
        run(args)
    records = read_log(args.log)
    text = table(records)
    print(text)
    if args.write:
        machines = sorted({r["machine"].split("; load average")[0] for r in records})
        write_section(args.write, "misregistration", _section(text, machines, args.note))
    return 0


def _section(text: str, machines: list[str], note: str) -> str:
    return "\n".join([
        "## Misregistered guides (`benchmarks/misregistration.py`)",
        "",
        "The guide's content moved by (dx, dy) output pixels while its georeferencing still "
        "claims alignment; the default fit (`auto` schedule, per-image) with the guide as "
        "given and with `--register auto`. *estimate*: the offset found from the LR source "
        "and the guide alone; *error*: its distance from the pair's own offset (the estimate "
        "at no shift) plus the shift. Machine: " + "; ".join(machines) + " (the load "
        "and time of each run are in `benchmarks/misregistration.jsonl`).",
        *([note] if note else []),
        "",
        text,
    ])


if __name__ == "__main__":
    raise SystemExit(main())
