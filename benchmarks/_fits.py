"""The default fit of a benchmark case, fitted once and kept (``benchmarks/.fits/``, ignored by
git): the confidence and held-out benchmarks score the same fits without refitting."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from quality import Case

from mmsr_geo.evaluation import run_protocol
from mmsr_geo.fit_config import FitConfig

SAVED = Path(__file__).resolve().parent / ".fits"


def default_fit(case: Case, preset: str | None = None) -> dict[str, np.ndarray]:
    """``run_protocol`` of ``case`` as ``mmsr-geo evaluate --preset PRESET`` runs it (default:
    the case's preset; ``auto`` schedule, ``--register auto``) but for the projection
    (consistency off: callers project, so that both are scored): prediction, lr, reference,
    valid, bicubic, seconds, strategy, iterations."""
    preset = preset or case.preset
    path = SAVED / f"{case.dataset}-{case.name}-x{case.scale}-{preset}.npz"
    if not path.exists():
        SAVED.mkdir(exist_ok=True)
        started = time.perf_counter()
        run = run_protocol(case.reference, case.guide, case.scale,
                           FitConfig.from_preset(preset), schedule="auto", mask=case.mask,
                           name=case.name, consistency="off")
        np.savez_compressed(path, prediction=run.prediction, lr=run.lr,
                            reference=run.reference, valid=run.valid, bicubic=run.bicubic,
                            seconds=time.perf_counter() - started, strategy=run.strategy,
                            iterations=run.iterations)
    return dict(np.load(path))
