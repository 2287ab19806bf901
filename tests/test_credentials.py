"""Temporary credentials from a real credential_process: rotated before expiry, off the loop."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import botocore.credentials
import pytest
import pytest_asyncio

from proxy.credentials import Identity
from proxy.errors import CredentialsUnavailable
from tests.conftest import RunningProxy, route, running_proxy
from tests.fake_function_url import FakeFunctionUrl, KeyRecord

# Issues a new key on every call, valid for LIFETIME seconds, after DELAY seconds; logs each key
# (with its real expiry) before printing it, so the fake knows every key the proxy can hold.
CREDENTIAL_PROCESS = """
import json, sys, time
from datetime import datetime, timezone
state, lifetime, delay = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
time.sleep(delay)
try:
    n = int(open(state + "/counter").read()) + 1
except FileNotFoundError:
    n = 1
open(state + "/counter", "w").write(str(n))
expires = time.time() + lifetime
key = {"key": f"ASIAPROCESS{n:09d}", "secret": f"secret-{n}", "token": f"token-{n}",
       "expires_at": expires}
with open(state + "/issued.jsonl", "a") as log:
    log.write(json.dumps(key) + "\\n")
print(json.dumps({"Version": 1, "AccessKeyId": key["key"], "SecretAccessKey": key["secret"],
    "SessionToken": key["token"],
    "Expiration": datetime.fromtimestamp(expires, timezone.utc).isoformat()}))
"""


class IssuedKeys(dict[str, KeyRecord]):
    """The fake's key table, read from the credential process's log: keys expire for real."""

    def __init__(self, log: Path) -> None:
        super().__init__()
        self.log = log

    def get(self, key: str, default: Any = None) -> Any:
        if self.log.exists():
            for line in self.log.read_text().splitlines():
                issued = json.loads(line)
                self[issued["key"]] = KeyRecord(
                    issued["secret"], issued["token"], expires_at=issued["expires_at"]
                )
        return super().get(key, default)

    def issued(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]


def access_key(headers: list[tuple[str, str]]) -> str:
    authorization = next(v for k, v in headers if k.lower() == "authorization")
    match = re.search(r"Credential=([^/]+)/", authorization)
    assert match
    return match.group(1)


def use_credential_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, lifetime: float, delay: float = 0.0
) -> Path:
    script = tmp_path / "issue_keys.py"
    script.write_text(CREDENTIAL_PROCESS)
    config = tmp_path / "aws-config"
    config.write_text(
        f"[default]\ncredential_process = {sys.executable} {script} {tmp_path} {lifetime} {delay}\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    return tmp_path / "issued.jsonl"


@pytest_asyncio.fixture
async def rotating(
    fake: FakeFunctionUrl, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[tuple[RunningProxy, IssuedKeys]]:
    keys = IssuedKeys(use_credential_process(monkeypatch, tmp_path, lifetime=3.0))
    fake.keys = keys
    async with running_proxy(routes=[route("/fn", fake.url)]) as proxy:
        yield proxy, keys


async def test_requests_succeed_across_many_rotations(
    rotating: tuple[RunningProxy, IssuedKeys], fake: FakeFunctionUrl
) -> None:
    proxy, keys = rotating
    statuses: list[int] = []
    deadline = time.monotonic() + 8.0
    while time.monotonic() < deadline:
        async with proxy.client.get(proxy.url + "/fn/tick") as response:
            statuses.append(response.status)
            await response.read()
        await asyncio.sleep(0.02)
    assert set(statuses) == {200}, [s for s in statuses if s != 200][:5]
    used = {access_key(r.headers) for r in fake.received}
    assert len(used) >= 3  # keys living 3 s, 8 s of traffic: rotated, not just renewed once
    # The fake refused any key past its expiry: every request was signed with a live key.
    assert all(r.verified for r in fake.received)
    expiry = {issued["key"]: issued["expires_at"] for issued in keys.issued()}
    for received in fake.received:
        headers = {k.lower(): v for k, v in received.headers}
        key = access_key(received.headers)
        signed_at = datetime.strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        assert signed_at.timestamp() < expiry[key]


async def test_a_slow_refresh_never_blocks_the_event_loop(
    fake: FakeFunctionUrl, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Each refresh takes 2 s; a refresh on the event loop would stall the stream that long.
    fake.keys = IssuedKeys(use_credential_process(monkeypatch, tmp_path, lifetime=6.0, delay=2.0))
    async with running_proxy(routes=[route("/fn", fake.url)]) as proxy:
        arrivals: list[float] = []
        async with proxy.client.get(proxy.url + "/fn/slow-stream/250/0.02") as response:
            assert response.status == 200
            async for _ in response.content.iter_any():
                arrivals.append(time.monotonic())
    assert isinstance(fake.keys, IssuedKeys)
    issued = fake.keys.issued()
    assert len(issued) >= 2  # a refresh did run while the stream flowed (about 5 s)
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    # A refresh on the loop would stall it for its whole 2 s; a busy machine stalls it for less.
    assert max(gaps) < 1.0, f"the stream stalled for {max(gaps):.3f} s"


async def test_static_credentials_are_resolved_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIASTATIC0000000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "static-secret")
    identity = Identity()
    await asyncio.wait_for(identity.run(), timeout=5)  # returns: nothing left to refresh
    assert identity.current().access_key == "AKIASTATIC0000000001"
    assert identity.status()["source"] == "env"


async def test_expired_credentials_are_never_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log = use_credential_process(monkeypatch, tmp_path, lifetime=3600.0)
    now = [time.time()]
    identity = Identity(clock=lambda: now[0])
    await identity.refresh()
    expires_at = json.loads(log.read_text())["expires_at"]
    assert identity.current().access_key == "ASIAPROCESS000000001"
    now[0] = expires_at - 0.5  # a request signed now could reach AWS after the expiry
    with pytest.raises(CredentialsUnavailable, match="have expired"):
        identity.current()


async def test_refreshable_credentials_whose_expiry_cannot_be_read_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Were botocore to rename the attribute that holds a refreshable chain's expiry, the keys
    must not be taken as never expiring (refreshes would stop): they are refused, saying why."""
    use_credential_process(monkeypatch, tmp_path, lifetime=3600)
    monkeypatch.setattr(
        botocore.credentials.RefreshableCredentials,
        "_expiry_time",
        property(lambda self: None, lambda self, value: None),
        raising=False,  # an instance attribute today: the class has none to replace
    )
    identity = Identity()
    with pytest.raises(LookupError):
        await identity.refresh()
    assert not identity.usable
    assert "expiry cannot be read" in (identity.error or "")
