"""Guides as users have them (issue 18): warped footprints without a nodata value, RGBA and
south-up guides, a batch rerun beside its sources, output-side checks before the fit, and
messages that say what is wrong. Real GeoTIFFs, real ``mmsr-geo`` subprocesses; the nodata
counts are checked against the guide's true footprint polygon."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
from _rasters import terrain, write
from affine import Affine
from rasterio.features import geometry_mask
from rasterio.transform import from_origin
from shapely.geometry import Polygon
from test_batch import run_cli

from mmsr_geo.selection import gain_words

FAST = ["--iterations", "2", "--features", "4", "--schedule", "paper", "--device", "cpu",
        "--seed", "0"]
UTM = "EPSG:32633"
ORIGIN = (500_000.0, 4_000_000.0)


def _dem(tmp: Path) -> Path:
    """A 24 x 24 DEM at 8 m: the output at x4 is 96 x 96 pixels of 2 m."""
    lr, _ = terrain(24, 24, 4)
    return write(tmp / "dem.tif", lr, crs=UTM, pixel=8.0, origin=ORIGIN)


def _guide(tmp: Path, name: str, transform: Affine, size: int = 40, alpha: bool = False,
           flip: bool = False) -> Path:
    """An RGB (or RGBA, alpha 0 in the left half) uint8 guide of ``size`` pixels, no nodata."""
    rng = np.random.default_rng(0)
    rgb = (rng.random((3, size, size)) * 200 + 20).astype(np.uint8)
    bands = [rgb[:, ::-1] if flip else rgb]
    if alpha:
        mask = np.full((1, size, size), 255, np.uint8)
        mask[:, :, : size // 2] = 0
        bands.append(mask)
    data = np.concatenate(bands)
    path = tmp / f"{name}.tif"
    profile = {"driver": "GTiff", "width": size, "height": size, "count": data.shape[0],
               "dtype": "uint8", "crs": UTM, "transform": transform}
    if alpha:
        profile.update(photometric="RGB", alpha="YES")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def _valid_pixels(path: Path) -> tuple[np.ndarray, Affine]:
    with rasterio.open(path) as src:
        return src.read_masks(1) > 0, src.transform


def _footprint_pixels(polygon: Polygon, transform: Affine, shape: tuple[int, int]) -> int:
    return int(geometry_mask([polygon], out_shape=shape, transform=transform, invert=True).sum())


def _upscale(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("upscale", *args, *FAST)


def test_a_warped_guide_without_nodata_keeps_its_footprint(tmp_path: Path) -> None:
    dem = _dem(tmp_path)
    guide = _guide(tmp_path, "part", from_origin(*ORIGIN, 1.5, 1.5))  # 60 m of the 192 m
    done = _upscale(str(dem), "-g", str(guide), "-s", "4", "-o", str(tmp_path / "o.tif"))
    assert done.returncode == 0, done.stderr
    assert "covers only 9.8%" in done.stderr
    valid, transform = _valid_pixels(tmp_path / "o.tif")
    footprint = Polygon([ORIGIN, (ORIGIN[0] + 60, ORIGIN[1]), (ORIGIN[0] + 60, ORIGIN[1] - 60),
                         (ORIGIN[0], ORIGIN[1] - 60)])
    expected = _footprint_pixels(footprint, transform, valid.shape)
    assert expected == 900 and valid.sum() == expected  # 30 x 30 output pixels, no more


def test_an_rgba_guide_off_the_grid_uses_its_alpha(tmp_path: Path) -> None:
    dem = _dem(tmp_path)
    guide = _guide(tmp_path, "rgba", from_origin(*ORIGIN, 1.5, 1.5), alpha=True)
    done = _upscale(str(dem), "-g", str(guide), "-s", "4", "--guide-bands", "1,2,3", "-o",
                    str(tmp_path / "o.tif"))
    assert done.returncode == 0, done.stderr
    valid, _ = _valid_pixels(tmp_path / "o.tif")
    assert valid.sum() == 450  # the right half of the 30 x 30 footprint: alpha 0 elsewhere
    default = _upscale(str(dem), "-g", str(guide), "-s", "4", "-o", str(tmp_path / "d.tif"))
    assert default.returncode == 0, default.stderr  # the alpha band is left out by itself


def test_a_south_up_guide_works_like_the_north_up_one(tmp_path: Path) -> None:
    dem = _dem(tmp_path)
    north = _guide(tmp_path, "north", from_origin(*ORIGIN, 1.5, 1.5))
    south = _guide(tmp_path, "south", Affine(1.5, 0, ORIGIN[0], 0, 1.5, ORIGIN[1] - 60),
                   flip=True)  # the same ground, rows stored bottom to top
    for name, guide in (("n", north), ("s", south)):
        done = _upscale(str(dem), "-g", str(guide), "-s", "4", "-o", str(tmp_path / f"{name}.tif"))
        assert done.returncode == 0, done.stderr
    valid_n, _ = _valid_pixels(tmp_path / "n.tif")
    valid_s, _ = _valid_pixels(tmp_path / "s.tif")
    assert abs(int(valid_s.sum()) - int(valid_n.sum())) <= 60  # one row of edge pixels


def test_a_rotated_source_outside_the_guide_gets_the_coverage_warning(tmp_path: Path) -> None:
    lr, guide = terrain(24, 24, 2)
    rotated = Affine.translation(*ORIGIN) @ Affine.rotation(30) @ Affine.scale(8, -8)
    dem = write(tmp_path / "dem.tif", lr, crs=UTM, transform=rotated)
    # a north-up guide over the source's axis-aligned bounds' upper part only
    rgb = write(tmp_path / "rgb.tif", guide, crs=UTM, transform=from_origin(
        ORIGIN[0] - 100, ORIGIN[1] + 100, 4, 4))
    done = _upscale(str(dem), "-g", str(rgb), "-s", "2", "-o", str(tmp_path / "o.tif"))
    assert done.returncode == 0, done.stderr
    assert "the guide covers only" in done.stderr


def test_a_batch_beside_its_sources_reruns(tmp_path: Path) -> None:
    data = tmp_path / "same"
    data.mkdir()
    for i in range(2):
        lr, guide = terrain(12, 12, 2)
        write(data / f"dem_{i}.tif", lr + np.float32(i))
        write(data / f"ortho_{i}.tif", guide, pixel=5.0)
    args = ["batch", str(data / "*.tif"), "--guide-pattern", "s/^dem_/ortho_/", "-s", "2",
            "-o", str(data), *FAST]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    outputs = sorted(data.glob("dem_*_x2.tif"))
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in outputs]
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert "left out 2 file(s) that mmsr-geo made" in again.stderr
    assert "0 done, 2 skipped" in again.stderr
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in outputs] == digests


def _immutable(folder: Path) -> bool:
    """Make ``folder`` unwritable (chattr +i as root, else chmod); False when neither holds."""
    if os.geteuid() == 0:
        chattr = shutil.which("chattr")
        if chattr is None or subprocess.run([chattr, "+i", str(folder)]).returncode != 0:
            return False
    else:
        folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except OSError:
        return True
    (folder / "probe").unlink()
    return False


def test_output_side_problems_are_found_before_the_fit(tmp_path: Path) -> None:
    dem = _dem(tmp_path)
    guide = _guide(tmp_path, "g", from_origin(*ORIGIN, 2.0, 2.0), size=96)
    locked = tmp_path / "locked"
    locked.mkdir()
    if _immutable(locked):
        try:
            result = _upscale(str(dem), "-g", str(guide), "-s", "4", "-o",
                              str(tmp_path / "o.tif"), "--preview", str(locked / "look.png"))
        finally:
            subprocess.run(["chattr", "-i", str(locked)], capture_output=True)
            locked.chmod(0o755)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines()[-1].startswith(
            f"Error: cannot write the preview in {locked}")
        assert not (tmp_path / "o.tif").exists()
    dangling = tmp_path / "link.tif"
    dangling.symlink_to(tmp_path / "nowhere.tif")
    result = _upscale(str(dem), "-g", str(guide), "-s", "4", "-o", str(dangling))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "exists (a symbolic link to" in result.stderr and "--overwrite" in result.stderr
    assert not (tmp_path / "nowhere.tif").exists()


def test_messages_say_what_is_wrong(tmp_path: Path) -> None:
    dem = _dem(tmp_path)
    guide = _guide(tmp_path, "g", from_origin(*ORIGIN, 2.0, 2.0), size=96)
    out = str(tmp_path / "o.tif")

    def first_error(result: subprocess.CompletedProcess[str]) -> str:
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        return next(line for line in result.stderr.splitlines() if line.startswith("Error"))

    bowtie = f"POLYGON (({ORIGIN[0]} {ORIGIN[1]}, {ORIGIN[0] + 100} {ORIGIN[1] - 100}, " \
             f"{ORIGIN[0] + 100} {ORIGIN[1]}, {ORIGIN[0]} {ORIGIN[1] - 100}, " \
             f"{ORIGIN[0]} {ORIGIN[1]}))"
    assert "not a valid polygon (Self-intersection" in first_error(
        _upscale(str(dem), "-g", str(guide), "-s", "4", "-o", out, "--aoi", bowtie))
    utm = tmp_path / "utm.geojson"
    utm.write_text(json.dumps({"type": "Polygon", "coordinates": [[
        [ORIGIN[0], ORIGIN[1]], [ORIGIN[0] + 90, ORIGIN[1]], [ORIGIN[0] + 90, ORIGIN[1] - 90],
        [ORIGIN[0], ORIGIN[1]]]]}))
    assert "beyond longitude/latitude" in first_error(
        _upscale(str(dem), "-g", str(guide), "-s", "4", "-o", out, "--aoi", str(utm)))
    assert "guide band 2 is given twice" in first_error(
        _upscale(str(dem), "-g", str(guide), "-s", "4", "-o", out, "--guide-bands", "2,2"))
    tiny = write(tmp_path / "tiny.tif", np.ones((3, 3), np.float32), crs=UTM)
    assert "smaller than one x4 block" in first_error(
        run_cli("evaluate", str(tiny), "--guide", str(tiny), "--scale", "4", "--iterations",
                "2"))
    manifest = tmp_path / "pairs.csv"
    manifest.write_text(f"{dem},{guide},same.tif\n{dem},{guide},same.tif\n")
    assert "give them different outputs in the manifest's output column" in first_error(
        run_cli("batch", "--manifest", str(manifest), "-s", "4", "-o", str(tmp_path / "b"),
                *FAST))
    assert not Path(out).exists()


@pytest.mark.parametrize(("gain", "words"), [
    (0.18, "about 18% below bicubic"), (-0.004, "about as good as bicubic"),
    (-0.03, "about 3% above bicubic (worse)"), (None, "no estimate against bicubic"),
])
def test_expected_gain_words(gain, words) -> None:
    assert gain_words(gain) == words
