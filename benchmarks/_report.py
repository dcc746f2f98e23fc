"""Shared by the benchmark scripts: describe the machine, keep a JSON-lines log of runs, write
one marked section of a report.

Each script owns one section of BENCHMARKS.md, between ``<!-- NAME:start -->`` and
``<!-- NAME:end -->``; rerunning it replaces that section in place and leaves the others (and
any hand-written text) alone, so every script can be rerun on its own.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import platform
from pathlib import Path
from typing import Any


def utc_stamp() -> str:
    """The time now, to the minute, as every benchmark record and machine line gives it."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def cpu_model() -> str:
    """The CPU's model name (runs on different CPUs differ in floating-point order)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def machine_description() -> str:
    """One line: CPU model, usable cores, memory, OS, Python/torch/numba versions, load, date.

    The load average is there because a benchmark on a shared machine is only as quiet as its
    neighbours: a load above the core count means the timings are pessimistic.
    """
    import torch  # imported here: describing the machine should not cost a torch import early

    try:
        import numba

        numba_version = numba.__version__
    except ImportError:
        numba_version = "not installed"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = _memory_gib()
    parts = [
        f"{cpu_model()}, {cores} cores"
        + (f", {memory:.0f} GiB RAM" if memory is not None else ""),
        f"{platform.system()} {platform.release()}",
        f"Python {platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), numba {numba_version}",
    ]
    if hasattr(os, "getloadavg"):
        parts.append("load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    parts.append(utc_stamp())
    return "; ".join(parts)


def read_log(path: Path | None) -> list[dict[str, Any]]:
    """The records of a JSON-lines log, oldest first (none if there is none yet). A torn last
    line (a run killed while it appended) is left out, so that a rerun fits that case again;
    a bad line before it is an error."""
    if path is None or not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise
    return records


def append_log(path: Path, record: dict[str, Any]) -> None:
    """Add one record to a JSON-lines log at once, so a stopped run keeps what it finished;
    the torn end a killed append left (no final newline) is cut off first."""
    if path.exists() and (data := path.read_bytes()) and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def write_section(path: str | os.PathLike, name: str, markdown: str) -> None:
    """Put ``markdown`` between the ``name`` markers of ``path``, replacing what was there.

    The section is appended if the markers are missing, and the file is created with a
    ``# Benchmarks`` title if it does not exist. The file is locked while it is rewritten, so
    benchmark scripts finishing at the same time do not lose each other's sections.
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{markdown.strip()}\n{end}"
    with open(Path(path), "a+", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        text = f.read() or "# Benchmarks\n"
        i = text.find(start)
        j = text.find(end, i + len(start)) if i >= 0 else -1
        if i >= 0 and j >= 0:
            text = text[:i] + block + text[j + len(end) :]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        f.seek(0)
        f.truncate()
        f.write(text)
