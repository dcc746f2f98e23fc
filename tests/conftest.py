"""Test-session set-up shared by every module."""

import os
import signal

# The suite runs in two worker processes (pytest-xdist, `-n 2` in pyproject) on CI's 2 cores,
# and every test starts more processes (the real command, Dask workers, QGIS). Threads that
# wait for work must sleep, not spin, or each process steals the cores the others compute on
# (BENCHMARKS.md, "Concurrent runs"); the command line sets the same for itself
# (cli/__init__.py). Set here, before any test module imports torch or numba.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Several tests stop a real `mmsr-geo` with SIGINT, as Ctrl-C in a terminal does. A test run
# started in the background by a shell (`pytest &`, nohup) has SIGINT ignored, and children
# inherit an ignored signal: the tool would then never see the Ctrl-C. Give the test process
# the foreground's handler, which its children's Python turns back into KeyboardInterrupt.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
