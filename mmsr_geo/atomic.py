"""Write to a temporary name, then put the file in place in one step: the one way mmsr-geo
creates files (outputs, previews, reports, checkpoints).

A reader, or a run killed at any moment, sees either the old file or the complete new one,
never half of one. Without ``overwrite`` the final step refuses to replace a file that
appeared meanwhile (a hard link cannot clobber), so nothing is ever clobbered by accident.
Temporaries are named ``.<name>.<pid>.<tag>.tmp`` beside the target and files GDAL puts
beside them (``.aux.xml``, ``.ovr``) go with them; :func:`remove_leftovers` clears those of
killed runs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputExistsError

_SIDECARS = ("", ".aux.xml", ".ovr", ".msk")


def temp_path(final: Path, tag: str = "part") -> Path:
    """The temporary name of ``final`` for this process."""
    return final.with_name(f".{final.name}.{os.getpid()}.{tag}.tmp")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_mode() -> int:
    """Permissions a plain ``open(..., "w")`` would give (0644 under the usual umask); used
    for files made by ``mkstemp``, which are 0600."""
    return 0o666 & ~_umask()


def place(tmp: Path, final: Path, overwrite: bool) -> None:
    """Move the finished ``tmp`` to ``final``; without ``overwrite`` an existing ``final`` is
    an :class:`OutputExistsError` and ``tmp`` stays for the caller to remove."""
    if overwrite:
        os.replace(tmp, final)
        return
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise OutputExistsError(f"{final} exists: use --overwrite to replace it") from None
    except OSError as exc:  # no hard links here (some network and FAT file systems)
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if final.exists():
            raise OutputExistsError(f"{final} exists: use --overwrite to replace it") from None
        os.replace(tmp, final)
        return
    os.unlink(tmp)


def remove_temporaries(tmp: Path) -> None:
    """Remove ``tmp`` and the side files GDAL may have made beside it."""
    for suffix in _SIDECARS:
        with contextlib.suppress(FileNotFoundError):
            Path(str(tmp) + suffix).unlink()


@contextlib.contextmanager
def atomic_file(final: Path, *, overwrite: bool = True, tag: str = "part") -> Iterator[Path]:
    """Yield a temporary path to write; on a clean exit it becomes ``final``. On any error
    or interrupt the temporaries are removed and ``final`` is untouched."""
    final = Path(final)
    tmp = temp_path(final, tag)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(errno.ENOENT, "nothing was written", str(tmp))
        os.chmod(tmp, stat.S_IMODE(os.stat(tmp).st_mode) | default_mode())
        place(tmp, final, overwrite)
    finally:
        remove_temporaries(tmp)


def remove_leftovers(final: Path) -> list[Path]:
    """Remove temporaries of ``final`` left by runs that were killed (call only while holding
    the output's lock, so none of them belongs to a live run); returns what was removed."""
    final = Path(final)
    pattern = re.compile(rf"\.{re.escape(final.name)}\.\d+\.[a-z]+\.tmp(\..*)?")
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(final.parent):
            if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed
