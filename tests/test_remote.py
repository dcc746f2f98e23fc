"""Remote and virtual inputs: sources, guides and AOIs read from a loopback HTTP server (by
ranges, as GDAL reads COGs), ``/vsicurl/``, a ``.vrt`` guide and a ``/vsizip/`` source give
the very pixels of the same run on local files; errors are one line; outputs stay local."""

from __future__ import annotations

import json
import socket
import subprocess
import zipfile
from pathlib import Path

import pytest
import rasterio
from _http import RangeServer
from _rasters import LR_PIXEL, ORIGIN, UTM, terrain, write
from rasterio.warp import transform_geom
from shapely.geometry import box, mapping
from test_batch import cli_command, cli_env, one_thread  # noqa: F401 (one_thread: a fixture)

from mmsr_geo.aoi import fetch_url, read_aoi
from mmsr_geo.batch import Pair, pairs_from_glob, pairs_from_manifest, run_batch
from mmsr_geo.errors import InputError
from mmsr_geo.fit import FitConfig
from mmsr_geo.run import (
    UpscaleRequest,
    default_output_path,
    plan_run,
    template_request,
    upscale_raster,
)
from mmsr_geo.writer import read_settings

SCALE = 2
FAST = ["-s", "2", "--iterations", "2", "--features", "4", "--device", "cpu", "--seed", "0"]
"""A 24x24 source in one tile of a few iterations (the CLI's defaults otherwise)."""
CONFIG = FitConfig.from_preset("remote-sensing", iterations=2, features=4, seed=0, device="cpu")
"""The same fit in process."""

GDAL_ENV = {
    "GDAL_HTTP_MAX_RETRY": "0",  # a 404 is an answer, not a reason to wait and retry
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no listing of the server's folders
    "NO_PROXY": "127.0.0.1,localhost",  # the loopback server, whatever proxy CI has
    "no_proxy": "127.0.0.1,localhost",
}


GDAL_TYPES = {"float32": "Float32", "float64": "Float64", "uint8": "Byte", "int16": "Int16"}


def vrt_of(path: Path, name: str) -> str:
    """A VRT document with every band of ``path``, which it names relative to itself."""
    with rasterio.open(path) as ds:
        bands = "".join(
            f'<VRTRasterBand dataType="{GDAL_TYPES[ds.dtypes[i]]}" '
            f'band="{i + 1}"><SimpleSource><SourceFilename relativeToVRT="1">{name}'
            f"</SourceFilename><SourceBand>{i + 1}</SourceBand></SimpleSource></VRTRasterBand>"
            for i in range(ds.count)
        )
        geotransform = ", ".join(repr(v) for v in ds.transform.to_gdal())
        return (
            f'<VRTDataset rasterXSize="{ds.width}" rasterYSize="{ds.height}">'
            f"<SRS>{ds.crs.to_wkt()}</SRS><GeoTransform>{geotransform}</GeoTransform>"
            f"{bands}</VRTDataset>"
        )


@pytest.fixture(scope="module")
def gdal_env():
    with pytest.MonkeyPatch.context() as patch:
        for name, value in GDAL_ENV.items():
            patch.setenv(name, value)
        yield


@pytest.fixture(scope="module")
def served(tmp_path_factory, gdal_env):
    """A folder with a COG source (nodata in a corner), its guide, a VRT of the guide, an AOI
    (the western half, lon/lat) and a zip of the source, served at ``server.url``."""
    folder = tmp_path_factory.mktemp("served")
    lr, guide = terrain(24, 24, SCALE)
    lr[:4, :4] = -1.0
    write(folder / "dem.tif", lr, nodata=-1.0, driver="COG")
    write(folder / "rgb.tif", guide, pixel=LR_PIXEL / SCALE)
    (folder / "rgb.vrt").write_text(vrt_of(folder / "rgb.tif", "rgb.tif"), encoding="utf-8")
    west = box(ORIGIN[0], ORIGIN[1] - 240, ORIGIN[0] + 120, ORIGIN[1])
    lon_lat = transform_geom(UTM, "EPSG:4326", mapping(west))
    (folder / "aoi.geojson").write_text(json.dumps({"type": "Feature", "geometry": lon_lat}))
    with zipfile.ZipFile(folder / "dem.zip", "w") as archive:
        archive.write(folder / "dem.tif", "inner/dem.tif")
    with RangeServer(folder, lifetime_s=600) as server:
        yield folder, server


def pixels(path: Path) -> tuple[bytes, dict]:
    """The stored pixels of every band (bit for bit) and the georeferencing."""
    with rasterio.open(path) as ds:
        grid = {"crs": ds.crs, "transform": ds.transform, "nodata": ds.nodata, "dtype": ds.dtypes}
        return ds.read().tobytes(), grid


def fit(source: str | Path, guide: str | Path, output: Path, **options) -> Path:
    upscale_raster(source, guide, output, scale=SCALE, config=CONFIG, **options)
    return output


