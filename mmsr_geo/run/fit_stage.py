"""The fit stage: every pending tile fitted through an executor and checkpointed.

Tiles are read lazily (:mod:`mmsr_geo.run.tile_jobs`), grouped into batches of one shape,
fitted wherever the executor runs them (this process, local workers, a Dask cluster) and
checkpointed one by one as they come back, so a kill loses at most the tiles in flight.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from ..checkpoints import TileCheckpoints
from ..devices import resolve_device
from ..executors import TileExecutor
from ..fit_config import FitConfig
from ..jobs import fit_tiles
from ..memory import check_tile_memory, default_batch_tiles
from ..progress import Progress
from .plan import RunPlan
from .statistics import RasterStatistics
from .tile_jobs import batched, tile_jobs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitCounts:
    """What the fit stage did."""

    fitted: int
    skipped: int
    """Tiles with no valid output pixel (nodata, outside the guide or the AOI)."""


def batch_size(plan: RunPlan, config: FitConfig, executor: TileExecutor) -> int:
    """Tiles per optimisation: as asked, else 1 on the CPU, from the free memory of a GPU fitted
    in this process, and 8 for GPU tiles fitted elsewhere (halved there if they do not fit).
    Decided once per run: free GPU memory moves, and the memory guard must check the batch
    size the fit stage then uses."""
    if plan.request.batch_tiles is not None:
        return plan.request.batch_tiles
    scale = plan.grid.scale
    if executor.in_process:
        return default_batch_tiles(
            str(resolve_device(config.device)),
            plan.tiles.tile_height * scale,
            plan.tiles.tile_width * scale,
            config.features,
            config.precision,
        )
    return 8 if config.device.startswith("cuda") else 1


def check_memory(
    plan: RunPlan, config: FitConfig, executor: TileExecutor, batch_tiles: int
) -> None:
    """The memory guard (:mod:`mmsr_geo.memory`) for tiles fitted on this machine's CPU,
    ``batch_tiles`` at a time per local worker; tiles on a GPU or another machine are guarded
    there."""
    if executor.local_tiles is None:
        return
    if executor.in_process and resolve_device(config.device).type != "cpu":
        return
    scale = plan.grid.scale
    check_tile_memory(
        plan.tiles.tile_height * scale,
        plan.tiles.tile_width * scale,
        features=config.features,
        scale=scale,
        tile_size=plan.tiles.tile_size,
        concurrent=executor.local_tiles * batch_tiles,
    )


def device_label(config: FitConfig, executor: TileExecutor) -> str:
    """The device tiles run on, as far as this process knows: resolved for in-process fits;
    workers elsewhere resolve "auto" themselves (a CPU-only login node may send tiles to GPU
    workers)."""
    if executor.in_process:
        return str(resolve_device(config.device))
    return config.device


def fit_pending(
    plan: RunPlan,
    stats: RasterStatistics,
    config: FitConfig,
    pending: set[int],
    checkpoints: TileCheckpoints,
    executor: TileExecutor,
    progress: Progress,
    batch_tiles: int,
) -> FitCounts:
    """Run the pending tiles through the executor in batches of up to ``batch_tiles``,
    checkpointing each result."""
    skipped: list[int] = []

    def on_skip(index: int) -> None:
        skipped.append(index)
        progress.tile_finished(None)

    fn = (
        functools.partial(fit_tiles, progress=progress.iteration)
        if executor.in_process
        else fit_tiles
    )
    jobs = tile_jobs(plan, stats.normalisation, config, pending, on_skip)
    fitted = 0
    for results in executor.map_unordered(fn, batched(jobs, batch_tiles)):
        for result in results:
            checkpoints.save(result)
            fitted += 1
            log.debug(
                "tile %d fitted in %.1f s, cycle RMSE %.4g",
                result.index,
                result.seconds,
                result.cycle_rmse,
            )
            progress.tile_finished(result.seconds)
    return FitCounts(fitted=fitted, skipped=len(skipped))
