"""Peak memory of fitting one tile, and of one forward pass of a raster network, by output
size: the figures behind the memory guard and the raster-level fit's inference tiles.

A tile's network runs at the output resolution, so its memory follows its output pixels
(``mmsr_geo.memory.BYTES_PER_PIXEL`` for a fit; the raster-level fit's forward passes are
guarded with that estimate too, which over-states them). Each size runs in a fresh process
(one thread): a tiny warm-up (imports, numba cache), then the measured fit or forward pass,
whose peak RSS is sampled every 2 ms by a thread; the figure is the rise over the RSS before
it, and its seconds per output megapixel (a fit's per iteration) say what size a forward
pass is fastest at.

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
import dataclasses, json, os, sys, threading, time
import numpy as np
from mmsr_geo.fit import FitConfig, fit
from mmsr_geo.normalisation import normalisation_stats
from mmsr_geo.raster_fit import Crop, CropBudget, predict_many, train_network

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

what = sys.argv[1]
hr, s2g, g2s, features, iterations = map(int, sys.argv[2:7])
scale = 4
config = FitConfig(iterations=2, s2g_kernel=s2g, g2s_kernel=g2s, features=features,
                   device="cpu")
lr = np.random.rand(hr // scale, hr // scale)
guide = np.random.rand(3, hr, hr).astype(np.float32)
stats = normalisation_stats(lr, guide, np.ones(lr.shape, bool))
small = (np.random.rand(8, 8), np.random.rand(3, 32, 32).astype(np.float32))
if what == "forward":  # a network of the right shape; its values do not change the cost
    crop = Crop(source=small[0], valid=np.ones((8, 8), bool), guide=small[1])
    weights = train_network([crop], scale, config, CropBudget(steps=1, crop_size=8), stats)
    def run():
        predict_many(weights, [lr], [guide], scale, config, masks=[None], stats=[stats])
    predict_many(weights, [small[0]], [small[1]], scale, config, masks=[None], stats=[stats])
else:
    def run():
        fit(lr, guide, scale, dataclasses.replace(config, iterations=iterations))
    fit(*small, scale, config)
base = rss_mib()
peak = [base]
stop = []
def watch():
    while not stop:
        peak[0] = max(peak[0], rss_mib())
        time.sleep(0.002)
thread = threading.Thread(target=watch)
thread.start()
started = time.perf_counter()
run()
seconds = time.perf_counter() - started
stop.append(1)
thread.join()
print(json.dumps({"base": base, "rise": peak[0] - base, "seconds": seconds}))
"""


def measure(what: str, hr: int, s2g: int, g2s: int, features: int) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, what,
         *map(str, (hr, s2g, g2s, features, FIT_ITERATIONS))],
        env=env, capture_output=True, text=True, check=True, cwd=ROOT.parent,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


FIT_ITERATIONS = 3
"""Iterations of a measured fit (the child's)."""
FIT_CASES = [(128, 5, 3, 64), (256, 5, 3, 64), (384, 5, 3, 64), (512, 5, 3, 64),
             (512, 11, 5, 64), (512, 5, 3, 32)]
FORWARD_CASES = [(256, 5, 3, 64), (512, 5, 3, 64), (1024, 5, 3, 64), (1024, 11, 5, 64)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", type=Path)
    args = parser.parse_args(argv)
    rows = []
    for what, cases in (("fit", FIT_CASES), ("forward", FORWARD_CASES)):
        for hr, s2g, g2s, features in cases:
            result = measure(what, hr, s2g, g2s, features)
            per_pixel = result["rise"] * 2**20 / hr / hr / 1024
            runs = FIT_ITERATIONS if what == "fit" else 1
            per_mp = result["seconds"] / (hr * hr / 1e6) / runs
            rows.append((what, hr, f"{s2g}/{g2s}", features, result["base"], result["rise"],
                         per_pixel, per_mp))
            print(rows[-1], flush=True)
    lines = [
        "## Memory per tile (`benchmarks/tile_memory.py`)",
        "",
        "Peak RSS rise of one fit (3 iterations) and of one forward pass of a raster network "
        "(x4, 3-band guide, CPU, one thread) over the process before it (torch, numba and "
        "GDAL loaded: the 'base'), each size in a fresh process, and the seconds it took per "
        "output megapixel. The memory guard plans with 13 KiB per output pixel for a fit at "
        "64 features (`mmsr_geo.memory.BYTES_PER_PIXEL`), scaled by features / 64.",
        "",
        f"Machine: {machine_description()}",
        "",
        "| what | output tile | kernels | features | base MiB | rise MiB | KiB per output pixel "
        "| s per output MP (a fit: per iteration) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {what} | {hr}x{hr} | {k} | {f} | {base:.0f} | {rise:.0f} | {pp:.1f} | {mp:.1f} |"
        for what, hr, k, f, base, rise, pp, mp in rows
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(args.write, "tile_memory", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
