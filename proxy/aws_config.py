"""The AWS side of the configuration, resolved as the AWS CLI v2 and the SDKs resolve it: which
profile a route signs with, and its region and CA bundle from the environment and the shared
files. Read once per configuration load, never per request.

botocore alone gets two of these wrong for a proxy: its `region` setting reads AWS_DEFAULT_REGION
but not AWS_REGION, and a profile named by AWS_PROFILE that does not exist raises ProfileNotFound
even when keys in the environment would sign (the SDKs use the keys).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import botocore.exceptions
import botocore.session
from yarl import URL

from proxy.settings import (
    ConfigError,
    Route,
    Settings,
    region_from_function,
    region_from_url,
)

# The order botocore reads them in: the legacy AWS_DEFAULT_PROFILE wins when both are set.
PROFILE_VARIABLES: Final = ("AWS_DEFAULT_PROFILE", "AWS_PROFILE")
REGION_VARIABLES: Final = ("AWS_REGION", "AWS_DEFAULT_REGION")
KEY_VARIABLES: Final = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
DEFAULT_PROFILE: Final = "default"


@dataclass(frozen=True, slots=True)
class ProfileChoice:
    """The profile a route signs with, and where its name came from (for messages)."""

    name: str
    source: str  # "--profile", "route /users", "AWS_PROFILE", ...; "default" when none was named
    # Named in the proxy's own settings, as `aws --profile`: keys in the environment do not
    # replace it. Named by AWS_PROFILE, or not at all: they come first in the chain.
    explicit: bool

    @property
    def named(self) -> bool:
        return self.source != DEFAULT_PROFILE

    def describe(self) -> str:
        return f"profile {self.name!r} (from {self.source})" if self.named else "profile 'default'"


@dataclass(frozen=True, slots=True)
class Resolved:
    """A value and where it came from: `us-east-1` from `AWS_REGION`."""

    value: str
    source: str


class AwsConfig:
    """The AWS environment variables and shared config files, as they are now."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ
        session = botocore.session.Session()
        self.files = tuple(
            Path(os.path.expanduser(str(session.get_config_variable(name))))
            for name in ("config_file", "credentials_file")
        )
        try:
            # Both files, credentials merged into config, as botocore reads them; no secret
            # from here is ever shown.
            self.profiles: Mapping[str, Mapping[str, str]] = session.full_config["profiles"]
        except botocore.exceptions.ConfigParseError as error:
            raise ConfigError(
                f"the AWS config file {error.kwargs.get('path')} cannot be parsed: fix it or point "
                "AWS_CONFIG_FILE elsewhere"
            ) from None
        self.unreadable = [why for path in self.files if (why := unreadable(path))]

    @property
    def has_environment_keys(self) -> bool:
        return all(self.environ.get(name) for name in KEY_VARIABLES)

    def profile(self, chosen: str | None, source: str) -> ProfileChoice:
        """The profile in use: the one chosen in the proxy's settings, else AWS_PROFILE, else
        `default`."""
        if chosen:
            return ProfileChoice(chosen, source, explicit=True)
        for variable in PROFILE_VARIABLES:
            if name := self.environ.get(variable):
                return ProfileChoice(name, variable, explicit=False)
        return ProfileChoice(DEFAULT_PROFILE, DEFAULT_PROFILE, explicit=False)

    def exists(self, profile: ProfileChoice) -> bool:
        """False only for a profile named somewhere that the files do not define: an unnamed
        `default` may be absent, as botocore allows."""
        return not profile.named or profile.name in self.profiles

    def setting(self, profile: ProfileChoice, name: str) -> str | None:
        value = self.profiles.get(profile.name, {}).get(name)
        return value or None

    def region(self, profile: ProfileChoice) -> Resolved | None:
        """AWS_REGION, then AWS_DEFAULT_REGION, then the profile's `region`."""
        for variable in REGION_VARIABLES:
            if value := self.environ.get(variable):
                return Resolved(value, variable)
        if value := self.setting(profile, "region"):
            return Resolved(value, f"profile {profile.name}")
        return None

    def ca_bundle(self, profile: ProfileChoice) -> Resolved | None:
        """AWS_CA_BUNDLE, then the profile's `ca_bundle`."""
        if value := self.environ.get("AWS_CA_BUNDLE"):
            return Resolved(value, "AWS_CA_BUNDLE")
        if value := self.setting(profile, "ca_bundle"):
            return Resolved(value, f"profile {profile.name}")
        return None

    def missing(self, profile: ProfileChoice) -> str:
        """Why `profile` is not there, and what to do about it."""
        names = ", ".join(sorted(self.profiles)) or "none"
        where = " and ".join(str(path) for path in self.files)
        message = (
            f"{profile.describe()} is not in the AWS config files ({where}; profiles there: "
            f"{names})"
        )
        if self.unreadable:
            return f"{message}; {'; '.join(self.unreadable)}"
        return (
            f"{message}; fix the name, or add the profile with "
            f"`aws configure --profile {profile.name}`"
        )


