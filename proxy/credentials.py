"""One identity = one botocore credential chain (optionally a role assumed on top of it),
refreshed ahead of expiry off the event loop.

The request path only reads the cached frozen credentials (`Identity.current`): it never waits on
I/O while they are valid. botocore may do network I/O inside get_credentials() and
get_frozen_credentials() (SSO, STS, container and instance metadata), so both run in a thread.
"""

from __future__ import annotations

import asyncio
import functools
import getpass
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import botocore
import botocore.config
import botocore.credentials
import botocore.exceptions
import botocore.session

from proxy.errors import CredentialsUnavailable
from proxy.settings import IdentityOptions
from proxy.signing import Credentials

log = logging.getLogger(__name__)

# botocore refreshes in its last 15 minutes (advisory); asking earlier returns the same keys.
ADVISORY_WINDOW: Final = 15 * 60.0
# A request signed now must still be valid when AWS receives it.
EXPIRY_MARGIN: Final = 1.0
MIN_REFRESH_DELAY: Final = 0.2
# Back-off after failures: patient while the cached keys still work, brisk once they do not.
MAX_RETRY_DELAY: Final = 60.0
MAX_RETRY_DELAY_UNUSABLE: Final = 5.0
STS_DEFAULT_REGION: Final = "us-east-1"
# AWS rejected the keys (issue #13): resolved afresh at most this often, however many requests
# the rejection met.
RENEW_INTERVAL: Final = 10.0
# GetCallerIdentity, for an AccessDenied's explanation: a refusal waits no longer for it.
WHOAMI_TIMEOUT: Final = 5.0
# botocore's `profile` setting read from no variable (config name, env vars, default, converter).
IGNORE_PROFILE_VARIABLES: Final = {"profile": (None, None, None, None)}

NO_CREDENTIALS_HELP: Final = (
    "no AWS credentials found. Tried: environment variables (AWS_ACCESS_KEY_ID, "
    "AWS_SECRET_ACCESS_KEY), the shared files ~/.aws/credentials and ~/.aws/config (profile "
    "{profile}), SSO, credential_process, web identity, container and instance metadata. "
    "Provide some with `aws configure`, or `aws sso login --profile NAME` and AWS_PROFILE=NAME, "
    "or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; the proxy keeps looking and picks "
    "up credentials from files and SSO without a restart"
)


def mask(access_key: str) -> str:
    """An access key id shortened for logs: enough to tell keys apart, not to use one."""
    return f"{access_key[:4]}...{access_key[-4:]}" if len(access_key) > 8 else "****"


def default_session_name() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, as in some containers
        user = "unknown"
    return ("lambda-url-proxy-" + re.sub(r"[^\w+=,.@-]", "-", user))[:64]


@dataclass(frozen=True, slots=True)
class IdentitySpec:
    """Who signs, as configured, and what the AWS environment made of it at load time. Routes
    with equal specs share one Identity."""

    profile: str | None = None
    role_arn: str | None = None
    external_id: str | None = None
    role_session_name: str | None = None
    duration_seconds: int | None = None
    # The profile AWS_PROFILE names does not exist but keys in the environment do: sign with
    # those, as the SDKs do, where botocore would raise ProfileNotFound.
    environment_keys_only: bool = False
    # Where AssumeRole is called: the base profile's region as the CLI resolves it.
    sts_region: str | None = None

    @classmethod
    def of(cls, options: IdentityOptions) -> IdentitySpec:
        return cls(
            options.profile,
            options.role_arn,
            options.external_id,
            options.role_session_name,
            options.duration_seconds,
        )

    @classmethod
    def for_route(cls, route: IdentityOptions, defaults: IdentityOptions) -> IdentitySpec:
        """A route naming a profile or role uses its own options, otherwise the top level's."""
        return cls.of(route if route.names_identity else defaults)

    @property
    def base(self) -> str:
        if self.environment_keys_only:
            return "environment keys"
        return f"profile {self.profile}" if self.profile else "default"

    @property
    def name(self) -> str:
        return f"{self.base} -> role {self.role_arn}" if self.role_arn else self.base

    @property
    def role_account(self) -> str | None:
        return self.role_arn.split(":")[4] if self.role_arn else None


