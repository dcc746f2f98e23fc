"""mmsr-geo: self-supervised guided super-resolution of geospatial rasters with MMSR.

``super_resolve`` works on numpy arrays; the raster-level entry points live in
:mod:`mmsr_geo.run`.
"""

from ._version import __version__
from .fit import FitResult, fit, fit_many, super_resolve
from .fit_config import FitConfig
from .model import MMSRNet
from .normalisation import Normalisation, normalisation_stats
from .presets import PRESETS, preset_kernels

__all__ = [
    "PRESETS",
    "FitConfig",
    "FitResult",
    "MMSRNet",
    "Normalisation",
    "__version__",
    "fit",
    "fit_many",
    "normalisation_stats",
    "preset_kernels",
    "super_resolve",
]
