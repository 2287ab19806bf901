"""The container, without a Docker engine.

The Dockerfile, .dockerignore and docker-compose.yml are parsed and checked against the code
(ports, health path, settings, console script, user, loopback publishing). Then the image is
reproduced as closely as a machine without Docker can: the builder stage's COPY and RUN
instructions run in a fresh virtual environment, and the final stage's ENTRYPOINT runs from it
with the image's ENV and the compose file's environment; its HEALTHCHECK command runs verbatim.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest
import yaml

from proxy.app import RESERVED, create_app
from proxy.settings import CONFIG_ENV, ENV_PREFIX, SHUTDOWN_GRACE, Settings, env_name, load_settings
from tests.conftest import AKID, ROOT, SECRET, ProxyProcess
from tests.fake_function_url import FakeFunctionUrl

DOCKERFILE: Final = ROOT / "Dockerfile"
DOCKERIGNORE: Final = ROOT / ".dockerignore"
COMPOSE: Final = ROOT / "docker-compose.yml"
DOCS: Final = ROOT / "docs" / "docker.md"
PROXY_SERVICE: Final = "lambda-url-proxy"
HEALTH_PATH: Final = "/_proxy/health"
# PATH and LANG as the python:*-slim images set them; HOME is the image's ENV.
IMAGE_BASE_ENV: Final = {
    "PATH": "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
COMPILERS: Final = re.compile(
    r"\b(gcc|g\+\+|cc|c\+\+|clang|build-essential|make|cmake|rustc|cargo|[\w.+-]+-dev)\b"
)
# What this parser understands; anything else fails the test instead of being misread.
KEYWORDS: Final = frozenset(
    {
        "FROM",
        "ARG",
        "ENV",
        "RUN",
        "COPY",
        "WORKDIR",
        "USER",
        "EXPOSE",
        "HEALTHCHECK",
        "ENTRYPOINT",
        "CMD",
        "STOPSIGNAL",
        "LABEL",
    }
)


# --- a small Dockerfile parser ----------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    text: str  # its arguments, continuation lines joined


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None  # Docker: the last one wins

    def args(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("ARG"):
            name, _, default = instruction.text.partition("=")
            values[name.strip()] = default.strip()
        return values

    def env(self) -> dict[str, str]:
        """ENV in order, each value expanded with the ARGs and ENVs before it; unknown variables
        (the base image's $PATH) are left for the caller."""
        known: dict[str, str] = {}
        values: dict[str, str] = {}
        for instruction in self.instructions:
            if instruction.keyword == "ARG":
                name, _, default = instruction.text.partition("=")
                known.setdefault(name.strip(), default.strip())
            elif instruction.keyword == "ENV":
                for key, value in env_pairs(instruction.text):
                    values[key] = known[key] = expand(value, known)
        return values


def logical_lines(text: str) -> Iterator[str]:
    """Instructions: comment lines dropped (in continuations too), `\\` continuations joined."""
    assert not re.match(r"#\s*escape\s*=", text), "the parser assumes the default escape, \\"
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        yield (pending + line).strip()
        pending = ""
    assert not pending.strip(), f"the Dockerfile ends inside a continued line: {pending!r}"


def parse_dockerfile(text: str) -> list[Stage]:
    stages: list[Stage] = []
    for line in logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        assert keyword in KEYWORDS, f"{keyword}: not understood by this test's parser"
        if keyword == "FROM":
            _, image = split_options(rest)
            words = image.split()
            assert len(words) == 1 or (len(words) == 3 and words[1].lower() == "as"), line
            stages.append(Stage(words[0], words[2] if len(words) == 3 else None))
        else:
            assert stages, f"{line!r} before the first FROM"
            stages[-1].instructions.append(Instruction(keyword, rest))
    return stages


def split_options(text: str) -> tuple[dict[str, str], str]:
    """Leading `--name=value` / `--flag` options, and the rest."""
    options: dict[str, str] = {}
    while text.startswith("--"):
        token, _, text = text.partition(" ")
        name, _, value = token[2:].partition("=")
        options[name] = value
        text = text.lstrip()
    return options, text


def env_pairs(text: str) -> list[tuple[str, str]]:
    words = shlex.split(text)
    if "=" not in words[0]:  # the legacy form: ENV KEY value with spaces
        key, _, value = text.partition(" ")
        return [(key, value.strip())]
    pairs = [word.partition("=") for word in words]
    assert all(sep for _, sep, _ in pairs), f"ENV {text!r}: mixed forms"
    return [(key, value) for key, _, value in pairs]


def expand(value: str, known: dict[str, str]) -> str:
    """$NAME and ${NAME} for the names in `known`; others stay as written."""
    return re.sub(r"\$(?:\{(\w+)\}|(\w+))", lambda m: known.get(m[1] or m[2], m[0]), value)


def is_exec_form(text: str) -> bool:
    return text.startswith("[")


def command(text: str) -> list[str]:
    """Exec form (a JSON array) as written; shell form as Docker runs it."""
    if not is_exec_form(text):
        return ["/bin/sh", "-c", text]
    argv = json.loads(text)
    assert isinstance(argv, list) and all(isinstance(arg, str) for arg in argv), text
    return argv


@dataclass(frozen=True)
class Copy:
    options: dict[str, str]
    sources: list[str]
    destination: str


def copies(stage: Stage) -> list[Copy]:
    found = []
    for instruction in stage.all("COPY"):
        options, rest = split_options(instruction.text)
        parts = command(rest) if is_exec_form(rest) else rest.split()
        assert len(parts) >= 2, instruction
        found.append(Copy(options, parts[:-1], parts[-1]))
    return found


@dataclass(frozen=True)
class HealthCheck:
    options: dict[str, str]
    argv: list[str]
    exec_form: bool


def healthcheck(stage: Stage) -> HealthCheck:
    instruction = stage.last("HEALTHCHECK")
    assert instruction is not None, "the final stage has no HEALTHCHECK"
    options, rest = split_options(instruction.text)
    keyword, _, cmd = rest.partition(" ")
    assert keyword.upper() == "CMD", f"HEALTHCHECK {rest!r}: expected CMD"
    cmd = cmd.strip()
    return HealthCheck(options, command(cmd), is_exec_form(cmd))


def seconds(duration: str) -> float:
    """A Go duration as Docker and Compose write them: 1m30s, 15s, 500ms."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * scale[u] for n, u in parts)


def health_timeout() -> float:
    return seconds(healthcheck(final()).options.get("timeout", "30s"))  # Docker's default


@cache
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


def final() -> Stage:
    return stages()[-1]


def builder() -> Stage:
    """The stage the final one copies its venv from."""
    [copy] = [c for c in copies(final()) if "from" in c.options]
    [stage] = [s for s in stages()[:-1] if s.name == copy.options["from"]]
    return stage


def image_venv() -> str:
    """The venv's path in the image, from the builder's `python -m venv PATH`."""
    for instruction in builder().all("RUN"):
        if match := re.search(r"\bpython3?\s+-m\s+venv\s+(/\S+)", instruction.text):
            return match.group(1)
    raise AssertionError("the builder stage creates no venv with `python -m venv`")


def entrypoint() -> list[str]:
    stage = final()
    entry, cmd = stage.last("ENTRYPOINT"), stage.last("CMD")
    argv = command(entry.text) if entry else []
    if cmd and (not entry or is_exec_form(entry.text)):
        argv += command(cmd.text)
    return argv


def image_port() -> int:
    """The port the proxy listens on inside the container: the image's ENV, else the default."""
    configured = final().env().get(env_name("port"))
    return int(configured) if configured else int(Settings.model_fields["port"].default)


# --- .dockerignore ----------------------------------------------------------------------------


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


@cache
def ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        rules.append((keep, _glob_regex(pattern)))
    return rules


def in_context(path: str) -> bool:
    """Whether Docker sends `path` (relative to the repository) to the builder: the last rule
    that matches it or one of its parents decides, as in Docker's pattern matcher."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    sent = True
    for keep, pattern in ignore_rules():
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            sent = keep
    return sent


def context_files(source: str) -> list[Path]:
    """The files of `source` (a file or a folder of the repository) in the build context."""
    path = ROOT / source
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [p for p in files if in_context(p.relative_to(ROOT).as_posix())]


# --- docker-compose.yml -----------------------------------------------------------------------

_COMPOSE_VARIABLE: Final = re.compile(r"\$(?:(\$)|\{(\w+)(?:(:?[-?+])([^}]*))?\}|(\w+))")


def interpolate(text: str, environ: dict[str, str]) -> str:
    """Compose's interpolation: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err},
    ${VAR?err}, ${VAR:+alt}, ${VAR+alt} (no nesting)."""

    def replace(match: re.Match[str]) -> str:
        if match[1]:
            return "$"
        name, op, arg = match[2] or match[5], match[3], match[4] or ""
        value = environ.get(name)
        if op is None:
            return value or ""
        present = bool(value) if op.startswith(":") else value is not None
        if op.endswith("-"):
            return (value or "") if present else arg
        if op.endswith("+"):
            return arg if present else ""
        assert present, f"${{{name}}} is required: {arg}"
        return value or ""

    assert "${" not in re.sub(r"\$\{[^{}]*\}", "", text), f"nested interpolation in {text!r}"
    return _COMPOSE_VARIABLE.sub(replace, text)


def interpolated(node: Any, environ: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, environ)
    if isinstance(node, list):
        return [interpolated(item, environ) for item in node]
    if isinstance(node, dict):
        return {key: interpolated(value, environ) for key, value in node.items()}
    return node


def compose(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The compose file as Compose reads it, in an environment with only `environ` set."""
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return dict(interpolated(data, environ or {}))


def service(name: str, environ: dict[str, str] | None = None) -> dict[str, Any]:
    services = compose(environ)["services"]
    assert name in services, f"no service {name!r} in {sorted(services)}"
    return dict(services[name])


def service_environment(svc: dict[str, Any]) -> dict[str, str]:
    """`environment:` as a map; a name without a value (taken from the host) is left out."""
    raw = svc.get("environment") or {}
    if isinstance(raw, list):  # the list form: KEY=value, or KEY alone
        raw = {
            item.partition("=")[0]: item.partition("=")[2] if "=" in item else None for item in raw
        }
    return {str(key): str(value) for key, value in raw.items() if value is not None}


def proxy_environment() -> dict[str, str]:
    """What the proxy sees in the container: the image's ENV, then the compose file's."""
    return {**final().env(), **service_environment(service(PROXY_SERVICE))}


@dataclass(frozen=True)
class PortBinding:
    host_ip: str | None
    published: str | None
    target: int


def port_bindings(svc: dict[str, Any]) -> list[PortBinding]:
    bindings = []
    for entry in svc.get("ports", []):
        if isinstance(entry, dict):
            bindings.append(
                PortBinding(entry.get("host_ip"), entry.get("published"), int(entry["target"]))
            )
            continue
        match = re.fullmatch(
            r"(?:(?P<ip>\[[^\]]+\]|[\d.]+):)?(?:(?P<published>\d*):)?(?P<target>\d+)(?:/\w+)?",
            str(entry),
        )
        assert match, f"port {entry!r}: not understood"
        ip = match["ip"].strip("[]") if match["ip"] else None
        bindings.append(PortBinding(ip, match["published"], int(match["target"])))
    return bindings


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
    assert settings.routes and all(r.url.startswith("https://") for r in settings.routes)
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


# --- the image's command, environment and health check, in a venv built like the image's ------


@dataclass(frozen=True)
class Image:
    """The image's filesystem, mapped onto this machine: `paths` maps its paths to local ones."""

    venv: Path
    paths: dict[str, str]

    def localize(self, text: str) -> str:
        for image_path, local in self.paths.items():
            text = re.sub(rf"{re.escape(image_path)}(?=/|:|$|\s|')", local, text)
        return text

    def environment(self, home: Path, overrides: dict[str, str]) -> dict[str, str]:
        """The container's environment: the base image's, the Dockerfile's ENV, the compose
        file's environment (with ${VAR} defaults), then the test's `overrides`."""
        paths = {**self.paths, final().env()["HOME"]: str(home)}
        image = Image(self.venv, paths)
        env = dict(IMAGE_BASE_ENV)
        for key, value in proxy_environment().items():
            env[key] = image.localize(expand(value, env))
        env.update(overrides)
        return env


def _copy_context(build: Stage, workdir: Path) -> None:
    """The builder's COPY instructions, from the context .dockerignore lets through."""
    for copy in copies(build):
        assert not copy.options, f"COPY {copy}: options not reproduced by this test"
        target = workdir / copy.destination
        for source in copy.sources:
            files = context_files(source)
            assert files, f"COPY {source}: nothing in the context"
            for file in files:
                if (ROOT / source).is_dir():
                    destination = target / file.relative_to(ROOT / source)
                elif copy.destination.endswith("/") or len(copy.sources) > 1:
                    destination = target / file.name
                else:
                    destination = target
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, destination)


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    """The builder stage, run here: its COPYs into a fresh folder, its RUNs with /bin/sh -c,
    the image's venv path mapped to a fresh local one. Once per session: it takes ~15 s."""
    root = tmp_path_factory.mktemp("image")
    venv, workdir = root / "venv", root / "src"
    workdir.mkdir()
    mapped = Image(venv, {image_venv(): str(venv)})
    _copy_context(builder(), workdir)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "VIRTUAL_ENV", "PIP_REQUIRE"))
    }
    # `python` is this interpreter, as it is the image's in the builder.
    env["PATH"] = f"{Path(sys.executable).parent}:{IMAGE_BASE_ENV['PATH']}"
    for key, value in builder().env().items():
        env[key] = mapped.localize(expand(value, env))
    for instruction in builder().all("RUN"):
        options, text = split_options(instruction.text)
        assert not options, f"RUN {instruction.text}: options not reproduced by this test"
        argv = [mapped.localize(arg) for arg in command(text)]
        result = subprocess.run(
            argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=300, check=False
        )
        assert result.returncode == 0, f"{argv} failed:\n{result.stdout}\n{result.stderr}"
    return mapped


