"""A batch's run loop: every pair planned, skipped when done, run, and recorded.

Every pair is planned by :func:`mmsr_geo.run.plan_run` from the batch's template request (so
its settings are exactly those a single run records) and run by :func:`mmsr_geo.run.execute`
with the same executor; a pair that fails is recorded and the others go on. An output whose
tags record the same settings is skipped, one made with other settings is kept and reported as
outdated, so rerunning a batch after a crash or a fix only does what is left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import rasterio.errors

from ..errors import MmsrGeoError, OutputExistsError
from ..executors import SerialExecutor, TileExecutor
from ..progress import Progress
from ..run import RunPlan, UpscaleRequest, execute, plan_run
from ..settings import describe_changes
from ..writer import read_provenance
from .index import INDEX_NAME, index_feature, write_index
from .naming import local_inputs, output_problem, resolve_outputs
from .pairs import Pair
from .report import (
    REPORT_NAME,
    BatchReport,
    PairRecord,
    earlier_records,
    json_safe,
    write_json_atomic,
)

log = logging.getLogger(__name__)

PairCallback = Callable[[int, int, PairRecord], None]
"""Called after each pair with (pair number from 1, pairs in all, its record)."""


BATCH_FIELDS = ("source", "guide", "output", "config", "overwrite", "preview")
"""Request fields the report's settings leave out: set per pair, or reported on their own."""


def run_batch(
    pairs: Sequence[Pair],
    output_dir: str | os.PathLike[str],
    request: UpscaleRequest,
    *,
    executor: TileExecutor | None = None,
    report_path: str | os.PathLike[str] | None = None,
    index_path: str | os.PathLike[str] | None = None,
    on_pair: PairCallback | None = None,
    progress: Progress | None = None,
) -> BatchReport:
    """Super-resolve every pair with the same settings, isolating failures.

    Args:
        pairs: from :func:`~mmsr_geo.batch.pairs.pairs_from_glob` or
            :func:`~mmsr_geo.batch.pairs.pairs_from_manifest`.
        output_dir: created if missing; outputs are named by
            :func:`~mmsr_geo.batch.naming.output_path`.
        request: the template every pair's request is made from, its source, guide and
            output replaced (:func:`~mmsr_geo.run.request.template_request`). With
            ``overwrite`` pairs whose output already records the same settings are redone and
            outputs made with other settings replaced (otherwise kept, their pair "outdated").
        executor: runs the tiles of each raster (default: serially in this process).
        report_path: JSON report, default ``<output_dir>/batch-report.json``; records of an
            earlier report for outputs this batch does not touch are kept in it.
        index_path: GeoJSON footprint index, default ``<output_dir>/batch-index.geojson``.
        on_pair: callback after each pair.
        progress: receives the progress of each raster and a "pair" event after each pair.

    A pair's error (:class:`Exception`) is recorded and the batch goes on; Ctrl-C
    (KeyboardInterrupt) stops it after writing the reports of the pairs done so far.
    """
    started = time.perf_counter()
    executor = executor or SerialExecutor()
    progress = progress or Progress()
    out_dir = Path(output_dir)
    outputs = resolve_outputs(pairs, out_dir, request.scale)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    report_file = Path(report_path) if report_path is not None else out_dir / REPORT_NAME
    index_file = Path(index_path) if index_path is not None else out_dir / INDEX_NAME
    inputs = local_inputs(pairs)
    earlier = earlier_records(report_file, {str(o) for o in outputs})
    report = BatchReport(settings=json_safe(_settings(request)))
    features: list[dict[str, Any] | None] = [index_feature(r) for r in earlier]

    def save() -> None:
        report.seconds = time.perf_counter() - started
        document = report.to_dict()
        document["earlier_pairs"] = [asdict(r) for r in earlier]
        write_json_atomic(report_file, json_safe(document))
        write_index(features, index_file)

    try:
        for number, (pair, output) in enumerate(zip(pairs, outputs, strict=True), start=1):
            problem = output_problem(pair, output, out_dir, inputs)
            if problem is not None:
                record = PairRecord(str(pair.source), str(pair.guide), str(output), "failed")
                record.error = problem
            else:
                pair_request = dataclasses.replace(
                    request, source=pair.source, guide=pair.guide, output=output
                )
                record = _run_pair(pair_request, executor, progress)
            report.records.append(record)
            features.append(index_feature(record))
            save()
            progress.event(
                "pair",
                pair=number,
                pairs=len(pairs),
                source=record.source,
                status=record.status,
                error=record.error,
            )
            if on_pair is not None:
                on_pair(number, len(pairs), record)
    finally:
        if report.records or earlier or not created:
            save()
        else:  # nothing ran (an error before the first pair): leave no empty folder behind
            with contextlib.suppress(OSError):
                out_dir.rmdir()
    return report


