"""``rio mmsr upscale``: the rasterio CLI plugin is registered by the package's entry point,
takes rio's INPUT OUTPUT / -o convention, shares every other option with ``mmsr-geo upscale``
and makes the very same file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from _rasters import pair
from click.testing import CliRunner
from mmsr_geo_cli.upscale import rio_upscale, upscale
from test_batch import cli_command, cli_env

RIO = [
    sys.executable,
    "-c",
    "from rasterio.rio.main import main_group; main_group(prog_name='rio')",
]
"""The ``rio`` console script of this interpreter's rasterio (what ``rio`` runs)."""

FAST = ["-s", "2", "--iterations", "2", "--features", "4", "--device", "cpu", "--seed", "0"]


def rio(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RIO, *args], cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=240
    )


def test_the_plugin_is_registered_and_documents_itself(tmp_path: Path) -> None:
    listing = rio("--help", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "mmsr" in listing.stdout, (
        "rio does not list 'mmsr': install the package (pip install -e .) so that its "
        "rasterio.rio_plugins entry point is registered"
    )
    group = rio("mmsr", "--help", cwd=tmp_path)
    assert group.returncode == 0, group.stderr
    assert "upscale" in group.stdout
    command = rio("mmsr", "upscale", "--help", cwd=tmp_path)
    assert command.returncode == 0, command.stderr
    assert "Usage: rio mmsr upscale [OPTIONS] INPUT [OUTPUT]" in command.stdout
    for option in ("--guide", "--scale", "--overwrite", "--co NAME=VALUE", "-t, --dtype"):
        assert option in command.stdout


def test_loading_the_plugin_imports_no_torch() -> None:
    """rio loads every plugin for every command (``rio info`` too): ours must be cheap."""
    check = "import sys, mmsr_geo_cli.rio; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run(
        [sys.executable, "-c", check], env=cli_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def _options(command: click.Command) -> dict[str, tuple]:
    return {
        p.name: (tuple(p.opts), p.default, p.help, p.required, repr(p.type))
        for p in command.params
        if isinstance(p, click.Option) and p.name is not None
    }


def test_options_are_the_same_as_mmsr_geo_upscale() -> None:
    ours, theirs = _options(upscale), _options(rio_upscale)
    assert set(ours) == set(theirs)  # -o/--output too, in rio's words
    differing = {name for name in ours if ours[name] != theirs[name]}
    assert differing == {"output"}  # rio's -o: no default, rio's help text
    assert theirs["output"][0] == ("-o", "--output")
    # rio's spellings are accepted by both commands
    assert {"-b", "--bidx", "--band"} <= set(ours["band"][0])
    assert {"-t", "--dtype"} <= set(ours["dtype"][0])


def test_rio_mmsr_upscale_writes_the_file_mmsr_geo_writes(tmp_path: Path) -> None:
    source, guide, _ = pair(tmp_path)
    options = ["-g", "rgb.tif", *FAST, "-b", "1", "-t", "float32", "--co", "COMPRESS=LZW"]
    by_rio = rio("mmsr", "upscale", "dem.tif", "rio.tif", *options, cwd=tmp_path)
    assert by_rio.returncode == 0, by_rio.stderr
    by_cli = subprocess.run(
        cli_command("upscale", "dem.tif", "-o", "cli.tif", *options, "-q"),
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert by_cli.returncode == 0, by_cli.stderr
    assert (tmp_path / "rio.tif").read_bytes() == (tmp_path / "cli.tif").read_bytes()

    # -o OUTPUT as rio's alternative; an existing output is refused as mmsr-geo refuses it
    again = rio("mmsr", "upscale", "dem.tif", "-o", "rio.tif", *options, cwd=tmp_path)
    assert again.returncode == 1
    assert again.stderr.strip() == "Error: rio.tif exists: use --overwrite to replace it"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dem.tif"], "give OUTPUT after INPUT, or -o OUTPUT"),
        (["dem.tif", "rgb.tif", "out.tif"], "Too many inputs"),
    ],
)
def test_rio_usage_errors(args: list[str], message: str, tmp_path: Path, monkeypatch) -> None:
    pair(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(rio_upscale, [*args, "-g", "rgb.tif", "-s", "2"])
    assert result.exit_code == 2
    assert message in result.output
