"""Routes that name a function (issue #14): its Function URL found with GetFunctionUrlConfig,
through botocore with the route's identity, off the event loop; cached, and looked up again on
demand (on reload the state, and so every FunctionRoute, is new).

With a URL, the route forwards as a URL route does: `upstream` is the same compiled Upstream
the router uses (unsigned for AuthType NONE). Without one (ResourceNotFoundException for the URL
config, which is no error), `invoke` says how to call the function through the Lambda API.

botocore honours AWS_ENDPOINT_URL_LAMBDA and AWS_ENDPOINT_URL (and a profile's endpoint_url):
that is how the tests point it at tests/fake_lambda_api.py, and how LocalStack users work.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import botocore.config
import botocore.exceptions

from proxy import __version__
from proxy.aws_config import Resolved
from proxy.credentials import Identity, botocore_session
from proxy.errors import (
    FunctionAccessDenied,
    FunctionNotFound,
    FunctionThrottled,
    FunctionUnresolved,
    ProxyError,
)
from proxy.routing import Upstream
from proxy.settings import Route
from proxy.signing import Credentials

log = logging.getLogger(__name__)

GET_URL_ACTION: Final = "lambda:GetFunctionUrlConfig"
# botocore's standard retry mode: throttling and 5xx retried with jittered back-off.
LOOKUP_ATTEMPTS: Final = 3
CONNECT_TIMEOUT: Final = 5.0
READ_TIMEOUT: Final = 15.0
# A route whose URL stopped answering looks again at most this often, however many requests
# fail meanwhile.
AGAIN_AFTER: Final = 5.0
MAX_RETRY_DELAY: Final = 60.0
# GetFunctionUrlConfig's two ResourceNotFoundExceptions: no such function (or alias) says
# "Function not found: <arn>"; a function without a URL, "The resource you requested does not
# exist." Only the first is an error.
FUNCTION_NOT_FOUND: Final = "Function not found"
INVOKE_PATH: Final = "/2015-03-31/functions/{}/invocations"
STREAM_PATH: Final = "/2021-11-15/functions/{}/response-streaming-invocations"


@dataclass(frozen=True, slots=True)
class UrlConfig:
    """What GetFunctionUrlConfig said of the function's URL."""

    url: str
    auth_type: str  # AWS_IAM or NONE
    invoke_mode: str  # BUFFERED or RESPONSE_STREAM
    function_arn: str


@dataclass(frozen=True, slots=True)
class Invoke:
    """How to call a function without a URL: a POST of the payload format 2.0 event to `path`
    (`?query`) at `upstream`, the Lambda API endpoint, signed for service lambda as any route."""

    upstream: Upstream
    path: str  # canonical: the FunctionName percent-encoded, as botocore sends it
    query: str  # "Qualifier=prod", or ""
    streaming: bool  # InvokeWithResponseStream (invoke_mode RESPONSE_STREAM)


@dataclass(frozen=True, slots=True)
class Resolution:
    endpoint: str  # the Lambda API botocore used
    config: UrlConfig | None  # None: the function has no URL
    upstream: Upstream | None  # with a URL: the route as a URL route
    invoke: Invoke | None  # without one: through the Lambda API
    # What the request path gets: `upstream`, or the Lambda API's Upstream carrying `invoke`.
    routed: Upstream


def lookup(
    route: Route,
    region: str,
    credentials: Credentials,
    identity: Identity,
    ca_bundle: Path | None,
) -> tuple[str, UrlConfig | None]:
    """GetFunctionUrlConfig, blocking (run it in a thread): the endpoint called, and the URL's
    configuration or None when the function has none. ProxyError subclasses for failures."""
    client = _client(region, credentials, identity, ca_bundle)
    endpoint = str(client.meta.endpoint_url)
    qualifier = route.qualifier
    if qualifier is not None and qualifier.isdigit():
        return endpoint, None  # URLs belong to aliases and $LATEST only: a version has none
    arguments: dict[str, Any] = {"FunctionName": route.function}
    if qualifier not in (None, "$LATEST"):  # the unqualified URL is $LATEST's
        arguments["Qualifier"] = qualifier
    try:
        answer = client.get_function_url_config(**arguments)
    except botocore.exceptions.ClientError as error:
        details = error.response.get("Error", {})
        code, message = details.get("Code", ""), details.get("Message", str(error))
        if code == "ResourceNotFoundException" and not message.startswith(FUNCTION_NOT_FOUND):
            return endpoint, None
        raise _failure(route, identity, endpoint, code, message) from None
    except botocore.exceptions.BotoCoreError as error:
        raise FunctionUnresolved(
            f"cannot reach the Lambda API at {endpoint} to look up function "
            f"{route.function!r}: {error}"
        ) from None
    return endpoint, UrlConfig(
        answer["FunctionUrl"],
        answer["AuthType"],
        answer.get("InvokeMode") or "BUFFERED",
        answer["FunctionArn"],
    )


