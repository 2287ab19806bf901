"""Settings and Route: one schema for the TOML file, LAMBDA_URL_PROXY_* variables and flags.

Precedence: flags > environment > file > defaults. This is the only module that names the
proxy's environment variables.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from proxy.target import canonical_path

if TYPE_CHECKING:
    from yarl import URL

ENV_PREFIX: Final = "LAMBDA_URL_PROXY_"
CONFIG_ENV: Final = f"{ENV_PREFIX}CONFIG"
RESERVED_PREFIX: Final = "/_proxy"
KiB: Final = 1024
MiB: Final = 1024 * KiB
SHUTDOWN_GRACE: Final = 10.0

_ROLE_ARN: Final = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}")
_SESSION_NAME: Final = re.compile(r"[\w+=,.@-]{2,64}")
_ORIGIN: Final = re.compile(r"https?://[^/?#\s]+")
_HOST_PATTERN: Final = re.compile(r"(\*?\.)?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")
# <url-id>.lambda-url.<region>.on.aws
_FUNCTION_URL_HOST: Final = re.compile(r"[a-z0-9]+\.lambda-url\.([a-z0-9-]+)\.on\.aws")
# The FunctionName forms of botocore's Lambda model (FunctionUrlFunctionName): a name, a partial
# ARN (123456789012:function:my-fn) or an ARN, each with an optional qualifier.
_FUNCTION: Final = re.compile(
    r"(?:arn:aws[a-zA-Z-]*:lambda:(?P<region>[a-z]{2}(?:-[a-z]+)+-\d):)?(?:\d{12}:)?"
    r"(?:function:)?(?P<name>[a-zA-Z0-9_-]{1,64})(?::(?P<qualifier>\$LATEST|[a-zA-Z0-9_-]{1,128}))?"
)
_QUALIFIER: Final = re.compile(r"\$LATEST|[a-zA-Z0-9_-]{1,128}")
FUNCTION_PREFIX: Final = "function:"  # --route /users=function:my-fn


class ConfigError(Exception):
    """Bad configuration: the message names the setting and the value, and how to fix it."""


def region_from_url(url: URL) -> str | None:
    match = _FUNCTION_URL_HOST.fullmatch(url.host or "")
    return match.group(1) if match else None


def region_from_function(function: str) -> str | None:
    """The region a function's ARN names; None for a name or a partial ARN."""
    match = _FUNCTION.fullmatch(function)
    return match["region"] if match else None


class IdentityOptions(BaseModel):
    """Who signs: a profile from the AWS config files and/or a role assumed on top of it."""

    profile: str | None = Field(None, description="named profile from the AWS config files")
    role_arn: str | None = Field(None, description="IAM role to assume on top of the base identity")
    external_id: str | None = Field(None, description="external id for the AssumeRole call")
    role_session_name: str | None = Field(
        None, description="AssumeRole session name (default: lambda-url-proxy-<user>)"
    )
    duration_seconds: int | None = Field(
        None, ge=900, le=43200, description="lifetime of assumed-role credentials, in seconds"
    )

    @field_validator("role_arn")
    @classmethod
    def _check_role_arn(cls, arn: str | None) -> str | None:
        if arn is not None and not _ROLE_ARN.fullmatch(arn):
            raise ValueError(
                f"role_arn {arn!r} is not an IAM role ARN such as "
                "'arn:aws:iam::210987654321:role/invoke-billing'"
            )
        return arn

    @field_validator("role_session_name")
    @classmethod
    def _check_session_name(cls, name: str | None) -> str | None:
        if name is not None and not _SESSION_NAME.fullmatch(name):
            raise ValueError(
                f"role_session_name {name!r} must be 2 to 64 of the characters A-Z a-z 0-9 "
                "and _+=,.@-"
            )
        return name

    @property
    def names_identity(self) -> bool:
        return self.profile is not None or self.role_arn is not None


