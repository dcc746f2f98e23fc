"""Finding a batch's pairs: a glob plus a guide naming rule, or a CSV manifest.

Globs are local (there is no listing of a URL); a manifest may list sources and guides as URLs
or GDAL paths (``https://``, ``s3://``, ``/vsizip/``), which are read where they are, while
outputs are always local files.
"""

from __future__ import annotations

import csv
import glob
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rasterio.errors import RasterioError

from ..errors import InputError
from ..raster_io import is_remote
from ..writer import read_settings

log = logging.getLogger(__name__)

DFC_GUIDE_RULE = r"s/_(DSM|AGL)\./_RGB./"
"""Data Fusion Contest naming: ``JAX_004_006_DSM.tif`` / ``..._AGL.tif`` -> ``..._RGB.tif``."""


@dataclass(frozen=True)
class Pair:
    """One raster to super-resolve; ``output`` None means "named after the source".

    A local source or guide is a :class:`~pathlib.Path`; a URL or GDAL path stays the ``str``
    it was given as (``Path`` would fold ``https://`` into ``https:/``).
    """

    source: Path | str
    guide: Path | str
    output: Path | None = None


@dataclass(frozen=True)
class GuideRule:
    """A sed-style substitution ``s/REGEX/REPLACEMENT/`` applied to a source's file name.

    The first character after ``s`` is the delimiter (``s|a|b|`` works too); REGEX is a Python
    regular expression, REPLACEMENT may use ``\\1`` / ``\\g<name>``; only the first match is
    replaced. The guide is looked for in ``guide_dir``, or beside the source when None.
    """

    pattern: re.Pattern[str]
    replacement: str
    guide_dir: Path | None = None

    @classmethod
    def parse(cls, rule: str, guide_dir: str | os.PathLike[str] | None = None) -> GuideRule:
        if len(rule) < 4 or rule[0] != "s":
            raise InputError(f"guide rule {rule!r} must look like s/REGEX/REPLACEMENT/")
        delimiter = rule[1]
        parts = rule[2:].split(delimiter)
        if len(parts) != 3 or parts[2] != "" or not parts[0]:
            raise InputError(
                f"guide rule {rule!r} must look like s{delimiter}REGEX{delimiter}REPLACEMENT"
                f"{delimiter} (use another delimiter if REGEX contains {delimiter!r})"
            )
        try:
            pattern = re.compile(parts[0])
        except re.error as exc:
            raise InputError(f"guide rule {rule!r}: bad regular expression: {exc}") from None
        return cls(pattern, parts[1], Path(guide_dir) if guide_dir is not None else None)

    def guide_for(self, source: Path) -> Path | None:
        """The guide path of ``source``, or None when the rule does not apply to its name."""
        name, count = self.pattern.subn(self.replacement, source.name, count=1)
        if count == 0 or name == source.name:
            return None
        return (self.guide_dir or source.parent) / name


def pairs_from_glob(
    patterns: str | Sequence[str], guide_rule: GuideRule | str = DFC_GUIDE_RULE
) -> list[Pair]:
    """Pairs for every file matching the glob(s) (``**`` recurses) whose name the rule maps.

    Files the rule does not apply to are left out with an info message, so a glob over a
    folder of DSMs and RGBs picks the DSMs only; so are mmsr-geo's own outputs (recognised by
    their provenance tags), so that a batch writing beside its sources can be rerun. A guide
    that does not exist is not an error here: that pair fails alone when the batch runs, and
    the others go on.
    """
    rule = GuideRule.parse(guide_rule) if isinstance(guide_rule, str) else guide_rule
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    sources: dict[Path, None] = {}
    for pattern in patterns:
        if is_remote(pattern):
            raise InputError(
                f"{pattern}: SOURCES are local files or globs (a URL or GDAL path cannot be "
                "listed): give remote pairs in a --manifest"
            )
        matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
        if not matches:
            raise InputError(f"no file matches {pattern!r}")
        sources.update((Path(m), None) for m in matches if os.path.isfile(m))
    made = [source for source in sources if _made_by_mmsr(source)]
    if made:
        log.info(
            "left out %d file(s) that mmsr-geo made (an earlier run's outputs, by their tags): "
            "%s", len(made), ", ".join(p.name for p in made[:3]) + (" ..." if len(made) > 3 else "")
        )
    pairs = []
    for source in (s for s in sources if s not in made):
        guide = rule.guide_for(source)
        if guide is None:
            log.info("%s: the guide rule does not apply to this name, left out", source)
        else:
            pairs.append(Pair(source, guide))
    if not pairs:
        raise InputError(
            f"the guide rule s/{rule.pattern.pattern}/{rule.replacement}/ applies to none of the "
            f"{len(sources)} matching file(s): pass --guide-pattern for your naming"
        )
    return pairs


def _made_by_mmsr(path: Path) -> bool:
    """Whether ``path`` is an output of mmsr-geo (its tags record the settings that made it);
    a file that is not a readable raster is not (its pair fails, with the reason, later)."""
    try:
        return read_settings(path) is not None
    except (RasterioError, OSError):
        return False


def pairs_from_manifest(csv_path: str | os.PathLike[str]) -> list[Pair]:
    """Pairs from a CSV with columns source, guide[, output] (a header row is optional).

    Relative source and guide paths are relative to the manifest's folder (so a manifest moves
    with its data); URLs and GDAL paths (``https://...``, ``s3://...``, ``/vsizip/...``) are
    kept as they are. A relative output is relative to the batch's output directory and must
    be local. Blank lines and lines starting with ``#`` are ignored.
    """
    path = Path(csv_path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read manifest {path}: {exc.strerror or exc}") from None
    base = path.parent
    pairs = []
    rows = csv.reader(text.splitlines())
    for line_no, row in enumerate(rows, start=1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if line_no == 1 and cells[0].lower() == "source":
            continue
        cells = cells + [""] * (3 - len(cells))
        if len(row) > 3 or not cells[0] or not cells[1]:
            raise InputError(
                f"{path}, line {line_no}: expected 'source,guide[,output]', got {','.join(row)!r}"
            )
        if is_remote(cells[2]):
            raise InputError(
                f"{path}, line {line_no}: the output {cells[2]} must be a local path (relative "
                "to the output folder): inputs may be URLs, outputs are written locally"
            )
        pairs.append(
            Pair(
                _manifest_input(cells[0], base),
                _manifest_input(cells[1], base),
                Path(cells[2]).expanduser() if cells[2] else None,
            )
        )
    if not pairs:
        raise InputError(f"manifest {path} lists no pair")
    return pairs


def _manifest_input(cell: str, base: Path) -> Path | str:
    """A manifest's source or guide: a URL or GDAL path as written, a local path relative to
    the manifest's folder."""
    if is_remote(cell):
        return cell
    return base / Path(cell).expanduser()
