"""Clock skew, corrected (issue #13): AWS's clock read from its answers' Date, a request refused
for its time signed again by AWS's clock and sent once more, later requests signed by it from
the start. Through the installed command against a fake whose clock is 10 minutes off; the
estimate itself as a pure object with a frozen clock."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from proxy.skew import CORRECT_ABOVE, FIXES, AwsClock, Clocks, aws_now_in, describe, http_date
from tests.conftest import AKID, SECRET, ProxyProcess, route, running_proxy
from tests.fake_function_url import FakeFunctionUrl, KeyRecord
from tests.test_configuration_matrix import Home, serve

TEN_MINUTES = 600.0
NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def date(epoch: float) -> bytes:
    return formatdate(epoch, usegmt=True).encode()


# --- The estimate ------------------------------------------------------------------------------


def test_http_date_reads_imf_fixdate_and_refuses_the_rest() -> None:
    assert http_date(b"Fri, 15 Jan 2027 08:00:00 GMT") == NOW
    assert http_date(b"yesterday") is None
    assert http_date(b"") is None


def test_a_refusal_message_states_aws_time() -> None:
    expired = (
        b'{"message":"Signature expired: 20270115T075000Z is now earlier than 20270115T075500Z '
        b'(20270115T080000Z - 5 min.)"}'
    )
    assert aws_now_in(expired) == NOW
    assert aws_now_in(b'{"message":"Forbidden"}') is None


def test_a_small_offset_is_measured_but_not_corrected() -> None:
    clock = AwsClock("h", lambda: NOW)
    clock.observe(date(NOW + 3))
    assert clock.offset == pytest.approx(3.5)
    assert clock.shift == 0.0
    assert clock() == "20270115T080000Z"  # this machine's time: the offset is noise to SigV4


@pytest.mark.parametrize("offset", [TEN_MINUTES, -TEN_MINUTES])
def test_a_large_offset_shifts_every_signature(offset: float) -> None:
    clock = AwsClock("h", lambda: NOW)
    clock.observe(date(NOW + offset))
    assert clock.shift == pytest.approx(offset + 0.5)
    expected = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(NOW + offset))
    assert clock() == expected


def test_the_same_date_again_costs_nothing_and_changes_nothing() -> None:
    readings = [NOW]
    clock = AwsClock("h", lambda: readings[-1])
    clock.observe(date(NOW))
    readings.append(NOW + 0.9)  # the same second on AWS's Date: not sampled again
    clock.observe(date(NOW))
    assert clock.offset == pytest.approx(0.5)


def test_the_estimate_averages_small_moves_and_follows_a_stepped_clock() -> None:
    readings = [NOW]
    clock = AwsClock("h", lambda: readings[-1])
    clock.observe(date(NOW + 100))
    readings.append(NOW + 1)
    clock.observe(date(NOW + 1 + 104))  # 4 s further: averaged in
    assert 100.5 < (clock.offset or 0) < 104.5
    readings.append(NOW + 2)
    clock.observe(date(NOW + 2))  # NTP stepped this machine's clock: the estimate follows
    assert clock.offset == pytest.approx(0.5)
    assert clock.shift == 0.0


def test_a_refusal_restarts_the_estimate_from_its_own_time() -> None:
    clock = AwsClock("h", lambda: NOW)
    clock.observe(date(NOW))
    clock.refused(None, b"... (20270115T081000Z + 5 min.)")  # no Date: the message's time
    assert clock.offset == pytest.approx(TEN_MINUTES + 0.5)
    clock.refused(date(NOW - TEN_MINUTES), b"")
    assert clock.offset == pytest.approx(-TEN_MINUTES + 0.5)


def observed(name: str, offset: float, answers: int, **options: Any) -> AwsClock:
    """A clock that saw `answers` answers, a second apart, from AWS `offset` seconds ahead."""
    readings = [NOW]
    clock = AwsClock(name, lambda: readings[-1], **options)
    for second in range(answers):
        readings.append(NOW + second)
        clock.observe(date(NOW + second + offset))
    return clock


def test_one_warning_names_the_offset_and_the_fixes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxy.clock")
    observed("abc.lambda-url.eu-west-1.on.aws", TEN_MINUTES, 5)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "abc.lambda-url.eu-west-1.on.aws is 10 min 0 s ahead of this machine's" in message
    assert FIXES in message and "wsl --shutdown" in message and "hwclock -s" in message


def test_the_first_measurement_is_told_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxy.clock")
    observed("h", 2, 3)
    assert [r.getMessage() for r in caplog.records] == [
        "AWS's clock at h is 2.5 s ahead of this machine's (from its first answer)"
    ]
    quiet = observed("h", TEN_MINUTES, 1, tell=False)  # check prints it instead
    assert len(caplog.records) == 1 and quiet.shift


def test_describe_says_which_way() -> None:
    assert describe(-612.4) == "10 min 12 s behind"
    assert describe(2.25) == "2.2 s ahead of"
    assert describe(-0.5) == describe(0.5) == "within 1 s of"
    assert CORRECT_ABOVE == 60.0


def test_clocks_are_kept_per_origin_and_report_the_measured_ones() -> None:
    clocks = Clocks(lambda: NOW)
    first = clocks.get(("https", "a", 443, None), "a")
    assert clocks.get(("https", "a", 443, None), "a") is first
    clocks.get(("https", "b", 443, None), "b")  # never answered: not reported
    first.observe(date(NOW - TEN_MINUTES))
    assert clocks.status() == [{"host": "a", "offset_seconds": -599.5, "corrected": True}]


def test_the_metrics_offsets_are_by_host_the_farther_of_two_origins() -> None:
    clocks = Clocks(lambda: NOW, tell=False)
    clocks.get(("https", "a", 443, None), "a").observe(date(NOW + 3))
    clocks.get(("http", "a", 8080, None), "a").observe(date(NOW - TEN_MINUTES))
    clocks.get(("https", "b", 443, None), "b")  # never answered: no figure
    assert clocks.offsets() == {"a": -599.5}


# --- Through the installed command -------------------------------------------------------------


@pytest_asyncio.fixture(params=[TEN_MINUTES, -TEN_MINUTES], ids=["aws-ahead", "aws-behind"])
async def skewed(request: pytest.FixtureRequest) -> AsyncIterator[FakeFunctionUrl]:
    offset = request.param
    async with FakeFunctionUrl(clock=lambda: time.time() + offset) as fake:
        fake.keys[AKID] = KeyRecord(SECRET)
        yield fake


async def serve_skewed(processes: list[ProxyProcess], home: Path, url: str) -> ProxyProcess:
    """The installed command in a clean environment: keys in the variables a user exports."""
    env = Home(home).env(AWS_ACCESS_KEY_ID=AKID, AWS_SECRET_ACCESS_KEY=SECRET)
    return await serve(processes, env, "--route", f"/fn={url}", "--region", "us-east-1")


@pytest.mark.slow
async def test_requests_succeed_whichever_way_the_clock_is_off(
    skewed: FakeFunctionUrl, processes: list[ProxyProcess], tmp_path: Path
) -> None:
    proxy = await serve_skewed(processes, tmp_path, skewed.url)
    statuses: list[int] = []
    async with aiohttp.ClientSession() as client:
        for path in ("/fn/one", "/fn/two?x=1", "/fn/three"):
            async with client.get(proxy.url + path) as response:
                statuses.append(response.status)
        async with client.post(proxy.url + "/fn/post", data=b'{"order": 42}') as response:
            statuses.append(response.status)
            echoed: dict[str, Any] = await response.json()
        async with client.get(proxy.url + "/_proxy/ready") as response:
            ready = await response.json()

    assert statuses == [200, 200, 200, 200], "".join(proxy.lines)
    assert echoed["body"] == '{"order": 42}'
    # The fake refused the first attempt only, for its time; each request reached it at most
    # twice: the first one twice, every later one once.
    received = skewed.received
    assert [r.verified for r in received] == [False, True, True, True, True]
    assert received[0].error_type == "InvalidSignatureException"
    assert [r.raw_path for r in received] == ["/one", "/one", "/two?x=1", "/three", "/post"]
    # Said once, with the offset and the fixes; and in /_proxy/ready.
    offset = skewed._clock() - time.time()
    way = "ahead of" if offset > 0 else "behind"
    warnings = [line for line in proxy.lines if "AWS's clock at 127.0.0.1" in line]
    assert len(warnings) == 1 and f"10 min 0 s {way} this machine's" in warnings[0], warnings
    assert "wsl --shutdown" in warnings[0]
    (clock,) = ready["clocks"]
    assert clock["host"] == "127.0.0.1" and clock["corrected"] is True
    assert abs(clock["offset_seconds"] - offset) < 2


@pytest.mark.slow
async def test_a_clock_that_is_right_is_measured_and_left_alone(
    fake: FakeFunctionUrl, processes: list[ProxyProcess], tmp_path: Path
) -> None:
    fake.keys[AKID] = KeyRecord(SECRET)
    proxy = await serve_skewed(processes, tmp_path, fake.url)
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url + "/fn/x") as response:
            assert response.status == 200
            assert "X-Proxy-Diagnosis" not in response.headers
        async with client.get(proxy.url + "/_proxy/ready") as response:
            (clock,) = (await response.json())["clocks"]
    assert [r.verified for r in fake.received] == [True]
    assert clock["corrected"] is False and abs(clock["offset_seconds"]) < 2
    told = [line for line in proxy.lines if "AWS's clock" in line]
    assert len(told) == 1 and "this machine's (from its first answer)" in told[0], told
    assert "WARNING" not in told[0]


async def test_requests_refused_together_are_each_sent_at_most_twice(
    skewed: FakeFunctionUrl, aws_keys: None
) -> None:
    """The first requests after the drift race the correction: each is re-signed once."""
    async with running_proxy(routes=[route("/fn", skewed.url)]) as proxy:

        async def get(n: int) -> int:
            async with proxy.client.get(f"{proxy.url}/fn/{n}") as response:
                await response.read()
                return response.status

        statuses = await asyncio.gather(*(get(n) for n in range(8)))
    assert statuses == [200] * 8
    sent = Counter(r.raw_path for r in skewed.received)
    assert set(sent) == {f"/{n}" for n in range(8)} and max(sent.values()) <= 2
    assert all(r.verified for r in skewed.received if sent[r.raw_path] == 1)
