"""The optimisation primitives every fit shares: precision switches, the network, Adam with
the paper's weight decay and the configured schedule, one cycle-consistency step, and the
prediction (plus the upsampling a residual fit adds to).

The per-image fit (:mod:`mmsr_geo.fit`) and the raster-level training on crops
(:mod:`mmsr_geo.raster_fit`) are both loops over :func:`training_step`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from .fit_config import FitConfig
from .model import MMSRNet


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


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast for a "bf16" fit, nothing otherwise."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
    reduction: str = "sum",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One iteration: masked L1 between the average-pooled prediction and the LR source, per
    pair (``n_valid`` holds each pair's valid pixel count). The pairs' losses are summed for
    the gradient (``reduction="sum"``: independent networks, each pair's gradient its own
    loss's) or averaged (``"mean"``: one network on many crops, a step's size independent of
    how many crops it holds). ``base`` (an upsampling of the source) is added to the network's
    output for a residual fit. Returns the mean loss (0-d; reading it waits for the device)
    and the prediction the loss was computed on (before the update, detached)."""
    optimiser.zero_grad(set_to_none=True)
    with autocast(precision, source_lr.device):
        prediction = model(source_lr, guide)
    prediction = prediction.float() if base is None else prediction.float() + base
    cycle = F.avg_pool2d(prediction, scale)
    per_pair = ((cycle - source_lr).abs() * weight).sum(dim=(1, 2, 3)) / n_valid
    (per_pair.sum() if reduction == "sum" else per_pair.mean()).backward()
    optimiser.step()
    return per_pair.detach().mean(), prediction.detach()


def new_network(config: FitConfig, guide_channels: int, seed: int) -> MMSRNet:
    """A fresh network, initialised from ``seed`` without touching the global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MMSRNet(
            guide_channels=guide_channels,
            s2g_kernel=config.s2g_kernel,
            g2s_kernel=config.g2s_kernel,
            features=config.features,
            level_sigma=config.level_sigma,
        )


def residual_base(lr: torch.Tensor, scale: int, residual: str) -> torch.Tensor | None:
    """The upsampling a residual fit adds its network's output to (None: not residual)."""
    if residual == "none":
        return None
    return F.interpolate(lr, scale_factor=scale, mode=residual, align_corners=False)


def predict(
    model: MMSRNet,
    lr: torch.Tensor,
    guide: torch.Tensor,
    base: torch.Tensor | None,
    precision: str,
) -> torch.Tensor:
    with torch.no_grad(), autocast(precision, lr.device):
        prediction = model(lr, guide).float()
    return prediction if base is None else prediction + base
