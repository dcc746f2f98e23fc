"""Does the uncertainty band (``--confidence``) say where the output is wrong?

The paper's protocol (LR = average pooling of the reference): each case is fitted once with
the default (``auto`` schedule, per-image fit, ``--register auto``; ``--preset``, by default
the tool's, remote-sensing, for every pair), projected as
``--consistency exact`` does, and the band of :func:`mmsr_geo.confidence.uncertainty` is
compared per pixel with the true |error| of that output: the rank (Spearman) correlation,
the mean |error| of the least-confident 10 % over that of the rest, the share of the squared
error that 10 % holds, and mean |error| / mean band (its size against the error's). Three
other signals a band could be made of are scored beside it: the local cycle residual
(|source - pool(fit)| upsampled), the consistency projection's correction, and the source's
local relief (3 x 3 range, upsampled).

The measure was chosen on the first three cases fitted (RMNP x2, x4, Middlebury 01_1 x4); the
other Middlebury crops are held out. The fits are kept (``quality.default_fit``), so the
scores can be recomputed without refitting.

    python benchmarks/confidence.py --write BENCHMARKS.md --figure benchmarks/confidence.png
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import machine_description, write_section  # noqa: E402
from consistency import pixel_size  # noqa: E402
from quality import (  # noqa: E402
    DEFAULT_MIDDLEBURY,
    Case,
    default_fit,
    middlebury_cases,
    rmnp_cases,
)

from mmsr_geo.confidence import uncertainty  # noqa: E402
from mmsr_geo.consistency import project_consistent  # noqa: E402
from mmsr_geo.degradation import average_pool  # noqa: E402
from mmsr_geo.preview import hillshade  # noqa: E402

TUNING = ("rmnp/x2", "rmnp/x4", "01_1/x4")
"""The cases the measure was chosen on; the rest are held out."""


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    return ranks


def _upsample(values: np.ndarray, s: int) -> np.ndarray:
    tensor = torch.from_numpy(values.astype(np.float64))[None, None]
    return F.interpolate(tensor, scale_factor=s, mode="bilinear", align_corners=False)[0, 0].numpy()


def _relief(lr: np.ndarray) -> np.ndarray:
    tensor = torch.from_numpy(np.pad(lr, 1, mode="edge"))[None, None]
    patches = F.unfold(tensor, 3)[0]
    return (patches.max(0).values - patches.min(0).values).reshape(lr.shape).numpy()


def scores(band: np.ndarray, error: np.ndarray) -> dict[str, float]:
    """How well ``band`` ranks ``error`` (both flat, valid pixels)."""
    top = band >= np.quantile(band, 0.9)
    return {
        "spearman": float(np.corrcoef(_ranks(band), _ranks(error))[0, 1]),
        "top10_ratio": float(error[top].mean() / error[~top].mean()),
        "top10_share": float((error[top] ** 2).sum() / (error**2).sum()),
        "size": float(error.mean() / band.mean()),
    }


def measure(case: Case, preset: str | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    fit = default_fit(case, preset)
    s = case.scale
    prediction, lr, reference, valid = (fit[k] for k in ("prediction", "lr", "reference",
                                                         "valid"))
    prediction, lr = prediction.astype(np.float64), lr.astype(np.float64)
    everywhere = np.ones(prediction.shape, dtype=bool)
    lr_valid = np.ones(lr.shape, dtype=bool)
    exact = project_consistent(prediction, everywhere, lr, lr_valid, s)
    band = uncertainty(exact, everywhere, lr, lr_valid, s)
    error = np.abs(exact - reference)
    signals = {
        "band": band,
        "cycle residual": np.abs(_upsample(lr - average_pool(prediction, s), s)),
        "correction": np.abs(exact - prediction),
        "relief": _upsample(_relief(lr), s),
    }
    key = f"{case.name}/x{s}"
    record = {
        "dataset": case.dataset, "name": case.name, "scale": s, "case": key,
        "split": "tuning" if key in TUNING else "held out", "strategy": str(fit["strategy"]),
        "rmse": float(np.sqrt(np.mean(error[valid] ** 2))),
        **{name: scores(signal[valid], error[valid]) for name, signal in signals.items()},
    }
    return record, {"exact": exact, "band": band, "error": error, "valid": valid}


def cost(arrays: dict[str, np.ndarray], scale: int, repeat: int = 3) -> float:
    """Seconds per output megapixel of the band on a 4 MP mosaic of a case (best of
    ``repeat``)."""
    exact = np.tile(arrays["exact"], (1 + 2048 // arrays["exact"].shape[0],
                                      1 + 2048 // arrays["exact"].shape[1]))
    h, w = (n // scale * scale for n in exact.shape)
    exact = exact[:h, :w]
    source = average_pool(exact, scale)
    valid, source_valid = np.ones(exact.shape, bool), np.ones(source.shape, bool)
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        uncertainty(exact, valid, source, source_valid, scale)
        best = min(best, time.perf_counter() - started)
    return best / (exact.size / 1e6)


def figure(path: Path, shown: list[tuple[Case, dict[str, np.ndarray]]]) -> None:
    """Per case: hillshade of the output, its band, its true |error| (same colour scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(shown), 3, figsize=(13, 4.3 * len(shown)), dpi=80,
                             squeeze=False)
    for row, (case, arrays) in enumerate(shown):
        size = pixel_size(case)
        limit = float(np.quantile(arrays["error"][arrays["valid"]], 0.98))
        axes[row, 0].imshow(hillshade(arrays["exact"], size[::-1]), cmap="gray", vmin=0, vmax=1)
        axes[row, 0].set_title(f"{case.name} x{case.scale}: output (hillshade)", fontsize=10)
        shown_band = axes[row, 1].imshow(arrays["band"], cmap="magma", vmin=0, vmax=limit)
        axes[row, 1].set_title("uncertainty band (--confidence)", fontsize=10)
        axes[row, 2].imshow(arrays["error"], cmap="magma", vmin=0, vmax=limit)
        axes[row, 2].set_title("true |error|", fontsize=10)
        fig.colorbar(shown_band, ax=axes[row, 1:], shrink=0.8,
                     label="metres" if case.dataset == "rmnp" else "disparity")
    for ax in axes.flat:
        ax.set_axis_off()
    fig.savefig(path, pil_kwargs={"optimize": True})
    plt.close(fig)


