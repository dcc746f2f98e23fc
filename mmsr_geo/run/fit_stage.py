"""The fit stage: every pending tile fitted through an executor and checkpointed.

Tiles are read lazily (:mod:`mmsr_geo.run.tile_jobs`), grouped into batches of one shape,
fitted wherever the executor runs them (this process, local workers, a Dask cluster) and
checkpointed one by one as they come back, so a kill loses at most the tiles in flight. A
tile gets its prediction by the fit mode: a fit from scratch (``tile``), the raster network's
forward pass (``raster``) or a short fit from that network (``hybrid``); the network is sent
to each worker once, with the executor's shared value.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from ..checkpoints import TileCheckpoints
from ..devices import resolve_device
from ..executors import TileExecutor
from ..fit_config import FitConfig
from ..jobs import fit_tiles, predict_tiles
from ..memory import MAX_BATCH_TILES, check_tile_memory, default_batch_tiles
from ..model import context_radius
from ..network_weights import NetworkWeights
from ..progress import Progress
from .choose import FitChoice, FitMode
from .crops import crop_side
from .plan import RunPlan
from .statistics import RasterStatistics
from .tile_jobs import batched, tile_jobs

log = logging.getLogger(__name__)

INFERENCE_BATCH_FACTOR = 4
"""How many more tiles a GPU takes in one forward pass than in one fit: the fit's memory
estimate covers gradients, Adam's moments and the saved activations of the backward pass. An
estimate, not measured on a GPU (none was lent): a batch that does not fit is halved."""


@dataclass(frozen=True)
class FitCounts:
    """What the fit stage did."""

    fitted: int
    skipped: int
    """Tiles with no valid output pixel (nodata, outside the guide or the AOI)."""


def batch_size(plan: RunPlan, config: FitConfig, mode: FitMode, executor: TileExecutor) -> int:
    """Tiles per optimisation (or forward pass): as asked, else 1 on the CPU, from the free
    memory of a GPU fitted in this process (:data:`INFERENCE_BATCH_FACTOR` times more for the
    raster network's forward passes), and 8 for GPU tiles fitted elsewhere (halved there if
    they do not fit). Decided once per run: free GPU memory moves, and the memory guard must
    check the batch size the fit stage then uses."""
    if plan.request.batch_tiles is not None:
        return plan.request.batch_tiles
    scale = plan.grid.scale
    if executor.in_process:
        tiles = default_batch_tiles(
            str(resolve_device(config.device)),
            plan.tiles.tile_height * scale,
            plan.tiles.tile_width * scale,
            config.features,
            config.precision,
        )
        if mode.name == "raster" and tiles > 1:  # a GPU: no gradients, no optimiser state
            return min(MAX_BATCH_TILES, tiles * INFERENCE_BATCH_FACTOR)
        return tiles
    return 8 if config.device.startswith("cuda") else 1


def check_memory(
    plan: RunPlan, config: FitConfig, executor: TileExecutor, batch_tiles: int
) -> None:
    """The memory guard (:mod:`mmsr_geo.memory`) for tiles fitted on this machine's CPU,
    ``batch_tiles`` at a time per local worker; tiles on a GPU or another machine are guarded
    there."""
    if not _guarded_here(config, executor):
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


def check_training_memory(
    plan: RunPlan, config: FitConfig, mode: FitMode, executor: TileExecutor
) -> None:
    """The memory guard for a raster-level training step on this machine's CPU: its crops
    are optimised together, as a batch of tiles is."""
    budget = mode.budget
    if budget is None or not _guarded_here(config, executor):
        return
    width, height = crop_side(plan, budget)
    scale = plan.grid.scale
    check_tile_memory(
        height * scale,
        width * scale,
        features=config.features,
        scale=scale,
        tile_size=budget.crop_size,
        concurrent=min(budget.crops_per_step, budget.pool),
        what="crop",
        option="--crop-size",
    )


def _guarded_here(config: FitConfig, executor: TileExecutor) -> bool:
    if executor.local_tiles is None:
        return False
    return not (executor.in_process and resolve_device(config.device).type != "cpu")


def _context(plan: RunPlan, network: NetworkWeights) -> int:
    """Source pixels read around a tile for its forward pass: all that reaches the network's
    prediction inside it (:func:`~mmsr_geo.model.context_radius`; 3 at x4 with the
    remote-sensing kernels), so tiles predict what one pass over the whole raster would, to
    float round-off: no seam to blend away."""
    c = network.config
    return context_radius(plan.grid.scale, c.s2g_kernel, c.g2s_kernel, c.level_sigma)


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
    fit: FitChoice,
    network: NetworkWeights | None,
    pending: set[int],
    checkpoints: TileCheckpoints,
    executor: TileExecutor,
    progress: Progress,
    batch_tiles: int,
) -> FitCounts:
    """Run the pending tiles through the executor in batches of up to ``batch_tiles``,
    checkpointing each result; ``network`` is the raster network of a raster or hybrid fit."""
    skipped: list[int] = []

    def on_skip(index: int) -> None:
        skipped.append(index)
        progress.tile_finished(None)

    if fit.mode.name == "raster":
        fn = predict_tiles
    elif executor.in_process:
        fn = functools.partial(fit_tiles, progress=progress.iteration)
    else:
        fn = fit_tiles
    margin = 0
    if fit.mode.name == "raster" and network is not None:
        margin = _context(plan, network)
    jobs = tile_jobs(plan, stats.normalisation, fit.tile_config, pending, on_skip, margin)
    fitted = 0
    batches = batched(jobs, batch_tiles)
    results_of = (
        executor.map_unordered(fn, batches)
        if network is None
        else executor.map_unordered(fn, batches, network)
    )
    for results in results_of:
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
