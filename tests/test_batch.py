"""``mmsr-geo batch``: pair discovery, per-pair failure isolation, skipping finished outputs,
the JSON report and the GeoJSON index (real GeoTIFFs, real CLI subprocesses)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from _rasters import LR_PIXEL, terrain, write

from mmsr_geo.batch import (
    DFC_GUIDE_RULE,
    GuideRule,
    Pair,
    output_state,
    pairs_from_glob,
    pairs_from_manifest,
)
from mmsr_geo.batch.naming import resolve_outputs
from mmsr_geo.errors import InputError
from mmsr_geo.fit import FitConfig
from mmsr_geo.run import UpscaleRequest, plan_run

REPO = Path(__file__).resolve().parents[1]

FAST = [
    "-s",
    "2",
    "--schedule",
    "paper",
    "--iterations",
    "2",
    "--features",
    "4",
    "--tile-size",
    "8",
    "--overlap",
    "2",
    "--device",
    "cpu",
    "--seed",
    "0",
]
"""CLI settings that fit a 12x12 source in 4 tiles of a few milliseconds each."""


def cli_command(*args: str) -> list[str]:
    """The installed ``mmsr-geo`` command line, run by this interpreter."""
    return [sys.executable, "-m", "mmsr_geo_cli", *args]


def cli_env() -> dict[str, str]:
    """One compute thread: on a few shared cores, torch's and numba's thread pools spin
    against each other and make tiny fits several times slower."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_command(*args), cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=240
    )


@pytest.fixture(scope="module")
def one_thread():
    """One torch and numba thread for in-process fits, restored afterwards (see cli_env)."""
    import numba
    import torch

    threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    numba.set_num_threads(numba_threads)


def make_pair(folder: Path, name: str, offset: float = 0.0, lr: int = 12) -> Path:
    """``<name>_DSM.tif`` (lr x lr) and ``<name>_RGB.tif`` (x2, 3 bands), Data Fusion Contest
    style; ``offset`` makes the pairs' results differ."""
    dem, guide = terrain(lr, lr, 2)
    source = write(folder / f"{name}_DSM.tif", dem + np.float32(offset))
    write(folder / f"{name}_RGB.tif", guide, pixel=LR_PIXEL / 2)
    return source


def read(path: Path | str) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def load_report(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


# --- pair discovery -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "guide"),
    [
        ("JAX_004_006_DSM.tif", "JAX_004_006_RGB.tif"),
        ("OMA_132_027_AGL.tif", "OMA_132_027_RGB.tif"),
        ("JAX_004_006_RGB.tif", None),  # a guide itself: left out of the pairs
        ("JAX_DSM_area_DSM.tif", "JAX_DSM_area_RGB.tif"),  # only the suffix before the extension
    ],
)
def test_default_rule_maps_data_fusion_contest_names(name: str, guide: str | None):
    found = GuideRule.parse(DFC_GUIDE_RULE).guide_for(Path("data") / name)
    assert found == (Path("data") / guide if guide else None)


def test_custom_rule_with_groups_other_delimiter_and_guide_dir():
    rule = GuideRule.parse(r"s|^dem_(\d+)\.tif$|ortho_\1_rgb.tif|", guide_dir="ortho")
    assert rule.guide_for(Path("dem/dem_2019.tif")) == Path("ortho/ortho_2019_rgb.tif")
    for bad in ("dem_=ortho_", "s/dem_/ortho_", "s/(/x/", "s//x/"):
        with pytest.raises(InputError):
            GuideRule.parse(bad)


def test_glob_pairs_sources_only_and_reports_unmatched_globs(tmp_path: Path):
    make_pair(tmp_path, "JAX_001_001")
    make_pair(tmp_path, "JAX_002_002")
    pairs = pairs_from_glob(str(tmp_path / "*.tif"))
    assert [p.source.name for p in pairs] == ["JAX_001_001_DSM.tif", "JAX_002_002_DSM.tif"]
    assert [p.guide.name for p in pairs] == ["JAX_001_001_RGB.tif", "JAX_002_002_RGB.tif"]
    with pytest.raises(InputError, match="no file matches"):
        pairs_from_glob(str(tmp_path / "*.jp2"))
    with pytest.raises(InputError, match="applies to none"):
        pairs_from_glob(str(tmp_path / "*_RGB.tif"))


def test_manifest_paths_are_relative_to_the_csv(tmp_path: Path):
    manifest = tmp_path / "lists" / "pairs.csv"
    manifest.parent.mkdir()
    manifest.write_text(
        "source,guide,output\n# a comment\n../a.tif,../a_rgb.tif,a_50cm.tif\n\n"
        "/abs/b.tif,/abs/b_rgb.tif\n",
        encoding="utf-8",
    )
    pairs = pairs_from_manifest(manifest)
    assert pairs == [
        Pair(manifest.parent / "../a.tif", manifest.parent / "../a_rgb.tif", Path("a_50cm.tif")),
        Pair(Path("/abs/b.tif"), Path("/abs/b_rgb.tif")),
    ]
    out = tmp_path / "out"
    assert resolve_outputs(pairs, out, 2) == [out / "a_50cm.tif", out / "b_x2.tif"]
    manifest.write_text("a.tif\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 1"):
        pairs_from_manifest(manifest)


