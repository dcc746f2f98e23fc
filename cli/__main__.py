"""``python -m mmsr_geo_cli``: the same as the ``mmsr-geo`` command."""

from .main import main

main(prog_name="mmsr-geo")
