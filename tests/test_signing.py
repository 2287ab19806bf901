"""The signer against AWS's official test suite, botocore's SigV4Auth, and awscrt."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from unittest import mock
from urllib.parse import quote

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotocoreCredentials
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.signing import (
    EMPTY_SHA256,
    AmzClock,
    Credentials,
    SigningKey,
    amz_date,
    authorization,
    canonical_request,
    credential_scope,
    sign,
    signature,
    signed_header_lines,
    signing_key,
    string_to_sign,
)
from proxy.target import canonical_query, normalize_path, split_target
from tests.sigv4_suite import SUITE, Case, load_cases

CASES = load_cases()
requires_suite = pytest.mark.skipif(
    not CASES, reason=f"the official SigV4 test suite is not at {SUITE}"
)


def _signed_headers(case: Case) -> list[tuple[str, str]]:
    """The request's headers plus what a signer adds, as the case's context describes."""
    headers = [*case.headers, ("X-Amz-Date", amz_date(case.when))]
    token = case.context["credentials"].get("token")
    if token and not case.context.get("omit_session_token"):
        headers.append(("X-Amz-Security-Token", token))
    if case.context["sign_body"]:
        headers.append(("X-Amz-Content-SHA256", hashlib.sha256(case.body).hexdigest()))
    return headers


@requires_suite
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_official_suite(case: Case) -> None:
    # The suite's request-target is what is on the wire: normalised, never re-encoded.
    raw_path, _, raw_query = case.target.partition("?")
    path, query = normalize_path(raw_path), canonical_query(raw_query)
    request, _ = canonical_request(
        case.method, path, query, _signed_headers(case), hashlib.sha256(case.body).hexdigest()
    )
    assert request == case.canonical_request

    timestamp = amz_date(case.when)
    scope = credential_scope(timestamp[:8], case.context["region"], case.context["service"])
    to_sign = string_to_sign(timestamp, scope, request)
    assert to_sign == case.string_to_sign

    key = signing_key(
        case.context["credentials"]["secret_access_key"],
        timestamp[:8],
        case.context["region"],
        case.context["service"],
    )
    assert signature(key, to_sign) == case.signature


def test_suite_is_complete() -> None:
    """All 31 applicable cases are read, or none when the suite is absent (then skipped above)."""
    assert len(CASES) in (0, 31)


def _botocore_headers(
    method: str, url: str, body: bytes, creds: Credentials, now: datetime
) -> dict[str, str]:
    request = AWSRequest(
        method=method,
        url=url,
        data=body,
        headers={"X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()},
    )
    auth = SigV4Auth(
        BotocoreCredentials(creds.access_key, creds.secret_key, creds.token), "lambda", "eu-west-1"
    )
    with mock.patch("botocore.auth.get_current_datetime", return_value=now.replace(tzinfo=None)):
        auth.add_auth(request)
    return {name.lower(): value for name, value in request.headers.items()}


segment = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="/?#%"), max_size=8)


@settings(max_examples=200, deadline=None)
@given(
    segments=st.lists(segment.filter(lambda s: s not in (".", "..")), max_size=4),
    pairs=st.lists(st.tuples(st.text(max_size=5), st.text(max_size=5)), max_size=4),
    body=st.binary(max_size=64),
    token=st.none() | st.just("FwoGZXIvYXdzEXAMPLEtoken//+=="),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
)
def test_matches_botocore(
    segments: list[str],
    pairs: list[tuple[str, str]],
    body: bytes,
    token: str | None,
    method: str,
) -> None:
    """On the canonical path and query the proxy sends, botocore signs the very same way."""
    raw_path = "/" + "/".join(quote(s, safe="") for s in segments if s)
    raw_query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)
    path, query = split_target(f"{raw_path}?{raw_query}")
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    now = datetime(2026, 11, 21, 5, 30, 1, tzinfo=UTC)
    host = "abc123.lambda-url.eu-west-1.on.aws"

    payload_hash = hashlib.sha256(body).hexdigest()
    headers = sign(
        method=method,
        host=host,
        path=path,
        query=query,
        payload_hash=payload_hash,
        credentials=creds,
        region="eu-west-1",
        service="lambda",
        now=now,
    )
    ours = dict(headers)
    # What the proxy writes: the same headers, as header lines.
    stamp = amz_date(now)
    lines = signed_header_lines(
        payload_hash,
        stamp,
        token,
        authorization(method, host, path, query, payload_hash, creds, "eu-west-1", "lambda", stamp),
    )
    assert lines == "".join(f"{name}: {value}\r\n" for name, value in headers)
    theirs = _botocore_headers(
        method, f"https://{host}{path}{'?' + query if query else ''}", body, creds, now
    )
    assert ours["Authorization"] == theirs["authorization"]
    assert ours["x-amz-date"] == theirs["x-amz-date"]
    assert ours.get("x-amz-security-token") == theirs.get("x-amz-security-token")


@given(key=st.binary(max_size=100), message=st.binary(max_size=300))
def test_primed_hmac_is_hmac(key: bytes, message: bytes) -> None:
    assert SigningKey(key).hmac_hex(message) == hmac.new(key, message, "sha256").hexdigest()


def test_signing_key_is_cached() -> None:
    signing_key.cache_clear()
    for _ in range(3):
        signing_key("secret", "20261121", "us-east-1", "lambda")
    assert signing_key.cache_info().hits == 2


def test_credentials_repr_hides_the_secret() -> None:
    creds = Credentials("AKIAABCDEFGHIJKLMNOP", "very-secret-key", "session-token-value")
    assert "very-secret-key" not in repr(creds)
    assert "session-token-value" not in repr(creds)
    assert "very-secret-key" not in str(creds)


def test_amz_clock_formats_once_per_second() -> None:
    now = [1_700_000_000.2]
    clock = AmzClock(lambda: now[0])
    first = clock()
    assert first == "20231114T221320Z"
    now[0] += 0.7
    assert clock() is first  # same second: the same string, not formatted again
    now[0] += 0.2
    assert clock() == "20231114T221321Z"


def test_sign_accepts_a_preformatted_timestamp() -> None:
    creds = Credentials("AKIDEXAMPLE", "secret")
    when = datetime(2026, 11, 21, 5, 30, 1, tzinfo=UTC)
    common = {
        "method": "GET",
        "host": "h",
        "path": "/",
        "query": "",
        "payload_hash": EMPTY_SHA256,
        "credentials": creds,
        "region": "us-east-1",
        "service": "lambda",
    }
    assert sign(**common, now=when) == sign(**common, now="20261121T053001Z")  # type: ignore[arg-type]
