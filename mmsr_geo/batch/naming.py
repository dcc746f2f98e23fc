"""Where a batch writes each pair's result, and what it may not write over.

Outputs are named as ``upscale`` names them, must lie inside the output folder, never
overwrite an input and never clash with each other; all of it is checked before anything runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import InputError
from ..raster_io import is_remote
from ..run import default_output_path
from .pairs import Pair


def local_inputs(pairs: Iterable[Pair]) -> set[Path]:
    """The local sources and guides of ``pairs``, resolved (what no output may overwrite)."""
    paths = (p for pair in pairs for p in (pair.source, pair.guide))
    return {Path(p).resolve() for p in paths if not is_remote(p)}


def output_path(pair: Pair, output_dir: Path, scale: int) -> Path:
    """Where a pair's result goes: its manifest output (relative to ``output_dir``), else
    ``<source stem>_x<scale>.tif`` (the name ``upscale`` gives) in ``output_dir``.

    The suffix keeps an output directory equal to the input folder from overwriting sources.
    """
    if pair.output is not None:
        return output_dir / pair.output
    return output_dir / default_output_path(pair.source, scale).name


def output_problem(pair: Pair, output: Path, output_dir: Path, inputs: set[Path]) -> str | None:
    """Why a pair may not write ``output``, or None: it must resolve inside the output folder
    (symbolic links followed; a manifest cannot send results to ``../..`` or ``/etc``), and
    it must not be an input of the batch."""
    target = output.resolve()
    if not target.is_relative_to(output_dir.resolve()):
        return f"output {pair.output or output} resolves outside the output folder {output_dir}"
    if target in inputs:
        return f"output {output} would overwrite an input raster"
    return None


def resolve_outputs(pairs: Sequence[Pair], output_dir: Path, scale: int) -> list[Path]:
    """Output paths of all pairs, refusing clashes before anything runs (two sources with the
    same name in different folders would otherwise overwrite each other's result)."""
    outputs = [output_path(p, output_dir, scale) for p in pairs]
    seen: dict[Path, Path] = {}
    for pair, out in zip(pairs, outputs, strict=True):
        key = out.resolve()
        if key in seen:
            raise InputError(
                f"{seen[key]} and {pair.source} would both be written to {out}: "
                + (
                    "give them different outputs in the manifest's output column"
                    if pair.output is not None
                    else "use a manifest with an output column"
                )
            )
        seen[key] = pair.source
    return outputs
