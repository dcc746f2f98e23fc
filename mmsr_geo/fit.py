"""Per-image self-supervised fit: a fresh MMSR network optimised on one LR source + HR guide.

There is no training data: the network's HR prediction, average-pooled by the scale, is pulled
towards the LR source with an L1 cycle-consistency loss (paper eq. 5), with Adam at lr 0.002
decayed x0.9998 every 5 iterations and weight decay 5e-4 on the guide branch (section 4.1).

:func:`fit_many` optimises one independent network per pair in a single batched step (grouped
convolutions, :class:`~mmsr_geo.model.GroupedConv2d`): Adam is elementwise, so one Adam over
the stacked parameters with the pairs' losses *summed* makes the same updates as one Adam per
pair, and each result equals what :func:`fit` gives for that pair and seed (to float
round-off: a grouped convolution sums in its own order). On a GPU this is what fills the
device: one 320 x 320 tile is far too little work for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .consistency import DEFAULT_CONSISTENCY, check_consistency, project_consistent
from .devices import resolve_device
from .errors import InputError
from .fit_config import FitConfig, resolve_precision
from .model import MMSRNet
from .normalisation import Normalisation
from .pair_inputs import NormalisedPair, normalised_pair
from .training import (
    make_optimiser,
    new_network,
    precision_mode,
    predict,
    residual_base,
    training_step,
)

ProgressCallback = Callable[[int, int, float], None]
"""Called after every iteration with (iterations done, iterations in all, loss)."""


@dataclass(frozen=True)
class FitResult:
    """The HR prediction and how well it reproduces the LR source."""

    prediction: np.ndarray
    """(H, W) float32 in the source's units."""
    cycle_rmse: float
    """RMSE between the average-pooled prediction and the LR source, valid pixels, source units."""
    final_loss: float
    """Last L1 cycle loss, in normalised units."""
    seconds: float
    """Wall time of the fit (of the whole batch, for :func:`fit_many`)."""
    device: str
    precision: str = "fp32"
    """The precision it ran in (resolved: fp32, tf32 or bf16)."""
    iterations: int = 0
    """Iterations it ran."""


def fit_many(
    sources: Sequence[np.ndarray],
    guides: Sequence[np.ndarray],
    scale: int,
    config: FitConfig | None = None,
    *,
    masks: Sequence[np.ndarray | None] | None = None,
    stats: Sequence[Normalisation | None] | None = None,
    seeds: Sequence[int] | None = None,
    progress: ProgressCallback | None = None,
    observe: Callable[[int, list[np.ndarray]], None] | None = None,
    observe_every: int = 50,
    init: Mapping[str, torch.Tensor] | None = None,
) -> list[FitResult]:
    """Optimise one network per (source, guide) pair, all pairs in one batched step.

    Every pair must have the same shapes (tiles of one size). Result i equals
    ``fit(sources[i], guides[i], scale, replace(config, seed=seeds[i]), mask=masks[i],
    stats=stats[i])`` up to float round-off (see the module docstring).

    Args:
        sources, guides: (h, w) LR sources and (C, H, W) HR guides, H = scale*h, W = scale*w.
        scale, config: as for :func:`fit`.
        masks, stats: one per pair (None entries: all valid / the pair's own statistics).
        seeds: one per pair; default ``config.seed`` for all.
        progress: called after every iteration with (done, total, mean loss over the pairs);
            the loss is read from the device every 10 iterations and at the end.
        observe: called every ``observe_every`` iterations with (iterations done, the HR
            predictions of the pairs in source units, as the fit would return them if it
            stopped there without averaging): how quality evolves (benchmarks/quality.py).
        init: weights every pair's network starts from (a raster network, for a short
            per-tile fit: :func:`mmsr_geo.raster_fit.finetune_many`); None: fresh networks
            from the seeds (a residual fit's last convolution at zero).
    """
    config = config or FitConfig()
    n = len(sources)
    if n == 0 or len(guides) != n:
        raise InputError(
            f"fit_many needs as many guides as sources (>= 1), got {n} and {len(guides)}"
        )
    masks = list(masks) if masks is not None else [None] * n
    stats = list(stats) if stats is not None else [None] * n
    seeds = list(seeds) if seeds is not None else [config.seed] * n
    if not len(masks) == len(stats) == len(seeds) == n:
        raise InputError("masks, stats and seeds need one entry per pair")
    pairs = [
        normalised_pair(s, g, scale, m, st)
        for s, g, m, st in zip(sources, guides, masks, stats, strict=True)
    ]
    shapes = {(p.lr.shape, p.guide.shape) for p in pairs}
    if len(shapes) != 1:
        raise InputError(f"fit_many needs pairs of one shape, got {sorted(shapes)}")
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    started = time.perf_counter()

    layout = torch.channels_last if n == 1 else torch.contiguous_format
    lr = torch.from_numpy(np.stack([p.lr for p in pairs])[:, None]).to(device)
    guide = torch.from_numpy(np.stack([p.guide for p in pairs])).to(device)
    guide = guide.contiguous(memory_format=layout)
    weight = torch.from_numpy(np.stack([p.valid for p in pairs])[:, None].astype(np.float32))
    weight = weight.to(device)
    n_valid = weight.sum(dim=(1, 2, 3))

    networks = [new_network(config, guide.shape[1], seed) for seed in seeds]
    for network in networks:
        if init is not None:
            network.load_state_dict(init)
        elif config.residual != "none":  # the fit starts exactly at the upsampling
            torch.nn.init.zeros_(network.head[-1].weight)
            torch.nn.init.zeros_(network.head[-1].bias)
    model = networks[0] if n == 1 else MMSRNet.stacked(networks)
    model = model.to(device=device, memory_format=layout)
    optimiser, schedule = make_optimiser(model, config)
    base = residual_base(lr, scale, config.residual)

    def denormalised(batch: torch.Tensor) -> list[np.ndarray]:
        values = batch[:, 0].cpu().numpy().astype(np.float64)
        return [
            v * p.stats.source_std + p.stats.source_mean
            for v, p in zip(values, pairs, strict=True)
        ]

    loss_value = float("nan")
    # The prediction a step computes is the previous step's result, so summing those of the
    # last ``average_last - 1`` steps and adding the final one averages the last results.
    total: torch.Tensor | None = None
    first_averaged = config.iterations - config.average_last + 1
    with precision_mode(precision, device):
        for iteration in range(config.iterations):
            loss, seen = training_step(
                model, optimiser, lr, guide, weight, n_valid, scale, precision, base
            )
            schedule.step()
            done = iteration + 1
            if config.average_last > 1 and iteration >= first_averaged:
                total = seen.clone() if total is None else total + seen
            if progress is not None or done == config.iterations:
                if done % 10 == 0 or done == config.iterations or done == 1:
                    loss_value = float(loss)
                if progress is not None:
                    progress(done, config.iterations, loss_value)
            if observe is not None and done % observe_every == 0:
                observe(done, denormalised(predict(model, lr, guide, base, precision)))
        prediction = predict(model, lr, guide, base, precision)
        if total is not None:
            prediction = (total + prediction) / config.average_last
    return results_of(
        pairs, prediction, scale, seconds=time.perf_counter() - started, device=device,
        precision=precision, iterations=config.iterations, loss=loss_value,
    )


