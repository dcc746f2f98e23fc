"""Click parameter types for the commands: parsing and validation in one place, so a bad value
is a usage error naming the option, before any file is opened."""

from __future__ import annotations

import re
from typing import Any

import click


class ScaleType(click.ParamType):
    """An integer super-resolution factor >= 2 (``4`` or ``x4``)."""

    name = "SCALE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            scale = value
        else:
            text = str(value).strip().lower().removeprefix("x")
            try:
                scale = int(text)
            except ValueError:
                self.fail(f"{value!r} is not an integer scale (e.g. 4)", param, ctx)
        if scale < 2:
            self.fail(f"scale must be an integer >= 2, got {scale}", param, ctx)
        return scale


class BandListType(click.ParamType):
    """A comma-separated list of 1-based band numbers, e.g. ``1,2,3``."""

    name = "BANDS"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        parts = [p.strip() for p in str(value).split(",") if p.strip()]
        if not parts:
            self.fail("give at least one band number, e.g. 1,2,3", param, ctx)
        try:
            bands = tuple(int(p) for p in parts)
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of band numbers", param, ctx)
        if any(b < 1 for b in bands):
            self.fail(f"band numbers start at 1, got {value!r}", param, ctx)
        return bands


class CreationOptionType(click.ParamType):
    """One GDAL creation option ``NAME=VALUE`` (as ``rio --co``), returned as (NAME, VALUE)."""

    name = "NAME=VALUE"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value
        name, sep, option = str(value).partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name.strip()):
            self.fail(f"{value!r} is not NAME=VALUE (e.g. COMPRESS=ZSTD)", param, ctx)
        return name.strip().upper(), option.strip()


class DeviceType(click.ParamType):
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (availability is checked when the run starts)."""

    name = "DEVICE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip().lower()
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
            self.fail(f"{value!r} is not a device: use auto, cpu, cuda or cuda:N", param, ctx)
        return text


class BatchTilesType(click.ParamType):
    """``auto`` or a number of tiles >= 1 fitted together."""

    name = "N|auto"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> int | None:
        if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
            return None
        try:
            tiles = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is neither 'auto' nor a number of tiles", param, ctx)
        if tiles < 1:
            self.fail(f"batch size must be at least 1, got {tiles}", param, ctx)
        return tiles


SCALE = ScaleType()
BATCH_TILES = BatchTilesType()
BAND_LIST = BandListType()
CREATION_OPTION = CreationOptionType()
DEVICE = DeviceType()