class Route(IdentityOptions):
    """A route prefix and the Function URL it forwards to, or the function it names (its URL
    looked up, or invoked through the Lambda API); its identity, if not the default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str = Field(description="path prefix, matched on a segment boundary")
    url: str | None = Field(None, description="the Function URL, http(s)://host[:port][/base-path]")
    strip_prefix: bool = Field(True, description="remove the prefix before forwarding")
    region: str | None = Field(
        None, description="signing region; default: from the URL host or the function's ARN"
    )
    service: str = Field("lambda", description="signing service name")
    timeout: float = Field(60.0, gt=0, description="seconds for the whole upstream exchange")
    function: str | None = Field(
        None,
        description="instead of url: the function's name or ARN; its Function URL is looked "
        "up, and a function without one is invoked through the Lambda API",
    )
    qualifier: str | None = Field(None, description="with function: the alias (or version) to use")
    invoke_mode: Literal["BUFFERED", "RESPONSE_STREAM"] = Field(
        "BUFFERED",
        description="with function, for a function without a URL: BUFFERED (Invoke) or "
        "RESPONSE_STREAM (InvokeWithResponseStream)",
    )

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, prefix: str) -> str:
        if not prefix.startswith("/"):
            raise ValueError(f"prefix {prefix!r} must start with '/', for example '/users'")
        if "?" in prefix or "#" in prefix:
            raise ValueError(f"prefix {prefix!r} must be a path, without '?' or '#'")
        canonical = canonical_path(prefix)
        if canonical != "/":
            canonical = canonical.rstrip("/")
        if canonical == RESERVED_PREFIX or canonical.startswith(RESERVED_PREFIX + "/"):
            raise ValueError(f"prefix {prefix!r} is reserved for the proxy's own endpoints")
        return canonical

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        from yarl import URL  # here: `--help` builds this model but validates no route

        try:
            parsed = URL(url)
        except ValueError as error:
            raise ValueError(f"url {url!r} is not a valid URL ({error})") from None
        if parsed.scheme not in ("http", "https"):
            raise ValueError(
                f"url {url!r} must start with https:// (or http:// for a local endpoint)"
            )
        if not parsed.host:
            raise ValueError(f"url {url!r} has no host")
        if parsed.user is not None or parsed.password is not None:
            raise ValueError(f"url {url!r} must not carry a user name or password")
        if parsed.raw_query_string or parsed.raw_fragment:
            raise ValueError(f"url {url!r} must not have a query or fragment")
        try:
            _ = parsed.port
        except ValueError:
            raise ValueError(f"url {url!r} has an invalid port") from None
        return url

    @field_validator("region")
    @classmethod
    def _check_region(cls, region: str | None) -> str | None:
        if region is not None and not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d+", region):
            raise ValueError(f"region {region!r} is not an AWS region name such as 'us-east-1'")
        return region

    @field_validator("function")
    @classmethod
    def _check_function(cls, function: str | None) -> str | None:
        if function is not None and not _FUNCTION.fullmatch(function):
            raise ValueError(
                f"function {function!r} is not a function name (up to 64 of A-Z a-z 0-9 - _) "
                "or ARN, for example 'my-fn' or "
                "'arn:aws:lambda:eu-west-1:123456789012:function:my-fn'"
            )
        return function

    @field_validator("qualifier")
    @classmethod
    def _check_qualifier(cls, qualifier: str | None) -> str | None:
        if qualifier is not None and not _QUALIFIER.fullmatch(qualifier):
            raise ValueError(
                f"qualifier {qualifier!r} is not an alias or version, for example 'prod' or '3'"
            )
        return qualifier

    @model_validator(mode="before")
    @classmethod
    def _qualifier_of_the_arn(cls, data: Any) -> Any:
        """A qualifier in the function's name or ARN (my-fn:prod) moves to `qualifier`."""
        if not isinstance(data, dict) or not isinstance(data.get("function"), str):
            return data
        match = _FUNCTION.fullmatch(data["function"])
        if match is None or match["qualifier"] is None:
            return data
        inline, given = match["qualifier"], data.get("qualifier")
        if given is not None and given != inline:
            raise ValueError(
                f"function {data['function']!r} names qualifier {inline!r} and qualifier is "
                f"{given!r}; keep one"
            )
        return {
            **data,
            "function": data["function"][: match.start("qualifier") - 1],
            "qualifier": inline,
        }

    @model_validator(mode="after")
    def _url_or_function(self) -> Route:
        if (self.url is None) == (self.function is None):
            raise ValueError(
                f"route {self.prefix!r} needs either url (a Function URL) or function (a "
                "function's name or ARN), not " + ("both" if self.url is not None else "neither")
            )
        if self.url is not None and (
            named := sorted({"qualifier", "invoke_mode"} & self.model_fields_set)
        ):
            raise ValueError(
                f"route {self.prefix!r}: {' and '.join(named)} apply to routes naming a "
                "function, not to a url"
            )
        return self

    @property
    def target(self) -> str:
        """What the route forwards to, for messages and tables: its URL, or `function NAME`."""
        if self.function is None:
            assert self.url is not None
            return self.url
        qualifier = f" (qualifier {self.qualifier})" if self.qualifier else ""
        return f"function {self.function}{qualifier}"


