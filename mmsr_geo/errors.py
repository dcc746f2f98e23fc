"""Errors that describe a problem with the user's input or environment.

The CLI prints them as one line (no traceback unless ``--debug``) and exits non-zero; library
users can catch :class:`MmsrGeoError` to tell bad input from bugs.
"""

from __future__ import annotations


class MmsrGeoError(Exception):
    """Base class: a message written for the user, not a bug report."""


class InputError(MmsrGeoError, ValueError):
    """A file that is missing, not a raster, or unsuitable (bands, nodata, size, scale)."""


class OverlapError(InputError):
    """Source and guide (or the AOI) share no area."""


class OutputExistsError(MmsrGeoError, FileExistsError):
    """The output exists and ``overwrite`` was not given."""
