"""The QGIS Processing plugin (qgis/mmsr_geo_processing): in real QGIS, and its QGIS-free
parts (how mmsr-geo is found, how its JSON stream and exit become feedback) everywhere.

PyQGIS imports only in Debian's /usr/bin/python3, not in the Python that runs pytest, so QGIS
is driven through subprocesses: ``qgis_process.bin`` (the ``/usr/bin/qgis_process`` wrapper
passes an option 3.22 rejects) and helper scripts in tests/qgis/. Those tests skip where QGIS
is absent, and fail instead when ``MMSR_REQUIRE_QGIS=1`` (CI installs QGIS and sets it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import rasterio
from _rasters import ORIGIN, pair
from test_batch import REPO, cli_command, cli_env

from mmsr_geo.consistency import CONSISTENCY_MODES, DEFAULT_CONSISTENCY
from mmsr_geo.presets import PRESETS
from mmsr_geo.registration import REGISTER_MODES
from mmsr_geo.run import FIT_MODES
from mmsr_geo.strategies import AUTO, SCHEDULES

sys.path.insert(0, str(REPO / "qgis"))
from mmsr_geo_processing import runner  # noqa: E402
from mmsr_geo_processing.command import CONSISTENCY_MODES as PLUGIN_CONSISTENCY  # noqa: E402
from mmsr_geo_processing.command import (  # noqa: E402
    DEVICES,
    ENV_VAR,
    CommandNotFound,
    find_command,
)
from mmsr_geo_processing.command import FIT_MODES as PLUGIN_FIT_MODES  # noqa: E402
from mmsr_geo_processing.command import PRESETS as PLUGIN_PRESETS  # noqa: E402
from mmsr_geo_processing.command import REGISTER_MODES as PLUGIN_REGISTER_MODES  # noqa: E402
from mmsr_geo_processing.command import SCHEDULES as PLUGIN_SCHEDULES  # noqa: E402

QGIS_PROCESS = "/usr/bin/qgis_process.bin"
SYSTEM_PYTHON = "/usr/bin/python3"
HELPERS = REPO / "tests" / "qgis"
PLUGIN = "mmsr_geo_processing"
TINY = ["ITERATIONS=3", "FEATURES=4", "DEVICE=1"]  # DEVICE 1: cpu
"""A fit of a few seconds: these tests check the plumbing, not the quality."""


# --------------------------------------------------------------------------------------------
# without QGIS: command lookup, choices, the subprocess and its stream
# --------------------------------------------------------------------------------------------


def _executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_command_lookup_order(tmp_path: Path) -> None:
    on_path = _executable(tmp_path / "mmsr-geo")
    env_tool = _executable(tmp_path / "env-python")
    param_tool = _executable(tmp_path / "param-python")
    environ = {"PATH": str(tmp_path), ENV_VAR: f"{env_tool} -m mmsr_geo_cli"}

    assert find_command(f"'{param_tool}' -m mmsr_geo_cli", environ) == [
        str(param_tool),
        "-m",
        "mmsr_geo_cli",
    ]
    assert find_command("  ", environ) == [str(env_tool), "-m", "mmsr_geo_cli"]
    assert find_command(None, {"PATH": str(tmp_path)}) == [str(on_path)]


def test_command_not_found_says_where_to_set_it(tmp_path: Path) -> None:
    with pytest.raises(CommandNotFound, match=f"not found on PATH.*{ENV_VAR}.*mmsr-geo command"):
        find_command(None, {"PATH": str(tmp_path)})
    # a command that was set but does not run is an error, not a reason to look further
    _executable(tmp_path / "mmsr-geo")
    with pytest.raises(CommandNotFound, match=f"{ENV_VAR} is .*not an executable file"):
        find_command(None, {"PATH": str(tmp_path), ENV_VAR: "/nowhere/python -m mmsr_geo_cli"})


def test_choices_match_the_command_line() -> None:
    from mmsr_geo_cli.params import DEVICE

    assert sorted(PLUGIN_PRESETS) == sorted(PRESETS)
    assert PLUGIN_PRESETS[0] == "remote-sensing"  # the CLI's default is the dialog's
    assert [DEVICE.convert(d, None, None) for d in DEVICES] == list(DEVICES)
    assert PLUGIN_SCHEDULES == SCHEDULES and PLUGIN_SCHEDULES[0] == AUTO
    assert PLUGIN_FIT_MODES == FIT_MODES  # the CLI's default (auto) first, as in the dialog
    assert PLUGIN_REGISTER_MODES == REGISTER_MODES  # auto, the CLI's default, first
    assert sorted(PLUGIN_CONSISTENCY) == sorted(CONSISTENCY_MODES)
    assert PLUGIN_CONSISTENCY[0] == DEFAULT_CONSISTENCY  # the CLI's default is the dialog's


class Feedback:
    """The feedback methods the runner uses, recorded; cancels at the first progress if
    asked to."""

    def __init__(self, cancel_on_progress: bool = False) -> None:
        self.calls: list[tuple[str, object]] = []
        self.cancel_on_progress = cancel_on_progress
        self.canceled = False

    def isCanceled(self) -> bool:
        return self.canceled

    def setProgress(self, value: float) -> None:
        self.calls.append(("setProgress", value))
        self.canceled = self.canceled or self.cancel_on_progress

    def __getattr__(self, name: str):  # pushInfo, pushWarning, pushConsoleInfo, ...
        return lambda value: self.calls.append((name, value))


def test_usage_error_lines_make_the_failure_message(tmp_path: Path) -> None:
    feedback = Feedback()
    source, guide, _ = pair(tmp_path)
    argv = cli_command("upscale", str(source), "-g", str(guide), "-s", "1", "--progress", "json")
    with pytest.raises(runner.RunFailed) as failed:
        runner.run(argv, feedback, env=cli_env())
    message = str(failed.value)
    assert message.startswith("mmsr-geo failed with exit status 2:")
    assert "scale must be an integer >= 2" in message
    assert ("pushConsoleInfo", message.splitlines()[1]) in feedback.calls


def test_error_event_is_the_failure_message(tmp_path: Path) -> None:
    feedback = Feedback()
    source, _, _ = pair(tmp_path)
    argv = cli_command(
        "upscale",
        str(source),
        "-g",
        str(tmp_path / "missing.tif"),
        "-s",
        "2",
        "--progress",
        "json",
    )
    with pytest.raises(runner.RunFailed) as failed:
        runner.run(argv, feedback, env=cli_env())
    assert "missing.tif" in str(failed.value)
    assert "\n" not in str(failed.value)  # the tool's one line, not its "Error: ..." echo


FAKE_TOOL = """
import json, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # as when started in the background by a shell
print(json.dumps({"event": "start", "tiles": 4, "resumed": 1}), file=sys.stderr, flush=True)
print(json.dumps({"event": "log", "level": "warning", "message": "guide is coarse"}),
      file=sys.stderr, flush=True)
