"""The compiled build (setup.py, USE_MYPYC=1), built by bench/compiled.py: every module setup.py
names is an extension module, and the development loop's tests pass against it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

from bench import compiled

ROOT: Final = Path(__file__).resolve().parents[1]
SUITE_TIMEOUT: Final = 600
PYTEST: Final = (sys.executable, "-m", "pytest", "-q", "-m", "not slow and not interpreted")
PYTEST_OPTIONS: Final = ("-p", "no:cacheprovider", "--import-mode=append", "--rootdir", str(ROOT))

# The build (one to two minutes) and the development loop's run (one) are each longer than
# pyproject.toml's 120 s allows a test on a busy machine; each has its own timeout below that.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


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
    """The compiled package, built as bench/compiled.py builds it: first on PYTHONPATH."""
    return compiled.build(tmp_path_factory.mktemp("compiled"))


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
        env=compiled.environment(compiled_site),
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
    imported: --import-mode=append keeps the checkout behind PYTHONPATH, and conftest.py refuses
    to run on anything but the compiled build."""
    run = subprocess.run(
        [*PYTEST, *PYTEST_OPTIONS, "-c", str(ROOT / "pyproject.toml"), str(ROOT / "tests")],
        cwd=tmp_path,
        env={**compiled.environment(compiled_site), "TESTS_EXPECT_COMPILED": "1"},  # conftest.py
        capture_output=True,
        text=True,
        timeout=SUITE_TIMEOUT,
        check=False,
    )
    tail = "\n".join(run.stdout.splitlines()[-40:])
    assert run.returncode == 0, f"against the compiled build:\n{tail}\n{run.stderr[-4000:]}"
    assert " passed" in tail and " failed" not in tail


def test_the_bench_runs_the_compiled_build_as_a_command(
    compiled_site: Path, tmp_path: Path
) -> None:
    """`python -m bench --compiled` measures this command: it starts the compiled proxy."""
    shown = subprocess.run(
        [*compiled.command(compiled_site), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--route" in shown