SIGNALS = ("band", "cycle residual", "correction", "relief")


def table(records: list[dict[str, Any]]) -> str:
    lines = [
        "| pair | split | RMSE | band: Spearman | band: top-10 % / rest | band: top-10 % share "
        "of squared error | mean abs error / mean band | Spearman of cycle residual / "
        "correction / relief |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in records:
        band = r["band"]
        others = " / ".join(f"{r[name]['spearman']:.2f}" for name in SIGNALS[1:])
        lines.append(
            f"| {r['case']} | {r['split']} | {r['rmse']:.4g} | {band['spearman']:.2f} "
            f"| {band['top10_ratio']:.2f} | {100 * band['top10_share']:.0f} % "
            f"| {band['size']:.2f} | {others} |"
        )
    for split in ("tuning", "held out"):
        group = [r for r in records if r["split"] == split]
        if not group:
            continue
        mean = {name: {k: np.mean([r[name][k] for r in group]) for k in group[0][name]}
                for name in SIGNALS}
        others = " / ".join(f"{mean[name]['spearman']:.2f}" for name in SIGNALS[1:])
        band = mean["band"]
        lines.append(
            f"| **mean, {split} ({len(group)})** | | | {band['spearman']:.2f} "
            f"| {band['top10_ratio']:.2f} | {100 * band['top10_share']:.0f} % "
            f"| {band['size']:.2f} | {others} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rmnp-scales", default="2,4")
    parser.add_argument("--middlebury-scales", default="4")
    parser.add_argument("--middlebury", type=Path, default=DEFAULT_MIDDLEBURY)
    parser.add_argument("--middlebury-limit", type=int, default=None)
    parser.add_argument("--crop", type=int, default=160, help="Middlebury centre crop (px)")
    parser.add_argument("--preset", default="remote-sensing",
                        help="the fits' preset for every pair ('' : each dataset's own)")
    parser.add_argument("--figure", type=Path, help="PNG: output, band and |error|")
    parser.add_argument("--figure-cases", default="rmnp/x4,01_1/x4")
    parser.add_argument("--write", type=Path, help="BENCHMARKS.md to update")
    parser.add_argument("--section", default="confidence",
                        help="the BENCHMARKS.md section to write (one per preset run)")
    parser.add_argument("--note", default="")
    args = parser.parse_args(argv)
    cases = [*rmnp_cases([int(v) for v in args.rmnp_scales.split(",")]),
             *middlebury_cases([int(v) for v in args.middlebury_scales.split(",")],
                               args.middlebury, args.middlebury_limit, args.crop)]
    records, shown, costs = [], [], {}
    for case in cases:
        record, arrays = measure(case, args.preset)
        records.append(record)
        costs.setdefault(case.scale, cost(arrays, case.scale))
        if record["case"] in args.figure_cases.split(","):
            shown.append((case, arrays))
        print(table([record]).splitlines()[-1], flush=True)
    text = table(records)
    spent = ", ".join(f"x{k} {v:.2f}" for k, v in sorted(costs.items()))
    print(text)
    print(f"band: {spent} s per output megapixel")
    if args.figure and shown:
        figure(args.figure, shown)
    if args.write:
        preset = args.preset or "of each dataset"
        title = "" if args.section == "confidence" else f", preset {preset}"
        write_section(args.write, args.section, "\n".join([
            f"## Confidence band (`benchmarks/confidence.py`){title}",
            "",
            "One default fit per pair (paper protocol; Middlebury: 160 x 160 centre crops; "
            f"preset {args.preset or 'of each dataset'}), "
            "projected as `--consistency exact` writes it; the band against the true |error| "
            "of that output, per pixel. A band that knew nothing would score Spearman 0, "
            "top-10 % / rest 1 and a 10 % share of the squared error. The measure was chosen "
            "on the three *tuning* cases; the rest are held out. Machine: "
            f"{machine_description()}.",
            *([args.note] if args.note else []),
            "",
            text,
            "",
            f"Cost of the band, on a 4-megapixel mosaic of a case (best of 3): {spent} s per "
            "output megapixel.",
        ]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
