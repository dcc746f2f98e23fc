"""Time and peak memory of the cross-domain filter, forward + backward, per implementation.

Compares the ``F.unfold`` reference (materialises a (B, C, k*k, H, W) tensor), the "shifted"
offset loop and the "cpu" numba kernels of :mod:`mmsr_geo.ops` on one problem size (default:
the MMSR filter at C=64, k=11 on a 256 x 256 tile, float32).

How: every variant runs in its own fresh subprocess of this script (``--only VARIANT``), one
after the other, so that one variant's memory high-water mark, allocator caches or thread pools
cannot touch another's numbers. The child first runs the variant on a tiny problem (imports,
numba compilation or cache loading, thread pools, allocator start-up), then allocates the
full-size inputs and takes the baseline; the first full-size forward + backward gives the peak
extra memory as the rise of ``ru_maxrss`` (the kernel-maintained peak resident set) over that
baseline, and doubles as the warm-up; the reported time is the median of ``--repeats`` more.
ru_maxrss sees every allocation (torch's, numpy's, numba's), which tracemalloc would not (it
misses torch), and it costs nothing while the timed code runs.

    python benchmarks/bench_filter.py
    python benchmarks/bench_filter.py --write BENCHMARKS.md
    python benchmarks/bench_filter.py --kernel-size 5 --variants shifted,cpu
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout

import torch  # noqa: E402
from _report import machine_description, write_section  # noqa: E402

from mmsr_geo.ops import cross_domain_filter  # noqa: E402

VARIANTS = ("unfold", "shifted", "cpu")  # backend names of cross_domain_filter


def _inputs(args: argparse.Namespace, height: int, width: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    shape = (args.batch, args.channels, height, width)
    dtype = getattr(torch, args.dtype)
    query, source, grad = (torch.randn(shape, generator=gen, dtype=dtype) for _ in range(3))
    return query.requires_grad_(), source.requires_grad_(), grad


def _forward_backward(variant: str, kernel_size: int, query, source, grad) -> float:
    start = time.perf_counter()
    out = cross_domain_filter(query, source, kernel_size, backend=variant)
    torch.autograd.grad(out, (query, source), grad)
    return time.perf_counter() - start


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _child(args: argparse.Namespace) -> dict:
    """Measure one variant in this (fresh) process; see the module docstring."""
    tiny = _inputs(args, 8, 8)
    first_call = _forward_backward(args.only, args.kernel_size, *tiny)
    del tiny
    inputs = _inputs(args, args.height, args.width)
    baseline = _maxrss_mib()
    warm_up = _forward_backward(args.only, args.kernel_size, *inputs)
    peak = _maxrss_mib() - baseline
    times = [_forward_backward(args.only, args.kernel_size, *inputs) for _ in range(args.repeats)]
    return {
        "variant": args.only,
        "seconds": statistics.median(times),
        "all_seconds": times,
        "warm_up_seconds": warm_up,
        "first_call_seconds": first_call,
        "peak_extra_mib": peak,
    }


def _run_child(variant: str, argv: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, *argv, "--only", variant],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _table(results: list[dict]) -> str:
    reference = next((r for r in results if r["variant"] == "unfold"), None)
    lines = [
        "| variant | fwd+bwd (s) | peak extra (MiB) | speed-up vs unfold | memory vs unfold |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        speed = memory = "n/a"
        if reference is not None:
            speed = f"{reference['seconds'] / r['seconds']:.1f}x"
            memory = f"{r['peak_extra_mib'] / reference['peak_extra_mib']:.3f}x"
        lines.append(
            f"| {r['variant']} | {r['seconds']:.3f} | {r['peak_extra_mib']:.0f} | {speed} "
            f"| {memory} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", "-C", type=int, default=64)
    parser.add_argument("--kernel-size", "-k", type=int, default=11)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", "-B", type=int, default=1)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs after the warm-up")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    parser.add_argument("--write", metavar="MARKDOWN", help="write the table into this file")
    parser.add_argument("--only", choices=VARIANTS, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args(argv)

    if args.only:
        print(json.dumps(_child(args)))
        return 0

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}: choose from {VARIANTS}")
    child_argv = [
        f"--channels={args.channels}",
        f"--kernel-size={args.kernel_size}",
        f"--height={args.height}",
        f"--width={args.width}",
        f"--batch={args.batch}",
        f"--dtype={args.dtype}",
        f"--repeats={args.repeats}",
    ]
    machine = machine_description()  # before the runs: the load average is the neighbours'
    results = []
    for variant in variants:
        print(f"running {variant} ...", file=sys.stderr, flush=True)
        results.append(_run_child(variant, child_argv))
        print(f"  {json.dumps(results[-1])}", file=sys.stderr, flush=True)

    problem = (
        f"B={args.batch}, C={args.channels}, H={args.height}, W={args.width}, "
        f"k={args.kernel_size}, {args.dtype}"
    )
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    notes = [
        f"Cross-domain filter, forward + backward, {problem}: median of {args.repeats} runs "
        "after one warm-up, each variant in its own fresh process (peak extra memory: rise of "
        "ru_maxrss over the baseline with the inputs allocated).",
        f"Machine: {machine}."
        + (
            f" 1-min load average after the runs: {load_after:.1f}."
            if load_after is not None
            else ""
        ),
    ]
    cpu = next((r for r in results if r["variant"] == "cpu"), None)
    if cpu is not None:
        notes.append(
            f"cpu: first call in a fresh process {cpu['first_call_seconds']:.1f} s (numba's "
            "on-disk cache loaded; without a cache the kernels compile, about 10 s per dtype)."
        )
    markdown = "\n\n".join(["## Cross-domain filter (`benchmarks/bench_filter.py`)", *notes])
    markdown += "\n\n" + _table(results)
    print(markdown)
    if args.write:
        write_section(args.write, "bench_filter", markdown)
        print(f"wrote section 'bench_filter' of {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
