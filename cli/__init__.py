"""The ``mmsr-geo`` command line: a thin Click layer over :mod:`mmsr_geo` (parse, validate,
call, report)."""
