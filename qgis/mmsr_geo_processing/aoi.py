"""An area of interest from any QGIS vector source, as the GeoJSON file mmsr-geo reads.

mmsr-geo takes a GeoJSON file in EPSG:4326 (RFC 7946) or WKT in the source's CRS. A file
suits any layer (a WKT argument can outgrow the command line), and reprojecting here, with
the project's transformation context, is what the user sees on the map.

Only the geometries are written, in a fixed order and precision, under a fixed name:
mmsr-geo identifies an AOI file by its name and content, so the export of an unchanged layer
must give the same bytes for a rerun to resume from the checkpoints of a canceled one
(editing an attribute must not start the work over either).
"""

from __future__ import annotations

import json

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCsException,
    QgsProcessingException,
    QgsProcessingUtils,
)

FILE_NAME = "aoi.geojson"
PRECISION = 9
"""Decimal places of a degree: about 0.1 mm, far below any raster's pixel."""


def export_aoi(source, context) -> str:
    """Write the features of ``source`` (a QgsFeatureSource) as a GeoJSON FeatureCollection
    in EPSG:4326 in a new temporary folder; returns its path."""
    transform = QgsCoordinateTransform(
        source.sourceCrs(), QgsCoordinateReferenceSystem("EPSG:4326"), context.transformContext()
    )
    features = []
    for feature in source.getFeatures():
        geometry = feature.geometry()
        if geometry.isNull() or geometry.isEmpty():
            continue
        try:
            geometry.transform(transform)
        except QgsCsException as error:
            raise QgsProcessingException(
                f"cannot reproject the AOI to EPSG:4326: {error}"
            ) from None
        features.append(
            {
                "type": "Feature",
                "properties": {},
                "geometry": json.loads(geometry.asJson(PRECISION)),
            }
        )
    if not features:
        raise QgsProcessingException("the AOI layer has no geometry (or no selected feature)")
    path = QgsProcessingUtils.generateTempFilename(FILE_NAME)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"type": "FeatureCollection", "features": features}, fh)
    return path
