"""Many rasters in one run, split by job: ``pairs`` (discovery), ``naming`` (where each result
goes), ``runner`` (the loop), ``report`` (the JSON report) and ``index`` (the GeoJSON index of
footprints)."""

from .index import INDEX_NAME
from .pairs import DFC_GUIDE_RULE, GuideRule, Pair, pairs_from_glob, pairs_from_manifest
from .report import REPORT_NAME, BatchReport, PairRecord
from .runner import output_state, run_batch

__all__ = [
    "DFC_GUIDE_RULE",
    "INDEX_NAME",
    "REPORT_NAME",
    "BatchReport",
    "GuideRule",
    "Pair",
    "PairRecord",
    "output_state",
    "pairs_from_glob",
    "pairs_from_manifest",
    "run_batch",
]
