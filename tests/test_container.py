"""The container's files agree with the code, checked without a Docker engine.

The Dockerfile, .dockerignore and docker-compose.yml are parsed (tests/container_files.py) and
checked against the code: ports, health path, settings, console script, user, loopback
publishing, build context. tests/test_container_engine.py builds and runs them for real.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from typing import Final

import pytest

from proxy.app import RESERVED, create_app
from proxy.settings import CONFIG_ENV, ENV_PREFIX, SHUTDOWN_GRACE, Settings, env_name, load_settings
from tests.conftest import ROOT
from tests.container_files import (
    COMPOSE,
    DOCKERFILE,
    PROXY_SERVICE,
    Instruction,
    builder,
    context_files,
    copies,
    entrypoint,
    expand,
    final,
    health_timeout,
    healthcheck,
    image_port,
    image_venv,
    in_context,
    is_exec_form,
    port_bindings,
    proxy_environment,
    seconds,
    service,
    service_environment,
    stages,
)

DOCS: Final = ROOT / "docs" / "docker.md"
HEALTH_PATH: Final = "/_proxy/health"
COMPILERS: Final = re.compile(
    r"\b(gcc|g\+\+|cc|c\+\+|clang|build-essential|make|cmake|rustc|cargo|[\w.+-]+-dev)\b"
)


# --- static checks: the files agree with the code ---------------------------------------------


def test_dockerfile_is_multi_stage_on_slim_python() -> None:
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    lowest = re.fullmatch(r">=\s*(\d+)\.(\d+)", requires)
    assert lowest, f"requires-python {requires!r}: not understood"
    minimum = (int(lowest[1]), int(lowest[2]))
    assert len(stages()) >= 2, "the venv is built in a builder stage"
    for stage in stages():
        match = re.fullmatch(r"python:(\d+)\.(\d+)(?:\.\d+)?-slim(?:-\w+)?", stage.base)
        assert match, f"FROM {stage.base}: expected a python:X.Y-slim image"
        assert (int(match[1]), int(match[2])) >= minimum, f"{stage.base} vs {requires}"
    assert builder().base == final().base, "a venv only works on the Python it was built with"


def test_the_builder_compiles_the_request_path() -> None:
    """setup.py's compiled build, with a C compiler in the builder stage only."""
    runs = [instruction.text for instruction in builder().all("RUN")]
    assert any("USE_MYPYC=1" in run and "pip install" in run for run in runs)
    assert any(COMPILERS.search(run) for run in runs), "mypyc needs a C compiler"
    assert in_context("setup.py")


def test_final_stage_gets_only_the_venv_and_no_compiler() -> None:
    venv = image_venv()
    for copy in copies(final()):
        assert copy.options.get("from") == builder().name, f"COPY {copy}: sources in the image"
        assert copy.sources == [venv] and copy.destination.rstrip("/") == venv, (
            f"COPY {copy}: only the venv, at the same path (its scripts' #! name it)"
        )
    for instruction in final().all("RUN"):
        assert not COMPILERS.search(instruction.text), f"RUN {instruction.text}: a compiler"
        assert not re.search(r"\b(pip|apt-get|apt|apk)\b", instruction.text), (
            f"RUN {instruction.text}: the final stage installs nothing"
        )
    final_path = final().env().get("PATH", "")
    assert final_path.startswith(f"{venv}/bin:"), "the venv's commands come first on PATH"


def test_runs_as_a_non_root_user() -> None:
    user = final().last("USER")
    assert user is not None, "the final stage sets no USER: it would run as root"
    name = expand(user.text, final().args()).partition(":")[0]
    assert name not in ("", "root", "0")
    compose_user = service(PROXY_SERVICE).get("user")
    if compose_user is not None:
        assert str(compose_user).partition(":")[0] not in ("", "root", "0")
    # ~/.aws is mounted at the user's home: the image names it, whatever uid runs it.
    assert final().env().get("HOME", "").startswith("/home/")


