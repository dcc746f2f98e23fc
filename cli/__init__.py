"""The ``mmsr-geo`` command line: a thin Click layer over :mod:`mmsr_geo` (parse, validate,
call, report).

Threads that wait for work sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``, read by the
OpenMP runtimes of torch and numba when they start, hence set before either is imported): with
spinning threads two runs on one machine were several times slower each than one alone
(BENCHMARKS.md, "Concurrent runs"). A value the user set is kept.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
