"""Errors that describe a problem with the user's input or environment.

The CLI prints these as one line (no traceback unless ``--debug``) and exits 1; anything else
that escapes the library is a bug and is reported as an internal error (exit 70), so a bug
never looks like bad input. Library users can catch :class:`MmsrGeoError` the same way.
Several subclass the builtin they refine (``ValueError``, ``FileExistsError``, ``MemoryError``)
so that generic ``except`` clauses keep working.
"""

from __future__ import annotations


class MmsrGeoError(Exception):
    """Base class: a message written for the user, not a bug report."""


class InputError(MmsrGeoError, ValueError):
    """A file that is missing, not a raster, or unsuitable (bands, nodata, size, scale), or a
    setting out of range."""


class OverlapError(InputError):
    """Source and guide (or the AOI) share no area."""


class OutputExistsError(MmsrGeoError, FileExistsError):
    """The output exists and ``overwrite`` was not given."""


class OutputLockedError(MmsrGeoError):
    """Another live run is making the same output."""


class InsufficientMemoryError(MmsrGeoError, MemoryError):
    """A tile would need more memory than the machine has; the message says how to lower it."""


class DeviceOutOfMemoryError(MmsrGeoError, MemoryError):
    """A single tile does not fit the accelerator even after splitting."""
