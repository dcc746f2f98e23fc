"""One network for a whole raster: optimised on crops sampled across it, then applied to every
tile in a forward pass.

The paper fits a network per *image*; tiles are only a memory device, and fitting every tile
from scratch makes the cost area x iterations. The network is fully convolutional, so one
network can be optimised with the same cycle-consistency loss on crops drawn from the whole
raster (each step a few crops, all normalised with the raster's statistics) and then predict
every tile. The training's cost is fixed by its budget (:class:`CropBudget`: steps x crops
per step x crop pixels), whatever the raster's area; applying it costs one forward pass per
output pixel. A short per-tile fit started from the trained weights (:func:`finetune_many`,
the "hybrid" mode) gives each tile back some of what a full per-tile fit learns.

Everything here works on arrays (no files), so it runs wherever torch does; where the crops
come from is the run's business (:mod:`mmsr_geo.run.crops`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .devices import resolve_device
from .errors import InputError
from .fit import FitResult, ProgressCallback, fit_many, results_of
from .fit_config import FitConfig, resolve_precision
from .levels import detail_gain
from .model import MMSRNet
from .network_weights import NetworkWeights, weights_of
from .normalisation import Normalisation, normalisation_stats
from .pair_inputs import normalised_pair
from .training import (
    make_optimiser,
    new_network,
    precision_mode,
    predict,
    residual_base,
    training_step,
)

CROP_OUTPUT_PIXELS = 96
"""A crop's side in *output* pixels by default: 24 source pixels at x4, 48 at x2. Crops of 64
to 128 output pixels came within 1-2 % of the per-image fit on the RMNP DEM and a second real
pair (issue 21's table); smaller crops give the 11 x 11 depth filters too little context."""
TRAINING_STEPS_FACTOR = 3
"""The raster network trains for this many times the strategy's iterations (900 at the
default 300): a step sees 2 crops of 96 x 96 output pixels, less than one tile fit sees, and
the training's cost does not grow with the area. RMNP DEM x2 (the whole image predicted by a
network trained on its crops): 300 steps 13.07 m, 600 12.80, 900 12.68, 1200 12.62, against
12.51 for the per-tile fit of 9 tiles and 12.97 for one fit of the whole image."""
CROPS_PER_STEP = 2
"""Crops in every optimisation step (issue 21: 2 crops a step were within 0.5-1.2 % of the
per-image fit, 1 crop a step within 1.5-3.5 %; on the RMNP DEM x2, 4 crops a step gave no
more than 2: 13.16 against 13.07 m at 300 steps)."""
FINETUNE_LR_FACTOR = 0.03
"""A hybrid tile's fine-tune runs at this share of the strategy's learning rate: Adam's first
steps move every weight by about the learning rate whatever the gradient, and at the full
0.002 thirty steps undid the raster network (RMNP x4: 44.1 m against 35.5 m)."""
POOL = 512
"""Crops sampled from one raster: several per tile on a raster of few tiles, tiles spread over
the tile plan on one of more, so that crops come from every part of it, while reading and
holding them stays bounded (512 crops of 96 x 96 output pixels with a 3-band guide: 94 MB).
Every crop counts: the same 900 steps drawn from 512 crops instead of 32 (one per tile, the
earlier rule) gave 4.196 against 4.359 on the 16-tile Middlebury mosaic and 35.84 against
37.41 m on the RMNP DEM x4 (BENCHMARKS.md, "Fit modes")."""


def default_crop_size(scale: int) -> int:
    """A crop's side in source pixels: about :data:`CROP_OUTPUT_PIXELS` output pixels, at
    least 8 source pixels (so the crop has a cycle loss worth the name)."""
    return max(8, math.ceil(CROP_OUTPUT_PIXELS / scale))


@dataclass(frozen=True)
class CropBudget:
    """How much a raster-level training costs: ``steps`` optimisation steps on
    ``crops_per_step`` crops of ``crop_size`` x ``crop_size`` source pixels, drawn from
    ``pool`` crops sampled across the raster. Fixed, whatever the raster's area."""

    steps: int
    crop_size: int
    crops_per_step: int = CROPS_PER_STEP
    pool: int = POOL
    level_sigma: float = 0.0
    """> 0: a network from scratch works around the source's local level
    (:mod:`mmsr_geo.levels`, :data:`~mmsr_geo.levels.LEVEL_SIGMA` is the measured choice);
    0: the paper's network."""

    def __post_init__(self) -> None:
        if self.level_sigma < 0:
            raise InputError(f"level sigma must be >= 0, got {self.level_sigma}")
        for name in ("steps", "crop_size", "crops_per_step", "pool"):
            value = getattr(self, name)
            if value < 1:
                raise InputError(f"{name.replace('_', ' ')} must be >= 1, got {value}")

    def output_pixel_iterations(self, scale: int) -> int:
        """Output pixels times iterations the training costs (a per-tile fit of a 256 x 256
        tile for 300 iterations costs 19.7 M)."""
        return self.steps * self.crops_per_step * (self.crop_size * scale) ** 2


def default_budget(iterations: int, scale: int, *, level_sigma: float = 0.0) -> CropBudget:
    """The training budget of a schedule of ``iterations``: :data:`TRAINING_STEPS_FACTOR` x
    that many steps of :data:`CROPS_PER_STEP` crops of :func:`default_crop_size`."""
    return CropBudget(
        steps=TRAINING_STEPS_FACTOR * iterations, crop_size=default_crop_size(scale),
        level_sigma=level_sigma,
    )


@dataclass(frozen=True)
class Crop:
    """One training crop: an LR source window, where it enters the loss, and its guide."""

    source: np.ndarray
    """(h, w) LR source values (anything where not valid)."""
    valid: np.ndarray
    """(h, w) bool: source pixels that enter the loss (valid source, guide and AOI)."""
    guide: np.ndarray
    """(C, scale*h, scale*w) float32 guide, holes filled."""


def train_network(
    crops: Sequence[Crop],
    scale: int,
    config: FitConfig,
    budget: CropBudget,
    stats: Normalisation,
    *,
    progress: ProgressCallback | None = None,
) -> NetworkWeights:
    """Optimise one network on ``crops`` for ``budget.steps`` steps of
    ``budget.crops_per_step`` crops each.

    Every step draws the next crops of a shuffled order of all crops (reshuffled when it runs
    out, seeded by ``config.seed``), so every crop is used about equally. The loss is the mean
    over the step's crops of the masked L1 cycle loss; Adam, weight decay, learning-rate
    schedule and residual start are ``config``'s, with ``config.iterations`` replaced by the
    budget's steps. With ``config.average_last`` the weights of the last that many steps are
    averaged (the per-tile fit averages predictions; one network averages its weights). With
    ``budget.level_sigma`` a network from scratch (residual none) works around the local
    level (:mod:`mmsr_geo.levels`), its detail scaled by the spread of the crops' detail.
    """
    if not crops:
        raise InputError("no crop with data to train on: the raster has no valid pixel")
    shapes = {(c.source.shape, c.guide.shape) for c in crops}
    if len(shapes) != 1:
        raise InputError(f"crops of one shape are needed, got {sorted(shapes)}")
    config = _sized(_levelled(config, budget.level_sigma), budget.steps)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    started = time.perf_counter()
    pairs = [normalised_pair(c.source, c.guide, scale, c.valid, stats) for c in crops]
    lr = torch.from_numpy(np.stack([p.lr for p in pairs])[:, None]).to(device)
    guide = torch.from_numpy(np.stack([p.guide for p in pairs])).to(device)
    weight = torch.from_numpy(np.stack([p.valid for p in pairs])[:, None].astype(np.float32))
    weight = weight.to(device)
    n_valid = weight.sum(dim=(1, 2, 3))
    base = residual_base(lr, scale, config.residual)

    model = new_network(config, guide.shape[1], config.seed)
    if config.residual != "none":  # the training starts exactly at the upsampling
        torch.nn.init.zeros_(model.head[-1].weight)
        torch.nn.init.zeros_(model.head[-1].bias)
    if config.level_sigma > 0:
        model.detail_gain.fill_(detail_gain(lr, weight, config.level_sigma))
    model = model.to(device)
    optimiser, schedule = make_optimiser(model, config)
    order = _crop_order(len(crops), budget, config.seed)
    averaged: dict[str, torch.Tensor] | None = None
    first_averaged = config.iterations - config.average_last
    loss_value = float("nan")
    with precision_mode(precision, device):
        for step in range(config.iterations):
            picked = torch.from_numpy(order[step])
            loss, _ = training_step(
                model, optimiser, lr[picked], guide[picked], weight[picked], n_valid[picked],
                scale, precision, None if base is None else base[picked], reduction="mean",
            )
            schedule.step()
            done = step + 1
            if done % 10 == 0 or done == config.iterations or done == 1:
                loss_value = float(loss)
            if progress is not None:
                progress(done, config.iterations, loss_value)
            if config.average_last > 1 and step >= first_averaged:
                averaged = _accumulate(averaged, model)
    if averaged is not None:
        model.load_state_dict({k: v / config.average_last for k, v in averaged.items()})
    return weights_of(
        model, guide.shape[1], config, config.iterations, started, loss_value, device
    )


def _levelled(config: FitConfig, sigma: float) -> FitConfig:
    """``config`` with the local level split of ``sigma`` for a network from scratch (a
    residual start already works around the upsampled source: it keeps ``config``'s)."""
    if config.residual != "none" or sigma == 0:
        return config
    return dataclasses.replace(config, level_sigma=sigma)


def _sized(config: FitConfig, steps: int) -> FitConfig:
    """``config`` for ``steps`` iterations, its averaged share kept."""
    fraction = config.average_last / config.iterations
    return dataclasses.replace(
        config, iterations=steps, average_last=int(round(fraction * steps))
    )


def _crop_order(crops: int, budget: CropBudget, seed: int) -> np.ndarray:
    """(steps, crops per step) crop indices: consecutive draws from shuffled orders of all
    crops (a step never holds one crop twice while there are enough crops)."""
    rng = np.random.default_rng(seed)
    per_step = min(budget.crops_per_step, crops)
    needed = budget.steps * per_step
    draws: list[np.ndarray] = []
    while sum(len(d) for d in draws) < needed:
        draws.append(rng.permutation(crops))
    return np.concatenate(draws)[:needed].reshape(budget.steps, per_step)


def _accumulate(total: dict[str, torch.Tensor] | None, model: MMSRNet) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    if total is None:
        return {k: v.detach().clone().float() for k, v in state.items()}
    for k, v in state.items():
        total[k] += v.detach().float()
    return total


def predict_many(
    weights: NetworkWeights,
    sources: Sequence[np.ndarray],
    guides: Sequence[np.ndarray],
    scale: int,
    config: FitConfig,
    *,
    masks: Sequence[np.ndarray | None],
    stats: Sequence[Normalisation],
) -> list[FitResult]:
    """The trained network's HR prediction of every (source, guide) pair of one shape, in one
    forward pass (no optimisation: ``iterations`` 0 in the results). ``config`` gives the
    device and precision; the kernels and residual start are the weights' own."""
    started = time.perf_counter()
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    pairs = [
        normalised_pair(s, g, scale, m, st)
        for s, g, m, st in zip(sources, guides, masks, stats, strict=True)
    ]
    model = weights.network(device)
    lr = torch.from_numpy(np.stack([p.lr for p in pairs])[:, None]).to(device)
    guide = torch.from_numpy(np.stack([p.guide for p in pairs])).to(device)
    base = residual_base(lr, scale, weights.config.residual)
    with precision_mode(precision, device):
        prediction = predict(model, lr, guide, base, precision)
    return results_of(
        pairs, prediction, scale, seconds=time.perf_counter() - started, device=device,
        precision=precision, iterations=0, loss=float("nan"),
    )


def finetune_many(
    weights: NetworkWeights,
    sources: Sequence[np.ndarray],
    guides: Sequence[np.ndarray],
    scale: int,
    config: FitConfig,
    *,
    masks: Sequence[np.ndarray | None],
    stats: Sequence[Normalisation],
    seeds: Sequence[int],
    progress: ProgressCallback | None = None,
) -> list[FitResult]:
    """A short per-tile fit of every pair started from the trained weights (each pair its own
    copy, in one batched step, as :func:`~mmsr_geo.fit.fit_many`): ``config`` gives the
    iterations and schedule; kernels, features and residual start are the weights' own."""
    tuned = dataclasses.replace(
        config,
        s2g_kernel=weights.config.s2g_kernel,
        g2s_kernel=weights.config.g2s_kernel,
        features=weights.config.features,
        residual=weights.config.residual,
        level_sigma=weights.config.level_sigma,
        learning_rate=config.learning_rate * FINETUNE_LR_FACTOR,
    )
    return fit_many(
        sources, guides, scale, tuned, masks=masks, stats=stats, seeds=seeds,
        progress=progress, init=weights.state_dict(),
    )


def array_crops(
    source: np.ndarray,
    guide: np.ndarray,
    scale: int,
    budget: CropBudget,
    *,
    mask: np.ndarray | None = None,
    seed: int = 0,
) -> list[Crop]:
    """Up to ``budget.pool`` crops of an in-memory pair, stratified over a grid of cells that
    covers it (one crop at a random position in each cell; a crop with under a quarter of
    its pixels valid is left out); the whole pair when it is smaller than a crop."""
    h, w = source.shape
    valid = np.ones((h, w), bool) if mask is None else np.asarray(mask, bool)
    ch, cw = min(budget.crop_size, h), min(budget.crop_size, w)
    rng = np.random.default_rng(seed)
    cells = math.ceil(math.sqrt(budget.pool))
    rows = np.linspace(0, h - ch, cells + 1)
    cols = np.linspace(0, w - cw, cells + 1)
    crops = []
    for i in range(cells):
        for j in range(cells):
            r = int(rng.integers(int(rows[i]), int(rows[i + 1]) + 1))
            c = int(rng.integers(int(cols[j]), int(cols[j + 1]) + 1))
            crop_valid = valid[r : r + ch, c : c + cw]
            if crop_valid.mean() < 0.25:
                continue
            crops.append(
                Crop(
                    source=source[r : r + ch, c : c + cw],
                    valid=crop_valid,
                    guide=guide[:, r * scale : (r + ch) * scale, c * scale : (c + cw) * scale],
                )
            )
    return crops[: budget.pool]


def fit_raster(
    source: np.ndarray,
    guide: np.ndarray,
    scale: int,
    config: FitConfig,
    *,
    budget: CropBudget | None = None,
    finetune: int = 0,
    mask: np.ndarray | None = None,
    stats: Normalisation | None = None,
    progress: ProgressCallback | None = None,
) -> FitResult:
    """The raster-level fit of an in-memory pair, for numpy users and the evaluation
    protocol: one network trained on crops of it (:func:`array_crops`, ``budget`` by default
    :func:`default_budget`), then its prediction of the whole pair, or with ``finetune`` > 0
    that many iterations of a fit of the whole pair started from it (the hybrid mode)."""
    checked = normalised_pair(source, guide, scale, mask, stats)
    budget = budget or default_budget(config.iterations, scale)
    crops = array_crops(
        checked.source, np.asarray(guide, np.float32).reshape(checked.guide.shape), scale,
        budget, mask=checked.valid, seed=config.seed,
    )
    stats = stats or normalisation_stats(checked.source, guide, checked.valid)
    weights = train_network(crops, scale, config, budget, stats, progress=progress)
    mask_arg = None if checked.valid.all() else checked.valid
    if finetune > 0:
        tuned = dataclasses.replace(
            config, iterations=finetune, average_last=min(config.average_last, finetune)
        )
        (result,) = finetune_many(
            weights, [checked.source], [guide], scale, tuned, masks=[mask_arg], stats=[stats],
            seeds=[config.seed],
        )
    else:
        (result,) = predict_many(
            weights, [checked.source], [guide], scale, config, masks=[mask_arg], stats=[stats]
        )
    return dataclasses.replace(result, seconds=weights.seconds + result.seconds)
