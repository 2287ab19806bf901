"""README's examples do what README says they do."""

from __future__ import annotations

import asyncio
import json
import re
import tomllib

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
