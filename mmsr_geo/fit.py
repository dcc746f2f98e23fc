"""Per-image self-supervised fit: a fresh MMSR network optimised on one LR source + HR guide.

There is no training data: the network's HR prediction, average-pooled by the scale, is pulled
towards the LR source with an L1 cycle-consistency loss (paper eq. 5), with Adam at lr 0.002
decayed x0.9998 every 5 iterations and weight decay 5e-4 on the guide branch (section 4.1).
"""

from __future__ import annotations

import time
from collections.abc import Callable
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
    device: str


def make_optimiser(
    model: MMSRNet, config: FitConfig
) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.StepLR]:
    """Adam with weight decay on the guide branch only, and the paper's step decay."""
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
) -> float:
    """One iteration: masked L1 between the average-pooled prediction and the LR source."""
    optimiser.zero_grad(set_to_none=True)
    prediction = model(source_lr, guide)
    cycle = F.avg_pool2d(prediction, scale)
    loss = ((cycle - source_lr).abs() * weight).sum() / n_valid
    loss.backward()
    optimiser.step()
    return float(loss.detach())


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


def fit(
    source: np.ndarray,
    guide: np.ndarray,
    scale: int,
    config: FitConfig | None = None,
    *,
    mask: np.ndarray | None = None,
    stats: Normalisation | None = None,
    progress: ProgressCallback | None = None,
) -> FitResult:
    """Optimise a fresh MMSR network on one pair and return its HR prediction.

    Args:
        source: (h, w) LR source (DEM, depth, thermal ...), any real dtype.
        guide: (C, H, W) HR guide with H = scale*h, W = scale*w.
        scale: integer factor >= 2.
        config: iterations, kernels, optimiser settings, seed and device.
        mask: (h, w) bool, True where the source is valid. Invalid pixels are left out of the
            loss and filled (inverse-distance, GDAL's fillnodata) before entering the network.
        stats: z-score statistics to use instead of this pair's own (tiles of one raster
            share the whole raster's so that neighbouring tiles agree).
        progress: called after every iteration with (done, total, loss).
    """
    config = config or FitConfig()
    source, guide, valid = _check_inputs(source, guide, scale, mask)
    if stats is None:
        stats = normalisation_stats(source, guide, valid)
    elif len(stats.guide_mean) != guide.shape[0]:
        raise InputError(
            f"stats describe {len(stats.guide_mean)} guide bands, the guide has {guide.shape[0]}"
        )
    device = resolve_device(config.device)
    started = time.perf_counter()

    source_z = (fill_invalid(source, valid) - stats.source_mean) / stats.source_std
    guide_z = (guide - stats.guide_mean_array()[:, None, None]) / stats.guide_std_array()[
        :, None, None
    ]
    lr = torch.from_numpy(source_z.astype(np.float32))[None, None].to(device)
    hr_guide = (
        torch.from_numpy(guide_z.astype(np.float32))[None]
        .to(device)
        .contiguous(memory_format=torch.channels_last)
    )
    weight = torch.from_numpy(valid.astype(np.float32))[None, None].to(device)
    n_valid = weight.sum()

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        model = MMSRNet(
            guide_channels=guide.shape[0],
            s2g_kernel=config.s2g_kernel,
            g2s_kernel=config.g2s_kernel,
            features=config.features,
        )
    model = model.to(device=device, memory_format=torch.channels_last)
    optimiser, schedule = make_optimiser(model, config)

    loss_value = float("nan")
    for iteration in range(config.iterations):
        loss_value = training_step(model, optimiser, lr, hr_guide, weight, n_valid, scale)
        schedule.step()
        if progress is not None:
            progress(iteration + 1, config.iterations, loss_value)

    with torch.no_grad():
        prediction = model(lr, hr_guide)
        cycle = F.avg_pool2d(prediction, scale)
    hr = prediction[0, 0].float().cpu().numpy().astype(np.float64)
    hr = hr * stats.source_std + stats.source_mean
    pooled = cycle[0, 0].float().cpu().numpy().astype(np.float64)
    pooled = pooled * stats.source_std + stats.source_mean
    cycle_rmse = float(np.sqrt(np.mean((pooled[valid] - source[valid]) ** 2)))
    return FitResult(
        prediction=hr.astype(np.float32),
        cycle_rmse=cycle_rmse,
        final_loss=loss_value,
        seconds=time.perf_counter() - started,
        device=str(device),
    )


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
