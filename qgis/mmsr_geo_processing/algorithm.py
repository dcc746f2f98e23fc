"""The Processing algorithm "Super-resolve raster with guide (MMSR)" (``mmsrgeo:upscale``).

Each parameter maps to one option of ``mmsr-geo upscale`` (docs/qgis.md has the table); the
tool runs in a subprocess (:mod:`.runner`), found as :mod:`.command` describes.

``--overwrite`` is always passed, for two reasons. Processing replaces an existing destination
(the output widget asks before choosing an existing file, and rerunning into the same file is
the usual way to try other settings), and a refusal would only come after the user waited
for every tile. And it does not defeat resuming: mmsr-geo reuses the checkpoints in
``OUTPUT.mmsr-work/`` whenever the settings that decide the pixels are the same, whatever
``--overwrite`` says; the flag only lets the finished file replace an existing one.
"""

from __future__ import annotations

import os
import shlex

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputRasterLayer,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProviderRegistry,
)

from .aoi import export_aoi
from .command import (
    CONSISTENCY_MODES,
    DEVICES,
    ENV_VAR,
    FIT_MODES,
    PRESETS,
    REGISTER_MODES,
    SCHEDULES,
    CommandNotFound,
    find_command,
)
from .runner import Canceled, RunFailed, run
from .style import style_uncertainty

HELP = f"""Super-resolves one band of a low-resolution raster (a DEM, DSM, thermal or depth \
map) by an integer scale, guided by a high-resolution image (RGB, multispectral) that may be \
on any grid or CRS. No training data: a small network is fitted to each tile (MMSR, Dong et \
al., ECCV 2022), which takes minutes per tile on a CPU; use a GPU or fewer iterations for a \
quick look.

The output is a GeoTIFF with the source's CRS and extent, pixels 'scale' times smaller, and \
the source's nodata value.

Runs the mmsr-geo command-line tool, installed separately with PyTorch. It is found in this \
order: the advanced parameter 'mmsr-geo command', the environment variable {ENV_VAR} (e.g. \
'/path/to/venv/bin/python -m mmsr_geo_cli'), then 'mmsr-geo' on PATH.

Canceling keeps every finished tile in OUTPUT.mmsr-work/ beside the output: run the \
algorithm again with the same parameters and output file to resume from them."""


class UpscaleAlgorithm(QgsProcessingAlgorithm):
    INPUT = "INPUT"
    BAND = "BAND"
    GUIDE = "GUIDE"
    GUIDE_BANDS = "GUIDE_BANDS"
    SCALE = "SCALE"
    PRESET = "PRESET"
    SCHEDULE = "SCHEDULE"
    FIT_MODE = "FIT_MODE"
    LEVEL_SIGMA = "LEVEL_SIGMA"
    REGISTER = "REGISTER"
    CONSISTENCY = "CONSISTENCY"
    CONFIDENCE = "CONFIDENCE"
    CONFIDENCE_OUTPUT = "CONFIDENCE_OUTPUT"
    ITERATIONS = "ITERATIONS"
    DEVICE = "DEVICE"
    AOI = "AOI"
    OUTPUT = "OUTPUT"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    FEATURES = "FEATURES"
    SEED = "SEED"
    COMMAND = "COMMAND"

    def name(self):
        return "upscale"

    def displayName(self):
        return "Super-resolve raster with guide (MMSR)"

    def shortHelpString(self):
        return HELP

    def tags(self):
        return ["super-resolution", "upscale", "dem", "dsm", "thermal", "guided", "mmsr"]

    def createInstance(self):
        return UpscaleAlgorithm()

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Low-resolution raster"))
        # optional: QGIS 3.22 refuses to run when a mandatory Band parameter is left out,
        # even one with a default; an optional one gets its default
        self.addParameter(
            QgsProcessingParameterBand(self.BAND, "Band", 1, self.INPUT, optional=True)
        )
        self.addParameter(QgsProcessingParameterRasterLayer(self.GUIDE, "Guide image"))
        self.addParameter(
            QgsProcessingParameterBand(
                self.GUIDE_BANDS,
                "Guide bands [default: all except alpha]",
                None,
                self.GUIDE,
                optional=True,
                allowMultiple=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.SCALE, "Scale factor", QgsProcessingParameterNumber.Integer, 2, minValue=2
            )
        )
        self.addParameter(QgsProcessingParameterEnum(self.PRESET, "Preset", PRESETS, False, 0))
        self.addParameter(
            QgsProcessingParameterEnum(
                self.SCHEDULE, "How to fit (schedule; auto: chosen from the data)", SCHEDULES,
                False, 0,
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                self.FIT_MODE,
                "Fit (tile: a network per tile; raster: one network for the raster, then a "
                "forward pass per tile; hybrid: it, fine-tuned per tile; auto: raster when "
                "that is 4x cheaper)",
                FIT_MODES,
                False,
                0,
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                self.REGISTER,
                "Guide registration (auto: find the guide's offset from the data and move it "
                "back when the estimate is trusted; off: use the guide as given)",
                REGISTER_MODES,
                False,
                0,
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                self.CONSISTENCY,
                "Source consistency (exact: every output block averages to its source pixel, "
                "as volumes and mass balance need, and RMSE drops 1-8 %; off: the fit's "
                "output as it is)",
                CONSISTENCY_MODES,
                False,
                0,
            )
        )
        self.addParameter(
            QgsProcessingParameterBoolean(
                self.CONFIDENCE,
                "Also write an uncertainty band (OUTPUT_confidence.tif beside the output, in "
                "the source's units: high where the guide moved the output far from "
                "interpolation, where errors concentrate; loaded with a colour ramp)",
                False,
            )
        )
        self.addOutput(QgsProcessingOutputRasterLayer(self.CONFIDENCE_OUTPUT, "Uncertainty band"))
        self.addParameter(
            QgsProcessingParameterNumber(
                self.ITERATIONS,
                "Iterations per tile or of the raster training [default: the schedule's: "
                "auto 300, 1000 with the depth preset; paper 1000]",
                QgsProcessingParameterNumber.Integer,
                optional=True,
                minValue=1,
            )
        )
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, "Device", DEVICES, False, 0))
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.AOI, "Area of interest", [QgsProcessing.TypeVectorPolygon], optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterRasterDestination(self.OUTPUT, "Super-resolved raster")
        )
        for parameter in (
            QgsProcessingParameterNumber(
                self.TILE_SIZE,
                "Tile size in source pixels [default: about 256 output pixels]",
                QgsProcessingParameterNumber.Integer,
                optional=True,
                minValue=4,
            ),
            QgsProcessingParameterNumber(
                self.OVERLAP,
                "Tile overlap in source pixels [default: about 32 output pixels]",
                QgsProcessingParameterNumber.Integer,
                optional=True,
                minValue=0,
            ),
            QgsProcessingParameterNumber(
                self.FEATURES,
                "Feature channels of the network",
                QgsProcessingParameterNumber.Integer,
                64,
                minValue=1,
            ),
            QgsProcessingParameterNumber(
                self.LEVEL_SIGMA,
                "Raster network: work around the source's local level, Gaussian sigma in "
                "source pixels (3 helped a raster of many different scenes and hurt a single "
                "DEM: compare on a reference area) [default: off]",
                QgsProcessingParameterNumber.Double,
                optional=True,
                minValue=0.01,
            ),
            QgsProcessingParameterNumber(
                self.SEED, "Random seed", QgsProcessingParameterNumber.Integer, 0
            ),
            QgsProcessingParameterString(
                self.COMMAND,
                f"mmsr-geo command [default: ${ENV_VAR}, else mmsr-geo on PATH]",
                optional=True,
            ),
        ):
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)

    def processAlgorithm(self, parameters, context, feedback):
        feedback = feedback or QgsProcessingFeedback()
        try:
            command = find_command(self.parameterAsString(parameters, self.COMMAND, context))
        except CommandNotFound as error:
            raise QgsProcessingException(str(error)) from None
        output = os.path.abspath(self.parameterAsOutputLayer(parameters, self.OUTPUT, context))
        argv = [*command, "upscale", *self._arguments(parameters, context, output)]
        feedback.pushCommandInfo(shlex.join(argv))
        try:
            done = run(argv, feedback)
        except RunFailed as error:
            raise QgsProcessingException(str(error)) from None
        except Canceled as canceled:
            kept = (
                f"{canceled.tiles_done} of {canceled.tiles} tiles are kept in "
                f"{os.path.basename(output)}.mmsr-work/ beside the output: run the algorithm "
                "again with the same parameters and output file to resume from them"
                if canceled.tiles_done
                else "no tile was finished"
            )
            raise QgsProcessingException(f"Canceled: {kept}.") from None
        results = {self.OUTPUT: output}
        band = done.get("confidence")
        if band:
            style_uncertainty(band)
            details = QgsProcessingContext.LayerDetails(
                "Uncertainty (MMSR)", context.project(), self.CONFIDENCE_OUTPUT
            )
            context.addLayerToLoadOnCompletion(band, details)
            results[self.CONFIDENCE_OUTPUT] = band
        return results

    def _arguments(self, parameters, context, output):
        """The options of ``mmsr-geo upscale`` these parameters ask for."""
        arguments = [
            self._raster_path(parameters, self.INPUT, context),
            "--guide",
            self._raster_path(parameters, self.GUIDE, context),
            "--scale",
            str(self.parameterAsInt(parameters, self.SCALE, context)),
            "--output",
            output,
            "--preset",
            PRESETS[self.parameterAsEnum(parameters, self.PRESET, context)],
            "--schedule",
            SCHEDULES[self.parameterAsEnum(parameters, self.SCHEDULE, context)],
            "--fit",
            FIT_MODES[self.parameterAsEnum(parameters, self.FIT_MODE, context)],
            "--register",
            REGISTER_MODES[self.parameterAsEnum(parameters, self.REGISTER, context)],
            "--consistency",
            CONSISTENCY_MODES[self.parameterAsEnum(parameters, self.CONSISTENCY, context)],
            "--device",
            DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
            "--features",
            str(self.parameterAsInt(parameters, self.FEATURES, context)),
            "--seed",
            str(self.parameterAsInt(parameters, self.SEED, context)),
            "--progress",
            "json",
            "--overwrite",  # see the module docstring
        ]
        if self.parameterAsBoolean(parameters, self.CONFIDENCE, context):
            arguments.append("--confidence")
        band = self.parameterAsInt(parameters, self.BAND, context)
        if band > 0:
            arguments += ["--band", str(band)]
        guide_bands = self.parameterAsInts(parameters, self.GUIDE_BANDS, context)
        if guide_bands:
            arguments += ["--guide-bands", ",".join(str(b) for b in guide_bands)]
        for name, option in (
            (self.ITERATIONS, "--iterations"),
            (self.TILE_SIZE, "--tile-size"),
            (self.OVERLAP, "--overlap"),
        ):
            if parameters.get(name) is not None:
                arguments += [option, str(self.parameterAsInt(parameters, name, context))]
        if parameters.get(self.LEVEL_SIGMA) is not None:
            sigma = self.parameterAsDouble(parameters, self.LEVEL_SIGMA, context)
            arguments += ["--level-sigma", repr(sigma)]
        if parameters.get(self.AOI) is not None:
            source = self.parameterAsSource(parameters, self.AOI, context)
            if source is None:
                raise QgsProcessingException(self.invalidSourceError(parameters, self.AOI))
            arguments += ["--aoi", export_aoi(source, context)]
        return arguments

    def _raster_path(self, parameters, name, context):
        """What GDAL (so mmsr-geo) opens for a raster layer parameter: the file or dataset
        name of a GDAL layer (qgis_process passes relative paths through: made absolute)."""
        layer = self.parameterAsRasterLayer(parameters, name, context)
        if layer is None:
            raise QgsProcessingException(self.invalidRasterError(parameters, name))
        if layer.providerType() != "gdal":
            raise QgsProcessingException(
                f"{layer.name()} is a {layer.providerType()} layer: mmsr-geo reads files GDAL "
                "opens; save it as a GeoTIFF first"
            )
        parts = QgsProviderRegistry.instance().decodeUri("gdal", layer.source())
        path = parts.get("path")
        if path and not parts.get("layerName") and os.path.exists(path):
            return os.path.abspath(path)
        return layer.source()  # a GDAL dataset name: /vsicurl/..., GPKG:file:table, ...
