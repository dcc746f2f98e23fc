"""Self-validation one scale down: let the data choose how to fit.

Which strategy fits best depends on the data (BENCHMARKS.md, "Quality vs iterations"): a fit
that starts from bicubic wins on smooth DEMs and loses on depth maps with sharp edges; a GIS
user cannot know in advance which kind a raster is. The one thing known at run time is the LR
source itself, so it plays the reference: the source and the guide are average-pooled by the
scale once more, every candidate super-resolves that smaller pair back to the source's
resolution, and the candidate that reproduces the source best is used for the real fit. Each
candidate costs about 1/scale² of a fit; bicubic is a candidate too, so the score also says
what gain over bicubic to expect.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .degradation import average_pool, bicubic_upsample
from .fit import fit
from .fit_config import FitConfig
from .metrics import rmse
from .normalisation import Normalisation, fill_invalid
from .strategies import Schedule, strategy

MIN_SIDE = 8
"""Smallest side (source pixels / scale) of the pooled pair worth validating on."""

SWITCH_MARGIN = 0.05
"""How much lower (relative RMSE) another candidate must score than the first one to be
picked. The first candidate is the kernels' safe choice
(:data:`~mmsr_geo.strategies.AUTO_FIRST`; for DEMs the residual start, which begins at
bicubic); one scale down the pair is small (11 x 9 pixels for the RMNP DEM at x4) and
differences of a few percent there are noise: on that DEM ``cosine-avg`` scored 2.2 % lower
one scale down and was 18 % worse at the real scale (42.26 vs 35.78 m; BENCHMARKS.md,
"Quality vs iterations")."""


@dataclass(frozen=True)
class Choice:
    """The strategy self-validation picked, and every candidate's score."""

    strategy: str
    scores: dict[str, float] = field(default_factory=dict)
    """RMSE (source units) of each candidate reproducing the source from the pooled pair;
    "bicubic" is bicubic upsampling."""

    def gain_text(self) -> str:
        """The expected gain as words: "about 18% below bicubic", "about as good as
        bicubic", or "about 3% above bicubic (worse)"."""
        return gain_words(self.expected_gain)

    @property
    def expected_gain(self) -> float | None:
        """1 - RMSE(choice) / RMSE(bicubic), one scale down: the gain over bicubic to expect."""
        bicubic = self.scores.get("bicubic")
        if not bicubic or self.strategy not in self.scores:
            return None
        return 1.0 - self.scores[self.strategy] / bicubic


def gain_words(gain: float | None) -> str:
    """1 - RMSE / RMSE(bicubic) as words a user reads right (a negative gain is a loss)."""
    if gain is None:
        return "no estimate against bicubic"
    percent = round(100 * gain)
    if percent == 0:
        return "about as good as bicubic"
    if percent > 0:
        return f"about {percent}% below bicubic"
    return f"about {-percent}% above bicubic (worse)"


def self_validate(
    source: np.ndarray,
    guide: np.ndarray,
    scale: int,
    base: FitConfig,
    candidates: Sequence[str],
    *,
    mask: np.ndarray | None = None,
    stats: Normalisation | None = None,
    iterations: int | None = None,
    margin: float = SWITCH_MARGIN,
) -> Choice | None:
    """Score ``candidates`` (strategy names) one scale down and pick one (:func:`pick`).

    Args:
        source: (h, w) LR source; guide: (C, scale*h, scale*w) HR guide.
        base: kernels, features, seed, device and precision of the candidates' fits.
        mask: (h, w) valid source pixels.
        stats: the raster's normalisation, shared with the real fit.
        iterations: each candidate's budget (default: the strategy's own).
        margin: see :data:`SWITCH_MARGIN`.

    Returns None when the pooled pair would be smaller than :data:`MIN_SIDE` pixels a side
    (nothing sensible to validate on).
    """
    h, w = source.shape
    h2, w2 = (h // scale) * scale, (w // scale) * scale
    if min(h2, w2) // scale < MIN_SIDE:
        return None
    valid = np.ones((h, w), bool) if mask is None else np.asarray(mask, bool)
    reference = np.where(valid, source, np.nan)[:h2, :w2].astype(np.float64)
    valid = valid[:h2, :w2]
    small = average_pool(reference, scale)
    small_valid = np.isfinite(small)
    if small_valid.sum() < MIN_SIDE * MIN_SIDE:
        return None
    small_guide = average_pool(
        np.asarray(guide, np.float64)[:, : h2 * scale, : w2 * scale], scale
    )
    small = np.where(small_valid, small, 0.0)
    scores: dict[str, float] = {}
    filled = fill_invalid(small, small_valid)
    scores["bicubic"] = rmse(bicubic_upsample(filled, scale), reference, valid)
    for name in candidates:
        config = strategy(name).config(base, iterations)
        result = fit(
            small,
            small_guide.astype(np.float32),
            scale,
            config,
            mask=None if small_valid.all() else small_valid,
            stats=stats,
        )
        scores[name] = rmse(result.prediction, reference, valid)
    return Choice(strategy=pick(scores, candidates, margin), scores=scores)


def choose_auto(
    source: np.ndarray,
    guide: np.ndarray,
    scale: int,
    schedule: Schedule,
    *,
    mask: np.ndarray | None = None,
    stats: Normalisation | None = None,
) -> Choice:
    """The ``auto`` schedule's decision: its candidates
    (:attr:`~mmsr_geo.strategies.Schedule.candidates`, the kernels' safe choice first) scored
    one scale down at the schedule's budget, or, for a source too small to validate on, that
    safe choice (:attr:`~mmsr_geo.strategies.Schedule.fallback`; no scores)."""
    choice = self_validate(
        source, guide, scale, schedule.base, schedule.candidates, mask=mask, stats=stats,
        iterations=schedule.iterations,
    )
    return choice or Choice(strategy=schedule.fallback)


def pick(scores: dict[str, float], candidates: Sequence[str], margin: float = SWITCH_MARGIN) -> str:
    """The first candidate, unless another scores more than ``margin`` lower (the lowest)."""
    best = min(candidates, key=lambda name: scores[name])
    first = candidates[0]
    return best if scores[best] < (1.0 - margin) * scores[first] else first