def test_port_health_check_and_host_binding_agree_with_the_code() -> None:
    port = image_port()
    assert [i.text for i in final().all("EXPOSE")] == [str(port)]
    assert final().env().get(env_name("host")) == "0.0.0.0", "reachable from the other services"
    assert proxy_environment().get(env_name("port"), str(port)) == str(port)

    check = healthcheck(final())
    assert check.exec_form, "exec form: no shell needed, the argv is what runs"
    assert check.argv[0] == "python", "the slim image has no curl: python's urllib"
    code = " ".join(check.argv)
    assert HEALTH_PATH in RESERVED
    assert re.findall(r"/_proxy/[^'\"\s]*", code) == [HEALTH_PATH], "the reserved health path"
    assert "127.0.0.1" in code and env_name("port") in code
    assert f"'{Settings.model_fields['port'].default}'" in code, "its fallback is the default"
    assert health_timeout() <= seconds(check.options.get("interval", "30s"))

    proxy = service(PROXY_SERVICE)
    assert proxy.get("build") in (".", {"context": "."}), "the proxy is this repository's image"
    assert "entrypoint" not in proxy and "command" not in proxy, "the image's command runs"
    assert not (proxy.get("healthcheck") or {}).get("disable"), "the image's health check stays"
    bindings = port_bindings(proxy)
    assert bindings, "the port is published for the host"
    for binding in bindings:
        assert binding.target == port
        assert binding.host_ip and ipaddress.ip_address(binding.host_ip).is_loopback, (
            f"{binding}: published beyond the host's loopback"
        )

    app = service("app")
    assert app["depends_on"][PROXY_SERVICE]["condition"] == "service_healthy"
    assert service_environment(app)["API_URL"] == f"http://{PROXY_SERVICE}:{port}"


def test_the_command_is_the_installed_console_script() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    entry = final().last("ENTRYPOINT") or final().last("CMD")
    assert entry is not None and is_exec_form(entry.text), (
        "exec form: the proxy is PID 1 and gets docker stop's SIGTERM itself, not a shell"
    )
    assert entrypoint()[0] in scripts
    assert final().last("STOPSIGNAL") is None or final().last("STOPSIGNAL") == Instruction(
        "STOPSIGNAL", "SIGTERM"
    )


def test_every_proxy_variable_is_a_setting() -> None:
    known = {env_name(name) for name in Settings.model_fields} | {CONFIG_ENV}
    named = {key for key in proxy_environment() if key.startswith(ENV_PREFIX)}
    assert named <= known
    for path in (DOCKERFILE, COMPOSE, DOCS):  # comments and the documentation included
        mentioned = set(re.findall(r"\bLAMBDA_URL_PROXY_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
        assert mentioned, f"{path.name} names no setting"
        assert mentioned <= known, f"{path.name}: not settings: {sorted(mentioned - known)}"


def test_the_composed_configuration_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    environment = proxy_environment()
    for key, value in environment.items():
        if key.startswith(ENV_PREFIX):
            monkeypatch.setenv(key, value)
    settings = load_settings()
    assert settings.host == "0.0.0.0" and settings.port == image_port()
    assert settings.log_format == "json", "JSON logs by default in the container"
    assert settings.routes and all((r.url or "").startswith("https://") for r in settings.routes)
    create_app(settings)  # every route compiles: the region comes from the Function URL's host


def test_credentials_three_ways() -> None:
    proxy = service(PROXY_SERVICE, {"HOME": "/home/someone"})
    environment = service_environment(proxy)
    assert environment.get("AWS_PROFILE"), "(1) a profile from the mounted ~/.aws"
    home = final().env()["HOME"]
    volumes = [str(volume).split(":") for volume in proxy.get("volumes", [])]
    assert ["/home/someone/.aws", f"{home}/.aws", "ro"] in volumes, "(1) ~/.aws, read-only"
    text = COMPOSE.read_text()
    for alternative in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        assert f"# {alternative}:" in text, f"(2) {alternative}: a commented pass-through"
    assert "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI" in text, "(3) ECS"


def test_docker_stop_waits_longer_than_the_proxy_drains() -> None:
    grace = seconds(str(service(PROXY_SERVICE).get("stop_grace_period", "10s")))
    assert grace > SHUTDOWN_GRACE


def test_the_build_context_holds_only_what_the_build_copies() -> None:
    for copy in copies(builder()):
        for source in copy.sources:
            assert context_files(source), f"COPY {source}: not in the build context"
    for path in ("proxy/app.py", "pyproject.toml", "README.md"):
        assert in_context(path), path
    for path in (".git/config", ".venv/bin/python", "tests/conftest.py", ".env", ".aws/config"):
        assert not in_context(path), f"{path} would be sent to the builder"
    assert not in_context("proxy/__pycache__/app.cpython-311.pyc")
