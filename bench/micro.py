"""In-process micro-benchmarks: the proxy's signer against botocore's, timed with timeit."""

from __future__ import annotations

import statistics
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from proxy.signing import EMPTY_SHA256, Credentials, sign

ACCESS_KEY: Final = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY: Final = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # noqa: S105 - AWS's documented example
TOKEN: Final = "IQoJb3JpZ2luX2VjEXAMPLETOKEN" * 8
HOST: Final = "abc123def456.lambda-url.us-east-1.on.aws"
PATH: Final = "/users/42"
QUERY: Final = "a=1&b=2"


def per_call_us(function: Callable[[], object], repeat: int, min_seconds: float = 0.2) -> float:
    """Median over `repeat` timeit runs (each about `min_seconds` long) of the µs one call takes."""
    timer = timeit.Timer(function)
    elapsed = timer.timeit(number=100)
    number = max(100, int(100 * min_seconds / max(elapsed, 1e-9)))
    times = timer.repeat(repeat=repeat, number=number)
    return statistics.median(times) / number * 1e6


def _case(token: str | None, repeat: int, seconds: float) -> dict[str, Any]:
    credentials = Credentials(ACCESS_KEY, SECRET_KEY, token)
    auth = SigV4Auth(BotoCredentials(ACCESS_KEY, SECRET_KEY, token), "lambda", "us-east-1")
    request = AWSRequest(
        method="GET",
        url=f"https://{HOST}{PATH}?{QUERY}",
        headers={"x-amz-content-sha256": EMPTY_SHA256},
    )

    def ours(now: datetime | None = None) -> list[tuple[str, str]]:
        return sign(
            method="GET",
            host=HOST,
            path=PATH,
            query=QUERY,
            payload_hash=EMPTY_SHA256,
            credentials=credentials,
            region="us-east-1",
            service="lambda",
            now=now or datetime.now(UTC),
        )

    # Same request, same instant: the two Authorization headers must be identical.
    auth.add_auth(request)
    timestamp = request.headers["X-Amz-Date"]
    instant = datetime.strptime(timestamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    ours_auth = dict(ours(instant))["Authorization"]
    botocore_auth = request.headers["Authorization"]

    proxy_us = per_call_us(ours, repeat, seconds)
    botocore_us = per_call_us(lambda: auth.add_auth(request), repeat, seconds)
    return {
        "request": f"GET https://{HOST}{PATH}?{QUERY}" + (" +session token" if token else ""),
        "proxy_sign_us": proxy_us,
        "botocore_add_auth_us": botocore_us,
        "speedup": botocore_us / proxy_us,
        "same_authorization": ours_auth == botocore_auth,
        "authorization": ours_auth,
        "botocore_authorization": botocore_auth,
    }


def signing(repeat: int, seconds: float = 0.2) -> dict[str, Any]:
    """µs per signature of proxy.signing.sign (clock read included) and of botocore's
    SigV4Auth.add_auth on an already-built AWSRequest (the cheapest way to call botocore)."""
    cases = [_case(None, repeat, seconds), _case(TOKEN, repeat, seconds)]
    return {"repeat": repeat, "cases": cases, **{k: cases[0][k] for k in ("speedup",)}}