def _client(
    region: str, credentials: Credentials, identity: Identity, ca_bundle: Path | None
) -> Any:
    """A lambda client signing with the route's identity's current keys. Its session reads the
    AWS config as the identity does (a profile's endpoint_url, ca_bundle). Any: botocore makes
    its operations from the service model at run time."""
    return botocore_session(identity.spec).create_client(
        "lambda",
        region_name=region,
        aws_access_key_id=credentials.access_key,
        aws_secret_access_key=credentials.secret_key,
        aws_session_token=credentials.token,
        verify=str(ca_bundle) if ca_bundle else None,
        config=botocore.config.Config(
            retries={"mode": "standard", "total_max_attempts": LOOKUP_ATTEMPTS},
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            user_agent_extra=f"lambda-url-proxy/{__version__}",
        ),
    )


def _failure(
    route: Route, identity: Identity, endpoint: str, code: str, message: str
) -> ProxyError:
    named = f"function {route.function!r}" + (
        f" (qualifier {route.qualifier!r})" if route.qualifier else ""
    )
    if code == "ResourceNotFoundException":
        return FunctionNotFound(
            f"{named} does not exist at {endpoint} ({message}); check the name, the qualifier "
            "and the route's region"
        )
    if code == "AccessDeniedException":
        return FunctionAccessDenied(
            f"identity {identity.describe()} may not call {GET_URL_ACTION} on {named} (AWS: "
            f"{message}); allow {GET_URL_ACTION} on the function, or give the route its url "
            "instead"
        )
    if code == "TooManyRequestsException":
        return FunctionThrottled(
            f"the Lambda API throttled looking up {named} ({message}); the proxy tries again"
        )
    return FunctionUnresolved(f"looking up {named} failed ({code}: {message})")


