"""Configured the way users configure: every row of README's "Region and profile" table, through
the installed command, in a clean environment (`env -i` with a temporary HOME and only the AWS
variables and files a user has), signing against a fake Function URL that accepts only the
region the row expects.

Each environment also sets AWS_EC2_METADATA_DISABLED: without credentials botocore would ask the
instance metadata service at 169.254.169.254, beyond the loopback the tests may talk to.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from tests.conftest import ProxyProcess, spawn
from tests.fake_function_url import FakeFunctionUrl, KeyRecord

COMMAND = shutil.which("lambda-url-proxy") or "lambda-url-proxy"
# One key pair per place a user keeps keys, so each row shows which one signed.
KEYS = {
    "env": ("AKIAENVIRONMENT00001", "environment/secret/key/0000000000000000"),
    "default": ("AKIADEFAULTPROFILE01", "default/profile/secret/000000000000000"),
    "dev": ("AKIADEVPROFILE000001", "dev/profile/secret/00000000000000000000"),
    "eu": ("AKIAEUPROFILE0000001", "eu/profile/secret/000000000000000000000"),
}
CONFIG = """\
[default]
region = us-east-1
[profile eu]
region = eu-west-1
[profile dev]
region = ap-south-1
[profile noregion]
"""


def credentials_file(*profiles: str) -> str:
    return "".join(
        f"[{name}]\naws_access_key_id = {KEYS[name][0]}\naws_secret_access_key = {KEYS[name][1]}\n"
        for name in profiles
    )


ENV_KEYS = {"AWS_ACCESS_KEY_ID": KEYS["env"][0], "AWS_SECRET_ACCESS_KEY": KEYS["env"][1]}


@dataclass
class Home:
    """A user's HOME: ~/.aws as they keep it, and the variables their shell exports."""

    path: Path

    def aws(self, config: str | None = CONFIG, credentials: str | None = None) -> Home:
        aws = self.path / ".aws"
        aws.mkdir(exist_ok=True)
        if config is not None:
            (aws / "config").write_text(config)
        if credentials is not None:
            (aws / "credentials").write_text(credentials)
            (aws / "credentials").chmod(0o600)
        return self

    def env(self, **variables: str) -> dict[str, str]:
        return {
            "PATH": os.environ["PATH"],
            "HOME": str(self.path),
            "AWS_EC2_METADATA_DISABLED": "true",
            # STS GetCallerIdentity (check, an AccessDenied's explanation): a closed local port
            "AWS_ENDPOINT_URL_STS": "http://127.0.0.1:9",
            **variables,
        }


@pytest.fixture
def home(tmp_path: Path) -> Home:
    path = tmp_path / "home"
    path.mkdir()
    return Home(path)


@pytest_asyncio.fixture
async def fakes() -> AsyncIterator[dict[str, FakeFunctionUrl]]:
    """A fake Function URL per region: each refuses a signature scoped to any other region."""
    regions = ("us-east-1", "eu-west-1", "ap-south-1", "eu-north-1", "sa-east-1", "ca-central-1")
    started = {region: FakeFunctionUrl(region=region) for region in regions}
    for fake in started.values():
        await fake.start()
        for access_key, secret in KEYS.values():
            fake.keys[access_key] = KeyRecord(secret)
    try:
        yield started
    finally:
        for fake in started.values():
            await fake.stop()


async def serve(
    processes: list[ProxyProcess], env: dict[str, str], *flags: str, prefix: tuple[str, ...] = ()
) -> ProxyProcess:
    argv = [*prefix, COMMAND, "--port", "0", *flags]
    started = await asyncio.to_thread(spawn, argv, env, inherit=False)
    processes.append(started)
    return started


