"""The tile plan: overlapping LR windows on a regular grid and their exact HR counterparts.

Tiles are aligned to the LR grid, so every HR tile is exactly ``scale`` x an LR tile and the
cycle loss of each tile sees whole source pixels. Every tile lies inside the raster (the last
column and row are shifted back rather than padded), and tile indices are row-major, stable
for given sizes: checkpoints and per-tile seeds rely on that.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass

from affine import Affine
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from .errors import InputError


@dataclass(frozen=True)
class Tile:
    """One tile: its index in the plan and its windows on the LR and HR grids."""

    index: int
    lr_window: Window
    hr_window: Window


def _starts(length: int, size: int, stride: int) -> tuple[int, ...]:
    """Start offsets of windows of ``size`` covering ``length`` with ``stride``; the last one
    ends exactly at ``length``."""
    if length <= size:
        return (0,)
    starts = list(range(0, length - size, stride))
    starts.append(length - size)
    return tuple(sorted(set(starts)))


@dataclass(frozen=True)
class TilePlan:
    """Row-major grid of overlapping tiles over an LR raster of ``lr_width`` x ``lr_height``."""

    scale: int
    lr_width: int
    lr_height: int
    tile_size: int
    overlap: int
    col_starts: tuple[int, ...]
    row_starts: tuple[int, ...]

    @property
    def tile_width(self) -> int:
        return min(self.tile_size, self.lr_width)

    @property
    def tile_height(self) -> int:
        return min(self.tile_size, self.lr_height)

    def __len__(self) -> int:
        return len(self.col_starts) * len(self.row_starts)

    def tile(self, index: int) -> Tile:
        row, col = divmod(index, len(self.col_starts))
        lr = Window(self.col_starts[col], self.row_starts[row], self.tile_width, self.tile_height)
        s = self.scale
        hr = Window(lr.col_off * s, lr.row_off * s, lr.width * s, lr.height * s)
        return Tile(index=index, lr_window=lr, hr_window=hr)

    def __iter__(self) -> Iterator[Tile]:
        return (self.tile(i) for i in range(len(self)))

    def tiles_touching(self, hr_window: Window) -> list[Tile]:
        """Tiles whose HR window intersects ``hr_window`` (index arithmetic, no scan)."""

        def span(starts: tuple[int, ...], size: int, lo: float, hi: float) -> range:
            # tiles [start*s, (start+size)*s) that intersect [lo, hi)
            s = self.scale
            first = bisect.bisect_right(starts, (lo / s) - size)
            last = bisect.bisect_left(starts, hi / s)
            return range(first, last)

        cols = span(
            self.col_starts,
            self.tile_width,
            hr_window.col_off,
            hr_window.col_off + hr_window.width,
        )
        rows = span(
            self.row_starts,
            self.tile_height,
            hr_window.row_off,
            hr_window.row_off + hr_window.height,
        )
        n = len(self.col_starts)
        return [self.tile(r * n + c) for r in rows for c in cols]


def plan_tiles(
    lr_width: int, lr_height: int, scale: int, tile_size: int = 64, overlap: int = 8
) -> TilePlan:
    """Plan tiles of ``tile_size`` LR pixels overlapping by ``overlap`` LR pixels.

    Overlap gives the blending room to cross-fade neighbouring tiles (no seams); a tile
    smaller than the raster in one direction is simply the raster's size there.
    """
    if tile_size < 4:
        raise InputError(f"tile size must be at least 4 source pixels, got {tile_size}")
    if not 0 <= overlap <= tile_size // 2:
        raise InputError(
            f"overlap must be between 0 and half the tile size ({tile_size // 2}), got {overlap}"
        )
    stride = tile_size - overlap
    return TilePlan(
        scale=scale,
        lr_width=lr_width,
        lr_height=lr_height,
        tile_size=tile_size,
        overlap=overlap,
        col_starts=_starts(lr_width, tile_size, stride),
        row_starts=_starts(lr_height, tile_size, stride),
    )


def tile_intersects(tile: Tile, aoi: BaseGeometry | None, lr_transform: Affine) -> bool:
    """Whether the tile's footprint touches the AOI (always True without an AOI)."""
    if aoi is None:
        return True
    return aoi.intersects(box(*window_bounds(tile.lr_window, lr_transform)))