class _TomlFile(PydanticBaseSettingsSource):
    """The TOML file; the [server] table's keys are top-level settings."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self.path = path

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ reads the whole file at once

    def __call__(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        try:
            with self.path.open("rb") as file:
                data = tomllib.load(file)
        except OSError as error:
            raise ConfigError(
                f"config file {str(self.path)!r} cannot be read: {error.strerror}"
            ) from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(
                f"config file {str(self.path)!r} is not valid TOML: {error}"
            ) from None
        server = data.pop("server", {})
        if not isinstance(server, dict):
            raise ConfigError(f"config file {str(self.path)!r}: [server] must be a table")
        if both := sorted(set(server) & set(data)):
            raise ConfigError(
                f"config file {str(self.path)!r}: {', '.join(both)} set both at the top level "
                "and in [server]; keep one"
            )
        return {**data, **server}


def parse_route(text: str) -> dict[str, str]:
    """PREFIX=URL[,OPTION=VALUE...] or PREFIX=function:NAME[,OPTION=VALUE...], options being
    any route setting (profile=..., timeout=...); ValueError naming what is wrong."""
    prefix, sep, rest = text.partition("=")
    target, *options = rest.split(",")
    if not sep or not prefix or not target or target == FUNCTION_PREFIX:
        raise ValueError(
            f"{text!r} is not PREFIX=URL[,OPTION=VALUE...] or PREFIX=function:NAME[,...], for "
            "example /users=https://abc.lambda-url.us-east-1.on.aws,profile=dev or "
            "/users=function:my-fn,qualifier=prod"
        )
    route = {"prefix": prefix}
    if target.startswith(FUNCTION_PREFIX):
        route["function"] = target.removeprefix(FUNCTION_PREFIX)
    else:
        route["url"] = target
    for option in options:
        name, sep, value = option.partition("=")
        if not sep or not name:
            raise ValueError(
                f"route option {option!r} in {text!r} is not OPTION=VALUE, for example timeout=30"
            )
        route[name.strip()] = value
    return route


def route_options() -> list[str]:
    """The settings a route takes beyond its prefix and URL or function, for --help and
    messages."""
    identity = list(IdentityOptions.model_fields)
    own = [
        name for name in Route.model_fields if name not in ("prefix", "url", "function", *identity)
    ]
    return own + identity


ROUTES_EXAMPLE: Final = (
    '[{"prefix": "/users", "url": "https://abc123.lambda-url.us-east-1.on.aws"}]'
)
# Lists of plain strings: in the environment, bare values separated by commas do as well as JSON.
PLAIN_LISTS: Final = frozenset({"cors_origins", "allowed_clients", "allowed_hosts"})


class _Environment(EnvSettingsSource):
    """LAMBDA_URL_PROXY_* variables. Lists are JSON as pydantic-settings reads them; a list of
    strings may also be one bare value, or several separated by commas; a malformed value is a
    message naming the variable and the shape it needs."""

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        try:
            decoded = json.loads(value)
        except ValueError as error:
            if field_name in PLAIN_LISTS:
                return [item.strip() for item in str(value).split(",") if item.strip()]
            raise ConfigError(_not_json(field_name, str(value), error)) from None
        if field_name in PLAIN_LISTS and isinstance(decoded, str):
            return [decoded]
        if field_name == "routes" and not isinstance(decoded, list):
            raise ConfigError(
                f"{env_name(field_name)} must be a JSON list of routes, even for one: wrap it in "
                f"[ ], for example {ROUTES_EXAMPLE}"
            )
        return decoded


def _not_json(field_name: str, value: str, error: ValueError) -> str:
    variable = env_name(field_name)
    message = f"{variable} is not valid JSON ({error})"
    if field_name != "routes":
        return f"{message}; it must be a JSON list"
    message += f": it must be a JSON list of routes, for example {ROUTES_EXAMPLE}"
    try:  # the --route syntax, written where JSON was expected: show it as JSON
        routes = [parse_route(text) for text in value.split()]
    except ValueError:
        return message
    return f"{message}. In JSON, what you wrote is: {variable}='{json.dumps(routes)}'"


_config_file: ContextVar[Path | None] = ContextVar("config_file", default=None)


class Settings(BaseSettings, IdentityOptions):
    """Everything the proxy reads; the identity options here are the routes' default."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8080, ge=0, le=65535, description="port to listen on (0: any free port)")
    region: str | None = Field(
        None,
        description="region for routes whose URL does not reveal one "
        "(default: AWS_REGION, AWS_DEFAULT_REGION or the profile's region)",
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="text, or one JSON object a line"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    max_body_size: ByteSize = Field(
        ByteSize(6 * MiB), gt=0, description="largest request body forwarded, e.g. 6MiB"
    )
    # nginx's large_client_header_buffers (4 x 8k): what clients behind nginx already live with.
    max_head_size: ByteSize = Field(
        ByteSize(32 * KiB),
        ge=KiB,
        description="largest request head (request line and headers together), e.g. 32KiB; "
        "a larger one gets 431 and the connection is closed",
    )
    max_buffered_bodies: ByteSize = Field(
        ByteSize(64 * MiB),
        gt=0,
        description="request body bytes held at once across all requests, e.g. 64MiB; a body "
        "beyond it waits for room (up to body_timeout), then gets 503",
    )
    ca_bundle: Path | None = Field(
        None, description="CA bundle to verify upstream TLS (default: AWS_CA_BUNDLE)"
    )
    access_token: SecretStr | None = Field(
        None,
        description="if set, clients must send it as X-Proxy-Token or Authorization: Bearer "
        "(prefer the environment variable: flags show in the process list)",
    )
    allowed_clients: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="client networks allowed to use the proxy, e.g. 172.16.0.0/12 "
        "(default: any that can reach the port)",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="more names clients may address the proxy by (the Host header), e.g. "
        "proxy.internal or .svc.cluster.local for a domain; '*' for any. Always allowed: "
        "loopback names and, bound wider, IP addresses and single-label service names",
    )
    admin_listen: str | None = Field(
        None,
        description="HOST:PORT of a second listener that serves only /_proxy/health, "
        "/_proxy/ready and /_proxy/metrics (never forwards), for Prometheus and the kubelet, "
        "e.g. 0.0.0.0:9901 in a pod (default: none)",
    )
    workers: int = Field(
        1, ge=1, le=64, description="server processes sharing the port (SO_REUSEPORT)"
    )
    idle_timeout: float = Field(
        15.0,
        gt=0,
        description="seconds a connection may sit idle, or take to send a request's headers",
    )
    body_timeout: float = Field(
        30.0, gt=0, description="seconds a client may take to send a request body"
    )
    max_connections: int = Field(
        1024, ge=1, description="concurrent client connections; more are answered 503"
    )
    shutdown_grace: float = Field(
        SHUTDOWN_GRACE,
        ge=0,
        description="seconds in-flight requests may finish after SIGTERM or SIGINT",
    )
    inspector: bool = Field(
        True,
        description="the live request inspector at /_proxy/, which keeps the last requests, "
        "bodies included, in memory only",
    )
    inspector_size: int = Field(
        200, ge=1, le=10_000, description="requests the inspector keeps (each body up to 64 KiB)"
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="browser origin allowed to call the proxy with CORS, e.g. "
        "http://localhost:5173; '*' allows any origin on this machine; repeat for more",
    )
    routes: list[Route] = Field(
        default_factory=list,
        description="PREFIX=URL, or PREFIX=function:NAME for a function by name or ARN; repeat "
        "for each route",
        min_length=1,
    )
    # Where each setting that was set came from, for messages: "--profile", an environment
    # variable's name, or the config file's path. Filled by load_settings.
    _origins: dict[str, str] = PrivateAttr(default_factory=dict)

    def origin(self, name: str) -> str:
        return self._origins.get(name, "default")

    @field_validator("routes")
    @classmethod
    def _unique_prefixes(cls, routes: list[Route]) -> list[Route]:
        seen: set[str] = set()
        for route in routes:
            if route.prefix in seen:
                raise ValueError(f"prefix {route.prefix!r} is configured twice")
            seen.add(route.prefix)
        return routes

    @field_validator("region")
    @classmethod
    def _check_region(cls, region: str | None) -> str | None:
        return Route._check_region(region)

    @field_validator("admin_listen")
    @classmethod
    def _check_admin_listen(cls, listen: str | None) -> str | None:
        if listen is not None:
            split_listen(listen)
        return listen

    @property
    def admin_address(self) -> tuple[str, int] | None:
        return None if self.admin_listen is None else split_listen(self.admin_listen)

    @field_validator("allowed_hosts")
    @classmethod
    def _check_hosts(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            if host != "*" and not _HOST_PATTERN.fullmatch(host):
                raise ValueError(
                    f"allowed host {host!r} must be a name such as proxy.internal, a domain "
                    "such as .svc.cluster.local (or *.svc.cluster.local), or '*' (no scheme, "
                    "port or path)"
                )
        return hosts

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if origin != "*" and not _ORIGIN.fullmatch(origin.rstrip("/")):
                raise ValueError(
                    f"cors origin {origin!r} must be '*' or scheme://host[:port], "
                    "for example http://localhost:5173 (no path)"
                )
        return origins

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            _Environment(settings_cls),
            _TomlFile(settings_cls, _config_file.get()),
        )


