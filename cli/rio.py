"""``rio mmsr``: mmsr-geo as a rasterio CLI plugin (entry point group ``rasterio.rio_plugins``).

``rio`` loads every plugin each time it starts, even for ``rio info``, so this module imports
Click only: the ``upscale`` command (and with it torch) is imported when it is asked for.
"""

from __future__ import annotations

import importlib

import click


class _LazyGroup(click.Group):
    """The ``mmsr`` group, whose commands are imported on first use."""

    _commands = {"upscale": ("mmsr_geo_cli.upscale", "rio_upscale")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self._commands)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self._commands:
            return None
        module, name = self._commands[cmd_name]
        command: click.Command = getattr(importlib.import_module(module), name)
        return command


@click.group(
    "mmsr",
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Run 'rio mmsr upscale --help' for the options and examples; 'mmsr-geo' offers the "
    "same command and batch runs.",
)
def mmsr() -> None:
    """Super-resolve rasters with a high-resolution guide image (MMSR, mmsr-geo)."""
