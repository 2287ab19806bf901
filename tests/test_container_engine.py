"""The image and the compose file as shipped, built and run by a real Docker engine.

The engine, the image build and the session's bridge network are tests/engine.py's: without an
engine, this module skips, saying why; with REQUIRE_CONTAINER_ENGINE=1 (CI) that is a failure.

Networking: the tests talk only to 127.0.0.1 and to networks they create. The fake Function URL
runs on this host, bound to the gateway address of an internal docker bridge the session creates;
the proxy containers are attached to it (nothing there reaches beyond this host) and are called
on their address on it. Compose's own network, for `app`, is created by the compose run.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import pytest
import yaml
from packaging.utils import canonicalize_name

from proxy.settings import env_name
from tests.conftest import AKID, ROOT, SECRET, spawn
from tests.container_files import COMPOSE, PROXY_SERVICE, final, service, service_environment
from tests.engine import (
    TOKEN,
    Bridge,
    docker,
    image_id,
    log_records,
    output,
    state,
    unavailable,
    wait_exited,
)
from tests.lockfile import locked_here
from tests.test_compiled import compiled_names

# Not in the development loop; the first test pays for the image build (~80 s cold).
# 600 s: the first test to ask for the image pays for its build (engine.py: up to 480 s).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REGION: Final = "eu-west-3"  # the fake's; no default anywhere, so it must come from the config
ROUTES: Final = env_name("routes")
FAKE_SCRIPT: Final = ROOT / "tests" / "fake_function_url.py"
CONTAINER_HOME: Final = "/home/proxy"  # the image's HOME, where the docs mount ~/.aws
IMAGE_USER: Final = 1000
OTHER_USER: Final = 4321  # a host user whose id is not 1000
PUBLISHED: Final = ("127.0.0.1", 8080)  # docker-compose.yml's ports entry
TICKS: Final = 4  # the slow stream: a line a second, so docker stop lands while it runs
# The `app` service's image cannot be pulled here: a stand-in with Debian's curl.
CURL_STAND_IN: Final = """FROM {base}
LABEL org.opencontainers.image.description="stand-in for curlimages/curl: Debian's curl"
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends curl >/dev/null \\
 && rm -rf /var/lib/apt/lists/*
"""
# What the image holds, reported from inside it.
PROBE: Final = """
import importlib.metadata as m, importlib.util as u, json, os, pwd, shutil, sys, proxy
home = pwd.getpwuid(os.getuid())
print(json.dumps({
    "prefix": sys.prefix,
    "proxy": proxy.__file__,
    "build_tools": [n for n in ("pip", "setuptools") if u.find_spec(n)],
    "compilers": [c for c in ("gcc", "cc", "clang", "make") if shutil.which(c)],
    "sources": os.path.exists("/src"),
    "compiled": sorted(p.name.split(".")[0] for p in os.scandir(os.path.dirname(proxy.__file__))
                       if p.name.endswith(".so")),
    "user": [os.getuid(), os.getgid(), home.pw_name, home.pw_dir, os.environ["HOME"]],
    "versions": {d.metadata["Name"]: d.version for d in m.distributions()},
}))
"""


# --- the engine -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def fake_url(bridge: Bridge) -> Iterator[str]:
    """The fake Function URL on the bridge's gateway: its URL names no region."""
    options = ["--host", bridge.gateway, "--port", "0", "--region", REGION]
    fake = spawn([sys.executable, str(FAKE_SCRIPT), *options, "--key", f"{AKID}:{SECRET}"])
    try:
        yield f"http://{bridge.gateway}:{fake.port}"
    finally:
        fake.stop()


def shipped_routes() -> list[dict[str, Any]]:
    routes = json.loads(service_environment(service(PROXY_SERVICE))[ROUTES])
    assert isinstance(routes, list) and routes
    return routes


def routes_to(url: str, **options: str) -> str:
    """docker-compose.yml's routes, each pointed at `url` instead of AWS."""
    return json.dumps([{**route, "url": url, **options} for route in shipped_routes()])


def prefix() -> str:
    return str(shipped_routes()[0]["prefix"])


def aws_home(root: Path, profile: str, owner: int) -> Path:
    """A HOME whose ~/.aws has `profile`'s keys and region, as `aws configure` leaves it: files
    mode 0600 in a 0700 folder, owned by `owner`."""
    aws = root / ".aws"
    aws.mkdir(mode=0o700, parents=True)
    section = "default" if profile == "default" else f"profile {profile}"
    keys = f"aws_access_key_id = {AKID}\naws_secret_access_key = {SECRET}\n"
    (aws / "credentials").write_text(f"[{profile}]\n{keys}")
    (aws / "config").write_text(f"[{section}]\nregion = {REGION}\n")
    for path in (aws, aws / "credentials", aws / "config"):
        path.chmod(0o600 if path.is_file() else 0o700)
        os.chown(path, owner, owner)
    return root


# --- containers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """How one container is run: `docker run` options, as a user would write them."""

    env: dict[str, str]
    volumes: tuple[str, ...] = ()
    user: str | None = None
    port: int = 8080


@dataclass(frozen=True)
class Container:
    name: str
    address: str  # on the test's bridge
    port: int

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        return http_get(self.address, self.port, path)


def http_get(host: str, port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(host, port, timeout=20)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def run_container(name: str, image: str, bridge: Bridge, setup: Setup) -> Container:
    args = ["run", "--detach", "--name", name, "--network", bridge.name]
    for key, value in setup.env.items():
        args += ["--env", f"{key}={value}"]
    for volume in setup.volumes:
        args += ["--volume", volume]
    if setup.user:
        args += ["--user", setup.user]
    docker(*args, image)
    address = docker(
        "inspect",
        "--format",
        f'{{{{(index .NetworkSettings.Networks "{bridge.name}").IPAddress}}}}',
        name,
    ).stdout.strip()
    return Container(name, address, setup.port)


def wait_healthy(name: str, timeout: float = 45) -> dict[str, Any]:
    """Docker's own verdict: the image's HEALTHCHECK, on its schedule (every 5 s)."""
    deadline = time.monotonic() + timeout
    while True:
        current = state(name)
        health = (current.get("Health") or {}).get("Status")
        if health == "healthy":
            return current
        if current["Status"] != "running":
            raise AssertionError(
                f"{name}: {current['Status']}, exit {current['ExitCode']}:\n{output(name)}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}: health {health!r} after {timeout} s:\n{output(name)}")
        time.sleep(0.25)


def assert_signed(body: bytes, region: str = REGION) -> None:
    """The fake echoes a request only after awscrt verified its signature: check the echo."""
    echo = json.loads(body)
    authorization = dict(echo["headers"])["Authorization"]
    scope = re.search(r"Credential=([^/]+)/\d{8}/([^/]+)/lambda/aws4_request", authorization)
    assert scope is not None, authorization
    assert scope.groups() == (AKID, region)
    assert (echo["access_key"], echo["region"], echo["raw_path"]) == (AKID, region, "/42")


def assert_signs_through(proxy: Container) -> None:
    """Healthy, and a request through it reaches the fake signed."""
    wait_healthy(proxy.name)
    status, _, body = proxy.get(f"{prefix()}/42")
    assert status == 200, body
    assert_signed(body)


def pid1(name: str) -> tuple[list[int], str]:
    """The real uids and the command line of the container's first process."""
    status = docker("exec", name, "cat", "/proc/1/status").stdout
    uids = re.search(r"^Uid:\s+(.+)$", status, re.M)
    assert uids is not None, status
    cmdline = docker("exec", name, "cat", "/proc/1/cmdline").stdout.replace("\0", " ")
    return [int(uid) for uid in uids[1].split()], cmdline


@pytest.fixture(scope="module")
def containers(
    image: str, bridge: Bridge, fake_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Container]]:
    """Containers of the image, started at once (each takes ~5 s to its first health check),
    configured as docs/docker.md says a user would."""
    homes = tmp_path_factory.mktemp("homes")
    mount = f"{CONTAINER_HOME}/.aws:ro"
    setups = {
        # Keys, AWS_REGION and the routes in the environment, nothing else.
        "environment": Setup(
            {
                "AWS_ACCESS_KEY_ID": AKID,
                "AWS_SECRET_ACCESS_KEY": SECRET,
                "AWS_REGION": REGION,
                ROUTES: routes_to(fake_url),
            }
        ),
        # docs/docker.md's `docker run`: ~/.aws mounted read-only, AWS_PROFILE; the region is the
        # profile's.
        "aws-mount": Setup(
            {"AWS_PROFILE": "dev", ROUTES: routes_to(fake_url)},
            volumes=(f"{aws_home(homes / 'owner', 'dev', IMAGE_USER)}/.aws:{mount}",),
        ),
        # A host user whose uid is not 1000 runs the image as itself (what PROXY_UID/PROXY_GID
        # set in docker-compose.yml), on another port set by -e.
        "other-uid": Setup(
            {"AWS_PROFILE": "dev", ROUTES: routes_to(fake_url), env_name("port"): "9090"},
            volumes=(f"{aws_home(homes / 'other', 'dev', OTHER_USER)}/.aws:{mount}",),
            user=f"{OTHER_USER}:{OTHER_USER}",
            port=9090,
        ),
        # ~/.aws of another host user than the one the container runs as: unreadable.
        "unreadable": Setup(
            {"AWS_PROFILE": "dev", ROUTES: routes_to(fake_url)},
            volumes=(f"{aws_home(homes / 'unreadable', 'dev', OTHER_USER)}/.aws:{mount}",),
        ),
        # No credentials anywhere (instance metadata off: nothing to ask on this network).
        "no-credentials": Setup(
            {ROUTES: routes_to(fake_url, region=REGION), "AWS_EC2_METADATA_DISABLED": "true"}
        ),
    }
    started: dict[str, Container] = {}
    try:
        for key, setup in setups.items():
            started[key] = run_container(f"lup-test-{TOKEN}-{key}", image, bridge, setup)
        yield started
    finally:
        for container in started.values():
            docker("rm", "--force", container.name, check=False)


def healthcheck(image: str) -> dict[str, Any]:
    """The image's HEALTHCHECK, as the engine stored it (durations in nanoseconds)."""
    found = json.loads(
        docker("image", "inspect", "--format", "{{json .Config.Healthcheck}}", image).stdout
    )
    assert isinstance(found, dict)
    return found


def healthcheck_argv(image: str) -> list[str]:
    test = healthcheck(image)["Test"]
    assert test[0] == "CMD", test  # exec form
    return [str(arg) for arg in test[1:]]


# --- the image --------------------------------------------------------------------------------


def test_the_image_holds_the_locked_venv_and_no_build_tools(image: str) -> None:
    probe = docker("run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", PROBE)
    found = json.loads(probe.stdout)
    assert found["prefix"] == "/opt/venv" and found["proxy"].startswith("/opt/venv/lib/")
    assert found["build_tools"] == [] and found["compilers"] == [] and not found["sources"]
    assert found["compiled"] == sorted(compiled_names()), "the request path, compiled by mypyc"
    home = CONTAINER_HOME  # the user's home in /etc/passwd, and HOME, whatever the uid
    assert found["user"] == [IMAGE_USER, IMAGE_USER, "lambda-url-proxy", home, home]
    installed = {str(canonicalize_name(name)): v for name, v in found["versions"].items()}
    expected = {name: str(version) for name, version in locked_here().items()}
    assert installed.pop("lambda-url-proxy") == "0.1.0"
    assert installed == expected, "the venv holds the lock, exactly"


def test_the_image_adds_only_its_venv_to_the_base(image: str) -> None:
    def size(name: str) -> int:
        return int(docker("image", "inspect", "--format", "{{.Size}}", name).stdout)

    added = size(image) - size(final().base)
    assert 0 < added < 96 * 1024 * 1024, f"{added / 2**20:.0f} MiB on top of the base image"


def test_flags_follow_the_image_name(image: str) -> None:
    result = docker("run", "--rm", "--network", "none", image, "--help")
    assert "--route" in result.stdout


def test_the_health_check_runs_every_5_s(image: str) -> None:
    assert healthcheck(image)["Interval"] == 5 * 10**9  # as docs/docker.md says


def test_the_health_check_fails_without_a_server(image: str) -> None:
    argv = healthcheck_argv(image)
    alone = docker(
        "run", "--rm", "--network", "none", "--entrypoint", argv[0], image, *argv[1:], check=False
    )
    assert alone.returncode == 1, alone.stdout + alone.stderr


# --- the image, run -------------------------------------------------------------------------


def test_configured_by_the_environment_it_signs_for_aws_region(
    containers: dict[str, Container],
) -> None:
    assert_signs_through(containers["environment"])


def test_it_runs_as_pid_1_and_not_as_root(containers: dict[str, Container]) -> None:
    proxy = containers["environment"]
    wait_healthy(proxy.name)
    uids, cmdline = pid1(proxy.name)
    assert uids == [IMAGE_USER] * 4
    assert "lambda-url-proxy" in cmdline, "exec form: the proxy itself gets docker stop's SIGTERM"


def test_the_health_check_ignores_http_proxy(image: str, containers: dict[str, Container]) -> None:
    """HTTP(S)_PROXY are for the upstream calls: the health check stays on loopback."""
    proxy = containers["environment"]
    wait_healthy(proxy.name)
    nowhere = "http://127.0.0.1:9"
    proxies = [f"--env={name}={nowhere}" for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY")]
    result = docker("exec", *proxies, proxy.name, *healthcheck_argv(image), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_with_aws_mounted_read_only_it_signs_with_the_profile(
    containers: dict[str, Container],
) -> None:
    proxy = containers["aws-mount"]
    assert_signs_through(proxy)  # for the region in ~/.aws/config, the profile's
    _, _, ready = proxy.get("/_proxy/ready")
    assert json.loads(ready)["identities"][0]["source"] == "shared-credentials-file"


def test_another_uid_reads_its_own_aws_and_the_port_follows_the_variable(
    containers: dict[str, Container],
) -> None:
    proxy = containers["other-uid"]
    assert_signs_through(proxy)  # healthy: the health check asks the port the variable names
    uids, _ = pid1(proxy.name)
    assert uids == [OTHER_USER] * 4


def test_an_unreadable_aws_mount_stops_it_saying_whose_it_is(
    containers: dict[str, Container],
) -> None:
    proxy = containers["unreadable"]
    assert wait_exited(proxy.name)["ExitCode"] == 2  # a configuration error, not a crash
    [error] = [r for r in log_records(proxy.name) if r["level"] == "error"]
    message = str(error["message"])
    assert f"cannot be read by uid {IMAGE_USER} (it belongs to uid {OTHER_USER})" in message
    assert "PROXY_UID=$(id -u)" in message and "Traceback" not in output(proxy.name)


def test_without_credentials_it_stays_healthy_and_says_why(
    containers: dict[str, Container],
) -> None:
    proxy = containers["no-credentials"]
    wait_healthy(proxy.name)
    status, _, body = proxy.get("/_proxy/ready")
    assert status == 503 and json.loads(body)["ready"] is False, body
    status, headers, body = proxy.get(f"{prefix()}/42")
    assert (status, headers.get("X-Proxy-Error")) == (503, "credentials_unavailable"), body


def test_docker_stop_drains_an_in_flight_stream_and_exits_0(
    containers: dict[str, Container],
) -> None:
    """Last of the tests on this container: it stops it."""
    proxy = containers["environment"]
    wait_healthy(proxy.name)
    connection = http.client.HTTPConnection(proxy.address, proxy.port, timeout=20)
    try:
        connection.request("GET", f"{prefix()}/slow-stream/{TICKS}/1")
        response = connection.getresponse()
        assert response.status == 200
        first = response.readline()  # the stream has begun: the request is in flight
        stop = subprocess.Popen(
            ["docker", "stop", "--time", "15", proxy.name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        rest = response.read()  # http.client raises IncompleteRead if the stream is cut
    finally:
        connection.close()
    _, errors = stop.communicate(timeout=30)
    assert stop.returncode == 0, errors
    assert first + rest == b"tick\n" * TICKS
    stopped = state(proxy.name)
    assert (stopped["Status"], stopped["ExitCode"], stopped["OOMKilled"]) == ("exited", 0, False)

    records = log_records(proxy.name)
    messages = [str(record["message"]) for record in records]
    assert any("listening on http://0.0.0.0:8080 (event loop: uvloop)" in m for m in messages)
    warnings = [m for r, m in zip(records, messages, strict=True) if r["level"] == "warning"]
    assert any("inside a container" in m for m in warnings), "the wide bind, explained"
    assert any("shutting down" in m and "1 in-flight" in m for m in messages), messages


# --- docker-compose.yml -----------------------------------------------------------------------


@dataclass
class Compose:
    """One compose project: the shipped file, the test's override, a HOME of the test's."""

    command: list[str]
    project: str
    files: list[Path]
    home: Path
    env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        # Only what finds the engine: no AWS_* of this machine's reaches the compose file.
        kept = ("PATH", "DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_CONTEXT", "DOCKER_CERT_PATH")
        self.env = {key: os.environ[key] for key in kept if key in os.environ}
        self.env["HOME"] = str(self.home)

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        files = [arg for path in self.files for arg in ("--file", str(path))]
        return subprocess.run(
            [*self.command, "--project-name", self.project, *files, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def __call__(self, *args: str, timeout: float = 60) -> str:
        result = self.run(*args, timeout=timeout)
        assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stderr}"
        return result.stdout

    def container(self, name: str) -> str:
        found = self("ps", "--quiet", name).strip()
        assert found, f"no container for service {name}"
        return found


def override(fake_url: str, bridge: Bridge) -> str:
    """The routes pointed at the fake, and the proxy attached to the test's bridge to reach it
    (`default` kept: `app` calls it there by name). Nothing else of the shipped file changes."""
    return yaml.safe_dump(
        {
            "services": {
                PROXY_SERVICE: {
                    "environment": {ROUTES: routes_to(fake_url)},
                    "networks": ["default", "fake"],
                }
            },
            "networks": {"fake": {"external": True, "name": bridge.name}},
        }
    )


@pytest.fixture(scope="session")
def app_image(engine: None) -> str:
    """The `app` service's image: what this engine has under its name, else a local stand-in."""
    tag = str(service("app")["image"])
    if image_id(tag) is None:
        dockerfile = CURL_STAND_IN.format(base=final().base)
        docker("build", "--force-rm", "--tag", tag, "-", stdin=dockerfile, timeout=180)
    return tag


def compose_command(version: str) -> list[str]:
    command = {"v1": ["docker-compose"], "v2": ["docker", "compose"]}[version]
    found = shutil.which(command[0]) and subprocess.run(
        [*command, "version"], capture_output=True, timeout=30, check=False
    )
    if not found or found.returncode != 0:
        if version == "v1":
            unavailable("no docker-compose: ../shared/tools/container-engine.sh installs it")
        pytest.skip("docker compose (v2) is not installed here")
    return command


def started_at(timestamp: str) -> datetime:
    """Docker's RFC 3339 times have nanoseconds: datetime takes microseconds."""
    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d*", r"\1", timestamp).replace("Z", "+00:00"))


def first_healthy(container: str) -> datetime:
    log = state(container)["Health"]["Log"]
    passed = [entry for entry in log if entry["ExitCode"] == 0]
    assert passed, log
    return min(started_at(entry["End"]) for entry in passed)


def wait_for_echo(container: str, timeout: float = 30) -> bytes:
    """The first answer `app` printed (it calls the proxy every 5 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in output(container).splitlines():
            if line.startswith("{"):
                return line.encode()
        time.sleep(0.25)
    raise AssertionError(f"app printed no answer in {timeout} s:\n{output(container)}")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_compose_runs_the_sidecar_and_app_calls_it_by_name(
    version: str,
    image: str,
    app_image: str,
    bridge: Bridge,
    fake_url: str,
    tmp_path: Path,
) -> None:
    command = compose_command(version)
    (tmp_path / "override.yml").write_text(override(fake_url, bridge))
    # HOME: where the compose file mounts ~/.aws from; AWS_PROFILE unset, so its default.
    home = aws_home(tmp_path / "home", "default", IMAGE_USER)
    files = [COMPOSE, tmp_path / "override.yml"]
    compose = Compose(command, f"luptest{TOKEN}{version}", files, home)
    try:
        # --build as the docs say: the image fixture built every layer, so this is quick.
        up = compose.run("up", "--detach", "--build", timeout=240)
        if "address already in use" in up.stderr:
            unavailable(f"{PUBLISHED[0]}:{PUBLISHED[1]}, published by docker-compose.yml, is taken")
        assert up.returncode == 0, up.stdout + up.stderr
        proxy, app = compose.container(PROXY_SERVICE), compose.container("app")
        assert_signed(wait_for_echo(app))  # app -> http://lambda-url-proxy:8080 -> the fake
        wait_healthy(proxy)
        assert first_healthy(proxy) <= started_at(state(app)["StartedAt"]), "service_healthy"
        status, _, body = http_get(*PUBLISHED, f"{prefix()}/42")  # from the host, too
        assert status == 200, body
        assert_signed(body)
        ports = docker("port", proxy).stdout.split()
        assert ports == ["8080/tcp", "->", "127.0.0.1:8080"], "published on loopback only"
    finally:
        # Containers and compose's network; the images stay, as build cache. Not asserted: a
        # failure here must not hide the test's own.
        compose.run("down", "--timeout", "3", "--remove-orphans")
