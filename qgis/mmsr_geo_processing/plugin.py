"""The plugin object: it only registers the Processing provider.

``qgis_process`` calls :meth:`initProcessing` (``hasProcessingProvider=yes`` in metadata.txt)
and never :meth:`initGui`; QGIS desktop calls :meth:`initGui`. Both end in one registration.
"""

from qgis.core import QgsApplication

from .provider import MmsrGeoProvider


class MmsrGeoPlugin:
    def __init__(self):
        self.provider = None

    def initProcessing(self):
        if self.provider is None:
            # the reference is kept: a provider whose Python wrapper is garbage-collected
            # stays registered but loses its algorithms
            self.provider = MmsrGeoProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):
        self.initProcessing()

    def unload(self):
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
