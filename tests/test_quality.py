"""The code stays typed (mypy strict), linted and formatted (ruff): checked with every test run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "mypy"],
        [sys.executable, "-m", "ruff", "check", "."],
        [sys.executable, "-m", "ruff", "format", "--check", "."],
    ],
    ids=["mypy", "ruff-check", "ruff-format"],
)
def test_tool_is_clean(command: list[str]) -> None:
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_security_claims_point_at_tests_that_exist() -> None:
    """SECURITY.md backs each claim with a test by name: those tests must exist."""
    import re

    text = (ROOT / "SECURITY.md").read_text()
    sources = {path.name: path.read_text() for path in (ROOT / "tests").glob("test_*.py")}
    named = re.findall(r"(test_\w+\.py)::(test_\w+)", text)
    assert len(named) >= 10
    for file, test in named:
        assert f"def {test}(" in sources[file], f"{file}::{test}"
    for file in re.findall(r"`(test_\w+\.py)`", text):
        assert file in sources, file
