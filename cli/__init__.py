"""The ``mmsr-geo`` command line: a thin Click layer over :mod:`mmsr_geo` (parse, validate,
call, report).

Threads that wait for work sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``, read by the
OpenMP runtimes of torch and numba when they start, hence set before either is imported): with
spinning threads two runs on one machine were several times slower each than one alone
(BENCHMARKS.md, "Concurrent runs"). Freed memory is kept for reuse instead of going back to
the kernel after every step (:mod:`mmsr_geo.allocation`; BENCHMARKS.md, "Freed memory kept for
reuse"). Values the user set are kept.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from mmsr_geo.allocation import keep_freed_memory  # noqa: E402 (after the OpenMP setting)

keep_freed_memory()
