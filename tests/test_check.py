"""`lambda-url-proxy check` asks each route's host (issue #13): who the route signs as (STS
GetCallerIdentity), AWS's clock from one unsigned request, and, with `--probe PATH` only, one
signed GET explained. Through the installed command in a clean environment."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.conftest import AKID, SECRET
from tests.fake_credential_sources import FakeSts
from tests.fake_function_url import FakeFunctionUrl, KeyRecord
from tests.test_configuration_matrix import COMMAND, Home, run

CALLER = "arn:aws:iam::123456789012:user/frontend"


@pytest_asyncio.fixture
async def sts(fake: FakeFunctionUrl) -> AsyncIterator[FakeSts]:
    async with FakeSts(fake) as service:
        service.keys[AKID] = KeyRecord(SECRET)
        service.callers[AKID] = CALLER
        yield service


async def check(
    home: Path, sts: FakeSts, url: str, *flags: str
) -> subprocess.CompletedProcess[str]:
    env = Home(home).env(
        AWS_ACCESS_KEY_ID=AKID, AWS_SECRET_ACCESS_KEY=SECRET, AWS_ENDPOINT_URL_STS=sts.url
    )
    argv = [COMMAND, "check", "--region", "us-east-1", "--route", f"/users={url}", *flags]
    return await asyncio.to_thread(
        subprocess.run, argv, env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("offset", [600.0, 0.0], ids=["aws-10-min-ahead", "in-step"])
async def test_check_says_who_signs_and_measures_the_clock_unsigned(
    sts: FakeSts, tmp_path: Path, offset: float
) -> None:
    async with FakeFunctionUrl(clock=lambda: time.time() + offset) as fake:
        fake.keys[AKID] = KeyRecord(SECRET)
        result = await check(tmp_path, sts, fake.url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"/users  signs as {CALLER}" in result.stdout
    clock = next(line for line in result.stdout.splitlines() if "  clock: " in line)
    if offset:
        assert "AWS's clock is 10 min 0 s ahead of this machine's (over 60 s" in clock
    else:
        assert "this machine's (within 60 s: signing by this machine's clock)" in clock
    # One unsigned request, refused before any function ran; nothing signed without --probe.
    assert [(r.verified, r.error_type) for r in fake.received] == [(False, "AccessDeniedException")]
    assert "Authorization" not in dict(fake.received[0].headers)
    assert SECRET not in result.stdout + result.stderr
    assert "AWS's clock" not in result.stderr  # printed once, in the table's company


async def test_probe_sends_one_signed_get_and_explains_a_refusal(
    fake: FakeFunctionUrl, sts: FakeSts, tmp_path: Path
) -> None:
    fake.keys[AKID] = KeyRecord(SECRET)
    result = await check(tmp_path, sts, fake.url, "--probe", "/health")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "/users  GET /users/health: 200 OK" in result.stdout
    assert [r.raw_path for r in fake.received if r.verified] == ["/health"]

    fake.keys[AKID] = KeyRecord(SECRET, allowed=False)
    result = await check(tmp_path, sts, fake.url, "--probe", "/health")
    assert result.returncode == 1
    probe = next(line for line in result.stdout.splitlines() if "GET /users/health" in line)
    assert "403 Forbidden (AccessDeniedException): access_denied: " in probe
    assert f"{CALLER} may not invoke" in probe and "lambda:InvokeFunction" in probe


@pytest.mark.parametrize(
    "argv", [["--probe", "/health"], ["check", "--probe", "health"]], ids=["serve", "no-slash"]
)
def test_probe_is_for_check_and_a_path(argv: list[str], tmp_path: Path) -> None:
    env = Home(tmp_path).env(AWS_ACCESS_KEY_ID=AKID, AWS_SECRET_ACCESS_KEY=SECRET)
    result = run(env, *argv, "--route", "/u=http://127.0.0.1:9", "--region", "us-east-1")
    assert result.returncode == 2
    assert "give a path that starts with / to `check`" in result.stderr
    assert "Traceback" not in result.stderr
