"""The ``mmsr-geo`` command group."""

from __future__ import annotations

import click

from mmsr_geo import __version__

from .batch import batch
from .evaluate import evaluate
from .upscale import upscale


@click.group(
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