def botocore_session(spec: IdentitySpec) -> botocore.session.Session:
    """A botocore session reading the AWS config as this identity does: its profile, or, when
    only the keys in the environment may sign, deaf to AWS_PROFILE (the keys come first)."""
    if spec.environment_keys_only:
        return botocore.session.Session(session_vars=IGNORE_PROFILE_VARIABLES)
    return botocore.session.Session(profile=spec.profile)


def describe_failure(error: Exception, spec: IdentitySpec, caller: str | None) -> str:
    """What went wrong resolving credentials, and what the user can do about it."""
    if isinstance(error, LookupError):
        return str(error)
    profile = spec.profile or "default"
    if isinstance(error, botocore.exceptions.ProfileNotFound):
        # The profile botocore looked for: AWS_PROFILE's, when the spec names none.
        missing = error.kwargs.get("profile", profile)
        available = ", ".join(sorted(botocore.session.Session().available_profiles)) or "none"
        return (
            f"profile {missing!r} is not in the AWS config files (profiles: {available}); "
            f"fix the profile name or add it with `aws configure --profile {missing}`"
        )
    if isinstance(
        error,
        botocore.exceptions.SSOTokenLoadError
        | botocore.exceptions.UnauthorizedSSOTokenError
        | botocore.exceptions.TokenRetrievalError
        | botocore.exceptions.SSOError,
    ):
        return (
            f"the SSO session for profile {profile!r} has expired or is missing: "
            f"run `aws sso login --profile {profile}`"
        )
    if isinstance(error, botocore.exceptions.ClientError) and spec.role_arn:
        details = error.response.get("Error", {})
        return (
            f"AssumeRole into {spec.role_arn} failed for the caller {caller or spec.base} "
            f"({details.get('Code', 'error')}: {details.get('Message', error)}); check that "
            "the role's trust policy allows this caller and that the caller may call "
            "sts:AssumeRole on the role"
        )
    if isinstance(error, botocore.exceptions.CredentialRetrievalError):
        return f"the credential source failed: {error}"
    return f"resolving credentials failed: {type(error).__name__}: {error}"


def _expiry_epoch(creds: botocore.credentials.Credentials) -> float | None:
    """When the credentials expire; None only for static ones. botocore keeps a refreshable
    chain's expiry in a private attribute with no public reader: if it cannot be read, the
    credentials are refused (fail closed) rather than taken as never expiring, which would
    stop the refreshes and sign with expired keys."""
    if not isinstance(creds, botocore.credentials.RefreshableCredentials):
        return None
    expiry = getattr(creds, "_expiry_time", None)
    if expiry is None:
        raise LookupError(
            f"the {creds.method} credentials refresh, but their expiry cannot be read from "
            f"botocore {botocore.__version__} (RefreshableCredentials._expiry_time): refusing "
            "to sign with keys that might have expired; use the botocore version in "
            "requirements.lock"
        )
    return float(expiry.timestamp())


