"""One run as a line of stages: plan -> statistics -> register -> choose -> (train) -> fit ->
write.

:func:`execute` takes a :class:`~mmsr_geo.run.plan.RunPlan`, holds the output's lock, and
passes each stage's frozen result to the next: the whole-raster statistics, the guide's
offset (and a plan reading the guide corrected by it), the fit choice,
for a raster-level or hybrid fit the raster network (checkpointed), the fitted tiles
(checkpointed; a rerun after a crash resumes from them) and the written output, then the
optional preview. :func:`upscale_raster` is plan and execute in one call.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import remove_leftovers
from ..checkpoints import TileCheckpoints
from ..executors import SerialExecutor, TileExecutor
from ..fit_config import FitConfig
from ..locks import OutputLock
from ..progress import Progress, count
from .choose import choose_fit, choose_mode
from .fit_stage import (
    batch_size,
    check_memory,
    check_training_memory,
    device_label,
    fit_pending,
)
from .plan import RunPlan, check_output_free, plan_run
from .register import register_guide, registration_facts
from .request import UpscaleRequest
from .statistics import check_value_range, raster_statistics
from .train_stage import NETWORK_NAME, trained_network
from .write import write_output

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpscaleReport:
    """What a run did."""

    output: Path
    tiles_total: int
    tiles_fitted: int
    """Tiles fitted by this run."""
    tiles_resumed: int
    """Tiles taken from the checkpoints of an earlier, interrupted run."""
    tiles_skipped: int
    """Tiles with no valid output pixel (nodata, outside the guide or the AOI)."""
    seconds: float
    mean_cycle_rmse: float
    """Mean over the fitted and resumed tiles of their cycle RMSE (source units); NaN if none."""
    device: str
    """Devices the tiles were fitted on (comma-separated)."""
    strategy: str = "custom"
    """How the tiles were fitted (the strategy ``auto`` chose, or the one asked for)."""
    expected_gain: float | None = None
    """With ``auto``: 1 - RMSE(choice) / RMSE(bicubic) one scale down."""
    fit_mode: str = "tile"
    """``tile``, ``raster`` or ``hybrid``: how the tiles got their network."""
    network: str | None = None
    """Fingerprint of the raster network (raster and hybrid fits)."""
    registration: dict[str, Any] | None = None
    """With ``register="auto"``: the guide's estimated offset (output pixels and ground
    units) and whether it was corrected (:mod:`mmsr_geo.registration`)."""
    confidence: Path | None = None
    """The uncertainty band's GeoTIFF, when asked for."""

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def execute(
    plan: RunPlan,
    executor: TileExecutor | None = None,
    progress: Progress | None = None,
) -> UpscaleReport:
    """Fit the plan's missing tiles and write the output (see the module docstring).

    Holds the output's lock throughout, so a second run on the same output is refused while
    this one works; a kill leaves checkpoints from which the same call resumes.
    """
    started = time.perf_counter()
    executor = executor or SerialExecutor()
    progress = progress or Progress()
    base = plan.schedule.base
    with OutputLock(plan.work_dir, plan.output):
        finals = [plan.output] + ([plan.confidence.path] if plan.confidence is not None else [])
        for leftover in (found for final in finals for found in remove_leftovers(final)):
            log.info("removed %s, left by a run that was killed", leftover.name)
        checkpoints = TileCheckpoints(
            plan.work_dir, plan.settings.result_key(), plan.settings.result_fields()
        )
        try:
            done = checkpoints.open()
            mode = choose_mode(plan)
            batch_tiles = batch_size(plan, base, mode, executor)
            check_memory(plan, base, executor, batch_tiles)
            check_training_memory(plan, base, mode, executor)
            stats = raster_statistics(plan)
            check_value_range(plan, stats)
            plan, found = register_guide(plan, stats)
            registration = (
                None
                if plan.request.register == "off"
                else registration_facts(found, plan.grid)
            )
            fit = choose_fit(plan, stats, mode)
            device = device_label(fit.config, executor)
            if fit.mode.name != "tile":  # a per-tile fit says why in the tags only
                log.info("fit mode %s: %s", fit.mode.name, fit.mode.reason)
            network = (
                trained_network(plan, stats, fit, executor, progress)
                if fit.mode.name != "tile"
                else None
            )
            iterations = 0 if fit.mode.name == "raster" else fit.tile_config.iterations
            log.info(
                "%s of %dx%d source pixels (%d already done), %s, on %s",
                count(len(plan.tiles), "tile"),
                plan.tiles.tile_width,
                plan.tiles.tile_height,
                len(done),
                f"{iterations} iterations each" if iterations else "a forward pass each",
                device,
            )
            progress.begin(
                name=plan.output.name,
                tiles=len(plan.tiles),
                resumed=len(done),
                iterations=iterations,
                device=device,
            )
            pending = set(range(len(plan.tiles))) - done
            counts = fit_pending(
                plan, stats, fit, network, pending, checkpoints, executor, progress,
                batch_tiles,
            )
            facts = write_output(plan, fit, network, checkpoints, progress, registration)
        except BaseException:
            if not checkpoints.done() and not (plan.work_dir / NETWORK_NAME).exists():
                checkpoints.remove()
            raise
        checkpoints.remove()
    if plan.preview is not None:
        from ..preview import write_preview  # matplotlib: imported by the runs that draw

        inputs = plan.inputs
        write_preview(
            plan.preview,
            plan.output,
            inputs.source,
            inputs.band,
            inputs.guide_dataset,
            inputs.guide_bands,
            plan.grid,
            overwrite=plan.request.overwrite,
        )
    if counts.skipped == len(plan.tiles):
        log.warning("every tile was skipped (nodata, outside the guide or AOI): output is empty")
    rmse = [f.cycle_rmse for f in facts.values()]
    devices = sorted({f.device for f in facts.values() if f.device}) or [device]
    report = UpscaleReport(
        output=plan.output,
        tiles_total=len(plan.tiles),
        tiles_fitted=counts.fitted,
        tiles_resumed=len(done),
        tiles_skipped=counts.skipped,
        seconds=time.perf_counter() - started,
        mean_cycle_rmse=float(np.mean(rmse)) if rmse else float("nan"),
        device=",".join(devices),
        strategy=fit.strategy,
        expected_gain=fit.expected_gain,
        fit_mode=fit.mode.name,
        network=None if network is None else network.fingerprint,
        registration=registration,
        confidence=plan.confidence.path if plan.confidence is not None else None,
    )
    progress.end(report.as_dict())
    return report


def upscale_raster(
    source: str | os.PathLike[str],
    guide: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    scale: int,
    config: FitConfig | None = None,
    executor: TileExecutor | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> UpscaleReport:
    """Super-resolve a raster band by ``scale`` with a high-resolution guide.

    ``options`` are the other fields of :class:`~mmsr_geo.run.request.UpscaleRequest`
    (schedule, iterations, band, guide_bands, tile_size, overlap, aoi, dtype, nodata,
    creation_options, cog, overwrite, preview, record_paths, batch_tiles, fit_mode, register,
    consistency).
    ``executor`` runs
    the tile fits (default: serially in this process); ``progress`` receives the progress
    (default: nothing is reported).
    """
    if options.get("guide_bands") is not None:
        options["guide_bands"] = tuple(options["guide_bands"])
    request = UpscaleRequest(source, guide, scale, output=output, config=config, **options)
    with plan_run(request) as plan:
        check_output_free(plan)
        return execute(plan, executor, progress)
