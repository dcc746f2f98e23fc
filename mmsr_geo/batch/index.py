"""The batch's GeoJSON index: every output's footprint (the source's for a failed pair) in
EPSG:4326, to drag into QGIS."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import rasterio
import rasterio.errors
import shapely
from rasterio.warp import transform_geom
from shapely.geometry import MultiPolygon, box, mapping, shape
from shapely.geometry.polygon import orient

from .report import PairRecord, write_json_atomic

log = logging.getLogger(__name__)

INDEX_NAME = "batch-index.geojson"

def footprint_wgs84(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The raster's footprint as a GeoJSON polygon in EPSG:4326 (RFC 7946: lon/lat, exterior
    ring counter-clockwise), or None when the file has no CRS or cannot be read.

    Edges are densified before reprojecting so the polygon follows the curved edges of a
    projected raster's footprint, and the antimeridian is cut so QGIS draws it the right way.
    """
    try:
        with rasterio.open(path) as ds:
            if ds.crs is None:
                return None
            crs = ds.crs
            left, bottom, right, top = ds.bounds
        polygon = shapely.segmentize(
            box(left, bottom, right, top), max(right - left, top - bottom) / 16
        )
        geometry = shape(
            transform_geom(
                crs, "EPSG:4326", mapping(polygon), antimeridian_cutting=True, precision=7
            )
        )
    except (rasterio.errors.RasterioError, ValueError) as exc:
        log.debug("no footprint for %s: %s", path, exc)
        return None
    parts = geometry.geoms if isinstance(geometry, MultiPolygon) else [geometry]
    oriented = [orient(p, sign=1.0) for p in parts]
    return mapping(MultiPolygon(oriented) if len(oriented) > 1 else oriented[0])


def index_feature(record: PairRecord) -> dict[str, Any] | None:
    """A record's footprint feature: the output's when it exists, else the source's, so failed
    pairs show up on the map too."""
    for candidate in (record.output, record.source):
        geometry = footprint_wgs84(candidate)  # a string: a remote source stays a URL
        if geometry is not None:
            return {
                "type": "Feature",
                "geometry": geometry,
                "properties": {
                    "source": record.source,
                    "output": record.output,
                    "status": record.status,
                },
            }
    return None


def write_index(features: Iterable[dict[str, Any] | None], path: Path) -> None:
    """The GeoJSON FeatureCollection of footprints (pairs without a CRS are left out)."""
    collection = [f for f in features if f is not None]
    write_json_atomic(path, {"type": "FeatureCollection", "features": collection})
