"""The wheel holds every module of the source tree.

The editable install the tests run under finds any module on disk, so a subpackage missing
from pyproject's package list passes every other test and breaks ``pip install mmsr-geo``
(``mmsr_geo.run`` and ``mmsr_geo.batch`` were missing until this test came).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from test_batch import REPO

PACKAGE_DIRS = {"mmsr_geo": "mmsr_geo", "cli": "mmsr_geo_cli"}
"""Source folder -> the package name it is installed as (pyproject's package-dir)."""


def source_modules() -> set[str]:
    """Every .py file of the installed packages, as its path inside the wheel."""
    modules = set()
    for folder, package in PACKAGE_DIRS.items():
        for path in (REPO / folder).rglob("*.py"):
            modules.add(f"{package}/{path.relative_to(REPO / folder).as_posix()}")
    return modules


def test_the_wheel_holds_every_module(tmp_path: Path):
    # Build from a copy, so that setuptools' build/ and egg-info land in tmp_path, not the repo.
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tree / name)
    for folder in PACKAGE_DIRS:
        shutil.copytree(REPO / folder, tree / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # The build requirements are usually installed already (the editable install used them):
    # then build without fetching them again.
    have_backend = all(importlib.util.find_spec(m) for m in ("setuptools", "wheel"))
    isolation = ["--no-build-isolation"] if have_backend else []
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation,
         "-q", "-w", str(tmp_path / "dist"), str(tree)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "dist").glob("mmsr_geo-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = {name for name in archive.namelist() if name.endswith(".py")}
        entry_points = next(
            archive.read(n).decode() for n in archive.namelist() if n.endswith("entry_points.txt")
        )
    assert sorted(source_modules() - in_wheel) == []
    assert "mmsr-geo = mmsr_geo_cli.main:main" in entry_points
