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

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .devices import resolve_device
from .errors import InputError
from .model import MMSRNet
from .normalisation import Normalisation, fill_invalid, normalisation_stats
from .presets import preset_kernels

ProgressCallback = Callable[[int, int, float], None]
"""Called after every iteration with (iterations done, iterations in all, loss)."""


PRECISIONS = ("auto", "fp32", "tf32", "bf16")
"""fp32: full float32 everywhere; tf32: float32 with TensorFloat-32 convolutions and matrix
products on GPUs that have them (the default on CUDA); bf16: bfloat16 autocast for the
convolutions and filters, float32 master weights, optimiser and loss; auto: tf32 on CUDA,
fp32 elsewhere."""


SCHEDULES = ("paper", "cosine")
RESIDUALS = ("none", "bicubic", "bilinear")


@dataclass(frozen=True)
class FitConfig:
    """Everything that decides the result of a fit (recorded in output provenance tags).

    The default kernels are the "remote-sensing" preset (5/3), the one ``mmsr-geo`` uses for
    rasters; use ``FitConfig.from_preset("depth")`` for the paper's depth settings (11/5).
    """

    iterations: int = 1000
    s2g_kernel: int = 5
    g2s_kernel: int = 3
    features: int = 64
    learning_rate: float = 0.002
    lr_decay: float = 0.9998
    decay_every: int = 5
    guide_weight_decay: float = 5e-4
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    schedule: str = "paper"
    """Learning-rate schedule: "paper" (x``lr_decay`` every ``decay_every`` iterations) or
    "cosine" (linear warm-up over the first 5% of the iterations to ``learning_rate``, then
    a cosine down to zero at the last iteration: the budget is spent converging)."""
    residual: str = "none"
    """"none": the network predicts the HR source (the paper); "bicubic" / "bilinear": it
    predicts a correction to the bicubic / bilinear upsampling of the LR source, its last
    convolution starting at zero, so the fit starts from that upsampling's quality."""
    average_last: int = 0
    """Average the predictions of the last this many iterations (0: the last one alone)."""

    @classmethod
    def from_preset(cls, preset: str, **settings: Any) -> FitConfig:
        """The configuration of a named preset's kernels ("depth", "remote-sensing") with the
        other ``settings`` (iterations, seed, device, ...)."""
        kernels = preset_kernels(preset)
        return cls(s2g_kernel=kernels.s2g, g2s_kernel=kernels.g2s, **settings)

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise InputError(f"iterations must be >= 1, got {self.iterations}")
        for name in ("s2g_kernel", "g2s_kernel"):
            k = getattr(self, name)
            if k < 1 or k % 2 == 0:
                raise InputError(f"{name} must be a positive odd integer, got {k}")
        if self.features < 1:
            raise InputError(f"features must be >= 1, got {self.features}")
        if self.precision not in PRECISIONS:
            raise InputError(
                f"unknown precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}"
            )
        if self.schedule not in SCHEDULES:
            raise InputError(
                f"unknown schedule {self.schedule!r}: choose one of {', '.join(SCHEDULES)}"
            )
        if self.residual not in RESIDUALS:
            raise InputError(
                f"unknown residual {self.residual!r}: choose one of {', '.join(RESIDUALS)}"
            )
        if not 0 <= self.average_last <= self.iterations:
            raise InputError(
                f"average_last must be between 0 and the iterations, got {self.average_last}"
            )


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a fit on ``device`` runs in ("auto": tf32 on CUDA, fp32 elsewhere; tf32
    means fp32 off CUDA, where there is no TensorFloat-32)."""
    if precision == "auto":
        return "tf32" if device.type == "cuda" else "fp32"
    if precision == "tf32" and device.type != "cuda":
        return "fp32"
    return precision


@contextlib.contextmanager
def precision_mode(precision: str, device: torch.device) -> Iterator[None]:
    """Set torch's TensorFloat-32 switches for a resolved ``precision`` while a fit runs, and
    restore them (cuDNN allows TF32 by default: "fp32" must switch it off)."""
    if device.type != "cuda":
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = (
        precision == "tf32"
    )
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def _autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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


def make_optimiser(
    model: MMSRNet, config: FitConfig
) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.LRScheduler]:
    """Adam with weight decay on the guide branch only, and the configured schedule (the
    paper's step decay by default); call the schedule's ``step()`` after every iteration."""
    guide_params = list(model.guide_branch.parameters())
    guide_ids = {id(p) for p in guide_params}
    other_params = [p for p in model.parameters() if id(p) not in guide_ids]
    optimiser = torch.optim.Adam(
        [
            {"params": guide_params, "weight_decay": config.guide_weight_decay},
            {"params": other_params, "weight_decay": 0.0},
        ],
        lr=config.learning_rate,
    )
    if config.schedule == "cosine":
        total = config.iterations
        warm = max(1, total // 20)

        def factor(done: int) -> float:
            if done < warm:
                return (done + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * (done - warm + 1) / max(1, total - warm)))

        schedule: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.LambdaLR(
            optimiser, factor
        )
    else:
        schedule = torch.optim.lr_scheduler.StepLR(
            optimiser, step_size=config.decay_every, gamma=config.lr_decay
        )
    return optimiser, schedule


def training_step(
    model: MMSRNet,
    optimiser: torch.optim.Optimizer,
    source_lr: torch.Tensor,
    guide: torch.Tensor,
    weight: torch.Tensor,
    n_valid: torch.Tensor,
    scale: int,
    precision: str = "fp32",
    base: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One iteration: masked L1 between the average-pooled prediction and the LR source, per
    pair (``n_valid`` holds each pair's valid pixel count); the pairs' losses are summed for
    the gradient. ``base`` (an upsampling of the source) is added to the network's output for
    a residual fit. Returns the mean loss (0-d; reading it waits for the device) and the
    prediction the loss was computed on (before the update, detached)."""
    optimiser.zero_grad(set_to_none=True)
    with _autocast(precision, source_lr.device):
        prediction = model(source_lr, guide)
    prediction = prediction.float() if base is None else prediction.float() + base
    cycle = F.avg_pool2d(prediction, scale)
    per_pair = ((cycle - source_lr).abs() * weight).sum(dim=(1, 2, 3)) / n_valid
    per_pair.sum().backward()
    optimiser.step()
    return per_pair.detach().mean(), prediction.detach()


def _check_inputs(
    source: np.ndarray, guide: np.ndarray, scale: int, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not isinstance(scale, (int, np.integer)) or isinstance(scale, bool) or scale < 2:
        raise InputError(f"scale must be an integer >= 2, got {scale!r}")
    source = np.asarray(source)
    guide = np.asarray(guide)
    if source.ndim != 2:
        raise InputError(f"source must be a 2-D (h, w) array, got shape {source.shape}")
    if guide.ndim == 2:
        guide = guide[None]
    if guide.ndim != 3:
        raise InputError(f"guide must be a (C, H, W) or (H, W) array, got shape {guide.shape}")
    h, w = source.shape
    if guide.shape[1:] != (scale * h, scale * w):
        raise InputError(
            f"guide is {guide.shape[1]}x{guide.shape[2]} but a x{scale} source of {h}x{w} "
            f"needs a {scale * h}x{scale * w} guide"
        )
    if mask is None:
        valid = np.ones((h, w), dtype=bool)
    else:
        valid = np.asarray(mask, dtype=bool)
        if valid.shape != (h, w):
            raise InputError(f"mask must have the source's shape {(h, w)}, got {valid.shape}")
    if not valid.any():
        raise InputError("the mask leaves no valid source pixel")
    if not np.isfinite(source[valid]).all():
        raise InputError(
            "source has NaN or infinite values at valid pixels: pass a mask that excludes them"
        )
    if not np.isfinite(guide).all():
        raise InputError("guide has NaN or infinite values: fill or mask them first")
    return source.astype(np.float64), guide.astype(np.float32), valid


@dataclass(frozen=True)
class _Pair:
    """One pair, checked and z-scored, as float32 arrays ready for the device."""

    source: np.ndarray
    valid: np.ndarray
    stats: Normalisation
    lr: np.ndarray
    guide: np.ndarray


def _normalised(
    source: np.ndarray,
    guide: np.ndarray,
    scale: int,
    mask: np.ndarray | None,
    stats: Normalisation | None,
) -> _Pair:
    source, guide, valid = _check_inputs(source, guide, scale, mask)
    if stats is None:
        stats = normalisation_stats(source, guide, valid)
    elif len(stats.guide_mean) != guide.shape[0]:
        raise InputError(
            f"stats describe {len(stats.guide_mean)} guide bands, the guide has {guide.shape[0]}"
        )
    lr = (fill_invalid(source, valid) - stats.source_mean) / stats.source_std
    mean = stats.guide_mean_array()[:, None, None]
    std = stats.guide_std_array()[:, None, None]
    guide_z = ((guide - mean) / std).astype(np.float32)
    return _Pair(source, valid, stats, lr.astype(np.float32), guide_z)


def _network(config: FitConfig, guide_channels: int, seed: int) -> MMSRNet:
    """A fresh network, initialised from ``seed`` without touching the global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MMSRNet(
            guide_channels=guide_channels,
            s2g_kernel=config.s2g_kernel,
            g2s_kernel=config.g2s_kernel,
            features=config.features,
        )


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
) -> list[FitResult]:
    """Optimise one fresh network per (source, guide) pair, all pairs in one batched step.

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
        _normalised(s, g, scale, m, st)
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

    networks = [_network(config, guide.shape[1], seed) for seed in seeds]
    if config.residual != "none":
        for network in networks:  # the fit starts exactly at the upsampling
            last = network.head[-1]
            torch.nn.init.zeros_(last.weight)
            torch.nn.init.zeros_(last.bias)
    model = networks[0] if n == 1 else MMSRNet.stacked(networks)
    model = model.to(device=device, memory_format=layout)
    optimiser, schedule = make_optimiser(model, config)
    base = _upsampled(lr, scale, config.residual)

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
                observe(done, denormalised(_predict(model, lr, guide, base, precision)))
        prediction = _predict(model, lr, guide, base, precision)
        if total is not None:
            prediction = (total + prediction) / config.average_last
        cycle = F.avg_pool2d(prediction, scale)
    seconds = time.perf_counter() - started
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
                final_loss=loss_value,
                seconds=seconds,
                device=str(device),
                precision=precision,
                iterations=config.iterations,
            )
        )
    return results