class Identity:
    """Credentials for one IdentitySpec, kept fresh by `run()`."""

    def __init__(
        self, spec: IdentitySpec | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.spec = spec or IdentitySpec()
        self.name = self.spec.name
        self._clock = clock
        self._chain: botocore.credentials.Credentials | None = None
        self._current: Credentials | None = None
        self._expires_at: float | None = None
        self._first_attempt = asyncio.Event()
        self._refreshing = False
        self.source: str | None = None
        self.caller: str | None = None  # the base identity AssumeRole is called with
        self.account_id: str | None = self.spec.role_account
        self.error: str | None = None
        self.refreshed_at: float | None = None
        self.caller_arn: str | None = None  # STS GetCallerIdentity's Arn, once asked (whoami)
        self._renewal: asyncio.Future[float | None] | None = None
        self._renewed_at = -RENEW_INTERVAL
        self._whoami: asyncio.Future[str | None] | None = None
        # Told of each refresh: failed?, the expiry (proxy/metrics.py's identity_refreshed).
        self.on_refresh: Callable[[Identity, bool, float | None], None] | None = None

    def current(self) -> Credentials:
        """The cached credentials; CredentialsUnavailable if there are none or they expired."""
        creds = self._current
        expires_at = self._expires_at
        if creds is None or (
            expires_at is not None and self._clock() >= expires_at - EXPIRY_MARGIN
        ):
            raise CredentialsUnavailable(self.unavailable_reason())
        return creds

    @property
    def first_pending(self) -> bool:
        """The very first resolution is still running: credentials() waits for it. Otherwise
        current() answers at once, and the request path needs no await for it."""
        return self._current is None and not self._first_attempt.is_set()

    async def credentials(self) -> Credentials:
        """current(), except that a request arriving while the very first resolution is still
        running waits for it rather than failing."""
        if self.first_pending:
            await self._first_attempt.wait()
        return self.current()

    async def wait_first_attempt(self) -> None:
        await self._first_attempt.wait()

    @property
    def usable(self) -> bool:
        try:
            self.current()
        except CredentialsUnavailable:
            return False
        return True

    def unavailable_reason(self) -> str:
        if self._current is not None:
            if self.error:
                why = f"; the last refresh failed: {self.error}"
            else:
                why = "; a refresh is under way" if self._refreshing else ""
            return f"the credentials for identity {self.name!r} have expired{why}"
        if not self._first_attempt.is_set():
            return f"credentials for identity {self.name!r} are still being resolved; retry shortly"
        return f"identity {self.name!r}: {self.error or 'no credentials'}"

    def describe(self) -> str:
        """For the start-up table and logs: who signs, never a secret."""
        parts = [self.name]
        if self.account_id:
            parts.append(f"account {self.account_id}")
        if self._current is not None:
            parts.append(f"{self.source}, {mask(self._current.access_key)}")
        return ", ".join(parts)

    def status(self) -> dict[str, Any]:
        """For /_proxy/ready and `check`: never a secret."""
        expires = self._expires_at
        return {
            "identity": self.name,
            "usable": self.usable,
            "source": self.source,
            "profile": self.spec.profile,
            "role_arn": self.spec.role_arn,
            "account_id": self.account_id,
            "access_key": mask(self._current.access_key) if self._current else None,
            "expires_at": datetime.fromtimestamp(expires, UTC).isoformat() if expires else None,
            "last_refresh_error": self.error,
            "error": None if self.usable else self.unavailable_reason(),
        }

    def _resolve(self) -> botocore.credentials.Credentials:
        spec = self.spec
        session = botocore_session(spec)
        base = session.get_credentials()
        if base is None:
            raise LookupError(NO_CREDENTIALS_HELP.format(profile=repr(spec.profile or "default")))
        if spec.role_arn is None:
            return base
        frozen = base.get_frozen_credentials()
        self.caller = f"{spec.base} ({base.method}, {mask(frozen.access_key or '')})"
        assume: dict[str, Any] = {
            "RoleSessionName": spec.role_session_name or default_session_name()
        }
        if spec.external_id:
            assume["ExternalId"] = spec.external_id
        if spec.duration_seconds:
            assume["DurationSeconds"] = spec.duration_seconds
        fetcher = botocore.credentials.AssumeRoleCredentialFetcher(
            client_creator=functools.partial(
                session.create_client, region_name=spec.sts_region or STS_DEFAULT_REGION
            ),
            source_credentials=base,
            role_arn=spec.role_arn,
            extra_args=assume,
        )
        return botocore.credentials.DeferredRefreshableCredentials(
            method="assume-role", refresh_using=fetcher.fetch_credentials
        )

    async def refresh(self) -> float | None:
        """Resolve or refresh once, off the event loop. Seconds until the next refresh is due, or
        None for credentials that never expire. A failure is described in `error`, then raised."""
        self._refreshing = True
        failed: bool | None = None  # None: cancelled, neither a success nor a failure
        try:
            delay = await self._refresh()
            failed = False
            return delay
        except Exception as error:  # botocore raises many types; each means "not now"
            failed = True
            self.error = describe_failure(error, self.spec, self.caller)
            raise
        finally:
            self._refreshing = False
            if failed is not None and self.on_refresh is not None:
                self.on_refresh(self, failed, self._expires_at)

    async def _refresh(self) -> float | None:
        # One chain throughout: renew() may drop self._chain while this awaits.
        chain = self._chain if self._chain is not None else await asyncio.to_thread(self._resolve)
        self._chain = chain
        frozen = await asyncio.to_thread(chain.get_frozen_credentials)
        if not frozen.access_key or not frozen.secret_key:
            raise LookupError("the credential source returned an empty access key or secret key")
        expires_at = _expiry_epoch(chain)  # before the keys are kept: it may refuse them
        self._current = Credentials(frozen.access_key, frozen.secret_key, frozen.token or None)
        self._expires_at = expires_at
        self.source = chain.method
        self.account_id = getattr(frozen, "account_id", None) or self.spec.role_account
        self.refreshed_at = self._clock()
        self.error = None
        if self._expires_at is None:
            return None
        remaining = self._expires_at - self._clock()
        return max(remaining - ADVISORY_WINDOW, remaining / 2, MIN_REFRESH_DELAY)

    async def renew(self) -> Credentials | None:
        """Resolve the credentials afresh now, the chain too (AWS rejected the cached keys:
        they expired or were revoked between refreshes), so that new keys in a profile or a new
        SSO login are found. Requests rejected together share one resolution, and one is done
        at most every RENEW_INTERVAL. The credentials then in force, None if there are none."""
        if self._renewal is None or (
            self._renewal.done() and self._clock() - self._renewed_at > RENEW_INTERVAL
        ):
            self._renewed_at = self._clock()
            self._chain = None
            self._renewal = asyncio.ensure_future(self.refresh())
        try:
            await asyncio.shield(self._renewal)
        except Exception:  # described in self.error
            log.warning("credentials for identity %s unavailable: %s", self.name, self.error)
        try:
            return self.current()
        except CredentialsUnavailable:
            return None

    async def whoami(self) -> str | None:
        """Who these credentials are (STS GetCallerIdentity's Arn), asked once per identity,
        off the event loop; None if STS did not say within WHOAMI_TIMEOUT."""
        if self._whoami is None:
            self._whoami = asyncio.ensure_future(asyncio.to_thread(self._caller_identity))
        try:
            return await asyncio.wait_for(asyncio.shield(self._whoami), WHOAMI_TIMEOUT)
        except Exception:  # botocore raises many types; each means "not known"
            return None

    def _caller_identity(self) -> str | None:
        creds = self.current()
        # Any: botocore makes its operations from the service model at run time.
        client: Any = botocore_session(self.spec).create_client(
            "sts",
            region_name=self.spec.sts_region or STS_DEFAULT_REGION,
            aws_access_key_id=creds.access_key,
            aws_secret_access_key=creds.secret_key,
            aws_session_token=creds.token,
            config=botocore.config.Config(
                retries={"mode": "standard", "total_max_attempts": 1},
                connect_timeout=WHOAMI_TIMEOUT,
                read_timeout=WHOAMI_TIMEOUT,
            ),
        )
        answer = client.get_caller_identity()
        self.caller_arn = str(answer["Arn"])
        self.account_id = self.account_id or str(answer["Account"])
        return self.caller_arn

    async def run(self) -> None:
        """Keep the credentials fresh until cancelled; failures are retried with back-off and
        logged once per streak, while still-valid credentials stay in use."""
        failures = 0
        while True:
            try:
                delay = await self.refresh()
            except Exception:  # described in self.error by refresh()
                failures += 1
                if failures == 1:
                    log.warning(
                        "credentials for identity %s unavailable: %s", self.name, self.error
                    )
                cap = MAX_RETRY_DELAY if self.usable else MAX_RETRY_DELAY_UNUSABLE
                delay = min(cap, 2.0 ** (failures - 1))
            else:
                if failures:
                    log.info("credentials for identity %s recovered", self.name)
                elif not self._first_attempt.is_set():
                    log.info("credentials for identity %s", self.describe())
                failures = 0
            finally:
                self._first_attempt.set()
            if delay is None:
                return
            await asyncio.sleep(delay)
