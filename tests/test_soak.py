"""The short soak (issue 6): `python -m bench.soak --seconds 20` exits 0 (no growth, no failed
request), rotates credentials during the run and drives every kind of traffic."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.conftest import PYTHON, ROOT

# Not in the development loop (-m "not slow"): the soak.
pytestmark = pytest.mark.slow


@pytest.mark.timeout(90)
def test_short_soak_is_flat_and_rotates_credentials() -> None:
    result = subprocess.run(
        [PYTHON, "-m", "bench.soak", "--seconds", "20"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=80,
        check=False,
    )
    output = result.stdout + result.stderr
    print(output)
    assert result.returncode == 0, output
    assert "verdict: PASS" in output
    summary = re.search(
        r"small (\d+), upload (\d+), stream (\d+), disconnect (\d+)\), errors 0", output
    )
    assert summary, output
    assert all(int(count) > 0 for count in summary.groups()), summary.group(0)
    keys = re.search(r"(\d+) keys issued .*?, (\d+) distinct keys reached the function", output)
    assert keys, output
    issued, used = int(keys.group(1)), int(keys.group(2))
    assert issued > 1 and used > 1, keys.group(0)  # rotations happened during the traffic
    cut = re.search(r"disconnects: (\d+) clients hung up mid-stream", output)
    assert cut and int(cut.group(1)) > 0
