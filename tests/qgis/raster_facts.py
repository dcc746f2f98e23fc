"""Print what QGIS sees of a raster, as JSON: ``/usr/bin/python3 raster_facts.py PATH``."""

import json
import sys

from bootstrap import Qgis


def facts(path):
    from qgis.core import QgsRasterLayer

    layer = QgsRasterLayer(path, "output")
    if not layer.isValid():
        return {"valid": False}
    provider = layer.dataProvider()
    extent = layer.extent()
    return {
        "valid": True,
        "crs": layer.crs().authid(),
        "extent": [extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()],
        "pixel": [layer.rasterUnitsPerPixelX(), layer.rasterUnitsPerPixelY()],
        "size": [layer.width(), layer.height()],
        "bands": layer.bandCount(),
        "nodata": provider.sourceNoDataValue(1) if provider.sourceHasNoDataValue(1) else None,
        # the style QGIS gave it on opening (a .qml beside the file is applied)
        "renderer": layer.renderer().type(),
        "classification": [
            getattr(layer.renderer(), "classificationMin", lambda: None)(),
            getattr(layer.renderer(), "classificationMax", lambda: None)(),
        ],
    }


if __name__ == "__main__":
    with Qgis():
        print(json.dumps(facts(sys.argv[1])))
