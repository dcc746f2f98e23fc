"""Time and memory of one full fit iteration: unfold reference filter vs the fused filter.

A fit is ``iterations`` x ``training_step`` (forward, L1 cycle loss, backward, Adam), so the
seconds per iteration times 1000 is the CPU time of one tile. Both variants run in this one
process on the same machine (median of a few iterations after warm-up); the peak memory of
each is measured in a fresh subprocess, as the rise of ru_maxrss over a baseline taken after a
tiny warm-up step (imports, numba compilation/cache loading and allocator start-up excluded).

    python benchmarks/bench_fit.py
    python benchmarks/bench_fit.py --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout

import torch  # noqa: E402

from mmsr_geo.fit_config import FitConfig  # noqa: E402
from mmsr_geo.model import MMSRNet  # noqa: E402
from mmsr_geo.presets import PRESETS  # noqa: E402
from mmsr_geo.training import make_optimiser, training_step  # noqa: E402


def _machine() -> str:
    """The shared machine description (benchmarks/_report.py) or, without it, the platform."""
    try:
        from _report import machine_description
    except ImportError:
        return f"{platform.machine()} {platform.platform()} (benchmarks/_report.py missing)"
    return machine_description()


def _fused_backend() -> str:
    """What "auto" runs on the CPU: the numba kernels when they import, else the offset loop."""
    try:
        from mmsr_geo.ops import cpu  # noqa: F401
    except ImportError:
        return "shifted"
    return "cpu"


def _setup(size: int, scale: int, s2g: int, g2s: int, backend: str, seed: int = 0):
    """Model, optimiser and inputs exactly as :func:`mmsr_geo.fit.fit` prepares them."""
    torch.manual_seed(seed)
    model = MMSRNet(3, s2g, g2s, 64, filter_backend=backend)
    model = model.to(memory_format=torch.channels_last)
    optimiser, _ = make_optimiser(model, FitConfig(s2g_kernel=s2g, g2s_kernel=g2s))
    source = torch.randn(1, 1, size // scale, size // scale)
    guide = torch.randn(1, 3, size, size).contiguous(memory_format=torch.channels_last)
    weight = torch.ones_like(source)
    return model, optimiser, source, guide, weight, weight.sum()


def seconds_per_iteration(
    size: int, scale: int, s2g: int, g2s: int, backend: str, warmup: int, repeats: int
) -> float:
    """Median wall time of ``training_step`` after ``warmup`` untimed steps."""
    model, optimiser, source, guide, weight, n_valid = _setup(size, scale, s2g, g2s, backend)
    for _ in range(warmup):
        training_step(model, optimiser, source, guide, weight, n_valid, scale)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        training_step(model, optimiser, source, guide, weight, n_valid, scale)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where unsupported.

    Without the reset the mark would still hold the import-time peak (torch, numba), which
    can exceed the step's own peak and hide it entirely.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def _child(size: int, scale: int, s2g: int, g2s: int, backend: str) -> None:
    """In a fresh process: peak resident memory added by one training step (MiB)."""
    tiny = _setup(4 * scale, scale, s2g, g2s, backend)
    training_step(*tiny, scale)  # imports, kernel compilation/cache, allocator warm-up
    del tiny
    state = _setup(size, scale, s2g, g2s, backend)
    if _reset_peak():
        baseline = _status_kib("VmRSS")
        training_step(*state, scale)
        peak, method = _status_kib("VmHWM") - baseline, "VmHWM"
    else:
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        training_step(*state, scale)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline
        method = "ru_maxrss"
    print(json.dumps({"peak_mib": peak / 1024, "method": method}))  # KiB on Linux


METHODS: set[str] = set()


def peak_memory_mib(size: int, scale: int, s2g: int, g2s: int, backend: str) -> float:
    command = [
        sys.executable,
        __file__,
        "--child",
        json.dumps([size, scale, s2g, g2s, backend]),
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    METHODS.add(result["method"])
    return result["peak_mib"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=192, help="HR guide size (square)")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed iterations per variant")
    parser.add_argument("--tile", type=int, default=320, help="size for the per-preset timing")
    parser.add_argument("--write", type=Path, default=None, help="e.g. BENCHMARKS.md")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.write is not None:
        try:  # fail now, not after hours of fitting
            from _report import write_section
        except ImportError:
            parser.error("--write needs benchmarks/_report.py (write_section), not found")
    if args.child is not None:
        _child(*json.loads(args.child))
        return 0

    fused = _fused_backend()
    s2g, g2s = PRESETS["depth"]
    rows = []
    for backend, label in (("unfold", "unfold (reference)"), ("auto", f"auto (fused: {fused})")):
        secs = seconds_per_iteration(
            args.size, args.scale, s2g, g2s, backend, args.warmup, args.repeats
        )
        peak = peak_memory_mib(args.size, args.scale, s2g, g2s, backend)
        rows.append((label, secs, peak))
        print(f"{label}: {secs:.3f} s/iteration, peak +{peak:.0f} MiB", file=sys.stderr)

    tile_rows = []
    for preset, (ts2g, tg2s) in PRESETS.items():
        secs = seconds_per_iteration(
            args.tile, args.scale, ts2g, tg2s, "auto", args.warmup, args.repeats
        )
        peak = peak_memory_mib(args.tile, args.scale, ts2g, tg2s, "auto")
        tile_rows.append((preset, ts2g, tg2s, secs, peak))
        print(f"{preset} {args.tile}: {secs:.3f} s/iteration, +{peak:.0f} MiB", file=sys.stderr)

    (_, slow, slow_mem), (_, fast, fast_mem) = rows
    lr = args.size // args.scale
    md = [
        f"One fit iteration (`training_step`: forward, L1 cycle loss, backward, Adam) of the "
        f"real MMSRNet (64 features, kernels {s2g}/{g2s}), {args.size}x{args.size} 3-band guide, "
        f"{lr}x{lr} source (x{args.scale}), CPU, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads. Seconds: median of {args.repeats} iterations after "
        f"{args.warmup} warm-up, both variants in one run. Peak memory: rise of the peak RSS "
        f"({'/'.join(sorted(METHODS))}, reset after a tiny warm-up step) during one step, in a "
        "fresh process per variant.",
        "",
        f"Machine: {_machine()}",
        "",
        "| filter backend | s / iteration | peak memory (MiB) |",
        "|---|---:|---:|",
    ]
    md += [f"| {label} | {secs:.3f} | {peak:.0f} |" for label, secs, peak in rows]
    md.append(
        f"| **unfold / fused** | **{slow / fast:.1f}x** | **{slow_mem / max(fast_mem, 1):.1f}x** |"
    )
    md += [
        "",
        f"Fused fit at {args.tile}x{args.tile} (the Middlebury size; "
        f"{args.tile // args.scale}x{args.tile // args.scale} source at x{args.scale}): "
        "CPU time per tile.",
        "",
        "| preset | kernels | s / iteration | 1000 iterations (min) | peak memory (MiB) |",
        "|---|---|---:|---:|---:|",
    ]
    md += [
        f"| {preset} | {a}/{b} | {secs:.3f} | {secs * 1000 / 60:.1f} | {peak:.0f} |"
        for preset, a, b, secs, peak in tile_rows
    ]
    table = "\n".join(md)
    print(table)
    if args.write is not None:
        write_section(args.write, "bench_fit", table)
        print(f"wrote section 'bench_fit' of {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
