"""The compiled build (setup.py, USE_MYPYC=1): built here as the image builds it,
every module setup.py names is an extension module, and the tests pass against it.

The wheel is built offline from a copy of the sources (pip wheel --no-build-isolation, with the
mypy and setuptools the test extras pin), so the checkout stays free of C files and .so files
that would shadow its sources."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parents[1]
SOURCES: Final = ("setup.py", "pyproject.toml", "README.md", "proxy")
BUILD_TIMEOUT: Final = 600  # seconds: mypyc and gcc take about two minutes on 2 cores
SUITE_TIMEOUT: Final = 600
PIP_WHEEL: Final = (sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check")
PIP_WHEEL_OFFLINE: Final = ("--no-deps", "--no-build-isolation", "--no-index")
PYTEST: Final = (sys.executable, "-m", "pytest", "-q", "-m", "not slow and not interpreted")
PYTEST_OPTIONS: Final = ("-p", "no:cacheprovider", "--import-mode=append", "--rootdir", str(ROOT))

pytestmark = pytest.mark.slow


def compiled_names() -> tuple[str, ...]:
    """setup.py's COMPILED, read without running setup()."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "COMPILED" for target in node.targets
        ):
            names = ast.literal_eval(node.value)
            assert isinstance(names, tuple) and all(isinstance(name, str) for name in names)
            return names
    raise AssertionError("setup.py names no COMPILED modules")


@pytest.fixture(scope="module")
def compiled_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the compiled wheel's files, unpacked: put it first on PYTHONPATH."""
    work = tmp_path_factory.mktemp("compiled")
    source = work / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.so")
            )
        else:
            shutil.copy2(ROOT / name, source / name)
    env = {**os.environ, "USE_MYPYC": "1"}
    build = subprocess.run(
        [*PIP_WHEEL, *PIP_WHEEL_OFFLINE, "-w", str(work / "wheel"), "."],
        cwd=source,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert build.returncode == 0, f"the compiled build failed:\n{build.stdout}\n{build.stderr}"
    (wheel,) = (work / "wheel").glob("lambda_url_proxy-*.whl")
    site = work / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def compiled_env(site: Path) -> dict[str, str]:
    """The environment a process needs to import the compiled package before the checkout's."""
    return {**os.environ, "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"}


def test_every_module_setup_names_is_compiled(compiled_site: Path, tmp_path: Path) -> None:
    names = compiled_names()
    assert {"forward", "upstream", "downstream", "signing"} <= set(names)
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib, sys\n"
            "for name in sys.argv[1:]: print(importlib.import_module('proxy.' + name).__file__)",
            *names,
        ],
        cwd=tmp_path,  # not the checkout: its proxy/ would come first
        env=compiled_env(compiled_site),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert len(found) == len(names)
    for name, path in zip(names, found, strict=True):
        assert path.startswith(str(compiled_site)) and path.endswith(".so"), (name, path)


def test_the_fast_tests_pass_against_the_compiled_build(
    compiled_site: Path, tmp_path: Path
) -> None:
    """The development loop's tests, less those that read or replace a module's internals
    (marked `interpreted`: a compiled module does not expose them), with the compiled package
    imported: --import-mode=append keeps the checkout behind PYTHONPATH."""
    run = subprocess.run(
        [*PYTEST, *PYTEST_OPTIONS, "-c", str(ROOT / "pyproject.toml"), str(ROOT / "tests")],
        cwd=tmp_path,
        env=compiled_env(compiled_site),
        capture_output=True,
        text=True,
        timeout=SUITE_TIMEOUT,
        check=False,
    )
    tail = "\n".join(run.stdout.splitlines()[-40:])
    assert run.returncode == 0, f"against the compiled build:\n{tail}\n{run.stderr[-4000:]}"
    assert " passed" in tail and " failed" not in tail
