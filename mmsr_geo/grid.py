"""The output grid: the source's CRS and bounds with pixels ``scale`` times smaller.

Keeping the HR grid an exact integer refinement of the LR grid is what lets every HR tile be
exactly ``scale`` x an LR tile, and lets the cycle loss (average pooling by ``scale``) line up
with the source pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

from affine import Affine
from rasterio.crs import CRS
from rasterio.io import DatasetReader
from rasterio.transform import array_bounds
from rasterio.windows import Window

from .degradation import check_scale
from .metrics import geographic_pixel_metres


@dataclass(frozen=True)
class OutputGrid:
    """LR (source) grid and its HR refinement."""

    scale: int
    crs: CRS | None
    lr_transform: Affine
    lr_width: int
    lr_height: int
    georeferenced: bool
    """True with a CRS and a geotransform: a guide on another grid can then be warped onto it.
    A source with a geotransform but no CRS keeps its transform (refined) without a CRS."""

    @property
    def has_transform(self) -> bool:
        """Whether the source had a geotransform (with or without a CRS) to refine."""
        return not self.lr_transform.is_identity

    @property
    def transform(self) -> Affine:
        """HR transform: the source's, pixel size divided by ``scale``."""
        return self.lr_transform @ Affine.scale(1 / self.scale)

    @property
    def width(self) -> int:
        return self.lr_width * self.scale

    @property
    def height(self) -> int:
        return self.lr_height * self.scale

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the grid CRS (pixel units when not georeferenced),
        ordered whatever the transform's orientation (rasterio's ``array_bounds`` takes a
        south-up grid's north edge as its south)."""
        west, south, east, north = array_bounds(self.lr_height, self.lr_width, self.lr_transform)
        return min(west, east), min(south, north), max(west, east), max(south, north)

    @property
    def pixel_size(self) -> float:
        """HR pixel size (geometric mean of the two axes), in CRS units."""
        t = self.transform
        return abs(t.a * t.e - t.b * t.d) ** 0.5

    def hr_window(self, lr_window: Window) -> Window:
        """The HR window covering exactly the same ground as an LR window."""
        s = self.scale
        return Window(
            lr_window.col_off * s, lr_window.row_off * s, lr_window.width * s, lr_window.height * s
        )

    def lr_window(self, hr_window: Window) -> Window:
        """The LR window covering exactly the same ground as an HR window of whole source
        pixels."""
        s = self.scale
        return Window(
            int(hr_window.col_off) // s, int(hr_window.row_off) // s,
            int(hr_window.width) // s, int(hr_window.height) // s,
        )

    def grown(self, lr_window: Window, margin: int) -> Window:
        """An LR window grown by ``margin`` source pixels on every side, inside the raster."""
        col0 = max(0, int(lr_window.col_off) - margin)
        row0 = max(0, int(lr_window.row_off) - margin)
        col1 = min(self.lr_width, int(lr_window.col_off + lr_window.width) + margin)
        row1 = min(self.lr_height, int(lr_window.row_off + lr_window.height) + margin)
        return Window(col0, row0, col1 - col0, row1 - row0)


def output_grid(source: DatasetReader, scale: int) -> OutputGrid:
    """The HR grid of ``source`` at an integer ``scale`` >= 2 (pixel-only without a CRS)."""
    scale = check_scale(scale)
    has_transform = not source.transform.is_identity
    georeferenced = source.crs is not None and has_transform
    return OutputGrid(
        scale=scale,
        crs=source.crs if georeferenced else None,
        lr_transform=source.transform if has_transform else Affine.identity(),
        lr_width=source.width,
        lr_height=source.height,
        georeferenced=georeferenced,
    )


def ground_pixel_size(grid: OutputGrid, shape: tuple[int, int]) -> tuple[float, float]:
    """(y, x) size in metres of a pixel when the source's extent is drawn at ``shape``.

    In a geographic CRS a degree of longitude is shorter than one of latitude; without this a
    hillshade of an EPSG:4326 DEM would be flat (pixels of 0.001 m) or black.
    """
    t = grid.lr_transform
    py = abs(t.e) * grid.lr_height / shape[0]
    px = abs(t.a) * grid.lr_width / shape[1]
    if grid.georeferenced and grid.crs is not None and grid.crs.is_geographic:
        _, bottom, _, top = grid.bounds
        x_metres, y_metres = geographic_pixel_metres(px, py, (bottom + top) / 2)
        return y_metres, x_metres
    return py, px
