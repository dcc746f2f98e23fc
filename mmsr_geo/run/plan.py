"""The plan stage: validate everything a run needs before any work, and freeze it.

:func:`plan_run` opens the inputs (files, bands, scale, overlap), reads the AOI, checks every
output-side option (output and preview names, creation options, data type), lays out the
tiles and builds the one :class:`~mmsr_geo.settings.RunSettings` that identifies the result.
Anything wrong is an :class:`~mmsr_geo.errors.InputError` here, with nothing written. The
:class:`RunPlan` it returns is frozen: the later stages (choose, fit, write) read it and
return values of their own, never fill it in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shapely.geometry.base import BaseGeometry

from ..aoi import read_aoi
from ..checkpoints import work_dir_for
from ..confidence import CONFIDENCE_NODATA, confidence_path
from ..consistency import check_consistency
from ..errors import InputError, OutputExistsError, OverlapError
from ..grid import OutputGrid
from ..guide import AlignedGuide
from ..memory import default_overlap, default_tile_size
from ..raster_io import band_encoding, is_remote, remote_name
from ..registration import REGISTER_MODES
from ..settings import InputFile, RunSettings, input_file
from ..strategies import Schedule
from ..tiling import Tile, TilePlan, plan_tiles, tile_intersects
from ..writer import (
    DTYPES,
    OutputEncoding,
    choose_nodata,
    is_float,
    output_profile,
    validate_profile,
)
from ..writer import creation_options as gdal_creation_options
from .inputs import Inputs, open_inputs
from .request import FIT_MODES, UpscaleRequest

OUTPUT_SUFFIXES = (".tif", ".tiff")
PREVIEW_SUFFIXES = (".png",)


@dataclass(frozen=True)
class BandOutput:
    """The uncertainty band's GeoTIFF (``--confidence``): where, and how it is written (float32,
    nodata :data:`~mmsr_geo.confidence.CONFIDENCE_NODATA`, the output's creation options)."""

    path: Path
    profile: Mapping[str, Any]
    cog_options: Mapping[str, str] | None


@dataclass(frozen=True)
class RunPlan:
    """A validated request with its inputs open: everything the later stages share.

    Use as a context manager (or call :meth:`close`) to close the files.
    """

    request: UpscaleRequest
    output: Path
    preview: Path | None
    confidence: BandOutput | None
    """The uncertainty band's GeoTIFF (None: not asked for)."""
    inputs: Inputs
    aoi: BaseGeometry | None
    """The AOI in the output CRS (None: everywhere)."""
    schedule: Schedule
    tiles: TilePlan
    encoding: OutputEncoding
    settings: RunSettings
    profile: Mapping[str, Any]
    """The output's GTiff profile."""
    cog_options: Mapping[str, str] | None
    """The COG driver's options (None: a plain tiled GeoTIFF)."""
    _files: contextlib.ExitStack

    @property
    def grid(self) -> OutputGrid:
        return self.inputs.grid

    @property
    def work_dir(self) -> Path:
        return work_dir_for(self.output)

    def in_aoi(self, tile: Tile) -> bool:
        """Whether the tile touches the AOI (every tile without one): the tiles that are
        read, fitted, sampled for crops and counted in the fit mode's cost."""
        return tile_intersects(tile, self.aoi, self.grid.lr_transform)

    def with_guide(self, guide: AlignedGuide) -> RunPlan:
        """This plan reading the guide through ``guide`` (closed with the plan): the
        registration stage's corrected guide."""
        self._files.enter_context(guide)
        return dataclasses.replace(self, inputs=dataclasses.replace(self.inputs, guide=guide))

    def close(self) -> None:
        self._files.close()

    def __enter__(self) -> RunPlan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def plan_run(request: UpscaleRequest) -> RunPlan:
    """Open and validate everything a run needs, before any tile is fitted.

    Raises :class:`~mmsr_geo.errors.InputError` (and subclasses) for anything wrong with the
    inputs or the output-side options; nothing is written.
    """
    output = request.output_path()
    preview = Path(request.preview) if request.preview is not None else None
    schedule = Schedule.resolve(request.config, request.schedule, request.iterations)
    confidence = confidence_path(output) if request.confidence else None
    _check_output_side(request, output, preview, confidence)
    files = contextlib.ExitStack()
    try:
        return _plan(request, output, preview, confidence, schedule, files)
    except BaseException:
        files.close()
        raise