def split_listen(listen: str) -> tuple[str, int]:
    """HOST:PORT ([::1]:PORT for IPv6) as (host, port); ValueError naming what is wrong."""
    host, sep, port = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]") if host.startswith("[") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535 or "/" in listen:
        raise ValueError(
            f"admin_listen {listen!r} must be HOST:PORT, for example 0.0.0.0:9901 (every "
            "address of a pod) or 127.0.0.1:9901"
        )
    return host, int(port)


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def _check_environment(environ: dict[str, str]) -> None:
    known = {env_name(name) for name in Settings.model_fields} | {CONFIG_ENV}
    if unknown := sorted(key for key in environ if key.startswith(ENV_PREFIX) and key not in known):
        close = difflib.get_close_matches(unknown[0], sorted(known), n=1, cutoff=0.8)
        guess = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(
            f"unknown environment variable {unknown[0]}: {guess}"
            f"the settings are {', '.join(sorted(known))}"
        )


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in item["loc"]
        )
        where = where.lstrip(".") or "settings"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = f"unknown setting (value {item['input']!r}); {_known(item['loc'])}"
        elif item["type"] == "missing":
            message = "missing: required"
        elif item["type"] == "too_short" and where == "routes":
            message = (
                "no routes configured: pass --route /prefix=https://<id>.lambda-url.<region>.on.aws"
                f" (or /prefix=function:NAME), set {env_name('routes')}, or add [[routes]] to the "
                "config file"
            )
        elif (
            "input" in item
            and not isinstance(item["input"], dict | list)
            and repr(item["input"]) not in message
        ):
            message = f"{message} (got {item['input']!r})"
        lines.append(f"  {where}: {message}")
    return "invalid configuration:\n" + "\n".join(lines)


