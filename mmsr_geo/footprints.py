"""True footprints of rasters as shapely polygons: the four corners of the pixel grid mapped
through its geotransform, whatever its orientation (south-up, rotated, sheared).

Axis-aligned bounds are the footprint only of a north-up grid: a rotated source 30 % outside
its guide would pass a bounds check, and rasterio's window helpers refuse a south-up grid.
"""

from __future__ import annotations

import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.io import DatasetReader
from rasterio.warp import transform_geom
from rasterio.windows import Window
from shapely.geometry import Polygon, mapping, shape
from shapely.geometry.base import BaseGeometry

DENSIFY = 32
"""Points per edge when a footprint is reprojected, so that it bends as the raster does."""


def grid_footprint(transform: Affine, width: int, height: int) -> Polygon:
    """The polygon of a ``width`` x ``height`` grid's outer pixel edges, in its CRS."""
    corners = [transform * (0, 0), transform * (width, 0), transform * (width, height),
               transform * (0, height)]
    return shapely.geometry.polygon.orient(Polygon(corners), sign=1.0)


def reprojected(footprint: BaseGeometry, src_crs: CRS, dst_crs: CRS) -> BaseGeometry:
    """``footprint`` in ``dst_crs``, its edges densified first."""
    if src_crs == dst_crs:
        return footprint
    minx, miny, maxx, maxy = footprint.bounds
    dense = shapely.segmentize(footprint, max(maxx - minx, maxy - miny) / DENSIFY)
    return shape(transform_geom(src_crs, dst_crs, mapping(dense))).buffer(0)


def dataset_footprint(dataset: DatasetReader) -> Polygon:
    """A dataset's footprint in its own CRS."""
    return grid_footprint(dataset.transform, dataset.width, dataset.height)


def pixel_window(transform: Affine, area: BaseGeometry, width: int, height: int) -> Window:
    """The window of a ``width`` x ``height`` grid that covers ``area`` (in the grid's CRS),
    whatever the grid's orientation; the whole grid when they do not meet."""
    inverse = ~transform
    polygons = [area] if isinstance(area, Polygon) else list(getattr(area, "geoms", []))
    points = [inverse * xy for polygon in polygons for xy in polygon.exterior.coords]
    if not points:
        return Window(0, 0, width, height)
    cols, rows = [c for c, _ in points], [r for _, r in points]
    col0, col1 = max(0, int(min(cols))), min(width, int(max(cols)) + 1)
    row0, row1 = max(0, int(min(rows))), min(height, int(max(rows)) + 1)
    if col1 <= col0 or row1 <= row0:
        return Window(0, 0, width, height)
    return Window(col0, row0, col1 - col0, row1 - row0)