def _plan(
    request: UpscaleRequest,
    output: Path,
    preview: Path | None,
    confidence: Path | None,
    schedule: Schedule,
    files: contextlib.ExitStack,
) -> RunPlan:
    inputs = open_inputs(
        files, request.source, request.guide, request.scale, request.band, request.guide_bands
    )
    grid = inputs.grid
    aoi_record, aoi = None, None
    if request.aoi is not None:
        area = read_aoi(request.aoi)  # a file is read and a URL fetched once, here
        aoi_record, aoi = area.record(), area.geometry(grid.crs)
        if not aoi.intersects(inputs.common):
            raise OverlapError("the AOI does not overlap the area covered by source and guide")

    tile_size = request.tile_size or default_tile_size(grid.scale)
    overlap = (
        request.overlap if request.overlap is not None else default_overlap(grid.scale, tile_size)
    )
    tiles = plan_tiles(grid.lr_width, grid.lr_height, grid.scale, tile_size, overlap)
    encoding = _encoding(request, inputs)
    settings = RunSettings(
        source=_input_record(request.source, request.record_paths),
        band=inputs.band,
        guide=_input_record(request.guide, request.record_paths),
        guide_bands=inputs.guide_bands,
        scale=grid.scale,
        tile_size=tile_size,
        overlap=overlap,
        aoi=aoi_record,
        dtype=request.dtype,
        nodata=encoding.nodata,
        fit=schedule.base,
        schedule=schedule.name,
        budget=request.iterations,
        creation_options=tuple(sorted(request.creation_options.items())),
        cog=request.cog,
        fit_mode=request.fit_mode,
        register=request.register,
        consistency=request.consistency,
        confidence=request.confidence,
        raster_fit=(
            ("crop_size", request.crop_size),
            ("crops_per_step", request.crops_per_step),
            ("finetune", request.finetune),
            ("level_sigma", request.level_sigma),
        ),
    )
    profile, cog_options = _profiles(request, grid, request.dtype, encoding.nodata)
    band = (
        BandOutput(confidence, *_profiles(request, grid, "float32", CONFIDENCE_NODATA))
        if confidence is not None
        else None
    )
    return RunPlan(
        request=request,
        output=output,
        preview=preview,
        confidence=band,
        inputs=inputs,
        aoi=aoi,
        schedule=schedule,
        tiles=tiles,
        encoding=encoding,
        settings=settings,
        profile=profile,
        cog_options=cog_options,
        _files=files,
    )


def _profiles(
    request: UpscaleRequest, grid: OutputGrid, dtype: str, nodata: float
) -> tuple[dict[str, Any], dict[str, str] | None]:
    """A written raster's GTiff profile and COG driver options (None: a plain tiled GeoTIFF)
    from the request's creation options, checked."""
    gtiff = gdal_creation_options(dtype, None if request.cog else request.creation_options)
    profile = output_profile(grid, dtype, nodata, gtiff)
    cog_options = (
        gdal_creation_options(dtype, request.creation_options, cog=True) if request.cog else None
    )
    validate_profile(profile, cog_options)
    return profile, cog_options


def _check_output_side(
    request: UpscaleRequest, output: Path, preview: Path | None, confidence: Path | None
) -> None:
    """The output type, output, preview and confidence names: local, known suffixes, folders
    that exist, never an input; an existing preview or confidence band only with
    ``overwrite``."""
    _check_fit_mode(request)
    if request.register not in REGISTER_MODES:
        raise InputError(
            f"unknown --register {request.register!r}: choose one of {', '.join(REGISTER_MODES)}"
        )
    check_consistency(request.consistency)
    if request.dtype not in DTYPES:
        raise InputError(
            f"unsupported output dtype {request.dtype!r}: choose one of {', '.join(DTYPES)}"
        )
    inputs = [request.source, request.guide]
    for what, path in (("output", request.output), ("preview", request.preview)):
        if path is not None and is_remote(path):
            raise InputError(
                f"the {what} {os.fspath(path)} must be a local file: mmsr-geo reads URLs and GDAL "
                "paths but writes local files (copy the result where it should go)"
            )
    _check_path_option(output, "output", OUTPUT_SUFFIXES)
    if any(_same_file(output, p) for p in inputs):
        raise InputError(f"the output {output} would overwrite an input")
    if preview is not None:
        _check_path_option(preview, "preview", PREVIEW_SUFFIXES)
        if any(_same_file(preview, p) for p in [*inputs, output]):
            raise InputError(f"the preview {preview} would overwrite an input or the output")
    for what, path in (("preview", preview), ("confidence band", confidence)):
        if path is None:
            continue
        if what == "confidence band" and any(_same_file(path, p) for p in inputs):
            raise InputError(f"the {what} {path} would overwrite an input")
        if os.path.lexists(path) and not request.overwrite:
            raise OutputExistsError(f"{_existing(path)}: use --overwrite to replace it")
    for what, path in (("output", output), ("preview", preview)):
        if path is not None:
            _check_writable(path.parent, what)


