"""Options every command shares (-q, -v, --debug) and the one-line error reporting."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from mmsr_geo.errors import MmsrGeoError


def _configure_logging(quiet: bool, verbose: int) -> None:
    level = (
        logging.ERROR
        if quiet
        else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    )
    logging.basicConfig(format="%(levelname)s: %(message)s", level=level, force=True)
    logging.captureWarnings(True)


def reporting_command(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``-q/--quiet``, ``-v/--verbose`` and ``--debug`` to a command and turn errors into
    one line on stderr with exit code 1 (2 for usage errors, as Click does), tracebacks only
    with ``--debug``. Ctrl-C exits with 130 and no traceback.
    """

    @click.option("-q", "--quiet", is_flag=True, help="Print errors only, no progress bars.")
    @click.option("-v", "--verbose", count=True, help="More messages (-vv for debug output).")
    @click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
    @functools.wraps(func)
    def wrapper(*args: Any, quiet: bool, verbose: int, debug: bool, **kwargs: Any) -> Any:
        _configure_logging(quiet, verbose)
        try:
            return func(*args, quiet=quiet, **kwargs)
        except click.exceptions.Exit:
            raise
        except (click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except (MmsrGeoError, ValueError, OSError) as exc:
            if debug:
                raise
            raise click.ClickException(" ".join(str(exc).split())) from None
        except Exception as exc:  # a bug: still one line unless the user asks for more
            if debug:
                raise
            raise click.ClickException(
                f"{type(exc).__name__}: {' '.join(str(exc).split())} "
                "(run again with --debug for the traceback)"
            ) from None

    return wrapper
