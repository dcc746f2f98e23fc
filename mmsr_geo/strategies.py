"""Named fitting strategies: how a fit spends its iterations (schedule, residual start,
averaging), as data.

``paper`` is the paper's fit, exactly (1000 iterations, the step decay); the others are the
candidates measured by ``benchmarks/quality.py`` (BENCHMARKS.md, "Quality vs iterations"),
sized to an iteration budget.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import InputError
from .fit_config import FitConfig


@dataclass(frozen=True)
class Strategy:
    """A way to fit: the settings it changes, and its iteration budget by default."""

    description: str
    iterations: int
    schedule: str = "paper"
    residual: str = "none"
    learning_rate: float = 0.002
    average_fraction: float = 0.0
    """Share of the budget's last iterations whose predictions are averaged."""

    def config(self, base: FitConfig, iterations: int | None = None) -> FitConfig:
        """``base`` (kernels, features, seed, device, precision) with this strategy's
        settings, for ``iterations`` (default: the strategy's budget)."""
        budget = iterations or self.iterations
        return dataclasses.replace(
            base,
            iterations=budget,
            schedule=self.schedule,
            residual=self.residual,
            learning_rate=self.learning_rate,
            average_last=int(round(self.average_fraction * budget)),
        )


STRATEGIES: dict[str, Strategy] = {
    "paper": Strategy("the paper's fit: step decay x0.9998 every 5 iterations, lr 0.002", 1000),
    "cosine": Strategy("cosine schedule from lr 0.002 down to 0 at the budget", 300, "cosine"),
    "cosine-avg": Strategy(
        "cosine schedule, predictions of the last 20% averaged", 300, "cosine",
        average_fraction=0.2,
    ),
    "cosine-hi": Strategy(
        "cosine schedule from a higher peak, lr 0.004", 300, "cosine", learning_rate=0.004
    ),
    "cosine-hi-avg": Strategy(
        "cosine from lr 0.004, predictions of the last 20% averaged", 300, "cosine",
        learning_rate=0.004, average_fraction=0.2,
    ),
    "residual": Strategy(
        "bicubic + the network's correction (last convolution starting at zero), paper "
        "schedule", 300, residual="bicubic",
    ),
    "residual-cosine": Strategy(
        "bicubic + correction, cosine schedule", 300, "cosine", residual="bicubic"
    ),
    "residual-bilinear-cosine": Strategy(
        "bilinear + correction, cosine schedule", 300, "cosine", residual="bilinear"
    ),
}


AUTO = "auto"
AUTO_CANDIDATES: tuple[str, ...] = ("residual-cosine", "cosine-avg")
"""What ``auto`` chooses between, one scale down (:mod:`mmsr_geo.selection`; the order of
the remote-sensing kernels, :func:`auto_candidates` gives each kernels' own), both sized to
``auto``'s budget: a fit that starts from bicubic (wins on the RMNP DEM) and a fit from
scratch (wins on depth maps with sharp edges and on the synthetic cliffs). The fit from
scratch uses a cosine schedule with its last iterates averaged, not the paper's decay cut
short: the paper's curve is noisy (one Middlebury crop: RMSE 1.83, 2.09, 1.99 at 400, 450,
500 iterations, 1.68 at 1000), and cut at 300 or 500 iterations it was worse than
``cosine-avg`` on every dataset but one image (BENCHMARKS.md, "Quality vs iterations")."""
AUTO_ITERATIONS = {(11, 5): 1000}
"""``auto``'s budget by kernels: depth maps (11/5) get the paper's 1000. At 500, half of it,
the default averaged +0.9 % against the paper's fit on the 10 held-out Middlebury crops but
was above it by more than 5 % on two (crop 36 +14 % on two seeds' means); at 1000 it averaged
-3.5 % with no crop above +4.1 % (BENCHMARKS.md, "Seed spread"). Everything else gets
:data:`AUTO_DEFAULT_ITERATIONS`."""
AUTO_DEFAULT_ITERATIONS = 300


AUTO_FIRST = {(11, 5): "cosine-avg"}
"""``auto``'s safe choice by kernels (default: the first of :data:`AUTO_CANDIDATES`): the
candidate it keeps unless another scores :data:`~mmsr_geo.selection.SWITCH_MARGIN` lower one
scale down, and the one it uses when the source is too small to validate on (e.g. a 20 x 20
source at x8). With the depth kernels (11/5) it is the fit from scratch: on every tuning
depth pair the residual start stayed near bicubic at the real scale (Middlebury x4, 500
iterations: 01_1 1.142 vs ``cosine-avg`` 0.694, 026 3.824 vs 1.691, 02_4 3.374 vs 2.037;
01_1 x8 1.480 vs 1.094), so a residual fit picked on a few percent one scale down costs up
to 2x the error (held-out pair 36: 4.9 % apart one scale down, 2.68 against about 1.3 at the
real scale). On the RMNP DEM the residual start is the safe one (``cosine-avg`` scored 2.2 %
lower one scale down at x4 and was 18 % worse)."""


def auto_candidates(base: FitConfig) -> tuple[str, ...]:
    """:data:`AUTO_CANDIDATES` with the kernels' safe choice (:data:`AUTO_FIRST`) first."""
    first = AUTO_FIRST.get((base.s2g_kernel, base.g2s_kernel), AUTO_CANDIDATES[0])
    return (first, *(name for name in AUTO_CANDIDATES if name != first))


def auto_fallback(base: FitConfig) -> str:
    """``auto``'s strategy when it cannot choose from the data: the kernels' safe choice."""
    return auto_candidates(base)[0]


def auto_budget(base: FitConfig, iterations: int | None = None) -> int:
    """The iterations of ``auto``'s candidates and fit: as asked, else by kernels."""
    if iterations is not None:
        return iterations
    return AUTO_ITERATIONS.get((base.s2g_kernel, base.g2s_kernel), AUTO_DEFAULT_ITERATIONS)


CUSTOM = "custom"
"""A :class:`FitConfig` used exactly as given."""
SCHEDULES = (AUTO, *STRATEGIES)


def resolve_schedule(
    config: FitConfig | None, schedule: str | None, iterations: int | None = None
) -> tuple[str, FitConfig]:
    """(schedule, configuration) of a request.

    No config and no schedule: ``auto`` (the tool's default). A config without a schedule is
    used exactly (``custom``; ``iterations`` must then be None: the config has its own). A
    strategy name sizes the config's other settings (kernels, features, seed, device,
    precision) to that strategy, for ``iterations`` or the strategy's budget. ``auto`` returns
    the base configuration: the strategy is chosen later, from the data.
    """
    base = config or FitConfig()
    if schedule is None:
        if config is not None:
            if iterations is not None:
                raise InputError("give the iterations in the FitConfig, or name a schedule")
            return CUSTOM, config
        schedule = AUTO
    if schedule == AUTO:
        return AUTO, base
    return schedule, strategy(schedule).config(base, iterations)


@dataclass(frozen=True)
class Schedule:
    """A request's schedule, resolved as far as it can be before the data is seen: the one
    step from (config, schedule, iterations) to the configuration a fit uses, for the
    pipeline, ``evaluate``, the command line and the benchmarks alike.

    ``name`` is ``custom``, a strategy name or ``auto``; ``base`` is the configuration
    :func:`resolve_schedule` returns (for ``auto`` the kernels, features, seed, device and
    precision only: the strategy is chosen later); ``budget`` the iterations asked for.
    """

    name: str
    base: FitConfig
    budget: int | None = None

    @classmethod
    def resolve(
        cls, config: FitConfig | None, schedule: str | None, iterations: int | None = None
    ) -> Schedule:
        name, base = resolve_schedule(config, schedule, iterations)
        return cls(name, base, iterations)

    @property
    def is_auto(self) -> bool:
        return self.name == AUTO

    @property
    def iterations(self) -> int:
        """Iterations of each fit (and, for ``auto``, of each candidate one scale down)."""
        return auto_budget(self.base, self.budget) if self.is_auto else self.base.iterations

    @property
    def candidates(self) -> tuple[str, ...]:
        """``auto``'s candidates, the kernels' safe choice first (:func:`auto_candidates`)."""
        return auto_candidates(self.base)

    @property
    def fallback(self) -> str:
        """``auto``'s strategy when the data is too small to choose from."""
        return auto_fallback(self.base)

    def config(self, chosen: str | None = None) -> FitConfig:
        """The fit's configuration: for ``auto``, the ``chosen`` strategy's at ``auto``'s
        budget (``chosen`` None: the base, as nothing is chosen yet); otherwise the base."""
        if self.is_auto and chosen is not None:
            return strategy(chosen).config(self.base, self.iterations)
        return self.base


def strategy(name: str) -> Strategy:
    """A strategy by name, with a clear error for an unknown one."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise InputError(
            f"unknown schedule {name!r}: choose one of {', '.join(SCHEDULES)}"
        ) from None