def test_outputs_that_clash_are_refused(tmp_path: Path):
    clash = [Pair(Path("x/a_DSM.tif"), Path("x/a_RGB.tif")), Pair(Path("y/a_DSM.tif"), Path("g"))]
    with pytest.raises(InputError, match="both be written"):
        resolve_outputs(clash, tmp_path, 2)


# --- the command ---------------------------------------------------------------------------


def test_bad_pair_fails_alone_and_reruns_skip_finished_outputs(tmp_path: Path):
    data, out = tmp_path / "dfc", tmp_path / "out"
    data.mkdir()
    make_pair(data, "JAX_001_001")
    make_pair(data, "JAX_002_002", offset=50.0)
    (data / "JAX_003_003_DSM.tif").write_text("not a raster\n", encoding="utf-8")
    (data / "JAX_003_003_RGB.tif").write_text("not a raster either\n", encoding="utf-8")

    first = run_cli("batch", str(data / "*.tif"), "-o", str(out), *FAST)
    assert first.returncode == 1, first.stderr
    assert "1 of 3 pairs failed" in first.stderr
    report = load_report(out / "batch-report.json")
    by_name = {Path(r["source"]).name: r for r in report["pairs"]}
    assert report["summary"] == {**report["summary"], "pairs": 3, "ok": 2, "failed": 1}
    bad = by_name["JAX_003_003_DSM.tif"]
    assert bad["status"] == "failed" and "not a raster" in bad["error"]
    for name in ("JAX_001_001_DSM.tif", "JAX_002_002_DSM.tif"):
        good = by_name[name]
        assert good["status"] == "ok" and good["error"] is None
        assert good["tiles_total"] == good["tiles_fitted"] == 4
        assert good["cycle_rmse"] >= 0 and good["seconds"] > 0
        assert read(good["output"]).shape == (24, 24)
    assert not list(out.glob("*.mmsr-work")), "work directories are removed when done"

    index = load_report(out / "batch-index.geojson")
    assert index["type"] == "FeatureCollection"
    statuses = {Path(f["properties"]["source"]).name: f["properties"] for f in index["features"]}
    assert set(statuses) == {"JAX_001_001_DSM.tif", "JAX_002_002_DSM.tif"}  # bad one: no CRS
    assert statuses["JAX_001_001_DSM.tif"]["status"] == "ok"
    ring = np.asarray(index["features"][0]["geometry"]["coordinates"][0])
    assert np.all(np.abs(ring[:, 0]) <= 180) and np.all(np.abs(ring[:, 1]) <= 90)
    lon, lat = ring.mean(axis=0)
    assert 14 < lon < 16 and 36 < lat < 37  # UTM 33N, 500 km E, 4000 km N: Sicily's south

    second = run_cli("batch", str(data / "*.tif"), "-o", str(out), *FAST)
    assert second.returncode == 1
    statuses = [r["status"] for r in load_report(out / "batch-report.json")["pairs"]]
    assert statuses == ["skipped", "skipped", "failed"]

    goods = [str(data / "JAX_00[12]_*.tif")]
    third = run_cli("batch", *goods, "-o", str(out), "--overwrite", *FAST)
    assert third.returncode == 0, third.stderr
    statuses = [r["status"] for r in load_report(out / "batch-report.json")["pairs"]]
    assert statuses == ["ok", "ok"]

    output = out / "JAX_001_001_DSM_x2.tif"
    same = FitConfig(iterations=2, features=4, s2g_kernel=5, g2s_kernel=3, seed=0, device="cpu")
    request = UpscaleRequest(
        data / "JAX_001_001_DSM.tif",
        data / "JAX_001_001_RGB.tif",
        2,
        output=output,
        config=same,
        schedule="paper",
        iterations=2,
        tile_size=8,
        overlap=2,
    )

    def outcome(**changes) -> tuple[str, str]:
        with plan_run(dataclasses.replace(request, **changes)) as run:
            return output_state(run)[:2]

    def state(**changes) -> str:
        return outcome(**changes)[0]

    assert state() == "done"
    assert state(config=dataclasses.replace(same, device="auto")) == "done"  # device: a fact
    assert state(config=dataclasses.replace(same, seed=1)) == "other"
    assert state(overlap=3) == "other"
    assert state(scale=4) == "other"
    assert state(cog=True) == "other"
    assert state(confidence=True) == "other"  # the band is part of the output's identity

    # with --confidence a pair is done only when its band is there too
    banded = run_cli("batch", *goods, "-o", str(out), "--overwrite", "--confidence", *FAST)
    assert banded.returncode == 0, banded.stderr
    (out / "JAX_001_001_DSM_x2_confidence.tif").unlink()
    assert state(confidence=False) == "other"  # made with the band: another request
    found, message = outcome(confidence=True)
    assert found == "other" and "uncertainty band" in message and "does not" in message
