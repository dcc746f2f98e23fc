"""Options every command shares (-q, -v, --debug, --progress) and the error policy.

Errors the user can act on (:class:`~mmsr_geo.errors.MmsrGeoError`, GDAL's I/O errors, a full
disk or a permission denied) are one line on stderr and exit status 1; usage errors exit 2 (as
Click does); anything else is a bug and says so: "internal error", exit status 70
(``EX_SOFTWARE``), the traceback with ``--debug``. Ctrl-C exits with 130, SIGTERM with 143,
both after removing temporaries (checkpoints stay for the rerun). Every command keeps freed
memory for reuse (:mod:`mmsr_geo.allocation`).
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any

import click
from rasterio.errors import RasterioError

from mmsr_geo.allocation import keep_freed_memory
from mmsr_geo.errors import MmsrGeoError
from mmsr_geo.progress import BarProgress, JsonProgress, Progress
from mmsr_geo.raster_io import GDALError

INTERNAL_ERROR = 70


class Terminated(BaseException):
    """SIGTERM (``kill``, a scheduler's time limit, QGIS's cancel), turned into an exception
    so that temporaries are removed and checkpoints kept, as for Ctrl-C."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


class UserError(click.ClickException):
    """A problem with the input or the environment, shown as one line (exit status 1)."""


class InternalError(click.ClickException):
    """A bug: one line that says so, exit status 70."""

    exit_code = INTERNAL_ERROR


class _JsonLogHandler(logging.Handler):
    """Log records as ``{"event": "log", ...}`` lines, so that stderr stays pure JSON lines."""

    def emit(self, record: logging.LogRecord) -> None:
        line = {"event": "log", "level": record.levelname.lower(), "message": record.getMessage()}
        sys.stderr.write(json.dumps(line) + "\n")
        sys.stderr.flush()


def _configure_logging(quiet: bool, verbose: int, as_json: bool) -> None:
    level = (
        logging.ERROR
        if quiet
        else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    )
    if as_json:
        logging.basicConfig(level=level, handlers=[_JsonLogHandler()], force=True)
    else:
        logging.basicConfig(format="%(levelname)s: %(message)s", level=level, force=True)
    logging.captureWarnings(True)
    # a library warning is one line for the user, not "file:line: UserWarning: ... <source>"
    warnings.formatwarning = lambda message, *args, **kwargs: str(message)
    # deprecation notices speak to the developers of the libraries we call (rasterio's use of
    # affine 3's `*`), not to users: Python hides them by default, and so do we
    for category in (DeprecationWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    # rasterio reports GDAL's own complaints at WARNING; they are ours to word
    logging.getLogger("rasterio").setLevel(max(level, logging.ERROR))


def make_progress(mode: str, quiet: bool) -> Progress:
    """The reporter a ``--progress`` mode asks for (``-q`` means none, JSON excepted)."""
    if mode == "json":
        return JsonProgress()
    if quiet or mode == "none":
        return Progress()
    if mode == "bar":
        return BarProgress(interactive=True)
    if mode == "lines":
        return BarProgress(interactive=False)
    return BarProgress()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
        text = f"{text}: {exc.filename}"
    return text


def reporting_command(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``-q``, ``-v``, ``--debug`` and ``--progress`` to a command, apply the error policy
    (module docstring), and hand the command a ``progress`` reporter and ``quiet``."""

    @click.option("-q", "--quiet", is_flag=True, help="Print errors only, no progress.")
    @click.option("-v", "--verbose", count=True, help="More messages (-vv for debug output).")
    @click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
    @click.option(
        "--progress",
        "progress_mode",
        type=click.Choice(["auto", "bar", "lines", "json", "none"]),
        default="auto",
        show_default=True,
        help="How progress is shown on stderr: bars on a terminal and one line per tile "
        "otherwise (auto), always bars, always lines, one JSON object per line for "
        "programs (docs/progress-json.md), or nothing.",
    )
    @functools.wraps(func)
    def wrapper(
        *args: Any, quiet: bool, verbose: int, debug: bool, progress_mode: str, **kwargs: Any
    ) -> Any:
        keep_freed_memory()  # this process and the workers it starts (mmsr_geo.allocation)
        as_json = progress_mode == "json"
        _configure_logging(quiet, verbose, as_json)
        progress = make_progress(progress_mode, quiet)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            return func(*args, quiet=quiet, progress=progress, **kwargs)
        except click.exceptions.Exit:
            raise
        except (click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            progress.close()
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except Terminated:
            progress.close()
            click.echo("Terminated.", err=True)
            sys.exit(128 + signal.SIGTERM)
        except (MmsrGeoError, RasterioError, GDALError, OSError) as exc:
            if debug:
                raise
            error: click.ClickException = UserError(_one_line(exc))
        except Exception as exc:  # a bug: still one line unless the user asks for more
            if debug:
                raise
            error = InternalError(
                f"internal error: {type(exc).__name__}: {_one_line(exc)} (this is a bug in "
                "mmsr-geo: run again with --debug for the traceback and report it)"
            )
        finally:
            progress.close()
        if as_json:  # the error as a JSON line, and nothing else on stderr
            progress.event("error", message=error.message, exit_code=error.exit_code)
            raise click.exceptions.Exit(error.exit_code)
        raise error

    return wrapper
