"""The ``mmsrgeo`` Processing provider (algorithm ids ``mmsrgeo:<name>``)."""

from qgis.core import QgsProcessingProvider

from .algorithm import UpscaleAlgorithm


class MmsrGeoProvider(QgsProcessingProvider):
    def id(self):
        return "mmsrgeo"

    def name(self):
        return "mmsr-geo"

    def longName(self):
        return "mmsr-geo: guided super-resolution (MMSR)"

    def loadAlgorithms(self):
        self.addAlgorithm(UpscaleAlgorithm())

    # mmsr-geo writes GeoTIFF only: offering other formats in the output widget (or
    # TEMPORARY_OUTPUT with another extension) would only lead to its "must be .tif" error
    def supportedOutputRasterLayerExtensions(self):
        return ["tif", "tiff"]

    def defaultRasterFileExtension(self):
        return "tif"