def launch(argv: list[str], env: dict[str, str], cwd: Path, startup: float = 20.0) -> ProxyProcess:
    """Start `argv` with exactly `env` (no inherited variables, as in a container); wait for the
    JSON record whose message says 'listening on http://HOST:PORT'."""
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=cwd,
    )
    lines: list[str] = []

    def pump() -> None:
        assert process.stdout is not None
        lines.extend(process.stdout)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + startup
    while time.monotonic() < deadline and process.poll() is None:
        for line in list(lines):
            message = str(json.loads(line).get("message", "")) if line.startswith("{") else ""
            if match := re.search(r"listening on http://[^ ]+:(\d+)", message):
                port = int(match.group(1))  # bound to 0.0.0.0: reached on 127.0.0.1
                return ProxyProcess(process, f"http://127.0.0.1:{port}", port, lines)
        time.sleep(0.02)
    process.kill()
    process.wait(10)
    raise AssertionError(f"{argv} did not start:\n" + "".join(lines))


def run_health_check(env: dict[str, str], cwd: Path) -> tuple[int, float, str]:
    """The HEALTHCHECK command, verbatim; its exit code, duration and output."""
    started = time.monotonic()
    result = subprocess.run(
        healthcheck(final()).argv,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.returncode, time.monotonic() - started, result.stdout + result.stderr


def test_the_venv_holds_the_installed_package(image: Image, tmp_path: Path) -> None:
    env = image.environment(tmp_path, {})
    assert shutil.which(entrypoint()[0], path=env["PATH"]) == str(
        image.venv / "bin" / entrypoint()[0]
    )
    result = subprocess.run(
        [
            "python",
            "-c",
            "import importlib.util as u, proxy, uvloop; "
            "print(proxy.__file__, u.find_spec('pip'), u.find_spec('setuptools'))",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    location, pip, setuptools = result.stdout.split()
    assert Path(location).is_relative_to(image.venv), "installed, not this checkout"
    assert (pip, setuptools) == ("None", "None"), "build tools are left in the builder"


async def test_image_command_serves_routes_and_passes_its_health_check(
    fake: FakeFunctionUrl, image: Image, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    # Credentials way (1): the profile in ~/.aws, as mounted by docker-compose.yml.
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text(
        f"[default]\naws_access_key_id = {AKID}\naws_secret_access_key = {SECRET}\n"
    )
    routes = json.loads(proxy_environment()[env_name("routes")])
    env = image.environment(
        home,
        {
            env_name("port"): "0",  # any free port: the test reads it from the log
            # The compose file's prefixes, to the fake instead of AWS.
            env_name("routes"): json.dumps(
                [{**route, "url": fake.url, "region": fake.region} for route in routes]
            ),
            "AWS_EC2_METADATA_DISABLED": "true",  # never ask 169.254.169.254
        },
    )
    assert env["LAMBDA_URL_PROXY_HOST"] == "0.0.0.0" and env["AWS_PROFILE"] == "default"
    proxy = await asyncio.to_thread(launch, entrypoint(), env, home)
    checked = {**env, env_name("port"): str(proxy.port)}  # the container's port is fixed
    try:
        code, took, output = await asyncio.to_thread(run_health_check, checked, home)
        assert code == 0, output
        assert took < health_timeout()
        # A proxy for the upstream calls (HTTP(S)_PROXY) is not used for the health check.
        nowhere = "http://127.0.0.1:9"
        proxied = {**checked, "HTTP_PROXY": nowhere, "http_proxy": nowhere, "ALL_PROXY": nowhere}
        code, _, output = await asyncio.to_thread(run_health_check, proxied, home)
        assert code == 0, output

        timeout = aiohttp.ClientTimeout(total=20)
        async with aiohttp.ClientSession(timeout=timeout) as client:
            async with client.get(f"{proxy.url}{routes[0]['prefix']}/42") as response:
                assert response.status == 200
                echoed = await response.json()
            async with client.get(f"{proxy.url}/_proxy/ready") as response:
                assert response.status == 200
                ready = await response.text()
        assert echoed["raw_path"] == "/42" and echoed["access_key"] == AKID
        assert fake.received[-1].verified
        assert "shared-credentials-file" in ready, ready
    finally:
        try:
            exit_code = await asyncio.to_thread(proxy.stop)  # SIGTERM, as docker stop sends
        except subprocess.TimeoutExpired:
            proxy.process.kill()
            proxy.process.wait(10)
            raise
    assert exit_code == 0

    records = [json.loads(line) for line in proxy.lines if line.strip()]
    assert all(isinstance(record, dict) for record in records), "JSON logs: one object a line"
    messages = [record["message"] for record in records]
    assert any("listening on http://0.0.0.0:" in m and "uvloop" in m for m in messages)
    warnings = [r["message"] for r in records if r["level"] == "warning"]
    assert any("inside a container" in m for m in warnings), "the wide-bind warning explains"
    assert "Traceback" not in "".join(proxy.lines)

    code, _, _ = await asyncio.to_thread(run_health_check, checked, home)
    assert code == 1, "unhealthy once the proxy is gone"
