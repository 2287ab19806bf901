"""The compiled proxy (setup.py, USE_MYPYC=1), built from this checkout into a directory of its
own: for `python -m bench --compiled` and tests/test_compiled.py.

Built offline from a copy of the sources (pip wheel --no-build-isolation --no-index, with the
mypy and setuptools of this environment), so the checkout gains no C files or extension modules
that would shadow its sources, and unpacked: put the directory first on PYTHONPATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[1]
SOURCES: Final = ("setup.py", "pyproject.toml", "README.md", "proxy")
BUILD_TIMEOUT: Final = 600  # seconds: mypyc and gcc take one to two minutes on 2 cores
PIP_WHEEL: Final = (sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check")
OFFLINE: Final = ("--no-deps", "--no-build-isolation", "--no-index")


class BuildFailed(RuntimeError):
    """The compiled build did not succeed: pip's output says why."""


def build(workdir: Path) -> Path:
    """Build the compiled wheel in `workdir` and unpack it: the directory to import it from."""
    source = workdir / "source"
    source.mkdir(parents=True)
    for name in SOURCES:
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.so")
            shutil.copytree(ROOT / name, source / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, source / name)
    built = subprocess.run(
        [*PIP_WHEEL, *OFFLINE, "-w", str(workdir / "wheel"), "."],
        cwd=source,
        env={**os.environ, "USE_MYPYC": "1"},
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    if built.returncode != 0:
        raise BuildFailed(f"the compiled build failed:\n{built.stdout}\n{built.stderr}")
    (wheel,) = (workdir / "wheel").glob("lambda_url_proxy-*.whl")
    site = workdir / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def environment(site: Path) -> dict[str, str]:
    """This process's environment, with the compiled package imported before any other."""
    return {**os.environ, "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"}


def command(site: Path) -> list[str]:
    """The compiled proxy as a command (`python -m proxy`, as `lambda-url-proxy` runs it)."""
    return ["env", f"PYTHONPATH={site}", "PYTHONDONTWRITEBYTECODE=1", sys.executable, "-m", "proxy"]
