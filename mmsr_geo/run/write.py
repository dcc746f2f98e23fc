"""The write stage: checkpointed tiles blended block by block into the output GeoTIFF.

The output is written under a temporary name and put in place when complete
(:func:`mmsr_geo.writer.atomic_raster`); blocks are pulled one at a time from the checkpoints
through a small cache, so memory is bounded by the block and tile sizes, never by the
raster's. The tags record the settings and what the result determines, never timings, so a
resumed run writes the very bytes of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import OrderedDict
from typing import Any

import numpy as np
from rasterio.windows import Window, subdivide

from ..blending import blend_block
from ..checkpoints import TileCheckpoints, TileFacts
from ..confidence import CONFIDENCE_NODATA, uncertainty
from ..consistency import HALO, pooled_error, project_consistent
from ..network_weights import NetworkWeights
from ..progress import Progress
from ..raster_io import read_band
from ..tiling import TilePlan
from ..writer import (
    BLOCK_SIZE,
    EncodeCounts,
    OutputEncoding,
    atomic_raster,
    provenance_tags,
)
from .choose import FitChoice
from .plan import RunPlan

log = logging.getLogger(__name__)

TILE_CACHE_SIZE = 16
"""Checkpointed tiles held in memory while blending (the blocks walk row by row)."""


class _TileCache:
    """A small LRU of checkpointed tile predictions, recording each tile's facts."""

    def __init__(self, checkpoints: TileCheckpoints, size: int = TILE_CACHE_SIZE) -> None:
        self._checkpoints = checkpoints
        self._size = size
        self._tiles: OrderedDict[int, np.ndarray] = OrderedDict()
        self.facts: dict[int, TileFacts] = {}

    def get(self, index: int) -> np.ndarray:
        if index in self._tiles:
            self._tiles.move_to_end(index)
            return self._tiles[index]
        prediction, facts = self._checkpoints.load(index)
        self.facts[index] = facts
        self._tiles[index] = prediction
        if len(self._tiles) > self._size:
            self._tiles.popitem(last=False)
        return prediction


def _blend_size(tiles: TilePlan, block: int) -> int:
    """Blend windows: whole GTiff blocks and whole source pixels (so every output block of a
    source pixel lies in one window), at least one tile stride wide, so each checkpoint is
    loaded only a few times."""
    stride = max(1, tiles.tile_size - tiles.overlap) * tiles.scale
    unit = math.lcm(block, tiles.scale)
    return unit * max(1, math.ceil(stride / unit))


