"""One identity = one botocore credential chain, refreshed ahead of expiry off the event loop.

The request path only reads the cached frozen credentials (`Identity.current`): it never waits on
I/O while they are valid. botocore may do network I/O inside get_credentials() and
get_frozen_credentials() (SSO, STS, container and instance metadata), so both run in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Final

import botocore.credentials
import botocore.exceptions
import botocore.session

from proxy.errors import CredentialsUnavailable
from proxy.signing import Credentials

log = logging.getLogger(__name__)

# botocore refreshes in its last 15 minutes (advisory); asking earlier returns the same keys.
ADVISORY_WINDOW: Final = 15 * 60.0
# A request signed now must still be valid when AWS receives it.
EXPIRY_MARGIN: Final = 1.0
MIN_REFRESH_DELAY: Final = 0.2
MAX_RETRY_DELAY: Final = 60.0

NO_CREDENTIALS_HELP: Final = (
    "no AWS credentials found. Tried: environment variables (AWS_ACCESS_KEY_ID, "
    "AWS_SECRET_ACCESS_KEY), the shared files ~/.aws/credentials and ~/.aws/config (profile "
    "{profile}), SSO, credential_process, web identity, container and instance metadata. "
    "Provide some with `aws configure`, or `aws sso login --profile NAME` and AWS_PROFILE=NAME, "
    "or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; the proxy keeps looking and picks "
    "up credentials from files and SSO without a restart"
)


def describe_failure(error: Exception, profile: str | None) -> str:
    """What went wrong resolving credentials, and what the user can do about it."""
    name = profile or "default"
    if isinstance(error, botocore.exceptions.ProfileNotFound):
        available = ", ".join(sorted(botocore.session.Session().available_profiles)) or "none"
        return f"profile {name!r} is not in the AWS config files (profiles: {available})"
    if isinstance(
        error,
        botocore.exceptions.SSOTokenLoadError
        | botocore.exceptions.UnauthorizedSSOTokenError
        | botocore.exceptions.TokenRetrievalError,
    ):
        return f"the SSO session has expired or is missing: run `aws sso login --profile {name}`"
    if isinstance(error, botocore.exceptions.CredentialRetrievalError):
        return f"the credential source failed: {error}"
    return f"resolving credentials failed: {type(error).__name__}: {error}"


def _expiry_epoch(creds: botocore.credentials.Credentials) -> float | None:
    expiry = getattr(creds, "_expiry_time", None)
    return expiry.timestamp() if expiry is not None else None


def mask(access_key: str) -> str:
    """An access key id shortened for logs: enough to tell keys apart, not to use one."""
    return f"{access_key[:4]}...{access_key[-4:]}" if len(access_key) > 8 else "****"


class Identity:
    """Credentials for one identity (today: the default chain, or one named profile)."""

    def __init__(self, profile: str | None = None, clock: Callable[[], float] = time.time) -> None:
        self.profile = profile
        self.name = profile or "default"
        self._clock = clock
        self._chain: botocore.credentials.Credentials | None = None
        self._current: Credentials | None = None
        self._expires_at: float | None = None
        self._first_attempt = asyncio.Event()
        self.source: str | None = None
        self.error: str | None = None
        self.refreshed_at: float | None = None

    def current(self) -> Credentials:
        """The cached credentials; CredentialsUnavailable if there are none or they expired."""
        creds = self._current
        expires_at = self._expires_at
        if creds is None or (
            expires_at is not None and self._clock() >= expires_at - EXPIRY_MARGIN
        ):
            raise CredentialsUnavailable(self.unavailable_reason())
        return creds

    async def wait_first_attempt(self) -> None:
        await self._first_attempt.wait()

    async def credentials(self) -> Credentials:
        """current(), except that a request arriving while the very first resolution is still
        running waits for it rather than failing."""
        if self._current is None and not self._first_attempt.is_set():
            await self._first_attempt.wait()
        return self.current()

    @property
    def usable(self) -> bool:
        try:
            self.current()
        except CredentialsUnavailable:
            return False
        return True

    def unavailable_reason(self) -> str:
        if self._current is not None:
            why = f"; the last refresh failed: {self.error}" if self.error else ""
            return f"the credentials for identity {self.name!r} have expired{why}"
        if not self._first_attempt.is_set():
            return f"credentials for identity {self.name!r} are still being resolved; retry shortly"
        return f"identity {self.name!r}: {self.error or 'no credentials'}"

    def status(self) -> dict[str, Any]:
        """For /_proxy/ready: never a secret."""
        return {
            "identity": self.name,
            "usable": self.usable,
            "source": self.source,
            "access_key": mask(self._current.access_key) if self._current else None,
            "expires_at": self._expires_at,
            "error": None if self.usable else self.unavailable_reason(),
        }

    def _resolve(self) -> botocore.credentials.Credentials:
        session = botocore.session.Session(profile=self.profile)
        chain = session.get_credentials()
        if chain is None:
            raise LookupError(NO_CREDENTIALS_HELP.format(profile=repr(self.name)))
        return chain

    async def refresh(self) -> float | None:
        """Resolve or refresh once, off the event loop. Seconds until the next refresh is due, or
        None for credentials that never expire."""
        if self._chain is None:
            self._chain = await asyncio.to_thread(self._resolve)
        frozen = await asyncio.to_thread(self._chain.get_frozen_credentials)
        if not frozen.access_key or not frozen.secret_key:
            raise LookupError("the credential source returned an empty access key or secret key")
        self._current = Credentials(frozen.access_key, frozen.secret_key, frozen.token or None)
        self._expires_at = _expiry_epoch(self._chain)
        self.source = self._chain.method
        self.refreshed_at = self._clock()
        self.error = None
        if self._expires_at is None:
            return None
        remaining = self._expires_at - self._clock()
        return max(remaining - ADVISORY_WINDOW, remaining / 2, MIN_REFRESH_DELAY)

    async def run(self) -> None:
        """Keep the credentials fresh until cancelled; failures are retried with back-off and
        logged once per streak, while still-valid credentials stay in use."""
        failures = 0
        while True:
            try:
                delay = await self.refresh()
            except Exception as error:  # botocore raises many types; each means "not now"
                failures += 1
                self.error = (
                    str(error)
                    if isinstance(error, LookupError)
                    else describe_failure(error, self.profile)
                )
                if failures == 1:
                    log.warning(
                        "credentials for identity %s unavailable: %s", self.name, self.error
                    )
                delay = min(MAX_RETRY_DELAY, 2.0**failures)
            else:
                if failures:
                    log.info("credentials for identity %s recovered", self.name)
                elif not self._first_attempt.is_set():
                    log.info(
                        "credentials for identity %s: %s (%s)",
                        self.name,
                        self.source,
                        mask(self._current.access_key) if self._current else "-",
                    )
                failures = 0
            finally:
                self._first_attempt.set()
            if delay is None:
                return
            await asyncio.sleep(delay)
