"""The choose stage: how this raster's tiles are fitted, decided once per run.

For the ``auto`` schedule the strategy is chosen one scale down on a window at the raster's
centre (:func:`mmsr_geo.selection.choose_auto`, the function ``evaluate`` and the benchmarks
use too) and kept in the work folder, so a resumed run fits its remaining tiles the same way;
any other schedule is its own choice.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from rasterio.windows import Window

from ..atomic import atomic_file
from ..fit_config import FitConfig
from ..jobs import TileJob
from ..selection import Choice, choose_auto
from .plan import RunPlan
from .statistics import RasterStatistics
from .tile_jobs import read_job, tile_jobs

log = logging.getLogger(__name__)

CHOICE_NAME = "choice.json"

SAMPLE_MIN = 16
"""Self-validation samples at least this many x scale source pixels a side (the pooled pair
then has 16 pixels a side), or the whole raster when it is smaller."""


@dataclass(frozen=True)
class FitChoice:
    """How every tile is fitted: the strategy and its configuration (tile i adds i to the
    seed), with ``auto``'s scores when it chose."""

    strategy: str
    """The strategy's name (``custom``: a FitConfig used as given)."""
    config: FitConfig
    selection: dict[str, float] | None = None
    """With ``auto``: every candidate's RMSE one scale down, and bicubic's (empty when the
    raster was too small to choose from); None for any other schedule."""
    expected_gain: float | None = None
    """With ``auto``: 1 - RMSE(choice) / RMSE(bicubic) one scale down."""


def choose_fit(plan: RunPlan, stats: RasterStatistics) -> FitChoice:
    """The fit of this run's tiles (see the module docstring)."""
    schedule = plan.schedule
    if not schedule.is_auto:
        return FitChoice(schedule.name, schedule.config())
    choice = _saved_choice(plan.work_dir) or _choose_now(plan, stats)
    return FitChoice(
        strategy=choice.strategy,
        config=schedule.config(choice.strategy),
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