class FunctionRoute:
    """A route naming a function: the lookup of its URL, cached. The request path asks
    `routed()` (sync) or `resolved()` (waits for the first lookup), and `resolve_again()` when
    the URL stops answering (DNS failure, 404 from the URL's host)."""

    def __init__(
        self,
        route: Route,
        region: Resolved,
        identity: Identity,
        ca_bundle: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert route.function is not None
        self.route = route
        self.prefix = route.prefix
        self.function = route.function
        self.region = region.value
        self.region_source = region.source  # as Upstream's: "the function's ARN", "AWS_REGION"
        self._region = region
        self.identity = identity
        self.ca_bundle = ca_bundle
        self.resolution: Resolution | None = None  # the last lookup that succeeded
        self.error: ProxyError | None = None  # the last one's failure, if it failed
        self._clock = clock
        self._first_attempt = asyncio.Event()
        self._pending: asyncio.Future[bool] | None = None
        self._last_attempt = -math.inf
        self._looked_again = -math.inf  # look_again()'s last lookup
        # The start-up banner or a reload's news told where the route goes (announce()); a
        # failure told there, or by run(), is not told again, and its end is.
        self._announced = False
        self._failure_told = False

    # --- For the request path ----------------------------------------------------------------

    def routed(self) -> Upstream:
        """The URL's upstream, or for a function without one the Lambda API's (its `invoke`
        set); else the ProxyError that says why there is nothing to send to now."""
        resolution = self.resolution
        if resolution is None:
            raise self.error or FunctionUnresolved(
                f"the URL of function {self.function!r} is still being looked up; retry shortly"
            )
        return resolution.routed

    def look_again(self) -> None:
        """The URL stopped answering (it cannot be reached, or its host answered 404): look it
        up again in the background, unless that was done within AGAIN_AFTER seconds. Requests
        go on to the URL in force until a lookup finds another (or none)."""
        now = self._clock()
        if now - self._looked_again >= AGAIN_AFTER and (
            self._pending is None or self._pending.done()
        ):
            self._looked_again = now
            self._pending = asyncio.ensure_future(self._resolve())

    async def resolved(self) -> Resolution:
        """The lookup's result, once the first lookup is over; its ProxyError if it failed."""
        await self._first_attempt.wait()
        if self.resolution is None:
            assert self.error is not None
            raise self.error
        return self.resolution

    async def resolve_again(self) -> Resolution | None:
        """Look the URL up again, unless that was done within AGAIN_AFTER seconds; concurrent
        callers share one lookup. The resolution in force afterwards."""
        if self._clock() - self._last_attempt >= AGAIN_AFTER:
            await self.resolve()
        return self.resolution

    # --- Looking up ---------------------------------------------------------------------------

    async def wait_first_attempt(self) -> None:
        await self._first_attempt.wait()

    async def resolve(self) -> bool:
        """One lookup, off the event loop; True if it succeeded. A failure keeps the last good
        resolution (a URL that worked goes on working) and is kept in `error`."""
        if self._pending is None or self._pending.done():
            self._pending = asyncio.ensure_future(self._resolve())
        return await asyncio.shield(self._pending)

    async def _resolve(self) -> bool:
        self._last_attempt = self._clock()
        try:
            # The cached keys, never a wait: run() starts once the identity's first attempt is
            # over, and `check` refreshes identities before looking up.
            credentials = self.identity.current()
            endpoint, config = await asyncio.to_thread(
                lookup, self.route, self.region, credentials, self.identity, self.ca_bundle
            )
            before = self.resolution
            self.resolution = self._resolution(endpoint, config)
            self.error = None
            if before is not None and before.config != config:  # looked up again: news
                log.info("route %s -> %s", self.prefix, self.describe())
        except ProxyError as error:
            self.error = error
        except Exception as error:  # botocore raises many types; each means "not now"
            self.error = FunctionUnresolved(
                f"looking up {self.named} failed: {type(error).__name__}: {error}"
            )
        finally:
            self._first_attempt.set()  # last: a waiter finds the outcome in place
        return self.error is None

    def _resolution(self, endpoint: str, config: UrlConfig | None) -> Resolution:
        if config is not None:
            upstream = self._upstream(config.url)
            if config.auth_type == "NONE":
                upstream = replace(upstream, unsigned=True)
            return Resolution(endpoint, config, upstream, None, upstream)
        streaming = self._streams
        path = (STREAM_PATH if streaming else INVOKE_PATH).format(quote(self.function, safe=""))
        query = f"Qualifier={quote(self.route.qualifier, safe='')}" if self.route.qualifier else ""
        # The request's own path travels in the event (rawPath), not in the API's path.
        api = self._upstream(endpoint)
        invoke = Invoke(api, path, query, streaming)
        return Resolution(endpoint, None, None, invoke, replace(api, invoke=invoke))

    def _upstream(self, url: str) -> Upstream:
        """The route compiled as a URL route to `url`, knowing the function it came from."""
        as_url = self.route.model_copy(update={"url": url, "function": None})
        return replace(Upstream.from_route(as_url, self._region, self.identity), function=self)

    async def run(self) -> None:
        """The first lookup once the identity has keys, retried with back-off until one
        succeeds. A failure is logged once, unless announce() told it; its end likewise."""
        await self.identity.wait_first_attempt()
        failures = 0
        while not await self.resolve():
            failures += 1
            if self._announced and not self._failure_told:
                self._failure_told = True
                log.warning("route %s -> %s", self.prefix, self.describe())
            await asyncio.sleep(min(MAX_RETRY_DELAY, 2.0 ** (failures - 1)))
        if self._failure_told:
            log.info("route %s -> %s", self.prefix, self.describe())

    def announce(self) -> str:
        """describe(), for the start-up banner or a reload's news, which run() then leaves
        alone: it tells only what changes afterwards."""
        self._announced = True
        self._failure_told = self._failure_told or self.failed
        return self.describe()

    @property
    def failed(self) -> bool:
        """Not found, and no URL found before either: nothing to forward to."""
        return self.resolution is None and self.error is not None

    @property
    def sends_to(self) -> Upstream | None:
        """Where requests go now: the URL's upstream, or the Lambda API's; None before a
        lookup succeeded."""
        return self.resolution.routed if self.resolution is not None else None

    @property
    def upstream(self) -> Upstream | None:
        """The URL's upstream, once found; None before, or for a function without one."""
        return self.resolution.upstream if self.resolution is not None else None

    # --- For people ---------------------------------------------------------------------------

    @property
    def target(self) -> str:
        """Where the route goes, for tables and logs (as Upstream.target)."""
        return self.describe()

    @property
    def _streams(self) -> bool:
        return self.route.invoke_mode == "RESPONSE_STREAM"

    @property
    def named(self) -> str:
        qualifier = f":{self.route.qualifier}" if self.route.qualifier else ""
        return f"function {self.function}{qualifier}"

    def describe(self) -> str:
        """Where the route goes, for the banner, `check` and logs: the function, and its URL
        (unsigned for AuthType NONE), or that it has none, or why it is not known."""
        resolution = self.resolution
        if resolution is None:
            if self.error is not None:
                return f"{self.named}: FAILED: {self.error.message}"
            return f"{self.named}: looking up its URL"
        if resolution.config is None:
            operation = "InvokeWithResponseStream" if self._streams else "Invoke"
            return (
                f"{self.named}: no Function URL (invoked through the Lambda API at "
                f"{resolution.endpoint}, {operation})"
            )
        config = resolution.config
        signing = "unsigned (AuthType NONE)" if config.auth_type == "NONE" else "AuthType AWS_IAM"
        return f"{self.named} -> {config.url} ({signing}, {config.invoke_mode})"

    def status(self) -> dict[str, Any]:
        """For /_proxy/routes, with the fields of a URL route's entry: never a secret."""
        resolution = self.resolution
        config = resolution.config if resolution else None
        return {
            "prefix": self.prefix,
            "url": config.url if config else None,
            "region": self.region,
            "region_source": self.region_source,
            "service": self.route.service,
            "strip_prefix": self.route.strip_prefix,
            "timeout": self.route.timeout,
            "identity": self.identity.name,
            "function": self.function,
            "qualifier": self.route.qualifier,
            "auth_type": config.auth_type if config else None,
            "invoke_mode": config.invoke_mode if config else self.route.invoke_mode,
            "signed": not (config and config.auth_type == "NONE"),
            "via": None if resolution is None else ("function_url" if config else "lambda_api"),
            "lambda_api": resolution.endpoint if resolution else None,
            "error": self.error.message if self.error else None,
        }
