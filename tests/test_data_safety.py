"""Never corrupt, clobber or leak a user's data: each case found by probing the CLI as a user
would (issue 9), reproduced with real GeoTIFFs and real ``mmsr-geo`` subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from _rasters import LR_PIXEL, UTM, pair, terrain, write
from affine import Affine
from rasterio.transform import from_origin
from test_batch import load_report, make_pair, read, run_cli

from mmsr_geo.writer import OutputEncoding

FAST = ["-s", "2", "--iterations", "2", "--features", "4", "--device", "cpu"]
SLOW = ["-s", "2", "--iterations", "100000", "--features", "4", "--device", "cpu"]
"""Settings that would fit for hours: a check that passes with them ran before any fitting."""


def _one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# --- 1. integer output types --------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "source_dtype", "dtype"),
    [
        (100_000.0, "float32", "uint8"),
        (100_000.0, "float32", "uint16"),
        (100_000.0, "float32", "int16"),
        (1_000.0, "int16", "uint8"),
    ],
)
def test_an_integer_dtype_that_cannot_hold_the_source_is_refused_before_fitting(
    tmp_path: Path, values: float, source_dtype: str, dtype: str
):
    lr, guide = terrain(12, 12, 2)
    source = write(tmp_path / "dem.tif", (lr + values).astype(source_dtype))
    write(tmp_path / "rgb.tif", guide, pixel=LR_PIXEL / 2)
    result = run_cli("upscale", str(source), "-g", str(tmp_path / "rgb.tif"), *SLOW,
                     "--dtype", dtype, "-o", str(tmp_path / "out.tif"))
    assert result.returncode == 1
    line = _one_error_line(result)
    assert f"do not fit --dtype {dtype}" in line and "float32" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dem.tif", "rgb.tif"]


def test_a_valid_prediction_is_never_written_as_nodata_and_clipping_is_counted(tmp_path: Path):
    """A uint8 DEM that uses 0-255 with flat areas at both ends: the chosen nodata (255) is a
    value the prediction takes, and predictions overshoot below 0."""
    lr, guide = terrain(16, 16, 2)
    span = (lr - lr.min()) / (lr.max() - lr.min())
    dem = np.clip(np.rint(span * 340 - 40), 0, 255).astype(np.float32)
    assert (dem == 0).sum() > 10 and (dem == 255).sum() > 10
    source = write(tmp_path / "dem.tif", dem)
    write(tmp_path / "rgb.tif", guide, pixel=LR_PIXEL / 2)
    output = tmp_path / "out.tif"
    result = run_cli("upscale", str(source), "-g", str(tmp_path / "rgb.tif"), *FAST,
                     "--iterations", "30", "--dtype", "uint8", "-o", str(output))
    assert result.returncode == 0, result.stderr
    with rasterio.open(output) as out:
        assert out.nodata == 255 and out.dtypes[0] == "uint8"
        assert out.read_masks(1).all(), "every output pixel is valid: the source has no nodata"


def test_encoding_counts_clipped_values_and_moves_them_off_nodata():
    encoding = OutputEncoding("uint8", nodata=255)
    values = np.array([[-3.2, 0.4, 254.6, 255.0, 300.0, 17.0]])
    valid = np.array([[True, True, True, True, True, False]])
    stored, counts = encoding.encode(values, valid)
    assert stored.tolist() == [[0, 0, 254, 254, 254, 255]]
    assert (counts.clipped, counts.moved_off_nodata) == (2, 3)
    scaled = OutputEncoding("int16", nodata=-32768, scale=0.1, offset=5.0)
    stored, counts = scaled.encode(np.array([[986.0, 1041.04]]), np.ones((1, 2), bool))
    assert stored.tolist() == [[9810, 10360]] and counts.clipped == 0
    floats = OutputEncoding("float32", nodata=-9999.0)
    stored, counts = floats.encode(np.array([[-9999.0, 1.5]]), np.ones((1, 2), bool))
    assert stored[0, 0] != -9999.0 and abs(stored[0, 0] + 9999.0) < 1e-3
    assert counts.moved_off_nodata == 1


# --- 2. and 7. the preview, and output-side checks before any fitting ---------------------


def test_preview_obeys_overwrite_and_never_replaces_inputs_or_the_output(tmp_path: Path):
    source, guide, _ = pair(tmp_path)
    look = tmp_path / "look.png"
    look.write_bytes(b"my own picture")
    before = _files(tmp_path)
    cases = {
        "the guide": ["--preview", str(guide)],
        "the output": ["-o", str(tmp_path / "o3.tif"), "--preview", str(tmp_path / "o3.tif")],
        "an existing PNG": ["--preview", str(look)],
        "a missing folder": ["--preview", str(tmp_path / "nonexist" / "p.png")],
        "not a PNG": ["--preview", str(tmp_path / "p.txt")],
    }
    messages = {}
    for name, args in cases.items():
        result = run_cli("upscale", str(source), "-g", str(guide), *SLOW, *args)
        assert result.returncode == 1, (name, result.stderr)
        messages[name] = _one_error_line(result)
        assert _files(tmp_path) == before, name
        assert not list(tmp_path.glob("*.mmsr-work")), name
    assert "must end in .png" in messages["the guide"]
    assert "must end in .png" in messages["the output"]
    assert "use --overwrite" in messages["an existing PNG"]
    assert "does not exist" in messages["a missing folder"]

    done = run_cli("upscale", str(source), "-g", str(guide), *FAST, "--preview", str(look),
                   "--overwrite", "-o", str(tmp_path / "out.tif"))
    assert done.returncode == 0, done.stderr
    assert look.read_bytes().startswith(b"\x89PNG")


def test_a_png_input_cannot_be_the_preview(tmp_path: Path):
    lr, guide = terrain(12, 12, 2)
    source = write(tmp_path / "depth.png", lr.astype(np.uint8), crs=None, driver="PNG")
    guide_png = write(tmp_path / "photo.png", (guide * 100 + 100).astype(np.uint8), crs=None,
                      driver="PNG")
    before = _files(tmp_path)
    result = run_cli("upscale", str(source), "-g", str(guide_png), *SLOW, "--preview",
                     str(guide_png), "-o", str(tmp_path / "out.tif"))
    assert result.returncode == 1
    assert "would overwrite an input" in _one_error_line(result)
    assert _files(tmp_path) == before


def test_bad_creation_options_and_a_folder_as_output_fail_before_fitting(tmp_path: Path):
    source, guide, _ = pair(tmp_path)
    folder = tmp_path / "adir.tif"
    folder.mkdir()
    cases = {
        "block size": (["--co", "BLOCKXSIZE=13", "-o", str(tmp_path / "o.tif")], "multiples of 16"),
        "unknown value": (["--co", "COMPRESS=FOO", "-o", str(tmp_path / "o.tif")], "COMPRESS"),
        "folder": (["-o", str(folder), "--overwrite"], "is a directory"),
    }
    for name, (args, message) in cases.items():
        result = run_cli("upscale", str(source), "-g", str(guide), *SLOW, *args)
        assert result.returncode == 1, (name, result.stderr)
        assert message in _one_error_line(result), name
        assert not list(tmp_path.glob("*.mmsr-work")) and not (tmp_path / "o.tif").exists()
    assert folder.is_dir() and not list(folder.iterdir())


# --- 3. batch outputs stay inside the output folder ---------------------------------------


def test_manifest_outputs_outside_the_output_folder_fail_alone(tmp_path: Path):
    data, out = tmp_path / "data", tmp_path / "deep" / "out"
    data.mkdir()
    out.mkdir(parents=True)
    make_pair(data, "A")
    victim = tmp_path / "deep" / "victim.tif"
    victim.write_text("unrelated file\n")
    absolute = tmp_path / "escape_abs.tif"
    manifest = data / "pairs.csv"
    rows = [
        "A_DSM.tif,A_RGB.tif,../../escape_rel.tif",
        f"A_DSM.tif,A_RGB.tif,{absolute}",
        "A_DSM.tif,A_RGB.tif,../victim.tif",
        "A_DSM.tif,A_RGB.tif,ok/fine.tif",
    ]
    manifest.write_text("\n".join(rows) + "\n")
    result = run_cli("batch", "--manifest", str(manifest), "-o", str(out), "--overwrite", *FAST)
    assert result.returncode == 1
    records = load_report(out / "batch-report.json")["pairs"]
    assert [r["status"] for r in records] == ["failed", "failed", "failed", "ok"]
    for record in records[:3]:
        assert "outside the output folder" in record["error"]
    assert not (tmp_path / "escape_rel.tif").exists() and not absolute.exists()
    assert victim.read_text() == "unrelated file\n"
    assert read(out / "ok" / "fine.tif").shape == (24, 24)


def test_a_manifest_output_that_is_an_input_fails_alone(tmp_path: Path):
    make_pair(tmp_path, "A")
    make_pair(tmp_path, "B", offset=10.0)
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("A_DSM.tif,A_RGB.tif,B_RGB.tif\nB_DSM.tif,B_RGB.tif\n")
    guide_bytes = (tmp_path / "B_RGB.tif").read_bytes()
    result = run_cli("batch", "--manifest", str(manifest), "-o", str(tmp_path), "--overwrite",
                     *FAST)
    records = load_report(tmp_path / "batch-report.json")["pairs"]
    assert [r["status"] for r in records] == ["failed", "ok"], result.stderr
    assert "overwrite an input" in records[0]["error"]
    assert (tmp_path / "B_RGB.tif").read_bytes() == guide_bytes


# --- 4. scale, offset and units -----------------------------------------------------------


def _scaled_dem(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    lr, guide = terrain(12, 12, 2)
    raw = np.rint((lr - lr.min()) * 10 + 9810).astype(np.int16)  # 986-1041 m as 0.1 m + 5
    source = write(tmp_path / "dem.tif", raw, nodata=-32768)
    with rasterio.open(source, "r+") as ds:
        ds.scales = (0.1,)
        ds.offsets = (5.0,)
        ds.units = ("m",)
    write(tmp_path / "rgb.tif", guide, pixel=LR_PIXEL / 2)
    return source, tmp_path / "rgb.tif", raw * 0.1 + 5.0


def test_scale_offset_and_units_are_applied_and_kept(tmp_path: Path):
    source, guide, physical = _scaled_dem(tmp_path)
    result = run_cli("upscale", str(source), "-g", str(guide), *FAST, "--iterations", "20",
                     "-o", str(tmp_path / "out.tif"))
    assert result.returncode == 0, result.stderr
    with rasterio.open(tmp_path / "out.tif") as out:
        values = out.read(1, masked=True)
        assert out.dtypes[0] == "float32" and out.units == ("m",)
        assert out.scales == (1.0,) and out.offsets == (0.0,)
    assert abs(values.mean() - physical.mean()) < 0.5 * physical.std()
    assert physical.min() - 20 < values.min() and values.max() < physical.max() + 20

    kept = run_cli("upscale", str(source), "-g", str(guide), *FAST, "--iterations", "20",
                   "--dtype", "int16", "-o", str(tmp_path / "int.tif"))
    assert kept.returncode == 0, kept.stderr
    with rasterio.open(tmp_path / "int.tif") as out:
        assert out.scales == (0.1,) and out.offsets == (5.0,) and out.units == ("m",)
        assert out.nodata == -32768
        stored = out.read(1, masked=True)
    assert abs((stored * 0.1 + 5).mean() - physical.mean()) < 0.5 * physical.std()


# --- 5. a geotransform without a CRS ------------------------------------------------------


def test_a_source_with_a_transform_but_no_crs_keeps_its_position(tmp_path: Path):
    lr, guide = terrain(12, 12, 2)
    transform = from_origin(1000.0, 2000.0, 10.0, 10.0)
    source = write(tmp_path / "dem.tif", lr, crs=None)
    with rasterio.open(source, "r+") as ds:
        ds.transform = transform
    guide_path = write(tmp_path / "rgb.tif", guide, crs=None)
    result = run_cli("upscale", str(source), "-g", str(guide_path), *FAST,
                     "-o", str(tmp_path / "out.tif"))
    assert result.returncode == 0, result.stderr
    assert "geotransform but no CRS" in result.stderr
    with rasterio.open(tmp_path / "out.tif") as out:
        assert out.crs is None
        assert out.transform == transform @ Affine.scale(0.5)


# --- 6. guide holes -----------------------------------------------------------------------


def _snowy_guide(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """An 8-bit RGB guide with nodata 255 whose 33 scattered pure-white pixels (snow) are real,
    and a 14x14 gap (no data at all) in one corner."""
    lr, guide = terrain(16, 16, 2)
    rgb = np.clip((guide - guide.min()) / np.ptp(guide) * 200, 0, 200).astype(np.uint8)
    rng = np.random.default_rng(3)
    snow = rng.choice(16 * 32, size=33, replace=False)  # in the top half, clear of the gap
    rows, cols = np.unravel_index(snow, (16, 32))
    rgb[:, rows, cols] = 255
    rgb[:, -14:, -14:] = 255
    source = write(tmp_path / "dem.tif", lr, nodata=-9999.0)
    guide_path = write(tmp_path / "rgb.tif", rgb, pixel=LR_PIXEL / 2, nodata=255)
    gap = np.zeros((32, 32), dtype=bool)
    gap[-14:, -14:] = True
    return source, guide_path, gap


def test_isolated_guide_holes_are_filled_and_large_gaps_stay_nodata(tmp_path: Path):
    source, guide, gap = _snowy_guide(tmp_path)
    result = run_cli("upscale", str(source), "-g", str(guide), *FAST,
                     "-o", str(tmp_path / "out.tif"))
    assert result.returncode == 0, result.stderr
    with rasterio.open(tmp_path / "out.tif") as out:
        valid = out.read_masks(1) > 0
    assert valid[~gap].all(), "snow pixels are valid output"
    assert not valid[gap].any(), "a guide gap wider than a hole is nodata"


def test_evaluate_scores_guide_holes_too(tmp_path: Path):
    _, rgb_full = terrain(16, 16, 2)
    hr = rgb_full[1] * 50  # a reference DEM on the guide's grid
    rgb = np.clip((rgb_full - rgb_full.min()) / np.ptp(rgb_full) * 200, 0, 200).astype(np.uint8)
    rgb[:, 3, 5] = rgb[:, 20, 9] = 255
    reference = write(tmp_path / "dsm.tif", hr.astype(np.float32), pixel=LR_PIXEL / 2)
    guide = write(tmp_path / "rgb.tif", rgb, pixel=LR_PIXEL / 2, nodata=255)
    result = run_cli("evaluate", str(reference), "--guide", str(guide), "--scale", "2",
                     "--iterations", "2", "--device", "cpu", "--json")
    assert result.returncode == 0, result.stderr
    image = json.loads(result.stdout)["images"][0]
    assert image["pixels"] == 32 * 32


# --- 8. provenance does not leak where data is kept ---------------------------------------


def test_tags_record_names_and_fingerprints_not_paths(tmp_path: Path):
    folder = tmp_path / "Users" / "José" / "secret project"
    folder.mkdir(parents=True)
    source, guide, _ = pair(folder)
    guide = guide.rename(folder / "órtho 1.tif")
    result = run_cli("upscale", str(source), "-g", str(guide), *FAST, "-o",
                     str(folder / "out.tif"))
    assert result.returncode == 0, result.stderr
    with rasterio.open(folder / "out.tif") as out:
        tags = out.tags()
    text = json.dumps(tags, ensure_ascii=False)
    assert "secret project" not in text and str(tmp_path) not in text
    settings = json.loads(tags["MMSR_SETTINGS"])
    assert settings["guide"] == "órtho 1.tif" and len(settings["guide_fingerprint"]) == 32
    assert '"size"' not in text and "mtime" not in text

    asked = run_cli("upscale", str(source), "-g", str(guide), *FAST, "--record-paths",
                    "-o", str(folder / "with_paths.tif"))
    assert asked.returncode == 0, asked.stderr
    with rasterio.open(folder / "with_paths.tif") as out:
        settings = json.loads(out.tags()["MMSR_SETTINGS"])
    assert settings["guide_path"] == str(guide.resolve())


# --- 9. messages --------------------------------------------------------------------------


def test_a_truncated_geotiff_is_named_with_what_is_wrong(tmp_path: Path):
    source, guide, _ = pair(tmp_path)
    big, _ = terrain(128, 128, 2)
    cut = tmp_path / "cut.tif"
    with rasterio.open(
        cut, "w", driver="GTiff", width=128, height=128, count=1, dtype="float32", crs=UTM,
        transform=from_origin(500_000, 4_000_000, 10, 10), tiled=True, compress="deflate",
    ) as ds:
        ds.write(big, 1)
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    result = run_cli("upscale", str(cut), "-g", str(guide), *SLOW, "-q", "-o",
                     str(tmp_path / "o.tif"))
    assert result.returncode == 1
    line = _one_error_line(result)
    assert "cut.tif" in line and "See previous exception" not in line
    assert "cannot read the source" in line and "Read error" in line


def test_output_names_and_usage_errors(tmp_path: Path):
    source, guide, _ = pair(tmp_path)
    png = run_cli("upscale", str(source), "-g", str(guide), *SLOW, "-o", str(tmp_path / "o.png"))
    assert png.returncode == 1 and "must end in .tif" in _one_error_line(png)
    band = run_cli("upscale", str(source), "-g", str(guide), *SLOW, "--band", "0")
    guide_band = run_cli("upscale", str(source), "-g", str(guide), *SLOW, "--guide-bands", "0")
    assert band.returncode == guide_band.returncode == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dem.tif", "rgb.tif"]


def test_evaluate_prints_one_line_warnings_and_names_its_progress(tmp_path: Path):
    _, rgb = terrain(13, 13, 2)
    hr = rgb[0] * 30
    reference = write(tmp_path / "dsm.tif", hr[:25, :25].astype(np.float32), pixel=5.0)
    guide = write(tmp_path / "rgb.tif", rgb[:, :25, :25], pixel=5.0)
    result = run_cli("evaluate", str(reference), "--guide", str(guide), "--scale", "2",
                     "--iterations", "2", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert not any(line.strip().startswith(("evaluate_pair(", "warnings.warn")) for line in lines)
    assert any("not a multiple of x2" in line for line in lines), result.stderr
    assert any(line.startswith("dsm.tif: 1/1 image done") for line in lines), result.stderr
