"""Area of interest: a GeoJSON file or a WKT polygon, brought into the source CRS.

GeoJSON follows RFC 7946 (longitude/latitude, EPSG:4326) unless it names a ``crs`` member
(the pre-RFC ``{"type": "name", "properties": {"name": "EPSG:32633"}}`` form); WKT carries no
CRS, so it is taken in the source's CRS (pixel coordinates for a pixel-only source).
"""

from __future__ import annotations

import json
from pathlib import Path

from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.warp import transform_geom
from shapely import wkt
from shapely.errors import ShapelyError
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from .errors import InputError

GEOJSON_CRS = CRS.from_epsg(4326)


def _geojson_geometry(document: dict) -> tuple[BaseGeometry, CRS]:
    kind = document.get("type")
    if kind == "FeatureCollection":
        parts = [shape(f["geometry"]) for f in document.get("features", []) if f.get("geometry")]
    elif kind == "Feature":
        parts = [shape(document["geometry"])] if document.get("geometry") else []
    else:
        parts = [shape(document)]
    if not parts:
        raise InputError("the AOI GeoJSON contains no geometry")
    crs = GEOJSON_CRS
    named = document.get("crs", {}).get("properties", {}).get("name")
    if named:
        try:
            crs = CRS.from_user_input(named)
        except CRSError:
            raise InputError(f"the AOI GeoJSON names an unknown crs {named!r}") from None
    return unary_union(parts), crs


def load_aoi(text: str, target_crs: CRS | None) -> BaseGeometry:
    """The AOI polygon(s) in ``target_crs`` from a GeoJSON file path or a WKT string."""
    path = Path(text)
    try:
        is_file = path.is_file()
    except OSError:  # a long WKT string is not a valid path on some systems
        is_file = False
    try:
        if is_file:
            document = json.loads(path.read_text(encoding="utf-8"))
            geometry, crs = _geojson_geometry(document)
            if target_crs is None:
                raise InputError(
                    "a GeoJSON AOI needs a georeferenced source: use WKT in pixel coordinates"
                )
            if crs != target_crs:
                geometry = shape(transform_geom(crs, target_crs, mapping(geometry)))
        else:
            geometry = wkt.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        raise InputError(f"the AOI file {text} is not valid GeoJSON") from None
    except ShapelyError:
        raise InputError(
            f"the AOI {text!r} is neither an existing GeoJSON file nor a WKT geometry"
        ) from None
    if geometry.is_empty or geometry.area <= 0:
        raise InputError("the AOI has no area: give a polygon")
    return geometry.buffer(0)