@dataclass(frozen=True, slots=True)
class RouteAws:
    """What a route signs with, beyond its keys: its profile, its region, and whether only the
    keys in the environment may sign (AWS_PROFILE names a profile that is not there)."""

    profile: ProfileChoice
    region: Resolved
    environment_keys_only: bool = False
    warning: str | None = None


def resolve_route(route: Route, settings: Settings, aws: AwsConfig) -> RouteAws:
    """The one rule, as the AWS CLI v2 has it (README, "Region and profile"). Region: the
    route's `region` > the region in its URL's host or its function's ARN > `--region` >
    AWS_REGION > AWS_DEFAULT_REGION > the region of the profile the route signs with. Profile:
    the route's `profile` > `--profile` > AWS_PROFILE > `default`. ConfigError if either
    cannot be had (its message does not name the route: the caller groups routes with the same
    problem)."""
    if route.names_identity:
        profile = aws.profile(route.profile, f"route {route.prefix}")
    else:
        profile = aws.profile(settings.profile, settings.origin("profile"))
    keys_only, warning = False, None
    if not aws.exists(profile):
        if profile.explicit or not aws.has_environment_keys:
            hint = _keys_hint(profile, aws)
            raise ConfigError(f"{aws.missing(profile)}{hint}")
        keys_only = True
        warning = (
            f"{aws.missing(profile)}; the routes that use it sign with the keys in the "
            "environment (AWS_ACCESS_KEY_ID), which come first in the chain"
        )
    region = _route_region(route, settings) or aws.region(profile)
    if region is None:
        named = f"url {route.url!r}" if route.url is not None else f"function {route.function!r}"
        raise ConfigError(
            f"{named} does not reveal its region and none is "
            f"configured: set region on the route, pass --region, set AWS_REGION, or set "
            f"region in {profile.describe()} (`aws configure set region us-east-1 --profile "
            f"{profile.name}`)"
        )
    return RouteAws(profile, region, keys_only, warning)


def _route_region(route: Route, settings: Settings) -> Resolved | None:
    """Column 2 of the rule is where the route's target names a region: a Function URL's host,
    or a function's ARN."""
    if route.region:
        return Resolved(route.region, f"route {route.prefix}")
    if route.url is not None and (from_host := region_from_url(URL(route.url))):
        return Resolved(from_host, "the URL's host")
    if route.function is not None and (from_arn := region_from_function(route.function)):
        return Resolved(from_arn, "the function's ARN")
    if settings.region:
        return Resolved(settings.region, settings.origin("region"))
    return None


def _keys_hint(profile: ProfileChoice, aws: AwsConfig) -> str:
    if profile.explicit and aws.has_environment_keys:
        return (
            f"; keys in the environment do not stand in for a profile named by {profile.source} "
            "(as with `aws --profile`): drop that setting to sign with them"
        )
    if not profile.explicit:
        return f"; or unset {profile.source}"
    return ""


def unreadable(path: Path) -> str | None:
    """Why an AWS file that exists cannot be read (botocore silently skips it), or None."""
    try:
        with path.open("rb"):
            return None
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        owner = _owner(path)
        return (
            f"{path} exists but cannot be read by uid {os.getuid()}"
            + (f" (it belongs to uid {owner})" if owner is not None else "")
            + f": {error.strerror}. In a container, run as the files' owner (with docker "
            "compose: PROXY_UID=$(id -u) PROXY_GID=$(id -g)); else make them readable"
        )


def _owner(path: Path) -> int | None:
    for candidate in (path, *path.parents):
        try:
            return candidate.stat().st_uid
        except OSError:
            continue
    return None
