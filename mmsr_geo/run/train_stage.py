"""The train stage of a raster-level or hybrid run: one network trained on crops sampled
across the raster, kept in the work folder.

The weights are a checkpoint (``network.npz``, written atomically): a rerun after a kill
during the tiles' inference reuses them, and a kill during training retrains from the same
seed, crops and order, so either way the output is the file an uninterrupted run writes.
Training is one task: in this process when the tiles are fitted on this machine (all its
cores), else on the executor (a Dask worker, a GPU). With the ``auto`` schedule the trained
network is checked one scale down, and where it learned nothing there the other candidate
strategies are trained too (:func:`_checked`); the decision is kept in the work folder
before the weights, so a rerun makes the same one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..atomic import atomic_file
from ..errors import InputError
from ..executors import TileExecutor
from ..fit import ProgressCallback
from ..fit_config import FitConfig
from ..network_weights import NetworkWeights
from ..progress import Progress
from ..raster_fit import Crop, CropBudget, predict_many, train_network
from ..selection import pooled_pair
from ..strategies import AUTO_CANDIDATES
from .choose import FitChoice, record_choice, sample_job
from .crops import sample_crops
from .plan import RunPlan
from .statistics import RasterStatistics

log = logging.getLogger(__name__)

NETWORK_NAME = "network.npz"

LEARNED_MARGIN = 0.02
"""``auto``'s raster network must reproduce the source one scale down at least this much
better (relative RMSE) than bicubic, or the other candidates are trained too: a network
that stayed at its bicubic start is bicubic there, and one that learned scores lower
(BENCHMARKS.md, "Fit modes", gives both on real pairs)."""


def trained_network(
    plan: RunPlan,
    stats: RasterStatistics,
    fit: FitChoice,
    executor: TileExecutor,
    progress: Progress,
) -> tuple[NetworkWeights, FitChoice]:
    """The run's raster network and the fit it was trained with: from the work folder, or
    trained now (for ``auto``, checked one scale down: :func:`_checked`) and saved there."""
    saved = plan.work_dir / NETWORK_NAME
    weights = _load(saved)
    if weights is not None:
        log.info("raster network %s from the work folder", weights.fingerprint[:12])
        return weights, fit
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

    def train(config: FitConfig) -> NetworkWeights:
        return _train(plan, stats, config, budget, crops, executor, progress)

    weights = train(fit.config)
    if fit.selection and fit.network_check is None:
        weights, fit = _checked(plan, stats, fit, weights, train)
        record_choice(plan.work_dir, fit)  # before the weights: a rerun keeps this decision
    _save(saved, weights)
    return weights, fit


def _train(
    plan: RunPlan,
    stats: RasterStatistics,
    config: FitConfig,
    budget: CropBudget,
    crops: list[Crop],
    executor: TileExecutor,
    progress: Progress,
) -> NetworkWeights:
    """One training: in this process when the tiles are fitted on this machine (all its
    cores), else as one task of the executor."""
    progress.begin(
        name=f"{plan.output.name} (training)",
        tiles=1,
        resumed=0,
        iterations=budget.steps,
        device=str(config.device),
        unit="network",
    )
    task = _TrainingTask(crops, plan.grid.scale, config, budget, stats)
    if executor.local_tiles is not None:
        weights = task(progress=progress.iteration)
    else:
        (weights,) = executor.map_unordered(_run_task, [task])
    progress.tile_finished(weights.seconds)
    log.info(
        "raster network %s trained in %.1f s (loss %.4g)",
        weights.fingerprint[:12],
        weights.seconds,
        weights.final_loss,
    )
    return weights


def _checked(
    plan: RunPlan,
    stats: RasterStatistics,
    fit: FitChoice,
    weights: NetworkWeights,
    train: Callable[[FitConfig], NetworkWeights],
) -> tuple[NetworkWeights, FitChoice]:
    """``auto``'s network, checked one scale down on the window its strategy was chosen on.

    ``auto`` chooses the strategy with per-image fits one scale down, and a network trained
    on crops does not always follow them: from a bicubic start it can stay at bicubic (the
    Middlebury mosaic at x4: ``residual-cosine`` 4.828 against bicubic 4.831, while
    ``cosine-avg`` reached 4.359; BENCHMARKS.md, "Fit modes"). So the network predicts the
    pooled window; when it does not beat bicubic there by :data:`LEARNED_MARGIN`, every
    other candidate is trained too and the network with the lowest RMSE there is kept.
    """
    job = sample_job(plan, stats)
    pooled = None if job is None else pooled_pair(
        job.source, job.guide, plan.grid.scale, job.source_valid
    )
    if job is None or pooled is None:
        return weights, fit

    def score(trained: NetworkWeights) -> float:
        (result,) = predict_many(
            trained, [pooled.source], [pooled.guide], plan.grid.scale, fit.config,
            masks=[pooled.source_mask], stats=[stats.normalisation],
        )
        return pooled.score(result.prediction)

    scores = {"bicubic": pooled.bicubic_rmse(), fit.strategy: score(weights)}
    networks = {fit.strategy: weights}
    if scores[fit.strategy] > (1.0 - LEARNED_MARGIN) * scores["bicubic"]:
        log.warning(
            "the raster network (%s) is no better than bicubic one scale down (RMSE %.4g "
            "against %.4g): training the other candidates too",
            fit.strategy, scores[fit.strategy], scores["bicubic"],
        )
        for name in (c for c in AUTO_CANDIDATES if c != fit.strategy):
            networks[name] = train(plan.schedule.config(name))
            scores[name] = score(networks[name])
    kept = min(networks, key=lambda name: scores[name])
    log.info(
        "raster network one scale down: %s; kept %s",
        ", ".join(f"{name} {value:.4g}" for name, value in scores.items()),
        kept,
    )
    return networks[kept], fit.checked(kept, plan.schedule.config(kept), scores)


class _TrainingTask:
    """Everything the training needs, picklable, so it can run on another machine."""

    def __init__(
        self,
        crops: list[Crop],
        scale: int,
        config: FitConfig,
        budget: CropBudget,
        stats: RasterStatistics,
    ) -> None:
        self.crops, self.scale, self.stats = crops, scale, stats.normalisation
        self.config, self.budget = config, budget

    def __call__(self, progress: ProgressCallback | None = None) -> NetworkWeights:
        return train_network(
            self.crops, self.scale, self.config, self.budget, self.stats, progress=progress
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
