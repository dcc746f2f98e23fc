"""The train stage of a raster-level or hybrid run: one network trained on crops sampled
across the raster, kept in the work folder.

The weights are a checkpoint (``network.npz``, written atomically): a rerun after a kill
during the tiles' inference reuses them, and a kill during training retrains from the same
seed, crops and order, so either way the output is the file an uninterrupted run writes.
Training is one task: in this process when the tiles are fitted on this machine (all its
cores), else on the executor (a Dask worker, a GPU).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from ..atomic import atomic_file
from ..errors import InputError
from ..executors import TileExecutor
from ..fit import ProgressCallback
from ..fit_config import FitConfig
from ..network_weights import NetworkWeights
from ..progress import Progress
from ..raster_fit import Crop, CropBudget, train_network
from .choose import FitChoice
from .crops import sample_crops
from .plan import RunPlan
from .statistics import RasterStatistics

log = logging.getLogger(__name__)

NETWORK_NAME = "network.npz"


def trained_network(
    plan: RunPlan,
    stats: RasterStatistics,
    fit: FitChoice,
    executor: TileExecutor,
    progress: Progress,
) -> NetworkWeights:
    """The run's raster network: from the work folder, or trained now and saved there."""
    saved = plan.work_dir / NETWORK_NAME
    weights = _load(saved)
    if weights is not None:
        log.info("raster network %s from the work folder", weights.fingerprint[:12])
        return weights
    budget = fit.mode.budget
    assert budget is not None, "a raster-level fit has a crop budget"
    crops = sample_crops(plan, stats, fit.config, budget)
    if not crops:
        raise InputError(
            "no part of the raster has valid source, guide (and AOI) pixels to train on"
        )
    log.info(
        "training one network on %d crops of %dx%d source pixels, %d a step, %d steps",
        len(crops),
        crops[0].source.shape[1],
        crops[0].source.shape[0],
        min(budget.crops_per_step, len(crops)),
        budget.steps,
    )
    progress.begin(
        name=f"{plan.output.name} (training)",
        tiles=1,
        resumed=0,
        iterations=budget.steps,
        device=str(fit.config.device),
        unit="network",
    )
    task = _TrainingTask(crops, plan.grid.scale, fit, stats)
    if executor.local_tiles is not None:  # this machine: train here, on all its cores
        weights = task(progress=progress.iteration)
    else:
        (weights,) = executor.map_unordered(_run_task, [task])
    progress.tile_finished(weights.seconds)
    _save(saved, weights)
    log.info(
        "raster network %s trained in %.1f s (loss %.4g)",
        weights.fingerprint[:12],
        weights.seconds,
        weights.final_loss,
    )
    return weights


class _TrainingTask:
    """Everything the training needs, picklable, so it can run on another machine."""

    def __init__(
        self, crops: list[Crop], scale: int, fit: FitChoice, stats: RasterStatistics
    ) -> None:
        self.crops, self.scale, self.stats = crops, scale, stats.normalisation
        self.config, self.budget = fit.config, fit.mode.budget

    def __call__(self, progress: ProgressCallback | None = None) -> NetworkWeights:
        budget: CropBudget = self.budget  # type: ignore[assignment]
        return train_network(
            self.crops, self.scale, self.config, budget, self.stats, progress=progress
        )


def _run_task(task: _TrainingTask) -> NetworkWeights:
    return task()


def _save(path: Path, weights: NetworkWeights) -> None:
    """The weights' bytes and their facts (JSON), as an ``.npz`` read back without pickle."""
    facts = {f.name: getattr(weights, f.name) for f in dataclasses.fields(weights)}
    facts.pop("state")
    facts["config"] = dataclasses.asdict(weights.config)
    with atomic_file(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            state=np.frombuffer(weights.state, dtype=np.uint8),
            facts=np.str_(json.dumps(facts, sort_keys=True)),
        )


def _load(path: Path) -> NetworkWeights | None:
    """The saved weights, or None when there are none (or they cannot be read: retrain)."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        with np.load(path, allow_pickle=False) as data:
            facts = json.loads(str(data["facts"]))
            state = data["state"].tobytes()
        facts["config"] = FitConfig(**facts["config"])
        weights = NetworkWeights(state=state, **facts)
        if weights.intact():
            return weights
    return None