class _Blender:
    """Output values of one window: the tiles' weighted blend; with ``--consistency exact``
    its projection onto the source, and with ``--confidence`` its uncertainty band (both
    computed on the window grown by :data:`~mmsr_geo.consistency.HALO` source pixels, so that
    every window gets exactly the whole raster's values); records the largest |block mean -
    source| as stored."""

    def __init__(self, plan: RunPlan, cache: _TileCache, done: set[int]) -> None:
        self._plan, self._cache, self._done = plan, cache, done
        self._ramp = plan.tiles.overlap * plan.tiles.scale
        self.exact = plan.request.consistency == "exact"
        self.confidence = plan.confidence is not None
        self.largest_error = 0.0
        self._source: tuple[np.ndarray, np.ndarray] | None = None

    def blend(self, window: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(values, valid, uncertainty band or None) of ``window``."""
        if not (self.exact or self.confidence):
            return (*self._blended(window), None)
        grid, inputs, s = self._plan.grid, self._plan.inputs, self._plan.grid.scale
        lr = grid.lr_window(window)  # windows hold whole source pixels (see _blend_size)
        context = grid.grown(lr, HALO)
        values, valid = self._blended(grid.hr_window(context))
        source, source_valid = read_band(inputs.source, inputs.band, context)
        if self.exact:
            values = project_consistent(values, valid, source, source_valid, s)
        band = uncertainty(values, valid, source, source_valid, s) if self.confidence else None
        r, c = int(lr.row_off - context.row_off), int(lr.col_off - context.col_off)
        h, w = int(lr.height), int(lr.width)
        lr_core = (slice(r, r + h), slice(c, c + w))
        core = (slice(r * s, (r + h) * s), slice(c * s, (c + w) * s))
        if self.exact:
            self._source = (source[lr_core], source_valid[lr_core])
        return (
            np.where(valid[core], values[core], 0.0),
            valid[core],
            None if band is None else band[core],
        )

    def check(self, stored: np.ndarray, valid: np.ndarray) -> None:
        """Fold the block error of the window just blended, as stored, into
        :attr:`largest_error`."""
        if self._source is None:
            return
        encoding = self._plan.encoding
        physical = stored.astype(np.float64) * encoding.scale + encoding.offset
        error = pooled_error(physical, valid, *self._source, self._plan.grid.scale)
        self.largest_error = max(self.largest_error, error)

    def _blended(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        contributions = [
            (tile.hr_window, self._cache.get(tile.index))
            for tile in self._plan.tiles.tiles_touching(window)
            if tile.index in self._done
        ]
        return blend_block(window, contributions, self._ramp)


def write_output(
    plan: RunPlan,
    fit: FitChoice,
    network: NetworkWeights | None,
    checkpoints: TileCheckpoints,
    progress: Progress,
    registration: dict[str, Any] | None = None,
) -> dict[int, TileFacts]:
    """Blend the checkpointed tiles block by block into the output (placed atomically);
    returns the facts of every tile. ``registration`` goes into the ``MMSR_RUN`` tag."""
    done = checkpoints.done()
    tiles, grid, inputs = plan.tiles, plan.grid, plan.inputs
    block = int(plan.profile.get("blockxsize", BLOCK_SIZE))
    cache = _TileCache(checkpoints)
    blender = _Blender(plan, cache, done)
    counts = EncodeCounts()
    band_summary = _BandSummary()
    size = _blend_size(tiles, block)
    windows = subdivide(Window(0, 0, grid.width, grid.height), size, size)
    units = inputs.source.units[inputs.band - 1] if inputs.source.units else None
    with contextlib.ExitStack() as files:  # the band is put in place first, the output last
        dst = files.enter_context(
            atomic_raster(
                plan.output,
                plan.profile,
                overwrite=plan.request.overwrite,
                cog=plan.request.cog,
                cog_options=plan.cog_options,
            )
        )
        band_dst = None
        if plan.confidence is not None:
            band_dst = files.enter_context(
                atomic_raster(
                    plan.confidence.path,
                    plan.confidence.profile,
                    overwrite=plan.request.overwrite,
                    cog=plan.request.cog,
                    cog_options=plan.confidence.cog_options,
                )
            )
        for number, window in enumerate(windows, start=1):
            values, valid, band = blender.blend(window)
            stored, block_counts = plan.encoding.encode(values, valid)
            blender.check(stored, valid)
            counts.add(block_counts)
            dst.write(stored, 1, window=window)
            if band_dst is not None and band is not None:
                band_summary.add(band)
                band_dst.write(
                    np.where(np.isfinite(band), band, CONFIDENCE_NODATA).astype(np.float32),
                    1,
                    window=window,
                )
            progress.blocks_written(number, len(windows))
        consistency = _consistency_facts(blender, plan)
        confidence = (
            band_summary.facts(plan.confidence.path.name) if plan.confidence is not None else None
        )
        facts = run_facts(fit, network, cache.facts, registration, consistency, confidence)
        tags = provenance_tags(plan.settings.record(), facts)
        dst.update_tags(**tags)
        description = inputs.source.descriptions[inputs.band - 1] or f"band {inputs.band}"
        dst.set_band_description(1, f"{description} x{grid.scale} (MMSR)")
        if units:
            dst.set_band_unit(1, units)
        if (plan.encoding.scale, plan.encoding.offset) != (1.0, 0.0):
            dst.scales = (plan.encoding.scale,)
            dst.offsets = (plan.encoding.offset,)
        if band_dst is not None:
            band_dst.update_tags(**tags)
            band_dst.set_band_description(
                1, f"uncertainty of {plan.output.name}: local |output - bicubic| (MMSR)"
            )
            if units:
                band_dst.set_band_unit(1, units)
    _report_counts(counts, plan.encoding)
    return cache.facts


class _BandSummary:
    """The uncertainty band's mean and largest value over the raster, block by block."""

    def __init__(self) -> None:
        self.total, self.count, self.largest = 0.0, 0, 0.0

    def add(self, band: np.ndarray) -> None:
        values = band[np.isfinite(band)]
        if values.size:
            self.total += float(values.sum())
            self.count += int(values.size)
            self.largest = max(self.largest, float(values.max()))

    def facts(self, file_name: str) -> dict[str, Any]:
        return {
            "file": file_name,
            "measure": "local mean |output - bicubic upsampling of the source|, source units",
            "mean": self.total / self.count if self.count else None,
            "max": self.largest,
        }


def run_facts(
    fit: FitChoice,
    network: NetworkWeights | None,
    tile_facts: dict[int, TileFacts],
    registration: dict[str, Any] | None = None,
    consistency: dict[str, Any] | None = None,
    confidence: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Facts of the result for the ``MMSR_RUN`` tag: the strategy (and, when ``auto`` chose
    it, every candidate's score one scale down), devices, precisions, tiles with data, cycle
    RMSE, iterations used; for a raster-level or hybrid fit the mode, why, the training's
    budget, the network's local-level sigma and fingerprint; with ``--register auto`` the
    guide's estimated offset and whether it was corrected; with ``--consistency exact`` the
    largest |block mean - source| of the stored output; with ``--confidence`` the band's
    file, measure, mean and largest value.

    Only what the result determines (no timings, no count of resumed tiles), so a resumed
    run writes the very bytes of an uninterrupted one.
    """
    facts = list(tile_facts.values())
    iterations = [f.iterations for f in facts]
    raster = {}
    if fit.mode.name != "tile" and fit.mode.budget is not None and network is not None:
        raster = {
            "fit_mode": fit.mode.name,
            "fit_mode_reason": fit.mode.reason,
            "raster_fit": {
                "steps": fit.mode.budget.steps,
                "crops_per_step": fit.mode.budget.crops_per_step,
                "crop_size": fit.mode.budget.crop_size,
                "pool": fit.mode.budget.pool,
                "finetune": fit.mode.finetune,
                "level_sigma": network.config.level_sigma,
                "network": network.fingerprint,
            },
        }
    elif fit.mode.reason != "asked":
        raster = {"fit_mode": fit.mode.name, "fit_mode_reason": fit.mode.reason}
    return {
        **raster,
        **({"registration": registration} if registration is not None else {}),
        **({"consistency": consistency} if consistency is not None else {}),
        **({"confidence": confidence} if confidence is not None else {}),
        "strategy": fit.strategy,
        "selection": fit.selection,
        "devices": sorted({f.device for f in facts if f.device}),
        "precisions": sorted({f.precision for f in facts}),
        "tiles_with_data": len(facts),
        "mean_cycle_rmse": float(np.mean([f.cycle_rmse for f in facts])) if facts else None,
        "iterations": {
            "min": int(np.min(iterations)),
            "median": float(np.median(iterations)),
            "max": int(np.max(iterations)),
        }
        if facts
        else None,
    }


def _consistency_facts(blender: _Blender, plan: RunPlan) -> dict[str, Any] | None:
    """The tag's record of the projection, logged; None without it."""
    if not blender.exact:
        return None
    units = plan.inputs.source.units[plan.inputs.band - 1] if plan.inputs.source.units else ""
    log.info(
        "exact consistency: every fully valid %dx%d block of the output averages to its "
        "source pixel within %.3g%s (as stored, %s)",
        plan.grid.scale, plan.grid.scale, blender.largest_error,
        f" {units}" if units else "", plan.encoding.dtype,
    )
    return {"mode": "exact", "largest_block_error": blender.largest_error}


def _report_counts(counts: EncodeCounts, encoding: OutputEncoding) -> None:
    if counts.clipped:
        lo, hi = encoding.physical_range()
        log.warning(
            "%d valid output pixels were outside what %s holds (%.6g to %.6g) and were clipped",
            counts.clipped,
            encoding.dtype,
            lo,
            hi,
        )
    if counts.moved_off_nodata:
        log.warning(
            "%d valid output pixels were predicted exactly as the nodata value %g and were "
            "moved one step off it (choose another --nodata to avoid this)",
            counts.moved_off_nodata,
            encoding.nodata,
        )
