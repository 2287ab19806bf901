"""What an upstream refusal means, in words a frontend developer can act on (issue #13). Pure: the
answer's status, x-amzn-ErrorType and body, and what the route knows, in; a Diagnosis out.

A 403 says "Forbidden" and little else; its x-amzn-ErrorType and its body tell the causes apart.
A signature scoped to the wrong region is refused as InvalidSignatureException, the type a clock
or key problem gets too; only the body tells them apart. Lambda answers
`{"message":"Credential should be scoped to a valid region. "}` (other services add
", not 'eu-west-1'", or say "scoped to correct region"): they all name the region.

The proxy passes AWS's answer through unchanged and adds `X-Proxy-Diagnosis: <code>`; the
explanation goes to the log (proxy/review.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Final

from yarl import URL

from proxy.settings import region_from_url

HEADER: Final = b"X-Proxy-Diagnosis"
# The messages are short; a body that is not one of them is not read further than this.
READ_AT_MOST: Final = 1024
_NAMES_REGION: Final = re.compile(rb"\bregion\b", re.IGNORECASE)
_TIME: Final = re.compile(rb"Signature (?:expired|not yet current)")
_MISMATCH: Final = b"signature we calculated does not match"
# What a Function URL answers, with 502, when its function failed or timed out; a function's own
# 502 says something else (or is told by x-amzn-ErrorType from Lambda).
FUNCTION_FAILED: Final = b"Internal Server Error"


class Cure(Enum):
    """What a second, re-signed attempt can mend. Both refusals come from the signature check,
    before any function runs: sending again is safe for every method."""

    CLOCK = "clock"  # sign with AWS's time
    CREDENTIALS = "credentials"  # resolve the credentials afresh


@dataclass(frozen=True, slots=True)
class RouteFacts:
    """What the proxy knows of the route a refusal answered."""

    prefix: str
    url: str
    region: str
    region_source: str | None = None
    function: str | None = None  # the function's name, when the route names one
    function_arn: str | None = None
    caller_arn: str | None = None  # who signed (STS GetCallerIdentity), when known
    access_key: str | None = None  # masked
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Diagnosis:
    code: str  # X-Proxy-Diagnosis
    explanation: str  # for the log line
    cure: Cure | None = None


def diagnose(
    status: int, error_type: str | None, body: bytes, facts: RouteFacts
) -> Diagnosis | None:
    """The diagnosis of an upstream answer, or None for one that is not a refusal it knows."""
    head = body[:READ_AT_MOST]
    if status == 403 and error_type == "InvalidSignatureException":
        if _TIME.search(head):
            return Diagnosis(
                "clock_skew",
                "AWS refused the signature's time: this machine's clock is more than 5 minutes "
                "from AWS's",
                Cure.CLOCK,
            )
        if _NAMES_REGION.search(head):
            return Diagnosis("wrong_region", _region(facts))
        if _MISMATCH in head:
            return Diagnosis("signature_mismatch", _mismatch(facts))
        return None
    if status == 403 and error_type in ("ExpiredTokenException", "UnrecognizedClientException"):
        return Diagnosis(
            "credentials_rejected",
            f"AWS rejected the credentials ({error_type}: they expired or were revoked between "
            f"refreshes{_as(facts)})",
            Cure.CREDENTIALS,
        )
    if status == 403 and error_type == "AccessDeniedException":
        return Diagnosis("access_denied", _denied(facts))
    if status == 429 and error_type == "TooManyRequestsException":  # not a function's own 429
        return Diagnosis(
            "throttled",
            "Lambda throttled the call (TooManyRequestsException): the function's reserved "
            "concurrency or the account's concurrency limit is used up; the proxy never retries "
            "it: retry with back-off, or raise the limit",
        )
    if status in (502, 504) and (error_type or head.strip() == FUNCTION_FAILED):
        return Diagnosis("function_error", _function_error(status, facts))
    return None


def _as(facts: RouteFacts) -> str:
    who = facts.caller_arn or facts.access_key
    return f", signing as {who}" if who else ""


def _region(facts: RouteFacts) -> str:
    said = (
        f"AWS refused the signature's region: route {facts.prefix} signed for region {facts.region}"
    )
    if facts.region_source:
        said += f" (from {facts.region_source})"
    url_region = region_from_url(URL(facts.url))
    if url_region is None:
        return (
            f"{said}, and the function is probably in another region: give the function's "
            "region as region on the route, --region or AWS_REGION"
        )
    if url_region != facts.region:
        return (
            f"{said}, but its URL's host names {url_region}, where the function probably is: "
            f"set region on the route to {url_region}, or remove it (the URL's region is used)"
        )
    return (
        f"{said}, the region its URL's host names, and AWS expects another: check that "
        f"{facts.url} is the function's URL"
    )


def _mismatch(facts: RouteFacts) -> str:
    key = f" {facts.access_key}" if facts.access_key else ""
    return (
        f"AWS computed another signature than the proxy's: check that the secret key belongs "
        f"to the access key{key}; if it does, this is a bug in lambda-url-proxy: please report "
        f"it with the request id {facts.request_id or '(none)'} and the canonical request that "
        "--log-level debug logs (it holds no secret)"
    )


def _denied(facts: RouteFacts) -> str:
    who = facts.caller_arn or (
        f"the identity with access key {facts.access_key}" if facts.access_key else "the identity"
    )
    resource = facts.function_arn or (
        f"arn:aws:lambda:{facts.region}:<account>:function:{facts.function or '<function>'}"
    )
    policy = (
        '{"Effect": "Allow", "Action": ["lambda:InvokeFunctionUrl", "lambda:InvokeFunction"], '
        f'"Resource": "{resource}"}}'
    )
    return (
        f"{who} may not invoke {facts.function_arn or facts.url}: it needs "
        "lambda:InvokeFunctionUrl and, for Function URLs created since October 2025, also "
        f"lambda:InvokeFunction on the function. Add to its policy: {policy}"
    )


def _function_error(status: int, facts: RouteFacts) -> str:
    what = "failed or timed out" if status == 502 else "timed out"
    logs = (
        f"`aws logs tail /aws/lambda/{facts.function} --since 10m`"
        if facts.function
        else "the function's CloudWatch log group (/aws/lambda/<function name>)"
    )
    return (
        f"the function itself {what} (a {status} from Lambda, not from the proxy): find the "
        f"invocation with request id {facts.request_id or '(none)'} in {logs}"
    )
