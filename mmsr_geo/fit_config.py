"""The settings that decide a fit's result (recorded in every output's provenance tags).

:class:`FitConfig` is a value: kernels, features, optimiser, seed, device, precision and how
the iterations are spent. Everything that fits a network (one image, a batch of tiles, the
raster-level training) takes one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .errors import InputError
from .presets import preset_kernels

PRECISIONS = ("auto", "fp32", "tf32", "bf16")
"""fp32: full float32 everywhere; tf32: float32 with TensorFloat-32 convolutions and matrix
products on GPUs that have them (the default on CUDA); bf16: bfloat16 autocast for the
convolutions and filters, float32 master weights, optimiser and loss; auto: tf32 on CUDA,
fp32 elsewhere."""


LR_SCHEDULES = ("paper", "cosine")
"""Learning-rate schedules a fit can follow (the named strategies built on them are in
:mod:`mmsr_geo.strategies`)."""
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
    level_sigma: float = 0.0
    """0: the paper's network; > 0: the network works around the source's local level, a
    Gaussian mean of this sigma in source pixels (:mod:`mmsr_geo.levels`; the raster-level
    fit's networks from scratch)."""

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
        if self.schedule not in LR_SCHEDULES:
            raise InputError(
                f"unknown schedule {self.schedule!r}: choose one of {', '.join(LR_SCHEDULES)}"
            )
        if self.residual not in RESIDUALS:
            raise InputError(
                f"unknown residual {self.residual!r}: choose one of {', '.join(RESIDUALS)}"
            )
        if self.level_sigma < 0:
            raise InputError(f"level_sigma must be >= 0, got {self.level_sigma}")
        if self.level_sigma > 0 and self.residual != "none":
            raise InputError("a network around the local level starts from scratch: residual none")
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
