"""Is the CLI's memory flat in the raster's size? Peak RSS at 1x and 4x the area (issue 3).

Why: ``mmsr-geo upscale`` promises memory bounded by the tile and block sizes, never by the
raster's (tiles are read and fitted one at a time, checkpointed to disk, and blended block by
block). A 4x larger raster must then peak at about the same RSS as the 1x one, not 4x.

How: the real 1 m DSM tile (NRW ``dom1``, 1000 x 1000 float32, EPSG:25832) is average-pooled
x4 (:func:`mmsr_geo.degradation.pool`) to a 250 x 250 LR source with 4 m pixels; its hillshade,
computed at 1 m (:func:`mmsr_geo.preview.hillshade`, one band, on the output grid), is the
guide (accuracy is not the point here). The 4x raster is a 2 x 2 mosaic of that tile: GDAL
VRTs written here that point four times at the same GeoTIFF with shifted destination offsets,
with a geotransform covering the 2 x 2 area (500 x 500 source, 2000 x 2000 guide), so nothing
4x large exists on disk but the output. Each size runs the real CLI as its own subprocess
(default features, tile size and overlap; few iterations, since memory does not depend on
them) and its own peak RSS is taken from ``os.wait4`` (that child's rusage, ru_maxrss), with
the wall time. A child that only imports the package gives the floor (Python, torch, numba).

    python benchmarks/memory.py --iterations 1
    python benchmarks/memory.py --iterations 2 --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # _report

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from affine import Affine  # noqa: E402

from mmsr_geo.degradation import pool  # noqa: E402
from mmsr_geo.preview import hillshade  # noqa: E402
from mmsr_geo.tiling import plan_tiles  # noqa: E402
from mmsr_geo.writer import read_settings  # noqa: E402

DEFAULT_DSM = ROOT.parent / "shared" / "data" / "nrw-dsm" / "dom1_32_356_5699_1_nw_2020.tif"
SCALE = 4


def _machine() -> str:
    """The shared machine description (benchmarks/_report.py) or, without it, the platform."""
    try:
        from _report import machine_description
    except ImportError:
        return f"{platform.machine()} {platform.platform()} (benchmarks/_report.py missing)"
    return machine_description()


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def write_inputs(dsm_path: Path, folder: Path) -> tuple[Path, Path]:
    """``source.tif`` (the DSM pooled x4, 4 m) and ``guide.tif`` (its 1 m hillshade, uint8)."""
    with rasterio.open(dsm_path) as src:
        dsm = src.read(1, masked=True).astype(np.float64).filled(np.nan)
        crs, transform = src.crs, src.transform
    pixel = abs(transform.a)
    lr = pool(dsm, SCALE)
    hr_h, hr_w = lr.shape[0] * SCALE, lr.shape[1] * SCALE
    shade = hillshade(dsm[:hr_h, :hr_w], pixel)
    guide = np.where(np.isfinite(shade), np.round(shade * 254) + 1, 0).astype(np.uint8)

    source_path, guide_path = folder / "source.tif", folder / "guide.tif"
    common = {"driver": "GTiff", "crs": crs, "count": 1, "tiled": True}
    with rasterio.open(
        source_path,
        "w",
        **common,
        dtype="float32",
        nodata=-9999.0,
        width=lr.shape[1],
        height=lr.shape[0],
        transform=transform @ Affine.scale(SCALE),
    ) as dst:
        dst.write(np.where(np.isfinite(lr), lr, -9999.0).astype(np.float32), 1)
    with rasterio.open(
        guide_path,
        "w",
        **common,
        dtype="uint8",
        nodata=0,
        width=hr_w,
        height=hr_h,
        transform=transform,
    ) as dst:
        dst.write(guide, 1)
    return source_path, guide_path


def write_mosaic_vrt(path: Path, tile: Path, n: int) -> Path:
    """An n x n mosaic of ``tile`` as a GDAL VRT: the same file n*n times, shifted offsets."""
    with rasterio.open(tile) as src:
        width, height, dtype = src.width, src.height, src.dtypes[0]
        t, crs, nodata = src.transform, src.crs, src.nodata
    vrt_type = {"uint8": "Byte", "float32": "Float32"}[dtype]
    sources = []
    for row in range(n):
        for col in range(n):
            sources.append(
                "    <ComplexSource>\n"
                f'      <SourceFilename relativeToVRT="0">{escape(str(tile))}</SourceFilename>\n'
                "      <SourceBand>1</SourceBand>\n"
                f'      <SrcRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>\n'
                f'      <DstRect xOff="{col * width}" yOff="{row * height}" '
                f'xSize="{width}" ySize="{height}"/>\n'
                + (f"      <NODATA>{nodata:g}</NODATA>\n" if nodata is not None else "")
                + "    </ComplexSource>"
            )
    nodata_xml = f"    <NoDataValue>{nodata:g}</NoDataValue>\n" if nodata is not None else ""
    geotransform = ", ".join(repr(float(v)) for v in (t.c, t.a, t.b, t.f, t.d, t.e))
    path.write_text(
        f'<VRTDataset rasterXSize="{n * width}" rasterYSize="{n * height}">\n'
        f"  <SRS>{escape(crs.to_wkt())}</SRS>\n"
        f"  <GeoTransform>{geotransform}</GeoTransform>\n"
        f'  <VRTRasterBand dataType="{vrt_type}" band="1">\n'
        + nodata_xml
        + "\n".join(sources)
        + "\n  </VRTRasterBand>\n</VRTDataset>\n"
    )
    return path


# --------------------------------------------------------------------------------------------
# Children
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChildRun:
    seconds: float
    peak_rss_mb: float
    returncode: int
    output_tail: str


def run_child(command: list[str], log: Path) -> ChildRun:
    """Run ``command`` and return its own peak RSS (os.wait4's rusage of that child)."""
    started = time.perf_counter()
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    kib = usage.ru_maxrss if sys.platform != "darwin" else usage.ru_maxrss / 1024
    tail = log.read_text(errors="replace")[-2000:]
    return ChildRun(seconds, kib / 1024, process.returncode, tail)


def cli_command() -> list[str]:
    """``mmsr-geo`` if on PATH, else the same entry point through this interpreter."""
    exe = shutil.which("mmsr-geo")
    if exe:
        return [exe]
    return [sys.executable, "-c", "from mmsr_geo_cli.main import main; main()"]


# --------------------------------------------------------------------------------------------
# Run
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsm", type=Path, default=DEFAULT_DSM)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument(
        "--features", type=int, help="hidden features (default: the CLI's; only for smoke tests)"
    )
    parser.add_argument(
        "--mosaics", type=int, nargs="+", default=[1, 2], help="n for n x n mosaics"
    )
    parser.add_argument("--keep", type=Path, help="keep inputs, outputs and logs in this folder")
    parser.add_argument("--write", type=Path, help="write section 'memory' into this file")
    args = parser.parse_args(argv)

    rows = [
        "| raster | LR source | HR guide / output | tiles | peak RSS MB | seconds | output MB |",
        "|---|---|---|---|---|---|---|",
    ]
    peaks: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="mmsr-memory-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        source_tile, guide_tile = write_inputs(args.dsm, folder)

        floor = run_child(
            [sys.executable, "-c", "import mmsr_geo.run, mmsr_geo_cli.main, torch"],
            folder / "imports.log",
        )
        rows.append(
            f"| imports only (floor) | - | - | - | {floor.peak_rss_mb:.0f} | "
            f"{floor.seconds:.1f} | - |"
        )
        print(rows[-1], flush=True)
        for n in args.mosaics:
            if n == 1:
                source, guide = source_tile, guide_tile
            else:
                source = write_mosaic_vrt(folder / f"source_{n}x{n}.vrt", source_tile, n)
                guide = write_mosaic_vrt(folder / f"guide_{n}x{n}.vrt", guide_tile, n)
            output = folder / f"output_{n}x{n}.tif"
            command = [
                *cli_command(),
                "upscale",
                str(source),
                "--guide",
                str(guide),
                "-s",
                str(SCALE),
                "-o",
                str(output),
                "--iterations",
                str(args.iterations),
                "--device",
                "cpu",
                "--overwrite",
                "-q",
            ]
            if args.features:
                command += ["--features", str(args.features)]
            run = run_child(command, folder / f"run_{n}x{n}.log")
            if run.returncode != 0:
                print(run.output_tail, file=sys.stderr)
                raise SystemExit(f"{n}x{n}: the CLI failed with exit code {run.returncode}")
            with rasterio.open(source) as src:
                lr_shape = (src.height, src.width)
            with rasterio.open(output) as out:
                hr_shape = (out.height, out.width)
            settings = read_settings(output) or {}
            tiles = len(
                plan_tiles(
                    lr_shape[1],
                    lr_shape[0],
                    SCALE,
                    settings.get("tile_size", 64),
                    settings.get("overlap", 8),
                )
            )
            peaks[n] = run.peak_rss_mb
            rows.append(
                f"| {n}x{n} ({n * n}x area) | {lr_shape[1]}x{lr_shape[0]} "
                f"| {hr_shape[1]}x{hr_shape[0]} | {tiles} "
                f"({settings.get('tile_size')}/{settings.get('overlap')}) "
                f"| {run.peak_rss_mb:.0f} | {run.seconds:.0f} "
                f"| {output.stat().st_size / 2**20:.1f} |"
            )
            print(rows[-1], flush=True)

    lines = [
        f"`mmsr-geo upscale` (subprocess) on the NRW 1 m DSM `{args.dsm.name}` pooled x{SCALE} "
        f"to 4 m, guide = its 1 m hillshade (uint8, 1 band); the nxn rows are VRT mosaics of "
        f"that tile. {args.iterations} iteration(s) per tile, "
        f"{'default' if not args.features else args.features} features, default tile size/"
        "overlap (tiles column: count (tile size/overlap, LR pixels)), CPU. Peak RSS is each "
        "child's own ru_maxrss (os.wait4); seconds are wall time including start-up.",
        "",
        *rows,
        "",
    ]
    if 1 in peaks and len(peaks) > 1:
        big = max(peaks)
        growth = peaks[big] - peaks[1]
        lines.append(
            f"{big}x{big} ({big * big}x the area) vs 1x1: peak RSS x{peaks[big] / peaks[1]:.2f} "
            f"({growth:+.0f} MB; above the import floor: {peaks[1] - floor.peak_rss_mb:.0f} MB "
            f"-> {peaks[big] - floor.peak_rss_mb:.0f} MB)."
        )
        lines.append("")
    lines.append(f"Machine: {_machine()}")
    markdown = "\n".join(lines)
    print(markdown)
    if args.write:
        from _report import write_section

        write_section(args.write, "memory", markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
