"""Named neighbourhood sizes of the two cross-domain filters, as data.

The paper uses 11/5 on depth (section 4.2, Fig. 10) and 5/3 on remote-sensing DEM and thermal
(section 4.4).
"""

from __future__ import annotations

from typing import NamedTuple

from .errors import InputError


class Kernels(NamedTuple):
    s2g: int
    g2s: int


PRESETS: dict[str, Kernels] = {
    "depth": Kernels(s2g=11, g2s=5),
    "remote-sensing": Kernels(s2g=5, g2s=3),
}


def preset_kernels(name: str) -> Kernels:
    """Kernels of a preset by name, with a clear error for an unknown one."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(
            f"unknown preset {name!r}: choose one of {', '.join(sorted(PRESETS))}"
        ) from None
