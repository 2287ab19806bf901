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
    authorization,
    canonical_request,
    credential_scope,
    proxy_headers,
    sign_request,
    signing_key,
    string_to_sign,
)
from proxy.target import canonical_query, normalize_path, split_target
from tests.sigv4_suite import Case, canonical_headers, load_cases

CASES = load_cases()


def amz_date(when: datetime) -> str:
    return when.strftime("%Y%m%dT%H%M%SZ")


def _signed_headers(case: Case) -> list[tuple[str, str]]:
    """The request's headers plus what a signer adds, as the case's context describes."""
    headers = [*case.headers, ("X-Amz-Date", amz_date(case.when))]
    token = case.context["credentials"].get("token")
    if token and not case.context.get("omit_session_token"):
        headers.append(("X-Amz-Security-Token", token))
    if case.context["sign_body"]:
        headers.append(("X-Amz-Content-SHA256", hashlib.sha256(case.body).hexdigest()))
    return headers


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_official_suite_through_the_one_signer(case: Case) -> None:
    # The suite's request-target is what is on the wire: normalised, never re-encoded.
    raw_path, _, raw_query = case.target.partition("?")
    path, query = normalize_path(raw_path), canonical_query(raw_query)
    block, signed = canonical_headers(_signed_headers(case))
    request = canonical_request(
        case.method, path, query, block, signed, hashlib.sha256(case.body).hexdigest()
    )
    assert request == case.canonical_request

    timestamp = amz_date(case.when)
    region, service = case.context["region"], case.context["service"]
    scope = credential_scope(timestamp[:8], region, service)
    assert string_to_sign(timestamp, scope, request) == case.string_to_sign

    keys = case.context["credentials"]
    credentials = Credentials(keys["access_key_id"], keys["secret_access_key"], keys.get("token"))
    value = authorization(credentials, region, service, timestamp, request, signed)
    assert value == (
        f"AWS4-HMAC-SHA256 Credential={keys['access_key_id']}/{scope}, "
        f"SignedHeaders={signed}, Signature={case.signature}"
    )


def test_suite_is_complete() -> None:
    """All 31 cases that apply to Lambda are vendored and read: a fresh clone runs them."""
    assert len(CASES) == 31


@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzEXAMPLEtoken//+=="])
def test_the_proxys_header_set_is_the_generic_rule_applied(token: str | None) -> None:
    headers = [("Host", "h.example"), ("X-Amz-Content-SHA256", EMPTY_SHA256)]
    headers.append(("X-Amz-Date", "20261121T053001Z"))
    if token:
        headers.append(("X-Amz-Security-Token", token))
    ours = proxy_headers("h.example", EMPTY_SHA256, "20261121T053001Z", token)
    assert ours == canonical_headers(headers)


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
    lines = sign_request(
        method, host, path, query, payload_hash, creds, "eu-west-1", "lambda", amz_date(now)
    )
    ours = dict(line.split(": ", 1) for line in lines.removesuffix("\r\n").split("\r\n"))
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
