"""Tiles as tasks on a real Dask cluster (LocalCluster, worker processes on loopback) and on
local worker processes: same outputs as the serial path, and the GPU resource request."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest
from distributed import Client, LocalCluster, get_worker
from test_batch import FAST, make_pair, one_thread, read, run_cli  # noqa: F401 (fixture)

from mmsr_geo.batch import pairs_from_glob, run_batch
from mmsr_geo.distributed import (
    GPU_RESOURCE,
    DaskExecutor,
    LocalProcessExecutor,
    executor_from_options,
)
from mmsr_geo.errors import MmsrGeoError
from mmsr_geo.executors import SerialExecutor
from mmsr_geo.fit import FitConfig
from mmsr_geo.run import template_request

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = FitConfig(iterations=2, features=4, s2g_kernel=5, g2s_kernel=3, seed=0, device="cpu")
OPTIONS = {"tile_size": 8, "overlap": 2, "schedule": "paper", "iterations": 2}
"""The same settings as the CLI's FAST (remote-sensing preset = kernels 5/3)."""
TEMPLATE = template_request(2, config=CONFIG, **OPTIONS)


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes, each advertising one GPU (a resource is only a
    counter to the scheduler: nothing here needs a real GPU)."""
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            resources={GPU_RESOURCE: 1},
        ) as local,
        Client(local) as client,
    ):
        client.upload_file(__file__)  # so workers can unpickle this module's functions
        yield local, client


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("dask-data")
    for i in range(2):
        make_pair(data, f"JAX_00{i}_00{i}", offset=25.0 * i)
    return pairs_from_glob(str(data / "*.tif"))


@pytest.fixture(scope="module")
def serial_outputs(pairs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("serial")
    report = run_batch(pairs, out, TEMPLATE, executor=SerialExecutor())
    assert [r.status for r in report.records] == ["ok"] * 2, [r.error for r in report.records]
    return {Path(r.output).name: read(r.output) for r in report.records}


def assert_same_outputs(expected: dict[str, np.ndarray], out: Path) -> None:
    """Bit-identical: each tile is fitted by one process from the same arrays and seed, and
    every reduction inside a fit runs in that process; only where a tile runs differs."""
    assert sorted(p.name for p in out.glob("*_x2.tif")) == sorted(expected)
    for name, array in expected.items():
        np.testing.assert_array_equal(read(out / name), array)


def test_dask_executor_gives_the_serial_outputs(cluster, pairs, serial_outputs, tmp_path):
    _, client = cluster
    report = run_batch(
        pairs, tmp_path, TEMPLATE, executor=DaskExecutor(client)
    )
    assert [(r.status, r.tiles_fitted) for r in report.records] == [("ok", 4)] * 2
    assert_same_outputs(serial_outputs, tmp_path)
    again = run_batch(
        pairs, tmp_path, TEMPLATE, executor=DaskExecutor(client)
    )
    assert [r.status for r in again.records] == ["skipped"] * 2, "reruns skip finished outputs"
    assert again.records[0].device == "cpu" and again.records[0].cycle_rmse is not None


def test_cli_on_a_scheduler_address_gives_the_serial_outputs(
    cluster, pairs, serial_outputs, tmp_path
):
    local, _ = cluster
    sources = [str(p.source) for p in pairs]
    done = run_cli(
        "batch", *sources, "-o", str(tmp_path), *FAST, "--scheduler", local.scheduler_address
    )
    assert done.returncode == 0, done.stderr
    assert_same_outputs(serial_outputs, tmp_path)
    again = run_cli(
        "batch", *sources, "-o", str(tmp_path), *FAST, "--scheduler", local.scheduler_address
    )
    assert again.returncode == 0 and "0 done, 2 skipped" in again.stderr, again.stderr


def test_local_processes_give_the_serial_outputs(pairs, serial_outputs, tmp_path):
    with LocalProcessExecutor(2) as executor:
        report = run_batch(pairs, tmp_path, TEMPLATE, executor=executor)
    assert [r.status for r in report.records] == ["ok"] * 2, [r.error for r in report.records]
    assert_same_outputs(serial_outputs, tmp_path)
    sources = [str(p.source) for p in pairs]
    again = run_cli("batch", *sources, "-o", str(tmp_path), *FAST, "--workers", "2")
    assert again.returncode == 0 and "0 done, 2 skipped" in again.stderr, again.stderr


def _scaled(job: int, shared: dict) -> int:
    """A job that needs the shared value (a raster network's weights, in a real run)."""
    return job * shared["factor"]


def test_shared_values_reach_every_task(cluster):
    _, client = cluster
    shared = {"factor": 3}
    assert sorted(DaskExecutor(client).map_unordered(_scaled, range(4), shared)) == [0, 3, 6, 9]
    with LocalProcessExecutor(2) as executor:
        assert sorted(executor.map_unordered(_scaled, range(4), shared)) == [0, 3, 6, 9]
        again = {"factor": 5}  # another raster's network: the pool restarts with it
        assert sorted(executor.map_unordered(_scaled, range(2), again)) == [0, 5]


def test_raster_level_fit_on_the_cluster_gives_the_serial_output(cluster, pairs, tmp_path):
    """The training runs as one task on a worker, the network is scattered once, the tiles'
    forward passes run as tasks: the serial output to float round-off. Not to the bit: a
    training step holds several crops, and the sum over them in the backward pass is split
    over as many threads as the process has (numba's, here: this process runs with one, the
    worker with its own); a rerun in the same setting is bit-identical (test_raster_fit)."""
    _, client = cluster
    template = dataclasses.replace(TEMPLATE, fit_mode="raster", crop_size=6)
    serial = run_batch(pairs[:1], tmp_path / "serial", template, executor=SerialExecutor())
    dask = run_batch(pairs[:1], tmp_path / "dask", template, executor=DaskExecutor(client))
    for report in (serial, dask):
        assert [r.status for r in report.records] == ["ok"], [r.error for r in report.records]
    np.testing.assert_allclose(
        read(dask.records[0].output), read(serial.records[0].output), rtol=1e-5, atol=1e-5
    )
    assert dask.records[0].tiles_fitted == serial.records[0].tiles_fitted


def _free_gpus_while_running(_: int) -> float:
    """The GPU units left on the worker while this task runs (0 when the task holds one)."""
    time.sleep(0.05)
    return get_worker().state.available_resources[GPU_RESOURCE]


def test_tasks_hold_a_gpu_only_when_asked(cluster):
    _, client = cluster
    with_gpu = DaskExecutor(client, resources={GPU_RESOURCE: 1})
    assert set(with_gpu.map_unordered(_free_gpus_while_running, range(6))) == {0}
    without = DaskExecutor(client)
    assert set(without.map_unordered(_free_gpus_while_running, range(6))) == {1}


def test_executor_from_options_picks_and_closes_the_executor(cluster, tmp_path: Path):
    local, _ = cluster
    with executor_from_options() as serial:
        assert isinstance(serial, SerialExecutor)
    with executor_from_options(scheduler=local.scheduler_address, gpu=True) as dask:
        assert isinstance(dask, DaskExecutor) and dask.resources == {GPU_RESOURCE: 1}
        assert sorted(dask.map_unordered(abs, [-2, 1])) == [1, 2]
    assert dask.client.status == "closed"
    # The minimal scheduler file (Client.write_scheduler_file fails on this dask version once
    # tasks have run: its scheduler_info holds tuple keys that json cannot write).
    (tmp_path / "scheduler.json").write_text(json.dumps({"address": local.scheduler_address}))
    with executor_from_options(scheduler_file=str(tmp_path / "scheduler.json")) as from_file:
        assert from_file.resources is None
        assert list(from_file.map_unordered(abs, [-3])) == [3]
    with pytest.raises(MmsrGeoError, match="does not exist"):
        executor_from_options(scheduler_file=str(tmp_path / "none.json")).__enter__()
    both = executor_from_options(scheduler="tcp://x:1", scheduler_file="s.json")
    with pytest.raises(ValueError, match="not both"):
        both.__enter__()