def _upsampled(lr: torch.Tensor, scale: int, residual: str) -> torch.Tensor | None:
    """The upsampling a residual fit adds its network's output to (None: not residual)."""
    if residual == "none":
        return None
    return F.interpolate(lr, scale_factor=scale, mode=residual, align_corners=False)


def _predict(
    model: MMSRNet,
    lr: torch.Tensor,
    guide: torch.Tensor,
    base: torch.Tensor | None,
    precision: str,
) -> torch.Tensor:
    with torch.no_grad(), _autocast(precision, lr.device):
        prediction = model(lr, guide).float()
    return prediction if base is None else prediction + base


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
) -> np.ndarray:
    """Super-resolve an (h, w) source by ``scale`` with a (C, H, W) guide; returns (H, W) float32.

    The defaults are the paper's depth settings (1000 iterations, kernels 11/5); use
    ``s2g_kernel=5, g2s_kernel=3`` (the "remote-sensing" preset) for DEMs and thermal imagery.
    Same seed and device give the same result.
    """
    config = FitConfig(
        iterations=iterations,
        s2g_kernel=s2g_kernel,
        g2s_kernel=g2s_kernel,
        features=features,
        seed=seed,
        device=device,
    )
    return fit(source, guide, scale, config, mask=mask, progress=progress).prediction