@pytest.fixture(scope="module")
def reference(served, tmp_path_factory, one_thread):  # noqa: F811 (the imported fixture)
    """The in-process result on the local files, which every remote form must equal."""
    folder, _ = served
    out = tmp_path_factory.mktemp("reference") / "local.tif"
    return pixels(fit(folder / "dem.tif", folder / "rgb.tif", out))


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_command(*args),
        cwd=cwd,
        env={**cli_env(), **GDAL_ENV},
        capture_output=True,
        text=True,
        timeout=240,
    )


# --- the CLI on URLs ------------------------------------------------------------------------


def test_cli_on_urls_reads_by_ranges_and_matches_local_files(served, tmp_path: Path) -> None:
    folder, server = served
    local = run(
        "upscale",
        str(folder / "dem.tif"),
        "-g",
        str(folder / "rgb.tif"),
        *FAST,
        "-o",
        str(tmp_path / "local.tif"),
        cwd=tmp_path,
    )
    assert local.returncode == 0, local.stderr
    url = f"{server.url}/dem.tif"
    remote = run("upscale", url, "--guide", f"{server.url}/rgb.tif", *FAST, "-q", cwd=tmp_path)
    assert remote.returncode == 0, remote.stderr
    output = tmp_path / "dem_x2.tif"  # a remote source's default output: the current folder
    assert pixels(output) == pixels(tmp_path / "local.tif")

    for name in ("dem.tif", "rgb.tif"):  # GDAL read both by HTTP ranges, as a COG is read
        ranged = [r for r in server.requests_for(name) if r.range is not None]
        assert ranged and all(r.status == 206 for r in ranged), server.requests_for(name)
    with rasterio.open(output) as ds:
        tags = ds.tags()
    settings = read_settings(output)
    assert settings["source"] == "dem.tif" and settings["guide"] == "rgb.tif"
    # identified by its address, recorded as a hash: the host is not written into the output
    assert settings["source_fingerprint"].startswith("address:")
    assert not any(server.url.split("//")[1] in value for value in tags.values())


