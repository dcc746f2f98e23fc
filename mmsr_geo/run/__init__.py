"""One raster's run, as a line of stages, each in its own module:

``request`` (what was asked) -> ``plan`` (validated, frozen) -> ``statistics`` ->
``choose`` (the strategy, once) -> ``fit_stage`` (tiles, through any executor, checkpointed)
-> ``write`` (blended block by block into the output); ``execute`` runs the line.
"""

from .execute import UpscaleReport, execute, upscale_raster
from .plan import RunPlan, check_output_free, plan_run
from .request import FIT_MODES, UpscaleRequest, default_output_path, template_request

__all__ = [
    "FIT_MODES",
    "RunPlan",
    "UpscaleReport",
    "UpscaleRequest",
    "check_output_free",
    "default_output_path",
    "execute",
    "plan_run",
    "template_request",
    "upscale_raster",
]