async def signed_by(proxy: ProxyProcess, path: str, fake: FakeFunctionUrl) -> tuple[str, str]:
    """(access key, region) of the signature that reached `fake`, which verified it."""
    async with aiohttp.ClientSession() as client, client.get(proxy.url + path) as response:
        body = await response.text()
    record = fake.received[-1]
    assert response.status == 200 and record.verified, (response.status, body, proxy.lines)
    authorization = dict((k.lower(), v) for k, v in record.headers)["authorization"]
    scope = re.search(r"Credential=(\w+)/\d{8}/([\w-]+)/lambda/aws4_request", authorization)
    assert scope, authorization
    return scope.group(1), scope.group(2)


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [COMMAND, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


# --- region: route > URL host > --region > AWS_REGION > AWS_DEFAULT_REGION > profile ----------


@pytest.mark.parametrize(
    ("variables", "files", "flags", "region", "key"),
    [
        # Keys and region in the environment only, no ~/.aws at all.
        ({**ENV_KEYS, "AWS_REGION": "eu-north-1"}, False, [], "eu-north-1", "env"),
        ({**ENV_KEYS, "AWS_DEFAULT_REGION": "sa-east-1"}, False, [], "sa-east-1", "env"),
        (
            {**ENV_KEYS, "AWS_REGION": "eu-north-1", "AWS_DEFAULT_REGION": "sa-east-1"},
            False,
            [],
            "eu-north-1",
            "env",
        ),
        # The shared files only: the default profile's keys and region.
        ({}, True, [], "us-east-1", "default"),
        # AWS_PROFILE: that profile's region and keys.
        ({"AWS_PROFILE": "dev"}, True, [], "ap-south-1", "dev"),
        # AWS_PROFILE with keys in the environment: the keys sign, the profile gives the region.
        ({**ENV_KEYS, "AWS_PROFILE": "dev"}, True, [], "ap-south-1", "env"),
        # --profile: its keys (even over keys in the environment, as `aws --profile`), its region.
        ({}, True, ["--profile", "eu"], "eu-west-1", "eu"),
        (ENV_KEYS, True, ["--profile", "dev"], "ap-south-1", "dev"),
        ({"LAMBDA_URL_PROXY_PROFILE": "eu"}, True, [], "eu-west-1", "eu"),
        # The environment's region beats the profile's; --region beats both.
        ({"AWS_PROFILE": "dev", "AWS_REGION": "ca-central-1"}, True, [], "ca-central-1", "dev"),
        (
            {"AWS_PROFILE": "dev", "AWS_DEFAULT_REGION": "ca-central-1"},
            True,
            [],
            "ca-central-1",
            "dev",
        ),
        (
            {"AWS_REGION": "ca-central-1"},
            True,
            ["--region", "sa-east-1"],
            "sa-east-1",
            "default",
        ),
        ({"LAMBDA_URL_PROXY_REGION": "eu-north-1"}, True, [], "eu-north-1", "default"),
    ],
    ids=[
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_REGION-over-AWS_DEFAULT_REGION",
        "files-only",
        "AWS_PROFILE",
        "AWS_PROFILE-with-env-keys",
        "--profile",
        "--profile-over-env-keys",
        "LAMBDA_URL_PROXY_PROFILE",
        "AWS_REGION-over-profile",
        "AWS_DEFAULT_REGION-over-profile",
        "--region-over-AWS_REGION",
        "LAMBDA_URL_PROXY_REGION",
    ],
)
async def test_region_and_keys_as_the_aws_cli_resolves_them(
    home: Home,
    fakes: dict[str, FakeFunctionUrl],
    processes: list[ProxyProcess],
    variables: dict[str, str],
    files: bool,
    flags: list[str],
    region: str,
    key: str,
) -> None:
    if files:
        home.aws(credentials=credentials_file("default", "dev", "eu"))
    # Every fake's URL is http://127.0.0.1:port: no region in the host, as the rows need.
    fake = fakes[region]
    proxy = await serve(processes, home.env(**variables), "--route", f"/fn={fake.url}", *flags)
    assert await signed_by(proxy, "/fn/x", fake) == (KEYS[key][0], region)


async def test_route_profiles_each_bring_their_region(
    home: Home, fakes: dict[str, FakeFunctionUrl], processes: list[ProxyProcess]
) -> None:
    home.aws(credentials=credentials_file("default", "dev", "eu"))
    eu, dev, default = fakes["eu-west-1"], fakes["ap-south-1"], fakes["us-east-1"]
    proxy = await serve(
        processes,
        home.env(),
        "--route",
        f"/eu={eu.url},profile=eu",
        "--route",
        f"/dev={dev.url},profile=dev",
        "--route",
        f"/default={default.url}",
        "--route",
        f"/pinned={eu.url},profile=dev,region=eu-west-1",
    )
    assert await signed_by(proxy, "/eu/x", eu) == (KEYS["eu"][0], "eu-west-1")
    assert await signed_by(proxy, "/dev/x", dev) == (KEYS["dev"][0], "ap-south-1")
    assert await signed_by(proxy, "/default/x", default) == (KEYS["default"][0], "us-east-1")
    # The route's own region beats its profile's.
    assert await signed_by(proxy, "/pinned/x", eu) == (KEYS["dev"][0], "eu-west-1")
    banner = "".join(proxy.lines)
    assert "route /dev     -> " in banner and "(region ap-south-1 from profile dev" in banner
    assert "(region eu-west-1 from route /pinned" in banner


async def test_the_start_up_banner_says_where_the_region_came_from(
    home: Home, fakes: dict[str, FakeFunctionUrl], processes: list[ProxyProcess]
) -> None:
    fake = fakes["eu-north-1"]
    proxy = await serve(
        processes, home.env(**ENV_KEYS, AWS_REGION="eu-north-1"), "--route", f"/fn={fake.url}"
    )
    assert f"route /fn -> {fake.url} (region eu-north-1 from AWS_REGION, " in "".join(proxy.lines)


# --- a profile that is not there ------------------------------------------------------------------


async def test_a_missing_aws_profile_with_keys_in_the_environment_warns_and_serves(
    home: Home, fakes: dict[str, FakeFunctionUrl], processes: list[ProxyProcess]
) -> None:
    # What docker-compose.yml sets by default (AWS_PROFILE=default), on a host with no ~/.aws.
    fake = fakes["eu-north-1"]
    env = home.env(**ENV_KEYS, AWS_PROFILE="default", AWS_REGION="eu-north-1")
    proxy = await serve(processes, env, "--route", f"/fn={fake.url}")
    assert await signed_by(proxy, "/fn/x", fake) == (KEYS["env"][0], "eu-north-1")
    text = "".join(proxy.lines)
    assert "WARNING profile 'default' (from AWS_PROFILE) is not in the AWS config files" in text
    assert "sign with the keys in the environment" in text
    assert "Traceback" not in text


@pytest.mark.parametrize(
    ("variables", "flags", "named"),
    [
        ({"AWS_PROFILE": "nope"}, [], "profile 'nope' (from AWS_PROFILE)"),
        ({"AWS_PROFILE": "default"}, [], "profile 'default' (from AWS_PROFILE)"),
        ({}, ["--profile", "nope"], "profile 'nope' (from --profile)"),
        (ENV_KEYS, ["--profile", "nope"], "profile 'nope' (from --profile)"),
        ({"LAMBDA_URL_PROXY_PROFILE": "nope"}, [], "from LAMBDA_URL_PROXY_PROFILE"),
        ({}, ["--route", "/b=http://127.0.0.1:9,profile=nope"], "(from route /b)"),
    ],
    ids=["AWS_PROFILE", "AWS_PROFILE=default", "--profile", "--profile+keys", "env", "route"],
)
@pytest.mark.parametrize("command", ["serve", "check"])
def test_a_missing_profile_stops_start_up_naming_it_and_its_source(
    home: Home, variables: dict[str, str], flags: list[str], named: str, command: str
) -> None:
    # Without keys in the environment, or with a profile chosen explicitly: nothing can sign.
    result = run(
        home.env(AWS_REGION="us-east-1", **variables),
        command,
        "--port",
        "0",
        "--route",
        "/a=http://127.0.0.1:9",
        *flags,
    )
    assert result.returncode == 2, result
    assert named in result.stderr and "is not in the AWS config files" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    if "--profile" in flags and "AWS_ACCESS_KEY_ID" in variables:
        assert "keys in the environment do not stand in for a profile named by --profile" in (
            result.stderr
        )


def test_the_missing_profile_message_names_the_profile_that_is_missing(home: Home) -> None:
    home.aws(credentials=credentials_file("default"))
    result = run(home.env(AWS_PROFILE="nope"), "--route", "/a=http://127.0.0.1:9")
    assert "profile 'nope' (from AWS_PROFILE)" in result.stderr
    assert "profile 'default'" not in result.stderr
    assert "profiles there: default, dev, eu, noregion" in result.stderr


def test_a_profile_without_a_region_says_how_to_give_it_one(home: Home) -> None:
    home.aws(credentials=credentials_file("default"))
    result = run(home.env(**ENV_KEYS), "--profile", "noregion", "--route", "/a=http://127.0.0.1:9")
    assert result.returncode == 2
    assert "does not reveal its region and none is configured" in result.stderr
    assert "set region in profile 'noregion' (from --profile)" in result.stderr
    assert "aws configure set region us-east-1 --profile noregion" in result.stderr


# --- ~/.aws that cannot be read (a mount owned by another uid) ------------------------------------


def unprivileged() -> list[str]:
    """A prefix that makes the proxy unable to read what its uid does not own: as root, drop the
    capabilities that bypass file permissions; otherwise nothing is needed."""
    if os.getuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv (util-linux): files cannot be unreadable")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]


@pytest.fixture
def unreadable_home(home: Home) -> Iterator[Home]:
    home.aws(credentials=credentials_file("default"))
    (home.path / ".aws").chmod(0o000)
    yield home
    (home.path / ".aws").chmod(0o700)


async def test_unreadable_aws_files_with_keys_in_the_environment_warn_and_serve(
    unreadable_home: Home, fakes: dict[str, FakeFunctionUrl], processes: list[ProxyProcess]
) -> None:
    fake = fakes["eu-north-1"]
    env = unreadable_home.env(**ENV_KEYS, AWS_PROFILE="default", AWS_REGION="eu-north-1")
    proxy = await serve(processes, env, "--route", f"/fn={fake.url}", prefix=tuple(unprivileged()))
    assert await signed_by(proxy, "/fn/x", fake) == (KEYS["env"][0], "eu-north-1")
    text = "".join(proxy.lines)
    config = unreadable_home.path / ".aws" / "config"
    assert f"WARNING {config} exists but cannot be read by uid {os.getuid()}" in text
    assert "Traceback" not in text


def test_unreadable_aws_files_without_keys_stop_start_up_saying_why(
    unreadable_home: Home,
) -> None:
    result = subprocess.run(
        [*unprivileged(), COMMAND, "--route", "/a=http://127.0.0.1:9"],
        env=unreadable_home.env(AWS_PROFILE="default", AWS_REGION="us-east-1"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result
    assert "profile 'default' (from AWS_PROFILE) is not in the AWS config files" in result.stderr
    assert "exists but cannot be read by uid" in result.stderr
    assert "PROXY_UID=$(id -u)" in result.stderr
    assert "Traceback" not in result.stderr


# --- check, configured the same way ---------------------------------------------------------------


def test_check_resolves_like_serve(home: Home) -> None:
    home.aws(credentials=credentials_file("default", "dev"))
    result = run(
        home.env(AWS_PROFILE="dev"),
        "check",
        "--route",
        "/a=http://127.0.0.1:9",
        "--route",
        "/b=http://127.0.0.1:9,profile=default",
    )
    assert result.returncode == 0, result
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:3]}
    assert "ap-south-1 (profile dev)" in rows["/a"] and "AKIA...0001" in rows["/a"]
    assert "us-east-1 (profile default)" in rows["/b"]
