"""How the algorithm finds mmsr-geo, and the choices it offers.

QGIS's own Python rarely has PyTorch (and must not get it: it is QGIS's interpreter), so the
algorithm runs the ``mmsr-geo`` command of a separate installation in a subprocess. The
command is looked up in a fixed order, the first one set wins and is never second-guessed:

1. the algorithm's advanced parameter "mmsr-geo command" (one run, one project);
2. the environment variable ``MMSR_GEO_COMMAND`` (a user's or a machine's setting);
3. ``mmsr-geo`` on ``PATH``.

1 and 2 are command lines, e.g. ``/opt/mmsr/venv/bin/mmsr-geo`` or
``/opt/mmsr/venv/bin/python -m mmsr_geo_cli``. This module does not import QGIS, so that the
lookup is tested where QGIS is not installed.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Mapping

ENV_VAR = "MMSR_GEO_COMMAND"
EXECUTABLE = "mmsr-geo"

PRESETS = ("remote-sensing", "depth")
"""``mmsr-geo --preset`` choices, the default first (tests check them against mmsr_geo)."""
DEVICES = ("auto", "cpu", "cuda")
"""``mmsr-geo --device`` choices offered in the dialog (``cuda`` is the first GPU)."""
SCHEDULES = (
    "auto",
    "paper",
    "cosine",
    "cosine-avg",
    "cosine-hi",
    "cosine-hi-avg",
    "residual",
    "residual-cosine",
    "residual-bilinear-cosine",
)
"""``mmsr-geo upscale --schedule`` choices, the tool's default first (the plugin cannot import
mmsr_geo, which needs torch; a test keeps the two lists equal)."""
FIT_MODES = ("auto", "tile", "raster", "hybrid")
"""``mmsr-geo upscale --fit`` choices, the tool's default first (a test keeps them equal)."""
REGISTER_MODES = ("auto", "off")
"""``mmsr-geo upscale --register`` choices, the tool's default first (a test keeps them
equal)."""
CONSISTENCY_MODES = ("exact", "off")
"""``mmsr-geo upscale --consistency`` choices, the tool's default first (a test keeps them
equal)."""


class CommandNotFound(Exception):
    """No usable mmsr-geo command; the message says where it was looked for."""


def find_command(configured: str | None, environ: Mapping[str, str] = os.environ) -> list[str]:
    """The argv prefix that runs mmsr-geo (module docstring), its program resolved to a path."""
    path = environ.get("PATH")
    sources = (
        (configured, "the 'mmsr-geo command' parameter"),
        (environ.get(ENV_VAR), f"the environment variable {ENV_VAR}"),
    )
    for text, origin in sources:
        if text and text.strip():
            argv = shlex.split(text)
            program = shutil.which(argv[0], path=path)
            if program is None:
                raise CommandNotFound(
                    f"{origin} is {text!r}, but {argv[0]!r} is not an executable file"
                    + ("" if os.path.dirname(argv[0]) else " on PATH")
                )
            return [program, *argv[1:]]
    program = shutil.which(EXECUTABLE, path=path)
    if program is None:
        raise CommandNotFound(
            f"{EXECUTABLE} was not found on PATH: install mmsr-geo with PyTorch in any Python "
            f"environment (see its README), then set {ENV_VAR} to its command, e.g. "
            f"'/path/to/venv/bin/{EXECUTABLE}', or fill the advanced parameter "
            "'mmsr-geo command'"
        )
    return [program]