print(json.dumps({"event": "progress", "phase": "fit", "fraction": 0.5, "tile": 2,
                  "tiles": 4}), file=sys.stderr, flush=True)
time.sleep(60)
"""


def test_cancel_falls_back_to_sigterm_and_reports_tiles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "STOP_SEQUENCE", (("SIGINT", 0.5), ("SIGTERM", 5.0)))
    feedback = Feedback(cancel_on_progress=True)
    with pytest.raises(runner.Canceled) as canceled:
        runner.run([sys.executable, "-c", FAKE_TOOL], feedback)
    assert (canceled.value.tiles_done, canceled.value.tiles) == (2, 4)
    assert ("pushWarning", "guide is coarse") in feedback.calls
    assert ("setProgress", 50.0) in feedback.calls


def test_tool_environment_drops_qgis_python_settings() -> None:
    environ = {"PATH": "/bin", "PYTHONHOME": "/qgis/apps/Python39", "PYTHONPATH": "/qgis/python"}
    assert runner.tool_environment(environ) == {"PATH": "/bin"}


# --------------------------------------------------------------------------------------------
# in real QGIS
# --------------------------------------------------------------------------------------------


def _qgis_missing() -> str | None:
    if not os.path.exists(QGIS_PROCESS):
        return f"{QGIS_PROCESS} not found (Debian: apt-get install qgis)"
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import qgis.core"], capture_output=True, text=True, timeout=60
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return f"PyQGIS does not import in {SYSTEM_PYTHON} ({last}; apt-get install python3-qgis)"
    return None


@pytest.fixture(scope="module")
def qgis_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a headless QGIS with a throwaway profile in which the plugin is
    enabled, and one compute thread for mmsr-geo."""
    missing = _qgis_missing()
    if missing:
        if os.environ.get("MMSR_REQUIRE_QGIS") == "1":
            pytest.fail(f"MMSR_REQUIRE_QGIS=1 but {missing}")
        pytest.skip(missing)
    home = tmp_path_factory.mktemp("qgis")
    runtime = home / "runtime"
    runtime.mkdir(mode=0o700)
    env = {
        **cli_env(),
        "QT_QPA_PLATFORM": "offscreen",
        "XDG_RUNTIME_DIR": str(runtime),
        "QGIS_CUSTOM_CONFIG_PATH": str(home / "profile"),
        "QGIS_PLUGINPATH": str(REPO / "qgis"),
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
        # QGIS's embedded Python finds its standard library from the first python3 on PATH,
        # and pytest's own Python (pyenv, a venv) puts its folder first
        "PATH": f"/usr/bin{os.pathsep}{os.environ['PATH']}",
    }
    env.pop(ENV_VAR, None)
    enabled = _qgis_process(env, "plugins", "enable", PLUGIN)
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    return env


