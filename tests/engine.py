"""A real Docker engine for the container tests: the image as shipped, a bridge network of the
session's own, and the helpers that read containers back.

../shared/tools/container-engine.sh makes this machine a Docker host (.ci/run runs it first).
Without an engine, the tests that need it skip, saying why; with REQUIRE_CONTAINER_ENGINE=1 (CI)
that is a failure instead. tests/conftest.py registers the fixtures here for every module.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, NoReturn

import pytest

from tests.conftest import ROOT
from tests.container_files import PROXY_SERVICE, final, service

REQUIRE_ENGINE: Final = "REQUIRE_CONTAINER_ENGINE"
TOKEN: Final = uuid.uuid4().hex[:8]  # names this session's containers, network and project


def docker(
    *args: str, timeout: float = 60, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["docker", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args)}: exit {result.returncode}\n{result.stdout}{result.stderr}"
        )
    return result


def unavailable(reason: str) -> NoReturn:
    if os.environ.get(REQUIRE_ENGINE) == "1":
        pytest.fail(f"{REQUIRE_ENGINE}=1, but {reason}")
    pytest.skip(reason)


def engine_problem() -> str | None:
    setup = "../shared/tools/container-engine.sh (as root) sets one up"
    if shutil.which("docker") is None:
        return f"no docker command: {setup}"
    try:
        info = docker("info", "--format", "{{.ServerVersion}}", timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return f"`docker info` did not answer in 20 s: {setup}"
    if info.returncode != 0:
        return f"no Docker engine answers ({info.stderr.strip()[-200:]}): {setup}"
    if docker("network", "inspect", "bridge", check=False).returncode != 0:
        return (
            "the engine runs without bridge networks (dockerd --bridge=none): these tests need them"
        )
    if docker("image", "inspect", final().base, check=False).returncode != 0:
        return f"no image {final().base} to build on (docker pull it, or {setup}: a stand-in)"
    if os.geteuid() != 0:
        return "not root: the tests give the mounted ~/.aws to uid 1000, as on a Linux host"
    return None


@pytest.fixture(scope="session")
def engine() -> None:
    if problem := engine_problem():
        unavailable(problem)


@pytest.fixture(scope="session")
def image(engine: None) -> str:
    """The image as shipped: `docker build` of the repository with its Dockerfile, untouched.
    Tagged as docker-compose.yml names it, so that the compose run finds every layer built."""
    tag = str(service(PROXY_SERVICE)["image"])
    before = image_id(tag)
    # --force-rm: a failed step leaves no stopped container behind.
    # Without a cache about 2.5 min on two cores (Debian's gcc, the locked wheels, mypyc).
    docker("build", "--force-rm", "--tag", tag, str(ROOT), timeout=480)
    if before not in (None, image_id(tag)):
        # The previous build, now untagged: removed (with its own layers) so builds do not pile up.
        docker("rmi", before, check=False)
    return tag


def image_id(tag: str) -> str | None:
    found = docker("image", "inspect", "--format", "{{.Id}}", tag, check=False)
    return found.stdout.strip() if found.returncode == 0 else None


@dataclass(frozen=True)
class Bridge:
    name: str
    gateway: str  # this host's address on it


@pytest.fixture(scope="session")
def bridge(engine: None) -> Iterator[Bridge]:
    """An internal bridge: its containers reach this host's address on it, and nothing beyond."""
    name = f"lup-test-{TOKEN}"
    docker("network", "create", "--driver", "bridge", "--internal", name)
    try:
        config = "{{(index .IPAM.Config 0).Gateway}}"
        yield Bridge(name, docker("network", "inspect", "--format", config, name).stdout.strip())
    finally:
        docker("network", "rm", name, check=False)


def state(name: str) -> dict[str, Any]:
    found = json.loads(docker("inspect", "--format", "{{json .State}}", name).stdout)
    assert isinstance(found, dict)
    return found


def output(name: str) -> str:
    logs = docker("logs", name, check=False)
    return logs.stdout + logs.stderr


def wait_exited(name: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (current := state(name))["Status"] != "exited":
        assert time.monotonic() < deadline, f"{name}: still {current['Status']}:\n{output(name)}"
        time.sleep(0.25)
    return current


def log_records(name: str) -> list[dict[str, Any]]:
    """The container's log: every line one JSON object."""
    lines = [line for line in output(name).splitlines() if line.strip()]
    records = []
    for line in lines:
        record = json.loads(line)
        assert isinstance(record, dict), line
        records.append(record)
    assert records, f"{name} logged nothing"
    return records
