"""The paper's depth protocol on the shared Middlebury pairs (Dong et al., ECCV 2022, 4.1-4.2).

LR = average pooling of the 320x320 target by the scale; a fresh MMSR network (kernels 11/5,
1000 iterations) per image and scale; RMSE in 0-255 units over the full image; bicubic
upsampling of the same LR beside it. Every image's scores are appended to a JSON-lines log as
soon as they exist, so a run cut short (hours on a CPU) still leaves its figures, and
``--resume`` picks it up where it stopped.

    python benchmarks/middlebury.py --limit 1 --iterations 5 --scales 4
    python benchmarks/middlebury.py --log middlebury.jsonl --resume --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout
sys.path.insert(0, str(ROOT / "benchmarks"))  # _report

from _report import append_log, machine_description, read_log, write_section  # noqa: E402

from mmsr_geo.evaluation import PairScores, evaluate_pair, summarise  # noqa: E402
from mmsr_geo.fit import FitConfig  # noqa: E402
from mmsr_geo.loaders import load_middlebury_dir, middlebury_names  # noqa: E402
from mmsr_geo.presets import preset_kernels  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "middlebury"
PAPER = (
    "For context, the paper's averages (Table 1, other Middlebury test sets): x4 1.78 / 2.47 / "
    "2.30 and x8 2.63 / 3.92 / 3.60 (2003 / 2005 / 2014)."
)


def _log_key(record: dict[str, Any]) -> tuple:
    return (
        record["name"],
        record["scale"],
        record["iterations"],
        record["s2g_kernel"],
        record["g2s_kernel"],
        record["seed"],
    )


def _scores(record: dict[str, Any]) -> PairScores:
    fields = PairScores.__dataclass_fields__
    return PairScores(**{k: v for k, v in record.items() if k in fields})


def markdown(
    results: dict[int, list[PairScores]],
    iterations: int,
    device: str,
    available: int,
    note: str = "",
) -> str:
    """One table: per image, MMSR and bicubic RMSE at every scale, and the fit's seconds.

    ``available`` is how many pairs the data folder holds: a table of fewer says so, since
    the mean of a subset is not comparable with the official 13-sample mean (1.71 at x4)."""
    scales = sorted(results)
    names = list(dict.fromkeys(s.name for scale in scales for s in results[scale]))
    header = ["image"]
    for scale in scales:
        header += [f"x{scale} MMSR", f"x{scale} bicubic", f"x{scale} s"]
    fitted = sum(s.seconds for scale in scales for s in results[scale])
    subset = (
        f" Only {len(names)} of the {available} pairs: the mean below is of these, not "
        f"comparable with the official notebook's 13-sample x4 mean (1.71)."
        if len(names) < available
        else ""
    )
    lines = [
        f"Middlebury depth, {len(names)} pairs of 320x320 (shared sample data), LR by average "
        f"pooling, RMSE in 0-255 units over the full image. MMSR kernels 11/5, the paper's "
        f"schedule, {iterations} iterations per image and scale, device {device}; 's' is the "
        f"wall time of one fit ({fitted / 3600:.1f} h of fitting in all).{subset}",
        "",
        f"Machine (of the run that wrote this table): {machine_description()}. {note}".rstrip(),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    by_scale = {scale: {s.name: s for s in results[scale]} for scale in scales}
    for name in names:
        cells = [name]
        for scale in scales:
            s = by_scale[scale].get(name)
            cells += (
                ["-"] * 3
                if s is None
                else [f"{s.rmse:.2f}", f"{s.bicubic_rmse:.2f}", f"{s.seconds:.0f}"]
            )
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["**mean**"]
    for scale in scales:
        mean = summarise(results[scale])
        cells += [f"**{mean.rmse:.2f}**", f"{mean.bicubic_rmse:.2f}", f"{mean.seconds:.0f}"]
    lines.append("| " + " | ".join(cells) + " |")
    lines += ["", PAPER]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="guide/ + target/ folder")
    parser.add_argument("--scales", default="4,8", help="comma-separated, default 4,8")
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--names", default=None, help="comma-separated image names")
    parser.add_argument("--limit", type=int, default=None, help="first N images only")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log", type=Path, default=None, help="append JSON lines here")
    parser.add_argument(
        "--resume", action="store_true", help="reuse images already in --log (same settings)"
    )
    parser.add_argument("--write", type=Path, default=None, help="e.g. BENCHMARKS.md")
    parser.add_argument("--note", default="", help="a sentence on the run for the report")
    args = parser.parse_args(argv)
    scales = [int(s) for s in args.scales.split(",") if s.strip()]
    names = middlebury_names(args.data)
    available = len(names)
    if args.names:
        names = [n.strip() for n in args.names.split(",") if n.strip()]
    if args.limit is not None:
        names = names[: args.limit]
    kernels = preset_kernels("depth")
    done: dict[tuple, dict[str, Any]] = {}
    if args.resume and args.log is not None:
        done = {_log_key(r): r for r in read_log(args.log)}

    results: dict[int, list[PairScores]] = {scale: [] for scale in scales}
    devices: set[str] = set()
    for scale in scales:
        config = FitConfig.from_preset(
            "depth", iterations=args.iterations, seed=args.seed, device=args.device
        )
        for name, reference, guide in load_middlebury_dir(args.data, names):
            key = (name, scale, args.iterations, kernels.s2g, kernels.g2s, args.seed)
            if key in done:
                scores = _scores(done[key])
                origin = "from log"
            else:
                scores = evaluate_pair(reference, guide, scale, config, name=name)
                origin = f"{scores.seconds:.0f}s"
                if args.log is not None:
                    record = {
                        "scale": scale,
                        "iterations": args.iterations,
                        "s2g_kernel": kernels.s2g,
                        "g2s_kernel": kernels.g2s,
                        "seed": args.seed,
                        **scores.as_dict(),
                        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                        "machine": machine_description(),
                    }
                    append_log(args.log, record)
            devices.add(scores.device)
            results[scale].append(scores)
            print(
                f"x{scale} {name}: MMSR {scores.rmse:.3f}  bicubic {scores.bicubic_rmse:.3f} "
                f"({origin})",
                file=sys.stderr,
                flush=True,
            )
    table = markdown(
        results, args.iterations, ",".join(sorted(devices)), available, args.note
    )
    print(table)
    if args.write is not None:
        write_section(args.write, "middlebury", table)
        print(f"wrote section 'middlebury' of {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