def results_of(
    pairs: Sequence[NormalisedPair],
    prediction: torch.Tensor,
    scale: int,
    *,
    seconds: float,
    device: torch.device,
    precision: str,
    iterations: int,
    loss: float,
) -> list[FitResult]:
    """The (B, 1, H, W) normalised ``prediction`` of ``pairs`` as results in source units,
    each with its cycle RMSE against its own LR source."""
    cycle = F.avg_pool2d(prediction, scale)
    predictions = prediction[:, 0].cpu().numpy().astype(np.float64)
    pooled = cycle[:, 0].cpu().numpy().astype(np.float64)
    results = []
    for i, pair in enumerate(pairs):
        hr = predictions[i] * pair.stats.source_std + pair.stats.source_mean
        back = pooled[i] * pair.stats.source_std + pair.stats.source_mean
        errors = back[pair.valid] - pair.source[pair.valid]
        results.append(
            FitResult(
                prediction=hr.astype(np.float32),
                cycle_rmse=float(np.sqrt(np.mean(errors**2))),
                final_loss=loss,
                seconds=seconds,
                device=str(device),
                precision=precision,
                iterations=iterations,
            )
        )
    return results


def fit(
    source: np.ndarray,
    guide: np.ndarray,
    scale: int,
    config: FitConfig | None = None,
    *,
    mask: np.ndarray | None = None,
    stats: Normalisation | None = None,
    progress: ProgressCallback | None = None,
    observe: Callable[[int, list[np.ndarray]], None] | None = None,
    observe_every: int = 50,
) -> FitResult:
    """Optimise a fresh MMSR network on one pair and return its HR prediction.

    Args:
        source: (h, w) LR source (DEM, depth, thermal ...), any real dtype.
        guide: (C, H, W) HR guide with H = scale*h, W = scale*w.
        scale: integer factor >= 2.
        config: iterations, kernels, optimiser settings, seed, device and precision.
        mask: (h, w) bool, True where the source is valid. Invalid pixels are left out of the
            loss and filled (inverse-distance, GDAL's fillnodata) before entering the network.
        stats: z-score statistics to use instead of this pair's own (tiles of one raster
            share the whole raster's so that neighbouring tiles agree).
        progress: called after every iteration with (done, total, loss).
        observe, observe_every: see :func:`fit_many`.
    """
    config = config or FitConfig()
    return fit_many(
        [source],
        [guide],
        scale,
        config,
        masks=[mask],
        stats=[stats],
        seeds=[config.seed],
        progress=progress,
        observe=observe,
        observe_every=observe_every,
    )[0]


def super_resolve(
    source: np.ndarray,
    guide: np.ndarray,
    scale: int,
    *,
    iterations: int = 1000,
    mask: np.ndarray | None = None,
    s2g_kernel: int = 11,
    g2s_kernel: int = 5,
    features: int = 64,
    device: str = "auto",
    seed: int = 0,
    progress: ProgressCallback | None = None,
    consistency: str = DEFAULT_CONSISTENCY,
) -> np.ndarray:
    """Super-resolve an (h, w) source by ``scale`` with a (C, H, W) guide; returns (H, W) float32.

    The defaults are the paper's depth settings (1000 iterations, kernels 11/5); use
    ``s2g_kernel=5, g2s_kernel=3`` (the "remote-sensing" preset) for DEMs and thermal imagery.
    With ``consistency="exact"`` every block of the result averages to its valid source pixel
    (:mod:`mmsr_geo.consistency`). Same seed and device give the same result.
    """
    check_consistency(consistency)
    config = FitConfig(
        iterations=iterations,
        s2g_kernel=s2g_kernel,
        g2s_kernel=g2s_kernel,
        features=features,
        seed=seed,
        device=device,
    )
    prediction = fit(source, guide, scale, config, mask=mask, progress=progress).prediction
    if consistency == "off":
        return prediction
    source = np.asarray(source, dtype=np.float64)
    valid = np.isfinite(source) if mask is None else np.asarray(mask, dtype=bool)
    everywhere = np.ones(prediction.shape, dtype=bool)
    return project_consistent(prediction, everywhere, source, valid, scale).astype(np.float32)