def _settings(request: UpscaleRequest) -> dict[str, Any]:
    """The report's settings: the scale, the base fit configuration and the other fields of
    the template request."""
    fields = {
        f.name: getattr(request, f.name)
        for f in dataclasses.fields(request)
        if f.name not in BATCH_FIELDS
    }
    config = dataclasses.asdict(request.config) if request.config is not None else {}
    return {"scale": request.scale, **config, **fields}


def _run_pair(
    request: UpscaleRequest, executor: TileExecutor, progress: Progress
) -> PairRecord:
    """One pair's record; its exceptions become a failed record, with the traceback logged
    at debug level (``-vv``) for bug reports.

    The pair is planned first (inputs opened and fingerprinted, settings resolved, nothing
    fitted), so the output's recorded settings can be compared with exactly the settings a
    new run would record.
    """
    started = time.perf_counter()
    output = Path(request.output)
    record = PairRecord(str(request.source), str(request.guide), str(output), "ok")
    overwrite = request.overwrite
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with plan_run(request) as plan:
            state, detail, facts = output_state(plan)
            if state == "done" and not overwrite:
                record.status = "skipped"
                _fill_from_tags(record, facts)
            elif state == "other" and not overwrite:
                record.status = "outdated"
                record.error = detail
                _fill_from_tags(record, facts)
            elif state == "foreign" and not overwrite:
                raise OutputExistsError(detail)
            else:
                result = execute(plan, executor, progress)
                record.tiles_total = result.tiles_total
                record.tiles_fitted = result.tiles_fitted
                record.tiles_resumed = result.tiles_resumed
                record.tiles_skipped = result.tiles_skipped
                record.cycle_rmse = result.mean_cycle_rmse
                record.device = result.device
                record.strategy = result.strategy
                record.registration = result.registration
    except Exception as exc:
        log.debug("%s failed", request.source, exc_info=True)
        record.status = "failed"
        message = " ".join(str(exc).split())
        record.error = (
            message if isinstance(exc, MmsrGeoError) else (f"{type(exc).__name__}: {message}")
        )
    record.seconds = round(time.perf_counter() - started, 3)
    return record


def output_state(plan: RunPlan) -> tuple[str, str, dict[str, Any]]:
    """What is at a planned run's output, as (state, message, facts the output records):
    "absent"; "done" when its tags record this very request; "other" when they record
    another (the message says what differs); "foreign" for a file mmsr-geo did not make or
    cannot read."""
    if not plan.output.exists():
        return "absent", "", {}
    try:
        recorded, facts = read_provenance(plan.output)
    except rasterio.errors.RasterioError:
        recorded, facts = None, None
    if recorded is None:
        return "foreign", (
            f"{plan.output} exists and was not made by mmsr-geo: use --overwrite to replace it"
        ), {}
    settings = plan.settings
    if recorded.get("output_key") == settings.output_key():
        if plan.confidence is not None and not plan.confidence.path.exists():
            return "other", (
                f"{plan.output.name} exists but its uncertainty band {plan.confidence.path.name} "
                "does not: kept; use --overwrite to redo both"
            ), facts or {}
        return "done", "", facts or {}
    changes = describe_changes(recorded, settings.output_fields())
    return "other", (
        f"{plan.output.name} exists, made with other settings ({changes}): kept; "
        "use --overwrite to redo it"
    ), facts or {}


def _fill_from_tags(record: PairRecord, facts: Mapping[str, Any]) -> None:
    """A skipped pair's record from what its output recorded when it was made."""
    record.cycle_rmse = facts.get("mean_cycle_rmse")
    record.strategy = facts.get("strategy")
    record.registration = facts.get("registration")
    devices = facts.get("devices")
    record.device = ",".join(devices) if isinstance(devices, list) else None
