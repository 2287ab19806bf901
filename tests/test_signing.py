"""The signer against AWS's official test suite, botocore's SigV4Auth, and awscrt."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any
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


@pytest.mark.slow
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


@pytest.mark.interpreted  # replaces the memory's bounds
def test_requests_alike_within_a_second_share_one_signature(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """sign_request computes once per second what a signature depends on, and gives back exactly
    what computing it again would; anything that differs (credentials, path, query, body hash,
    method, region, host, the second) signs afresh; the cache is emptied each new second and
    never grows past SIGNED_ENTRIES."""
    from proxy import signing

    monkeypatch.setattr(signing, "_SIGNED", {})
    computed: list[tuple[object, ...]] = []  # authorization() runs once per signature computed
    counted_authorization = signing.authorization

    def counted(*args: Any) -> str:
        computed.append(args)
        return counted_authorization(*args)

    def real(*args: Any) -> str:  # signed afresh: the cache emptied
        signing._SIGNED.clear()
        return sign_request(*args)

    monkeypatch.setattr(signing, "authorization", counted)
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", None)
    base = ("GET", "h.example", "/a", "x=1", EMPTY_SHA256, creds, "us-east-1", "lambda")
    expected_first = real(*base, "20261201T190000Z")
    signing._SIGNED.clear()
    computed.clear()
    first = sign_request(*base, "20261201T190000Z")
    assert first == expected_first
    assert sign_request(*base, "20261201T190000Z") == first
    assert len(computed) == 1
    others = [
        ("POST", *base[1:]),
        (base[0], "other.example", *base[2:]),
        (*base[:2], "/b", *base[3:]),
        (*base[:3], "x=2", *base[4:]),
        (*base[:4], hashlib.sha256(b"body").hexdigest(), *base[5:]),
        (*base[:5], Credentials(creds.access_key, creds.secret_key, "token"), *base[6:]),
        (*base[:5], Credentials("AKIDOTHER", creds.secret_key, None), *base[6:]),
        (*base[:6], "eu-west-1", base[7]),
    ]
    expected = [real(*other, "20261201T190000Z") for other in others]
    signing._SIGNED.clear()
    sign_request(*base, "20261201T190000Z")
    computed.clear()
    for other, lines in zip(others, expected, strict=True):
        assert sign_request(*other, "20261201T190000Z") == lines != first
    assert len(computed) == len(others)
    assert len(signing._SIGNED) == 1 + len(others)
    later = sign_request(*base, "20261201T190001Z")  # the next second: signed again
    assert later != first and len(computed) == 1 + len(others)
    assert list(signing._SIGNED) == [(*base, "20261201T190001Z")]  # the last second's gone
    for index in range(signing.SIGNED_ENTRIES + 5):
        path = f"/n{index}"
        sign_request("GET", "h.example", path, "", EMPTY_SHA256, creds, "us-east-1", "lambda", "t")
    assert len(signing._SIGNED) == signing.SIGNED_ENTRIES
