"""The choose stage: how this raster's tiles are fitted, decided once per run.

Two choices. The strategy: for the ``auto`` schedule chosen one scale down on a window at the
raster's centre (:func:`mmsr_geo.selection.choose_auto`, the function ``evaluate`` and the
benchmarks use too) and kept in the work folder, so a resumed run fits its remaining tiles the
same way; any other schedule is its own choice. And the fit mode (:data:`FIT_MODE_RULE`): a
network per tile, one network for the raster, or that network fine-tuned per tile.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from rasterio.windows import Window

from ..atomic import atomic_file
from ..fit_config import FitConfig
from ..jobs import TileJob
from ..raster_fit import (
    CROPS_PER_STEP,
    TRAINING_STEPS_FACTOR,
    CropBudget,
    default_crop_size,
)
from ..selection import Choice, choose_auto
from .plan import RunPlan
from .statistics import RasterStatistics
from .tile_jobs import read_job, tile_jobs

log = logging.getLogger(__name__)

CHOICE_NAME = "choice.json"

SAMPLE_MIN = 16
"""Self-validation samples at least this many x scale source pixels a side (the pooled pair
then has 16 pixels a side), or the whole raster when it is smaller."""


RASTER_MIN_SAVING = 4.0
"""``auto`` fits one network for the raster when fitting every tile would cost at least this
many times more (output pixels x iterations) than training it on crops and applying it; below
that, on a raster of a few tiles, the per-tile fit is kept (BENCHMARKS.md, "Fit modes")."""
INFERENCE_COST = 0.5
"""A tile's forward pass in iterations of its fit (a forward pass without the backward and
the optimiser step), for the cost comparison."""
FIT_MODE_RULE = (
    f"auto: raster when a per-tile fit would cost >= {RASTER_MIN_SAVING:g}x the raster-level "
    "training and inference, else tile"
)


@dataclass(frozen=True)
class FitMode:
    """How the tiles get their network: ``tile``, ``raster`` or ``hybrid`` (never ``auto``),
    why, and for a raster-level or hybrid fit the training's budget and the tiles'
    fine-tune iterations. Decided from the plan alone (no fit), so that every memory check
    comes before any compute."""

    name: str
    reason: str = "asked"
    budget: CropBudget | None = None
    finetune: int = 0


def choose_mode(plan: RunPlan) -> FitMode:
    """The fit mode: as asked, or by :data:`FIT_MODE_RULE` from what each costs in output
    pixels x iterations."""
    request, grid = plan.request, plan.grid
    iterations = plan.schedule.iterations
    tiles = [t for t in plan.tiles if plan.in_aoi(t)]
    budget = CropBudget(
        steps=TRAINING_STEPS_FACTOR * iterations,
        crop_size=request.crop_size or default_crop_size(grid.scale),
        crops_per_step=request.crops_per_step or CROPS_PER_STEP,
        level_sigma=request.level_sigma or 0.0,
    )
    name, reason = request.fit_mode, "asked"
    if name == "auto":
        pixels = sum(t.hr_window.width * t.hr_window.height for t in tiles)
        per_tile = pixels * iterations
        raster = budget.output_pixel_iterations(grid.scale) + pixels * INFERENCE_COST
        saving = per_tile / raster if raster else 0.0
        name = "raster" if saving >= RASTER_MIN_SAVING else "tile"
        reason = (
            f"a per-tile fit of {len(tiles)} tiles would cost {saving:.1f}x the raster-level "
            f"fit ({FIT_MODE_RULE})"
        )
    if name == "tile":
        return FitMode(name, reason)
    finetune = request.finetune or max(1, iterations // 10)
    return FitMode(name, reason, budget, finetune if name == "hybrid" else 0)


@dataclass(frozen=True)
class FitChoice:
    """How every tile is fitted: the strategy and its configuration (tile i adds i to the
    seed), with ``auto``'s scores when it chose, and the fit mode."""

    strategy: str
    """The strategy's name (``custom``: a FitConfig used as given)."""
    config: FitConfig
    mode: FitMode
    selection: dict[str, float] | None = None
    """With ``auto``: every candidate's RMSE one scale down, and bicubic's (empty when the
    raster was too small to choose from); None for any other schedule."""
    expected_gain: float | None = None
    """With ``auto``: 1 - RMSE(choice) / RMSE(bicubic) one scale down."""

    @property
    def tile_config(self) -> FitConfig:
        """What each tile's job carries: the strategy's config, or for a hybrid fit the
        fine-tune's iterations (the averaged share kept)."""
        if self.mode.name != "hybrid":
            return self.config
        share = self.config.average_last / self.config.iterations
        return dataclasses.replace(
            self.config,
            iterations=self.mode.finetune,
            average_last=int(round(share * self.mode.finetune)),
        )


def choose_fit(plan: RunPlan, stats: RasterStatistics, mode: FitMode) -> FitChoice:
    """The fit of this run's tiles (see the module docstring), in ``mode``."""
    schedule = plan.schedule
    if not schedule.is_auto:
        return FitChoice(schedule.name, schedule.config(), mode)
    choice = _saved_choice(plan.work_dir) or _choose_now(plan, stats)
    return FitChoice(
        strategy=choice.strategy,
        config=schedule.config(choice.strategy),
        mode=mode,
        selection=choice.scores,
        expected_gain=choice.expected_gain,
    )


def _saved_choice(work_dir: Path) -> Choice | None:
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        record = json.loads((work_dir / CHOICE_NAME).read_text(encoding="utf-8"))
        return Choice(strategy=record["strategy"], scores=record["scores"])
    return None


def _choose_now(plan: RunPlan, stats: RasterStatistics) -> Choice:
    schedule = plan.schedule
    job = _sample_job(plan, stats)
    choice = (
        Choice(strategy=schedule.fallback)
        if job is None
        else choose_auto(
            job.source,
            job.guide,
            plan.grid.scale,
            schedule,
            mask=job.source_valid,
            stats=job.stats,
        )
    )
    if not choice.scores:
        log.info("too little data to choose one scale down: using %s", choice.strategy)
    else:
        gain = choice.expected_gain
        log.info(
            "schedule %s, chosen one scale down (RMSE %s)%s",
            choice.strategy,
            ", ".join(f"{name} {value:.4g}" for name, value in choice.scores.items()),
            f": expect {choice.gain_text()}" if gain is not None else "",
        )
    with atomic_file(plan.work_dir / CHOICE_NAME) as tmp:
        tmp.write_text(
            json.dumps({"strategy": choice.strategy, "scores": choice.scores}), encoding="utf-8"
        )
    return choice


def _sample_job(plan: RunPlan, stats: RasterStatistics) -> TileJob | None:
    """The source window self-validation looks at: a tile's size (at least
    :data:`SAMPLE_MIN` x scale pixels a side) at the raster's centre, or, when that one has no
    valid output, the first tile of the plan that has."""
    grid, tiles = plan.grid, plan.tiles
    config = plan.schedule.base
    side = max(tiles.tile_size, SAMPLE_MIN * grid.scale)
    width, height = min(side, grid.lr_width), min(side, grid.lr_height)
    centre = Window((grid.lr_width - width) // 2, (grid.lr_height - height) // 2, width, height)
    job = read_job(plan, stats.normalisation, config, -1, centre)
    if job is not None:
        return job
    pending = set(range(len(tiles)))
    return next(tile_jobs(plan, stats.normalisation, config, pending, lambda index: None), None)