def _qgis_process(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    # stdin closed: qgis_process reads it, and would swallow a calling shell's script
    return subprocess.run(
        [QGIS_PROCESS, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _upscale(env: dict[str, str], **parameters: str) -> subprocess.CompletedProcess[str]:
    values = [f"{k}={v}" for k, v in parameters.items()]
    return _qgis_process(env, "--json", "run", "mmsrgeo:upscale", "--", *values, *TINY)


def _helper(env: dict[str, str], script: str, *args: str) -> dict:
    done = subprocess.run(
        [SYSTEM_PYTHON, str(HELPERS / script), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_qgis_process_run_gives_the_promised_grid(tmp_path: Path, qgis_env) -> None:
    """mmsr-geo found on PATH; the output as QGIS opens it: the source's CRS and extent,
    pixels scale times smaller, the source's nodata value."""
    source, guide, _ = pair(tmp_path)
    env = {**qgis_env, "PATH": f"/usr/bin{os.pathsep}{sysconfig.get_path('scripts')}"}
    output = tmp_path / "dem_x2.tif"
    done = _upscale(env, INPUT=source, BAND=1, GUIDE=guide, SCALE=2, OUTPUT=output)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert json.loads(done.stdout)["results"]["OUTPUT"] == str(output)

    facts = _helper(qgis_env, "raster_facts.py", str(output))
    with rasterio.open(source) as src:
        expected_extent = list(src.bounds)
        expected_pixel = [src.res[0] / 2, src.res[1] / 2]
        nodata = src.nodata
        size = [src.width * 2, src.height * 2]
    assert facts["valid"] and facts["bands"] == 1
    assert facts["crs"] == "EPSG:32633"
    assert facts["extent"] == pytest.approx(expected_extent, abs=1e-6)
    assert facts["pixel"] == pytest.approx(expected_pixel)
    assert facts["size"] == size
    assert facts["nodata"] == nodata == -1.0
    with rasterio.open(output) as out:
        assert (out.read(1)[:8, :8] == nodata).all()  # the source's nodata corner, x2


def test_the_raster_network_and_its_level_are_asked_from_qgis(tmp_path: Path, qgis_env):
    """FIT_MODE raster with LEVEL_SIGMA: the run trains one network around the local level,
    as the output's run record says."""
    source, guide, _ = pair(tmp_path)
    env = {**qgis_env, "PATH": f"/usr/bin{os.pathsep}{sysconfig.get_path('scripts')}"}
    output = tmp_path / "dem_x2.tif"
    done = _upscale(env, INPUT=source, BAND=1, GUIDE=guide, SCALE=2, OUTPUT=output,
                    FIT_MODE=FIT_MODES.index("raster"),
                    SCHEDULE=PLUGIN_SCHEDULES.index("cosine-avg"), LEVEL_SIGMA=2.5)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with rasterio.open(output) as out:
        run = json.loads(out.tags()["MMSR_RUN"])
    assert run["fit_mode"] == "raster" and run["raster_fit"]["level_sigma"] == 2.5


def test_the_uncertainty_band_is_offered_and_styled(tmp_path: Path, qgis_env) -> None:
    """CONFIDENCE=true: the band is a second result, written beside the output, and opens in
    QGIS with its colour ramp from 0 (its .qml beside it); the output itself as without."""
    source, guide, _ = pair(tmp_path)
    env = {**qgis_env, "PATH": f"/usr/bin{os.pathsep}{sysconfig.get_path('scripts')}"}
    output = tmp_path / "dem_x2.tif"
    done = _upscale(env, INPUT=source, BAND=1, GUIDE=guide, SCALE=2, OUTPUT=output,
                    CONFIDENCE="true")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(done.stdout)["results"]
    band = tmp_path / "dem_x2_confidence.tif"
    assert results["CONFIDENCE_OUTPUT"] == str(band)
    assert (tmp_path / "dem_x2_confidence.qml").is_file()
    facts = _helper(qgis_env, "raster_facts.py", str(band))
    assert facts["valid"] and facts["renderer"] == "singlebandpseudocolor"
    low, high = facts["classification"]
    assert low == 0 and high > 0
    assert facts["nodata"] == -9999.0
    assert facts["size"] == _helper(qgis_env, "raster_facts.py", str(output))["size"]


def test_qgis_process_reports_a_missing_command(tmp_path: Path, qgis_env) -> None:
    source, guide, _ = pair(tmp_path)
    env = {**qgis_env, "PATH": "/usr/bin:/bin"}
    done = _upscale(env, INPUT=source, BAND=1, GUIDE=guide, SCALE=2, OUTPUT=tmp_path / "o.tif")
    assert done.returncode != 0
    assert "mmsr-geo was not found on PATH" in done.stdout + done.stderr
    assert not (tmp_path / "o.tif").exists()


def test_aoi_from_a_vector_layer_in_another_crs(tmp_path: Path, qgis_env) -> None:
    """A GeoJSON layer in UTM (legacy ``crs`` member) covering the west half: the algorithm
    exports it reprojected to EPSG:4326; outside it the output is nodata."""
    source, guide, _ = pair(tmp_path)
    x0, y0 = ORIGIN
    west_half = [[x0, y0], [x0 + 120, y0], [x0 + 120, y0 - 240], [x0, y0 - 240], [x0, y0]]
    aoi = tmp_path / "west.geojson"
    aoi.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}},
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"name": "west"},
                        "geometry": {"type": "Polygon", "coordinates": [west_half]},
                    }
                ],
            }
        )
    )
    output = tmp_path / "west_x2.tif"
    command = f"{sys.executable} -m mmsr_geo_cli"  # the COMMAND parameter's way
    done = _upscale(
        qgis_env,
        INPUT=source,
        BAND=1,
        GUIDE=guide,
        SCALE=2,
        AOI=aoi,
        OUTPUT=output,
        COMMAND=command,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with rasterio.open(output) as out:
        values = out.read(1)
        nodata = out.nodata
    # output pixels are 5 m: the AOI's east edge (120 m) is between columns 23 and 24
    assert (values[:, 26:] == nodata).all()
    assert (values[8:, :22] != nodata).all()  # rows 0-7: the source's nodata corner


def test_cancel_then_rerun_resumes_to_the_same_output(tmp_path: Path, qgis_env) -> None:
    """In-process Processing run (the way QGIS desktop runs it), mmsr-geo found through
    MMSR_GEO_COMMAND: canceled after a tile, the tool is gone and no output exists; the rerun
    resumes from the checkpoints and writes the output of an uninterrupted run."""
    source, guide, _ = pair(tmp_path)
    env = {**qgis_env, ENV_VAR: " ".join(cli_command())}
    report = _helper(env, "cancel_resume.py", str(source), str(guide), str(tmp_path))

    assert report["cancel_error"].startswith("Canceled: ")
    assert "resume" in report["cancel_error"]
    assert len(report["tool_pids"]) == 1 and report["alive_after_cancel"] == []
    assert not report["output_after_cancel"]
    kept = len(report["checkpoints_after_cancel"])
    assert 1 <= kept < 9
    assert report["resumed"] == [kept]
    assert not report["work_left"]

    with rasterio.open(tmp_path / "ref.tif") as ref, rasterio.open(tmp_path / "out.tif") as out:
        reference, resumed, nodata = ref.read(1), out.read(1), ref.nodata
        assert (out.crs, out.transform, out.nodata) == (ref.crs, ref.transform, nodata)
    assert np.array_equal(reference, resumed)
    assert (reference == nodata).any() and (reference != nodata).any()  # the AOI's border
    # the project's promise is stronger than equal pixels: the very same file
    assert (tmp_path / "ref.tif").read_bytes() == (tmp_path / "out.tif").read_bytes()