def _check_fit_mode(request: UpscaleRequest) -> None:
    """The fit mode and the raster-level settings that go with it."""
    if request.fit_mode not in FIT_MODES:
        raise InputError(
            f"unknown fit mode {request.fit_mode!r}: choose one of {', '.join(FIT_MODES)}"
        )
    raster = {"crop size": request.crop_size, "crops per step": request.crops_per_step}
    for what, value in [*raster.items(), ("fine-tune iterations", request.finetune)]:
        if value is not None and value < 1:
            raise InputError(f"the {what} must be >= 1, got {value}")
    if request.fit_mode == "tile" and any(v is not None for v in raster.values()):
        raise InputError("a crop size or crops per step is for --fit raster, hybrid or auto")
    if request.level_sigma is not None:
        if request.level_sigma <= 0:
            raise InputError(f"the level sigma must be > 0, got {request.level_sigma}")
        if request.fit_mode == "tile":
            raise InputError("a level sigma is for --fit raster, hybrid or auto")
    if request.finetune is not None and request.fit_mode not in ("hybrid", "auto"):
        raise InputError("fine-tune iterations are for --fit hybrid (or auto)")


def _check_path_option(path: Path, what: str, suffixes: Sequence[str]) -> None:
    """A file name the option can write: a known suffix (an output may have none), not a
    folder, in a folder that exists."""
    if path.suffix.lower() not in suffixes and not (what == "output" and not path.suffix):
        raise InputError(
            f"the {what} {path} must end in {' or '.join(suffixes)}"
            + (": mmsr-geo writes GeoTIFFs" if what == "output" else "")
        )
    if path.is_dir():
        raise InputError(f"the {what} {path} is a directory")
    if not path.parent.is_dir():
        raise InputError(f"the {what}'s folder {path.parent} does not exist")


def _check_writable(folder: Path, what: str) -> None:
    """The folder takes a new file: one is made and removed, since permissions alone do not
    tell (root writes anywhere the mode says, but not in an immutable folder)."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".mmsr-check-"):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InputError(f"cannot write the {what} in {folder}: {reason}") from None


def _existing(path: Path) -> str:
    """How an existing path is named in a message (a link to nothing is one too)."""
    if path.is_symlink() and not path.exists():
        return f"{path} exists (a symbolic link to {os.readlink(path)}, which is missing)"
    return f"{path} exists"


def _same_file(a: Path, b: str | os.PathLike[str]) -> bool:
    if is_remote(b):
        return False
    return a.resolve() == Path(b).resolve()


def _input_record(path: str | os.PathLike[str], record_path: bool) -> InputFile:
    """A local input by name and content; a remote one by its address, as given (its bytes
    are not downloaded just to be hashed, so a remote file changed in place is not noticed).

    The address is recorded as a hash unless the paths are asked for: like a local folder, a
    host, bucket or signed query string is not written into every output.
    """
    if is_remote(path):
        text = os.fspath(path)
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()
        return InputFile(
            name=remote_name(text) or text,
            fingerprint=f"address:{digest}",
            path=text if record_path else None,
        )
    return input_file(path, record_path)


def _encoding(request: UpscaleRequest, inputs: Inputs) -> OutputEncoding:
    """Output type, nodata and (for an integer output of a scaled source) scale and offset."""
    source_nodata = inputs.source.nodatavals[inputs.band - 1]
    scale, offset = band_encoding(inputs.source, inputs.band)
    keep_encoding = not is_float(request.dtype) and (scale, offset) != (1.0, 0.0)
    nodata = choose_nodata(source_nodata, request.dtype, request.nodata)
    if keep_encoding:
        return OutputEncoding(request.dtype, nodata, scale, offset)
    return OutputEncoding(request.dtype, nodata)


def check_output_free(plan: RunPlan) -> None:
    """An existing output is only replaced with ``overwrite``."""
    if os.path.lexists(plan.output) and not plan.request.overwrite:
        raise OutputExistsError(f"{_existing(plan.output)}: use --overwrite to replace it")
