"""What a user asks of one run: the one request every entry point builds.

The command line (``upscale``, ``rio mmsr upscale``, each pair of ``batch``), the QGIS
algorithm (through the command line) and the Python API (:func:`mmsr_geo.run.upscale_raster`)
all describe a run as an :class:`UpscaleRequest`; ``batch`` makes one template request and
replaces its source, guide and output per pair. Nothing is opened or checked here: that is
the plan stage's work (:mod:`mmsr_geo.run.plan`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..consistency import DEFAULT_CONSISTENCY
from ..fit_config import FitConfig
from ..raster_io import is_remote, remote_name

FIT_MODES = ("auto", "tile", "raster", "hybrid")
"""How a raster's tiles get their network (:attr:`UpscaleRequest.fit_mode`)."""


@dataclass(frozen=True)
class UpscaleRequest:
    """What the user asked for, as given (``None`` means "choose for me")."""

    source: str | os.PathLike[str]
    """LR raster: a local path, a URL or a GDAL path (``/vsicurl/...``, ``s3://...``)."""
    guide: str | os.PathLike[str]
    """HR guide raster on any grid/CRS overlapping the source."""
    scale: int
    output: str | os.PathLike[str] | None = None
    """Local GeoTIFF to write; default ``<source stem>_x<scale>.tif``
    (:func:`default_output_path`)."""
    config: FitConfig | None = None
    """Fit settings (tile i uses seed ``config.seed + i``); None: the tool's default, i.e.
    :class:`FitConfig` with the ``auto`` schedule. Given without a ``schedule``, used exactly."""
    schedule: str | None = None
    """``auto`` (chosen per raster by self-validation one scale down, see
    :mod:`mmsr_geo.selection`), a strategy of :data:`mmsr_geo.strategies.STRATEGIES`
    (``paper``: the paper's exact fit), or None (see ``config``)."""
    iterations: int | None = None
    """Iterations for the schedule's strategy (None: its own budget)."""
    band: int | None = None
    """1-based source band (required if the source has several)."""
    guide_bands: tuple[int, ...] | None = None
    """1-based guide bands (default: all but alpha)."""
    tile_size: int | None = None
    """Tile edge in source pixels (default: about 256 output pixels)."""
    overlap: int | None = None
    """Overlap of neighbouring tiles in source pixels (default: about 32 output pixels)."""
    aoi: str | None = None
    """GeoJSON file or http(s) URL (EPSG:4326 unless it names a crs) or WKT (source CRS)."""
    dtype: str = "float32"
    nodata: float | None = None
    """Output nodata (default: the source's, else -9999 for floats)."""
    creation_options: Mapping[str, str] = field(default_factory=dict)
    cog: bool = False
    overwrite: bool = False
    preview: str | os.PathLike[str] | None = None
    """PNG quick-look to write after the output."""
    record_paths: bool = False
    """Record the inputs' full paths in the output's tags (file names only by default)."""
    batch_tiles: int | None = None
    """Tiles fitted together in one optimisation (default: 1 on the CPU, from the free memory
    on a GPU, see :func:`mmsr_geo.memory.default_batch_tiles`)."""
    fit_mode: str = "auto"
    """``tile`` (a network fitted to every tile), ``raster`` (one network trained on crops
    sampled across the raster, applied to every tile), ``hybrid`` (that network as the start
    of a short fit of every tile) or ``auto`` (chosen per raster from the cost, see
    :mod:`mmsr_geo.run.choose`)."""
    crop_size: int | None = None
    """Raster-level training: a crop's side in source pixels (default: about 96 output
    pixels, :func:`mmsr_geo.raster_fit.default_crop_size`)."""
    crops_per_step: int | None = None
    """Raster-level training: crops in every step (default 2)."""
    level_sigma: float | None = None
    """Raster-level training: the network works around the source's local level, a Gaussian
    mean of this sigma in source pixels (:mod:`mmsr_geo.levels`; default: off). Measured
    both ways: better on a mosaic of different scenes, worse on one DEM."""
    finetune: int | None = None
    """Hybrid mode: iterations of every tile's fit from the raster network (default: a tenth
    of the strategy's budget)."""
    register: str = "auto"
    """``auto``: find how far the guide's content is displaced from the source's and move it
    back when the estimate is trusted (:mod:`mmsr_geo.registration`); ``off``: use the guide
    as given."""
    consistency: str = DEFAULT_CONSISTENCY
    """``exact``: project the output so that every fully valid block averages to its source
    pixel (:mod:`mmsr_geo.consistency`); ``off``: the fit's output as it is."""

    confidence: bool = False
    """Also write the per-pixel uncertainty band (:mod:`mmsr_geo.confidence`) as
    ``<output stem>_confidence.tif`` on the output's grid."""

    def output_path(self) -> Path:
        if self.output is not None:
            return Path(self.output)
        return default_output_path(self.source, self.scale)


def default_output_path(source: str | os.PathLike[str], scale: int) -> Path:
    """``dem.tif`` -> ``dem_x4.tif`` beside a local source, in the current folder for a
    remote one (always a GeoTIFF)."""
    text = os.fspath(source)
    if is_remote(text):
        stem = Path(remote_name(text)).stem or "output"
        return Path.cwd() / f"{stem}_x{scale}.tif"
    path = Path(text)
    return path.with_name(f"{path.stem}_x{scale}.tif")


def template_request(scale: int, **fields: Any) -> UpscaleRequest:
    """A request for many pairs (``batch``): every other field as given, the source, guide
    and output replaced per pair."""
    return UpscaleRequest(source="", guide="", scale=scale, **fields)
