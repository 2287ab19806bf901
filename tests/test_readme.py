"""README's examples do what README says they do."""

from __future__ import annotations

import asyncio
import json
import re
import tomllib

from pydantic import ByteSize, TypeAdapter

from proxy.cli import build_parser
from proxy.settings import CONFIG_ENV, Settings, env_name
from tests.conftest import ROOT, route, running_proxy
from tests.fake_function_url import FakeFunctionUrl

README = (ROOT / "README.md").read_text()
# `curl ...   # reaches the function as ?q=...`: the command, and the query the function gets.
CURL_EXAMPLE = re.compile(r"^(?P<command>curl .+?)\s+# reaches the function as (?P<query>\?\S+)$")


def test_the_readme_has_the_non_ascii_curl_examples() -> None:
    examples = [m for line in README.splitlines() if (m := CURL_EXAMPLE.match(line))]
    assert len(examples) == 3
    assert any("%20" in m["query"] for m in examples)  # the way to send a space


async def test_readme_curl_examples_reach_the_function_as_it_says(
    fake: FakeFunctionUrl, aws_keys: None
) -> None:
    """Each command run as written (a shell, this machine's curl), only the proxy's address
    changed; the function (the fake) receives the query README claims."""
    examples = [m for line in README.splitlines() if (m := CURL_EXAMPLE.match(line))]
    async with running_proxy(routes=[route("/", fake.url)]) as proxy:
        address = proxy.url.removeprefix("http://")
        for example in examples:
            command = example["command"].replace("localhost:8080", address)
            assert command != example["command"], command
            shell = await asyncio.create_subprocess_exec(
                "sh", "-c", command, stdout=asyncio.subprocess.PIPE
            )
            out, _ = await shell.communicate()
            assert shell.returncode == 0, command
            assert json.loads(out)["raw_path"] == "/search" + example["query"], command
            assert fake.received[-1].verified


def test_the_worked_example_installs_what_the_fake_needs() -> None:
    """The fake imports awscrt, which only the [test] extra installs: the worked example says
    to install it before it runs the fake."""
    example = README[README.index("## A worked example") :]
    example = example[: example.index("```\n", example.index("```console"))]
    install = example.index("$ pip install -e '.[test]'")
    assert install < example.index("$ python tests/fake_function_url.py")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(r.startswith("awscrt") for r in extras["optional-dependencies"]["test"])
    assert not any(r.startswith("awscrt") for r in extras["dependencies"])
    assert "from awscrt" in (ROOT / "tests" / "fake_function_url.py").read_text()


def configuration_table() -> list[list[str]]:
    """README's "Configuration" table: one row of cells per setting."""
    table = README.split("| flag | environment | file | default | meaning |", 1)[1]
    rows = []
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def test_the_configuration_table_is_every_setting_with_its_flag_and_variable() -> None:
    rows = configuration_table()
    variables = {v for row in rows for v in re.findall(r"`(LAMBDA_URL_PROXY_\w+)`", row[1])}
    flags = {f for row in rows for f in re.findall(r"`(--[a-z-]+)", row[0])}
    flags |= set(re.findall(r"`(--[a-z-]+)`", " ".join(row[0] for row in rows)))
    named = {env_name(name) for name in Settings.model_fields} | {CONFIG_ENV}
    # The AssumeRole options share a row whose variables end in "...".
    assert variables - named == set()
    assert named - variables <= {env_name("role_session_name"), env_name("duration_seconds")}
    parser_flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", build_parser().format_help()))
    parser_flags -= {"--help", "--version", "--check", "--probe"}  # check's own: not settings
    assert parser_flags == flags


def test_the_configuration_tables_defaults_are_the_settings_defaults() -> None:
    defaults = {
        env_name(name): field.default
        for name, field in Settings.model_fields.items()
        if isinstance(field.default, str | int | float) and not isinstance(field.default, bool)
    }
    checked = 0
    for row in configuration_table():
        for variable in re.findall(r"`(LAMBDA_URL_PROXY_\w+)`", row[1]):
            if variable in defaults:
                shown = re.fullmatch(r"`([^`]+)`", row[3])
                assert shown, (variable, row[3])
                value = defaults[variable]
                if isinstance(value, ByteSize):  # "6MiB", "32KiB": read as the setting reads it
                    assert TypeAdapter(ByteSize).validate_python(shown[1]) == value, row
                else:
                    expected = f"{value:g}" if isinstance(value, float) else str(value)
                    assert shown[1] == expected, (variable, row[3])
                checked += 1
    assert checked >= 8
