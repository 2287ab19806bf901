"""The Dockerfile, .dockerignore and docker-compose.yml, read as Docker and Compose read them.

Small parsers for the checks of tests/test_container.py (the files agree with the code) and for
tests/test_container_engine.py (the compose file's own routes, pointed at the fake).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Final

import yaml

from proxy.settings import Settings, env_name
from tests.conftest import ROOT

DOCKERFILE: Final = ROOT / "Dockerfile"
DOCKERIGNORE: Final = ROOT / ".dockerignore"
COMPOSE: Final = ROOT / "docker-compose.yml"
PROXY_SERVICE: Final = "lambda-url-proxy"
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
