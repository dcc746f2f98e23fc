"""Peak memory of fitting one tile, by output size: the figures behind the memory guard.

A tile's network runs at the output resolution, so its memory follows its output pixels
(``mmsr_geo.memory.BYTES_PER_PIXEL``). Each size runs in a fresh process (one thread): a
tiny warm-up fit (imports, numba cache), then the measured fit, whose peak RSS is sampled
every 2 ms by a thread; the figure is the rise over the RSS before the measured fit.

    python benchmarks/tile_memory.py --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from _report import machine_description, write_section  # noqa: E402

_CHILD = r"""
import json, os, sys, threading, time
import numpy as np
from mmsr_geo.fit import FitConfig, fit

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

hr, s2g, g2s, features = map(int, sys.argv[1:5])
scale = 4
config = dict(s2g_kernel=s2g, g2s_kernel=g2s, features=features, device="cpu")
fit(np.random.rand(8, 8), np.random.rand(3, 32, 32).astype(np.float32), scale,
    FitConfig(iterations=2, **config))
lr = np.random.rand(hr // scale, hr // scale)
guide = np.random.rand(3, hr, hr).astype(np.float32)
base = rss_mib()
peak = [base]
stop = []
def watch():
    while not stop:
        peak[0] = max(peak[0], rss_mib())
        time.sleep(0.002)
thread = threading.Thread(target=watch)
thread.start()
fit(lr, guide, scale, FitConfig(iterations=3, **config))
stop.append(1)
thread.join()
print(json.dumps({"base": base, "rise": peak[0] - base}))
"""


def measure(hr: int, s2g: int, g2s: int, features: int) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(hr), str(s2g), str(g2s), str(features)],
        env=env, capture_output=True, text=True, check=True, cwd=ROOT.parent,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", type=Path)
    args = parser.parse_args(argv)
    cases = [(128, 5, 3, 64), (256, 5, 3, 64), (384, 5, 3, 64), (512, 5, 3, 64),
             (512, 11, 5, 64), (512, 5, 3, 32)]
    rows = []
    for hr, s2g, g2s, features in cases:
        result = measure(hr, s2g, g2s, features)
        per_pixel = result["rise"] * 2**20 / hr / hr / 1024
        rows.append((hr, f"{s2g}/{g2s}", features, result["base"], result["rise"], per_pixel))
        print(rows[-1], flush=True)
    lines = [
        "## Memory per tile (`benchmarks/tile_memory.py`)",
        "",
        "Peak RSS rise of one fit (3 iterations, x4, 3-band guide, CPU, one thread) over the "
        "process before it (torch, numba and GDAL loaded: the 'base'), each size in a fresh "
        "process. The memory guard plans with 13 KiB per output pixel at 64 features "
        "(`mmsr_geo.memory.BYTES_PER_PIXEL`), scaled by features / 64.",
        "",
        f"Machine: {machine_description()}",
        "",
        "| output tile | kernels | features | base MiB | rise MiB | KiB per output pixel |",
        "|---|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {hr}x{hr} | {k} | {f} | {base:.0f} | {rise:.0f} | {pp:.1f} |"
        for hr, k, f, base, rise, pp in rows
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(args.write, "tile_memory", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
