"""The ``mmsr-geo`` command group."""

from __future__ import annotations

import sys
from typing import Any

import click

from mmsr_geo import __version__

from .batch import batch
from .evaluate import evaluate
from .upscale import upscale


class OneLineErrorGroup(click.Group):
    """A group whose usage errors (a bad option value, a missing argument) are one line on
    stderr, like every other error of mmsr-geo, instead of Click's usage block."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as error:
            command = error.ctx.command_path if error.ctx else "mmsr-geo"
            click.echo(f"Error: {error.format_message()} (see '{command} --help')", err=True)
            sys.exit(error.exit_code)
        except click.ClickException as error:
            error.show()
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


@click.group(
    cls=OneLineErrorGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Run 'mmsr-geo COMMAND --help' for the options and examples of each command.",
)
@click.version_option(__version__, "--version", prog_name="mmsr-geo")
def main() -> None:
    """Super-resolve low-resolution rasters (DEM/DSM, thermal, depth) with a high-resolution
    guide image (RGB or multispectral), using MMSR (Dong et al., ECCV 2022): a small network is
    fitted to every tile, self-supervised, with no training data."""


main.add_command(upscale)
main.add_command(batch)
main.add_command(evaluate)