def test_a_missing_url_is_one_line_and_exit_1(served, tmp_path: Path) -> None:
    _, server = served
    result = run(
        "upscale",
        f"{server.url}/missing.tif",
        "-g",
        f"{server.url}/rgb.tif",
        *FAST,
        "-o",
        str(tmp_path / "out.tif"),
        cwd=tmp_path,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Error: cannot open the source {server.url}/missing.tif")
    assert "404" in lines[0]
    assert not (tmp_path / "out.tif").exists()


# --- other remote and virtual forms, in process ---------------------------------------------


def test_vsicurl_vrt_and_vsizip_forms_match_local_files(served, reference, tmp_path: Path) -> None:
    folder, server = served
    vsicurl = fit(f"/vsicurl/{server.url}/dem.tif", folder / "rgb.tif", tmp_path / "a.tif")
    assert pixels(vsicurl) == reference
    # a VRT on the server, naming its guide relative to itself: GDAL follows it over HTTP
    vrt = fit(folder / "dem.tif", f"{server.url}/rgb.vrt", tmp_path / "b.tif")
    assert pixels(vrt) == reference
    assert server.requests_for("rgb.vrt") and server.requests_for("rgb.tif")
    # a local VRT is a local file, fingerprinted by its content
    zipped = fit(
        f"/vsizip/{folder / 'dem.zip'}/inner/dem.tif", folder / "rgb.vrt", tmp_path / "c.tif"
    )
    assert pixels(zipped) == reference
    settings = read_settings(zipped)
    assert settings["source"] == "dem.tif" and settings["guide"] == "rgb.vrt"


def test_aoi_url_equals_the_local_aoi_file(served, reference, tmp_path: Path) -> None:
    folder, server = served
    by_url = fit(
        folder / "dem.tif", folder / "rgb.tif", tmp_path / "u.tif", aoi=f"{server.url}/aoi.geojson"
    )
    by_file = fit(
        folder / "dem.tif", folder / "rgb.tif", tmp_path / "f.tif", aoi=str(folder / "aoi.geojson")
    )
    assert pixels(by_url) == pixels(by_file) != reference
    with rasterio.open(by_url) as ds:
        data = ds.read(1)
        assert (data[:, 24:] == ds.nodata).all() and (data[8:, :24] != ds.nodata).all()
    # the same document by name and content, wherever it came from
    assert read_settings(by_url)["aoi"] == read_settings(by_file)["aoi"]
    assert read_settings(by_url)["aoi"].startswith("aoi.geojson#")


def test_aoi_url_errors(served) -> None:
    _, server = served
    with pytest.raises(InputError, match=r"cannot fetch the AOI .*missing\.geojson: HTTP 404"):
        read_aoi(f"{server.url}/missing.geojson")
    with pytest.raises(InputError, match="larger than"):
        fetch_url(f"{server.url}/aoi.geojson", max_bytes=16)
    with pytest.raises(InputError, match="GDAL virtual paths"):
        read_aoi(f"/vsicurl/{server.url}/aoi.geojson")
    with pytest.raises(InputError, match="GDAL virtual paths"):
        read_aoi("s3://bucket/aoi.geojson")
    # nothing listening: the connection is refused
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        host, port = closed.getsockname()
    with pytest.raises(InputError, match=r"cannot fetch the AOI .*refused"):
        fetch_url(f"http://{host}:{port}/aoi.geojson", timeout=5)
    # a server that takes the connection and never answers
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        host, port = silent.getsockname()
        with pytest.raises(InputError, match="cannot fetch the AOI"):
            fetch_url(f"http://{host}:{port}/aoi.geojson", timeout=0.5)
    with pytest.raises(InputError, match="not valid GeoJSON"):
        read_aoi(f"{server.url}/rgb.vrt").geometry(None)


# --- paths on the way: defaults, records, outputs, batch pairs --------------------------------


def test_default_output_of_remote_sources_is_in_the_current_folder(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for source in (
        "https://example.org/data/dem.tif?X-Amz-Signature=abc",
        "/vsizip//data/tiles.zip/inner/dem.tif",
        "s3://bucket/dem.tif",
        "zip:///data/tiles.zip!dem.tif",
    ):
        assert default_output_path(source, 2) == tmp_path / "dem_x2.tif"
    assert default_output_path("/data/dem.vrt", 4) == Path("/data/dem_x4.tif")


def test_remote_inputs_are_recorded_by_address(served, tmp_path: Path) -> None:
    folder, server = served
    url = f"{server.url}/dem.tif?version=1"
    request = UpscaleRequest(url, folder / "rgb.tif", SCALE, output=tmp_path / "o.tif")
    with plan_run(request) as run_:
        plain = run_.settings.source
    with plan_run(
        UpscaleRequest(url, folder / "rgb.tif", SCALE, output=tmp_path / "o.tif", record_paths=True)
    ) as run_:
        recorded = run_.settings.source
    other = UpscaleRequest(
        f"{server.url}/dem.tif?version=2", folder / "rgb.tif", SCALE, output=tmp_path / "o.tif"
    )
    with plan_run(other) as run_:
        changed = run_.settings.source
    assert plain.name == "dem.tif" and plain.path is None and url not in plain.fingerprint
    assert recorded.path == url and recorded.fingerprint == plain.fingerprint
    assert changed.fingerprint != plain.fingerprint  # another address is another input


def test_outputs_must_be_local(served, tmp_path: Path) -> None:
    folder, server = served
    for output, preview in (("s3://bucket/out.tif", None), (tmp_path / "o.tif", "/vsimem/p.png")):
        request = UpscaleRequest(
            folder / "dem.tif", folder / "rgb.tif", SCALE, output=output, preview=preview
        )
        with pytest.raises(InputError, match="must be a local file"):
            plan_run(request)


def test_manifest_urls_are_kept_and_globs_are_local(tmp_path: Path) -> None:
    manifest = tmp_path / "lists" / "pairs.csv"
    manifest.parent.mkdir()
    manifest.write_text(
        "source,guide,output\n"
        "https://example.org/a/dem.tif,rgb.tif,\n"
        "/vsizip//data/t.zip/dem2.tif,s3://bucket/rgb2.tif,two.tif\n"
    )
    pairs = pairs_from_manifest(manifest)
    assert pairs[0] == Pair("https://example.org/a/dem.tif", manifest.parent / "rgb.tif")
    assert pairs[1] == Pair("/vsizip//data/t.zip/dem2.tif", "s3://bucket/rgb2.tif", Path("two.tif"))
    manifest.write_text("dem.tif,rgb.tif,s3://bucket/out.tif\n")
    with pytest.raises(InputError, match="line 1: the output s3://bucket/out.tif must be a local"):
        pairs_from_manifest(manifest)
    with pytest.raises(InputError, match="give remote pairs in a --manifest"):
        pairs_from_glob("https://example.org/*_DSM.tif")


def test_batch_of_a_url_pair(served, reference, tmp_path: Path) -> None:
    folder, server = served
    pairs = [Pair(f"{server.url}/dem.tif", f"{server.url}/rgb.tif")]
    report = run_batch(pairs, tmp_path / "out", template_request(SCALE, config=CONFIG))
    record = report.records[0]
    assert record.status == "ok", record.error
    assert pixels(Path(record.output)) == reference
    index = json.loads((tmp_path / "out" / "batch-index.geojson").read_text())
    assert len(index["features"]) == 1
    rerun = run_batch(pairs, tmp_path / "out", template_request(SCALE, config=CONFIG))
    assert rerun.records[0].status == "skipped"  # the same address, the same settings
