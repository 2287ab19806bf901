"""Fake credential sources on 127.0.0.1 that issue keys which really expire.

FakeSts answers AssumeRole (reached through AWS_ENDPOINT_URL_STS) after verifying the caller's
SigV4 signature exactly as the fake Function URL does; FakeContainerCredentials answers
botocore's container provider (reached through AWS_CONTAINER_CREDENTIALS_FULL_URI). Every key
either issues is registered, with its expiry, in the fake Function URL's key table.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Self
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from aiohttp import web

from tests.fake_function_url import FakeFunctionUrl, KeyRecord

CALLER_ARN = "arn:aws:iam::123456789012:user/developer"


@dataclass(frozen=True)
class Issued:
    access_key: str
    secret_key: str
    token: str
    expires_at: float
    role_arn: str | None = None
    caller: str | None = None
    session_name: str | None = None
    external_id: str | None = None


def _iso(epoch: float) -> str:
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


@dataclass
class KeyIssuer:
    """Mints temporary keys into a fake Function URL's key table."""

    function_url: FakeFunctionUrl
    prefix: str
    lifetime: float
    issued: list[Issued] = field(default_factory=list)

    def issue(self, **about: str | None) -> Issued:
        n = len(self.issued) + 1
        key = Issued(
            access_key=f"ASIA{self.prefix}{n:0{16 - len(self.prefix)}d}",
            secret_key=f"secret-{self.prefix}-{n}",
            token=f"token-{self.prefix}-{n}-{uuid.uuid4()}",
            expires_at=time.time() + self.lifetime,
            **about,
        )
        self.function_url.keys[key.access_key] = KeyRecord(
            key.secret_key, key.token, expires_at=key.expires_at
        )
        self.issued.append(key)
        return key


class FakeSts(FakeFunctionUrl):
    """STS AssumeRole and GetCallerIdentity (query protocol). `trust[role_arn]` lists the access
    keys that may assume the role; anything else is AccessDenied, worded as AWS words it.
    `callers[access_key]` is the ARN GetCallerIdentity gives (CALLER_ARN by default)."""

    def __init__(self, function_url: FakeFunctionUrl, lifetime: float = 3600.0) -> None:
        super().__init__(region="us-east-1", service="sts")
        self.issuer = KeyIssuer(function_url, "STS", lifetime)
        self.trust: dict[str, set[str]] = {}
        self.callers: dict[str, str] = {}
        self.whoami_calls = 0

    @property
    def issued(self) -> list[Issued]:
        return self.issuer.issued

    async def _invoke(self, request: web.Request, body: bytes, access_key: str) -> web.Response:
        form = {name: values[0] for name, values in parse_qs(body.decode()).items()}
        if form.get("Action") == "GetCallerIdentity":
            self.whoami_calls += 1
            return _caller_identity(self.callers.get(access_key, CALLER_ARN))
        if form.get("Action") != "AssumeRole":
            return _sts_error(400, "InvalidAction", f"unsupported action {form.get('Action')}")
        role_arn = form["RoleArn"]
        if access_key not in self.trust.get(role_arn, set()):
            return _sts_error(
                403,
                "AccessDenied",
                f"User: {CALLER_ARN} is not authorized to perform: sts:AssumeRole on "
                f"resource: {role_arn}",
            )
        key = self.issuer.issue(
            role_arn=role_arn,
            caller=access_key,
            session_name=form.get("RoleSessionName"),
            external_id=form.get("ExternalId"),
        )
        account = role_arn.split(":")[4]
        role_name = role_arn.rsplit("/", 1)[-1]
        xml = f"""<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <Credentials>
      <AccessKeyId>{key.access_key}</AccessKeyId>
      <SecretAccessKey>{key.secret_key}</SecretAccessKey>
      <SessionToken>{key.token}</SessionToken>
      <Expiration>{_iso(key.expires_at)}</Expiration>
    </Credentials>
    <AssumedRoleUser>
      <AssumedRoleId>AROAFAKEROLEID:{escape(key.session_name or "")}</AssumedRoleId>
      <Arn>arn:aws:sts::{account}:assumed-role/{role_name}/{escape(key.session_name or "")}</Arn>
    </AssumedRoleUser>
  </AssumeRoleResult>
  <ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>
</AssumeRoleResponse>"""
        return web.Response(text=xml, content_type="text/xml")


def _caller_identity(arn: str) -> web.Response:
    account = arn.split(":")[4]
    xml = f"""<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult>
    <Arn>{escape(arn)}</Arn>
    <UserId>AIDAFAKEUSERID</UserId>
    <Account>{account}</Account>
  </GetCallerIdentityResult>
  <ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>
</GetCallerIdentityResponse>"""
    return web.Response(text=xml, content_type="text/xml")


def _sts_error(status: int, code: str, message: str) -> web.Response:
    xml = f"""<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error><Type>Sender</Type><Code>{code}</Code><Message>{escape(message)}</Message></Error>
  <RequestId>{uuid.uuid4()}</RequestId>
</ErrorResponse>"""
    return web.Response(status=status, text=xml, content_type="text/xml")


class FakeContainerCredentials:
    """The ECS / EKS Pod Identity credentials endpoint. `delay` slows each answer; `down`
    makes it fail (500), as a source that has gone away."""

    TOKEN = "container-authorization-token"

    def __init__(self, function_url: FakeFunctionUrl, lifetime: float = 3600.0) -> None:
        self.issuer = KeyIssuer(function_url, "CTR", lifetime)
        self.delay = 0.0
        self.down = False
        self.calls = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    @property
    def issued(self) -> list[Issued]:
        return self.issuer.issued

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_get("/credentials", self._answer)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/credentials"
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _answer(self, request: web.Request) -> web.Response:
        self.calls += 1
        if request.headers.get("Authorization") != self.TOKEN:
            return web.json_response({"message": "bad authorization token"}, status=401)
        await asyncio.sleep(self.delay)
        if self.down:
            return web.json_response({"message": "credentials source unavailable"}, status=500)
        key = self.issuer.issue()
        return web.json_response(
            {
                "AccessKeyId": key.access_key,
                "SecretAccessKey": key.secret_key,
                "Token": key.token,
                "Expiration": _iso(key.expires_at),
            }
        )
