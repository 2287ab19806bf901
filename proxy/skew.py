"""AWS's clock as its answers show it: a running estimate of its offset from this machine's
clock, per upstream origin, and the x-amz-date to sign with. No I/O, no aiohttp.

Lambda accepts a signature only within 5 minutes of its own clock, and botocore never corrects
skew (boto/boto3#1252); a laptop's Docker Desktop or WSL clock drifts after sleep
(microsoft/WSL#10006, docker/for-win#4526). Every answer carries AWS's `Date`, to the second:
the JS v3 and .NET SDKs correct from it, and so does the proxy (issue #13).

The request path pays for this only when the second on AWS's `Date` changes (a bytes compare
otherwise), and signs with this machine's clock until the offset is known to be over
CORRECT_ABOVE.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Hashable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final

from proxy.signing import AmzClock

log: Final = logging.getLogger("proxy.clock")

# Beyond this many seconds, requests are signed by AWS's clock from the start. Below it the
# offset is noise to SigV4 (5 minutes of slack), and the machine's own clock is the better one.
CORRECT_ABOVE: Final = 60.0
# A sample this far from the estimate replaces it: the clock was stepped (NTP woke up, a
# laptop resumed), not drifting.
JUMP: Final = 10.0
# How much of each new sample the running estimate takes in.
WEIGHT: Final = 0.25
FIXES: Final = (
    "fix this machine's clock: on WSL, `wsl --shutdown` then reopen it; with Docker Desktop, "
    "restart it; in a Linux VM after sleep, `sudo hwclock -s`; or enable NTP "
    "(`sudo timedatectl set-ntp true`)"
)
# AWS's time in a refusal's message: "... (20261201T162334Z - 5 min.)"
_AWS_NOW: Final = re.compile(r"\((\d{8}T\d{6}Z) [-+] 5 min\.\)")


def http_date(value: bytes) -> float | None:
    """Epoch seconds of an HTTP `Date` (RFC 9110's IMF-fixdate, or the obsolete forms), else
    None: a Date that cannot be read measures nothing."""
    try:
        parsed = parsedate_to_datetime(value.decode("latin-1"))
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:  # "-0000": UTC by RFC 5322's reading
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def aws_now_in(message: bytes) -> float | None:
    """AWS's time as a time refusal's message states it, for an answer without `Date`."""
    found = _AWS_NOW.search(message.decode("utf-8", "replace"))
    if found is None:
        return None
    return datetime.strptime(found[1], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()


def describe(offset: float) -> str:
    """How AWS's clock stands to this machine's: "10 min 0 s ahead of", "3.2 s behind",
    "within 1 s of"."""
    way = "ahead of" if offset >= 0 else "behind"
    size = abs(offset)
    if size < 1:  # `Date` is to the second: less is not measured
        return "within 1 s of"
    if size < 60:
        return f"{size:.1f} s {way}"
    minutes, seconds = divmod(round(size), 60)
    return f"{minutes} min {seconds} s {way}"


class AwsClock(AmzClock):
    """x-amz-date by AWS's clock for one origin (called for every request), and what that
    origin's answers say of it (`observe`, `refused`).

    `offset` is AWS's clock minus this machine's, in seconds (None until an answer measured
    it); `shift` is what signing adds: the offset once it is over CORRECT_ABOVE, else 0."""

    def __init__(
        self, name: str, clock: Callable[[], float] = time.time, tell: bool = True
    ) -> None:
        super().__init__(clock)
        self.name = name  # the origin's host, for what is said about it
        self.tell = tell  # log what the answers show (`check` prints it instead)
        self.offset: float | None = None
        self._last_date = b""
        self._told = False

    def observe(self, date: bytes | None) -> None:
        """An answer's `Date`: it moves the estimate once per second AWS's clock shows (the
        same value again is one bytes compare)."""
        if date is None or date == self._last_date:
            return
        self._last_date = date
        aws = http_date(date)
        if aws is not None:
            self._sample(aws, self._clock())

    def refused(self, date: bytes | None, message: bytes) -> None:
        """A request refused for its time: the estimate starts again from this answer's time
        (its `Date`, else the time its message states), so that the next signature is right."""
        aws = http_date(date) if date is not None else None
        if aws is None:
            aws = aws_now_in(message)
        if aws is not None:
            self.offset = None  # the refusal proves the estimate wrong: no averaging with it
            self._sample(aws, self._clock())

    def status(self) -> dict[str, Any]:
        """For /_proxy/ready and `check`."""
        offset = self.offset
        return {
            "host": self.name,
            "offset_seconds": None if offset is None else round(offset, 1),
            "corrected": self.shift != 0.0,
        }

    def _sample(self, aws: float, now: float) -> None:
        # `Date` is AWS's time truncated to the second, taken a little before now: its middle.
        sample = aws + 0.5 - now
        offset = self.offset
        if offset is None or abs(sample - offset) > JUMP:
            offset = sample
        else:
            offset += WEIGHT * (sample - offset)
        self.offset = offset
        was = self.shift
        self.shift = offset if abs(offset) > CORRECT_ABOVE else 0.0
        first, self._told = not self._told, True
        if not self.tell:
            return
        if self.shift and not was:
            log.warning(
                "AWS's clock at %s is %s this machine's: the proxy now signs with AWS's time "
                "(Lambda refuses signatures more than 5 minutes off); %s",
                self.name,
                describe(offset),
                FIXES,
                extra={"fields": {"event": "clock_skew", "host": self.name, "offset": offset}},
            )
        elif was and not self.shift:
            log.info(
                "AWS's clock at %s is %s this machine's: signing with this machine's clock again",
                self.name,
                describe(offset),
                extra={"fields": {"event": "clock_skew", "host": self.name, "offset": offset}},
            )
        elif first:  # the start-up banner's last word, once the host has answered
            log.info(
                "AWS's clock at %s is %s this machine's (from its first answer)",
                self.name,
                describe(offset),
                extra={"fields": {"event": "clock", "host": self.name, "offset": offset}},
            )


class Clocks:
    """One AwsClock per upstream origin, for the life of the process's upstream client (a
    reload keeps them: the clocks did not change)."""

    def __init__(self, clock: Callable[[], float] = time.time, tell: bool = True) -> None:
        self._clock = clock
        self._tell = tell
        self._by_origin: dict[Hashable, AwsClock] = {}

    def get(self, origin: Hashable, host: str) -> AwsClock:
        found = self._by_origin.get(origin)
        if found is None:
            found = self._by_origin[origin] = AwsClock(host, self._clock, self._tell)
        return found

    def offsets(self) -> dict[str, float]:
        """The measured offsets by host, for /_proxy/metrics (of two origins on one host, the
        one farther off)."""
        by_host: dict[str, float] = {}
        for clock in self._by_origin.values():
            if clock.offset is not None and abs(clock.offset) >= abs(by_host.get(clock.name, 0)):
                by_host[clock.name] = clock.offset
        return by_host

    def status(self) -> list[dict[str, Any]]:
        """What each origin's answers said of AWS's clock, measured ones only."""
        return [clock.status() for clock in self._by_origin.values() if clock.offset is not None]
