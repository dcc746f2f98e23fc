"""Start QGIS headless in a helper script run by /usr/bin/python3 (the only Python with
PyQGIS on Debian), with the plugin's provider registered in-process.

The environment (offscreen platform, throwaway profile) comes from tests/test_qgis.py.
"""

import gc
import sys
from pathlib import Path

PLUGINS = Path(__file__).resolve().parents[2] / "qgis"
sys.path.insert(0, "/usr/share/qgis/python/plugins")  # Processing's Python side
sys.path.insert(0, str(PLUGINS))

from qgis.core import QgsApplication  # noqa: E402


class Qgis:
    """``with Qgis(processing=True):`` QGIS started, our provider registered; on exit every
    QGIS object is dropped before exitQgis (held ones crash the exit with a segfault)."""

    def __init__(self, processing=False):
        self.processing = processing
        self.provider = None

    def __enter__(self):
        QgsApplication.setPrefixPath("/usr", True)
        self.app = QgsApplication([], False)
        self.app.initQgis()
        if self.processing:
            from mmsr_geo_processing.provider import MmsrGeoProvider
            from processing.core.Processing import Processing

            Processing.initialize()
            self.provider = MmsrGeoProvider()  # kept: a collected wrapper loses its algorithms
            QgsApplication.processingRegistry().addProvider(self.provider)
        return self

    def __exit__(self, *exc):
        self.provider = None
        gc.collect()
        self.app.exitQgis()
