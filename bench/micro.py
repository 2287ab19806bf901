"""In-process micro-benchmarks: the proxy's signer against botocore's, timed with timeit."""

from __future__ import annotations

import statistics
import timeit
from collections.abc import Callable
from typing import Any, Final

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from proxy.signing import _SIGNED as signing_cache  # emptied: each call signs
from proxy.signing import EMPTY_SHA256, AmzClock, Credentials, sign_request

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

    clock = AmzClock()

    def ours(timestamp: str | None = None) -> str:
        """The signing header lines, computed each time as the request path computes them once
        a second for each kind of request (clock read included; sign_request's cache emptied)."""
        signing_cache.clear()
        return sign_request(
            "GET",
            HOST,
            PATH,
            QUERY,
            EMPTY_SHA256,
            credentials,
            "us-east-1",
            "lambda",
            timestamp or clock(),
        )

    # Same request, same instant: the two Authorization headers must be identical.
    auth.add_auth(request)
    lines = ours(request.headers["X-Amz-Date"]).removesuffix("\r\n").split("\r\n")
    ours_auth = dict(line.split(": ", 1) for line in lines)["Authorization"]
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
    """µs per signature of proxy.signing.sign_request, its cache emptied (clock read included),
    and of botocore's SigV4Auth.add_auth on an already-built AWSRequest (the cheapest way to
    call botocore)."""
    cases = [_case(None, repeat, seconds), _case(TOKEN, repeat, seconds)]
    return {"repeat": repeat, "cases": cases, **{k: cases[0][k] for k in ("speedup",)}}