def _known(loc: tuple[int | str, ...]) -> str:
    """The settings that exist where an unknown one was given, the closest first."""
    in_route = len(loc) == 3 and loc[0] == "routes"
    known = route_options() if in_route else list(Settings.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.5)
    guess = f"did you mean `{close[0]}`? " if close else ""
    kind = (
        "a route's settings (besides prefix, and url or function)" if in_route else "the settings"
    )
    return f"{guess}{kind}: {', '.join(known)}"


def load_settings(
    flags: dict[str, Any] | None = None,
    config_file: Path | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Settings from flags, the environment and the config file; ConfigError if any is wrong."""
    environ = dict(os.environ if environ is None else environ)
    _check_environment(environ)
    if config_file is None and environ.get(CONFIG_ENV):
        config_file = Path(environ[CONFIG_ENV])
    token = _config_file.set(config_file)
    flags = flags or {}
    try:
        settings = Settings(**flags)
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None
    except SettingsError as error:
        cause = f": {error.__cause__}" if error.__cause__ else ""
        raise ConfigError(f"invalid configuration: {error}{cause}") from None
    finally:
        _config_file.reset(token)
    for name in settings.model_fields_set:
        if name in flags:
            origin = "--route" if name == "routes" else f"--{name.replace('_', '-')}"
        elif env_name(name) in environ:
            origin = env_name(name)
        else:
            origin = f"config file {config_file}"
        settings._origins[name] = origin
    return settings
