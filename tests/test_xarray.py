"""``mmsr_geo.xarray.upscale``: real rioxarray objects opened from real GeoTIFFs (the RMNP DEM
window with a nodata hole and its RGB on another grid), Dask-backed, give the command line's
output for the same inputs (bit for bit alone, to float round-off after other tests),
round-trip through ``rio.to_raster``, and bad input fails in one
line before anything is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from test_consistency import dem_with_hole
from test_rmnp import example_data

from mmsr_geo.errors import InputError, OutputExistsError

rioxarray = pytest.importorskip("rioxarray")
dask_array = pytest.importorskip("dask.array")
mmsr_xarray = pytest.importorskip("mmsr_geo.xarray")

SETTINGS = {"iterations": 3, "schedule": "residual-cosine", "fit_mode": "tile",
            "tile_size": 32, "overlap": 4}
CLI_SETTINGS = ["--iterations", "3", "--schedule", "residual-cosine", "--fit", "tile",
                "--tile-size", "32", "--overlap", "4", "--features", "8", "--device", "cpu",
                "-q"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The DEM window (nodata hole) as a GeoTIFF, the real guide, and the CLI's output."""
    folder = tmp_path_factory.mktemp("xarray")
    source = dem_with_hole(folder)
    guide = example_data() / "rmnp-rgb.tif"
    cli = folder / "cli_x4.tif"
    done = subprocess.run(
        [sys.executable, "-m", "mmsr_geo_cli", "upscale", str(source), "--guide", str(guide),
         "--scale", "4", "-o", str(cli), *CLI_SETTINGS],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return source, guide, cli


def _same_as_cli(values: np.ndarray, expected: np.ndarray) -> None:
    """Equal to float round-off: one float32 step on a few pixels at most. Run alone the
    outputs are bit-identical; after tests/test_dask.py in the same process 3 of 128 000
    pixels differed by one step (2.4e-4 m at 3400 m): the fit sums in another order."""
    np.testing.assert_allclose(values, expected, rtol=1e-7, atol=0)
    assert (values != expected).mean() < 1e-4


def _config():
    from mmsr_geo.fit_config import FitConfig

    return FitConfig(features=8, device="cpu")


def test_dask_backed_dataarrays_give_the_cli_s_output(inputs, tmp_path: Path) -> None:
    source_path, guide_path, cli = inputs
    source = rioxarray.open_rasterio(source_path, chunks={"x": 40, "y": 40})
    guide = rioxarray.open_rasterio(guide_path, chunks={"x": 128, "y": 128})
    assert isinstance(source.data, dask_array.Array)
    output = tmp_path / "xr_x4.tif"
    result = mmsr_xarray.upscale(source, guide, 4, output=output, chunks={"x": 64, "y": 64},
                                 config=_config(), **SETTINGS)
    assert isinstance(result.data, dask_array.Array)  # read back lazily, chunk by chunk
    assert result.data.chunksize == (1, 64, 64)
    with rasterio.open(cli) as expected:
        _same_as_cli(result.values[0], expected.read(1))
        assert result.rio.crs == expected.crs
        assert result.rio.transform() == expected.transform
        assert result.rio.nodata == expected.nodata == source.rio.nodata
        assert (result.values[0] == expected.nodata).sum() > 0  # the hole, x4
    assert "MMSR_RUN" in result.attrs and "consistency" in result.attrs["MMSR_RUN"]
    assert not list(tmp_path.glob(".mmsr-xarray-*"))  # the staged inputs are gone

    again = tmp_path / "round_trip.tif"
    result.rio.to_raster(again)
    with rasterio.open(again) as written, rasterio.open(cli) as expected:
        np.testing.assert_array_equal(written.read(1), result.values[0])
        # rioxarray recomputes the transform from the pixel centres (round-off only)
        assert written.transform.almost_equals(expected.transform, precision=1e-15)
        assert written.crs == expected.crs
        assert written.nodata == expected.nodata


def test_masked_2d_input_in_memory_keeps_its_form(inputs) -> None:
    """Opened with ``masked=True`` and squeezed to (y, x): NaN for no data in and out, the
    nodata value as ``rio.encoded_nodata``, no band dimension; without ``output`` the result
    is in memory and nothing is left on disk."""
    source_path, guide_path, cli = inputs
    source = rioxarray.open_rasterio(source_path, masked=True).squeeze("band", drop=True)
    guide = rioxarray.open_rasterio(guide_path)
    result = mmsr_xarray.upscale(source, guide, 4, config=_config(), **SETTINGS)
    assert result.dims == ("y", "x") and not isinstance(result.data, dask_array.Array)
    with rasterio.open(cli) as expected:
        reference = expected.read(1, masked=True)
        assert result.rio.encoded_nodata == expected.nodata
    np.testing.assert_array_equal(np.isnan(result.values), np.ma.getmaskarray(reference))
    _same_as_cli(result.values[~np.isnan(result.values)], reference.compressed())


def test_bad_dataarrays_fail_in_one_line_before_any_staging(inputs, tmp_path: Path) -> None:
    source_path, guide_path, cli = inputs
    source = rioxarray.open_rasterio(source_path)
    guide = rioxarray.open_rasterio(guide_path)
    with pytest.raises(InputError, match="source has no CRS"):
        mmsr_xarray.upscale(source.drop_vars("spatial_ref"), guide, 4, output=tmp_path / "a.tif")
    with pytest.raises(InputError, match="guide must be an xarray.DataArray"):
        mmsr_xarray.upscale(source, guide.values, 4, output=tmp_path / "b.tif")
    with pytest.raises(InputError, match="spatial dimensions last"):
        mmsr_xarray.upscale(source.transpose("x", "y", "band"), guide, 4,
                            output=tmp_path / "c.tif")
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        mmsr_xarray.upscale(source, guide, 4, output=cli)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_example_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/xarray_upscale.ipynb, executed in a real kernel (nbclient) with a 10-iteration
    budget, in an empty folder: no cell fails and the output is written there only."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    example_data()
    notebook = nbformat.read(Path(__file__).parents[1] / "examples" / "xarray_upscale.ipynb",
                             as_version=4)
    monkeypatch.setenv("MMSR_EXAMPLE_ITERATIONS", "10")
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code"
                      for o in c.outputs)
    assert "RMSE  bicubic" in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rmnp_x4.tif"]
