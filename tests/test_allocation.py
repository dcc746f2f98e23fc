"""Freed memory kept for reuse (:mod:`mmsr_geo.allocation`): in a command's process and in the
processes it starts, in real Python processes on this machine's C library."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from mmsr_geo.allocation import OPT_OUT, SETTINGS

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="glibc's allocator only",
)

RETURNED = textwrap.dedent("""
    import numpy as np

    def rss_mib():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

    block = np.ones(200 * 2**20 // 8)  # 200 MiB in one allocation, touched
    before = rss_mib()
    del block
    print(round(before - rss_mib()))  # MiB the process gave back to the kernel
""")


def _returned_mib(code: str, env: dict[str, str]) -> int:
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in SETTINGS and k != OPT_OUT}


def test_a_plain_process_gives_a_large_freed_block_back() -> None:
    assert _returned_mib(RETURNED, _clean_env()) >= 190  # what the setting changes


COMMAND = textwrap.dedent("""
    import click
    from mmsr_geo_cli.common import reporting_command

    @click.command()
    @reporting_command
    def probe(quiet, progress):
        exec(BODY)

    probe(args=[], standalone_mode=False)
""")
"""A real command of the command line (its shared wrapper) running ``BODY``."""


def _in_command(body: str) -> str:
    return f"BODY = {body!r}\n" + COMMAND


def test_a_command_keeps_freed_memory_and_so_do_the_processes_it_starts() -> None:
    env = _clean_env()
    assert _returned_mib(_in_command(RETURNED), env) <= 10
    # a process it starts (a local worker, a Dask worker) reads the settings at its start
    child = textwrap.dedent(f"""
        import subprocess, sys
        print(subprocess.run([sys.executable, "-c", {RETURNED!r}], capture_output=True,
                             text=True, check=True).stdout)
    """)
    assert _returned_mib(_in_command(child), env) <= 10


def test_loading_the_command_line_changes_nothing() -> None:
    # rio loads our plugin for every command: only our commands' processes are changed
    assert _returned_mib("import mmsr_geo_cli.common\n" + RETURNED, _clean_env()) >= 190


def test_settings_the_user_made_are_kept_and_the_opt_out_leaves_the_allocator_alone() -> None:
    env = {**_clean_env(), "MALLOC_MMAP_MAX_": "65536"}  # glibc's default: mappings allowed
    assert _returned_mib(_in_command(RETURNED), env) >= 190
    env = {**_clean_env(), OPT_OUT: "0"}
    assert _returned_mib(_in_command(RETURNED), env) >= 190
