"""The installed command, end to end, as a real subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import AKID, SECRET, ProxyProcess, spawn
from tests.fake_function_url import FakeFunctionUrl

KEYS = {"AWS_ACCESS_KEY_ID": AKID, "AWS_SECRET_ACCESS_KEY": SECRET}


async def start(
    *args: str, env: dict[str, str] | None = None, command: list[str] | None = None
) -> ProxyProcess:
    argv = [*(command or ["lambda-url-proxy"]), "--port", "0", *args]
    return await asyncio.to_thread(spawn, argv, env)


async def stop(proxy: ProxyProcess) -> int:
    return await asyncio.to_thread(proxy.stop)


@pytest.mark.parametrize(
    "command", [["lambda-url-proxy"], [sys.executable, "-m", "proxy"]], ids=["script", "module"]
)
async def test_installed_command_signs_and_forwards(
    fake: FakeFunctionUrl, command: list[str]
) -> None:
    proxy = await start(
        "--route", f"/users={fake.url}", "--region", "us-east-1", env=KEYS, command=command
    )
    try:
        async with aiohttp.ClientSession() as client, client.get(proxy.url + "/users/42") as r:
            assert r.status == 200
            data = await r.json()
        assert data["raw_path"] == "/42" and data["access_key"] == AKID
        assert fake.received[-1].verified
        assert "(event loop: uvloop)" in "".join(proxy.lines)
        assert (
            f"route /users -> {fake.url} (region us-east-1 from --region, identity default, env, "
            "AKIA...0001)" in "".join(proxy.lines)
        )
    finally:
        assert await stop(proxy) == 0  # SIGTERM: graceful exit


async def test_json_logs_are_one_object_per_line(fake: FakeFunctionUrl) -> None:
    proxy = await start(
        "--route", f"/fn={fake.url}", "--region", "us-east-1", "--log-format", "json", env=KEYS
    )
    async with aiohttp.ClientSession() as client:
        for target in ("/fn/ok", "/nowhere", "/fn/status/403"):
            async with client.get(proxy.url + target) as response:
                await response.read()
    await asyncio.sleep(0.2)
    await stop(proxy)
    records = [json.loads(line) for line in proxy.lines if line.strip()]
    assert len(records) == len([line for line in proxy.lines if line.strip()])
    events = [record.get("event") for record in records]
    assert "listening" in events and events.count("access") == 3
    access = [record for record in records if record.get("event") == "access"]
    assert [a["status"] for a in access] == [200, 404, 403]
    assert all({"time", "level", "message"} <= set(record) for record in records)


async def test_wide_bind_warns_that_anyone_can_use_the_identity(fake: FakeFunctionUrl) -> None:
    proxy = await start(
        "--route", f"/fn={fake.url}", "--region", "us-east-1", "--host", "0.0.0.0", env=KEYS
    )
    await stop(proxy)
    text = "".join(proxy.lines)
    assert "WARNING" in text and "anyone who can reach this port" in text


def test_version() -> None:
    result = subprocess.run(
        ["lambda-url-proxy", "--version"], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.strip() == "lambda-url-proxy 0.1.0"


# Runs `lambda-url-proxy ARGS` in-process and prints which aiohttp modules it loaded.
LOADED = """
import contextlib, io, sys
from proxy.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main(sys.argv[1:])
    except SystemExit:
        pass
print(sorted(name for name in sys.modules if name.split(".")[0] == "aiohttp"))
"""


@pytest.mark.parametrize(
    "args",
    [["--help"], ["check", "--route", "/fn=http://127.0.0.1:9", "--region", "us-east-1"]],
    ids=["help", "check"],
)
def test_help_and_check_load_no_aiohttp(args: list[str]) -> None:
    """Neither serves nor forwards: aiohttp's client and server (most of start-up's import
    time) stay unloaded, so they answer at once."""
    result = subprocess.run(
        [sys.executable, "-c", LOADED, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            **KEYS,
            "PATH": "/usr/bin:/bin",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/nonexistent/config",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
        },
    )
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout + result.stderr


# What made `--help` slow (0.34 s, issue 16): none of it is needed to print the flags.
NOT_FOR_HELP = {
    "aiohttp", "asyncio", "botocore", "httptools", "pydantic", "pydantic_core",
    "pydantic_settings", "uvloop", "yarl",
}  # fmt: skip


def test_help_loads_neither_pydantic_nor_aiohttp_nor_botocore(tmp_path: Path) -> None:
    """The installed `lambda-url-proxy --help` prints the flags from the flag table
    (proxy/flags.py). An import check, not a timing: the bench times it (`--parts startup`)."""
    command = Path(sys.executable).parent / "lambda-url-proxy"
    result = subprocess.run(
        [str(command), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPROFILEIMPORTTIME": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert "--route PREFIX=URL|function:NAME" in result.stdout
    assert "LAMBDA_URL_PROXY_MAX_BODY_SIZE" in result.stdout
    loaded = {
        line.rpartition("|")[2].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "argparse" in loaded  # the import log was read
    assert not loaded & NOT_FOR_HELP, sorted(loaded & NOT_FOR_HELP)


def test_the_flag_table_is_made_from_the_settings_model() -> None:
    from proxy._flags import FLAGS
    from proxy.flags import table

    assert table() == FLAGS, (
        "proxy/_flags.py, which --help reads, no longer matches the Settings model: "
        "run `python -m proxy.flags` and commit the result"
    )


def test_config_example_starts(tmp_path: Path) -> None:
    config = Path(__file__).resolve().parent.parent / "config" / "lambda-url-proxy.toml"
    proxy = spawn(["lambda-url-proxy", "--config", str(config), "--port", "0"], KEYS)
    try:
        text = "".join(proxy.lines)
        assert "route /orders -> https://def456.lambda-url.eu-west-1.on.aws/v1" in text
    finally:
        proxy.stop()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_memory_stays_flat_while_a_large_response_streams(fake: FakeFunctionUrl) -> None:
    size = 256 * 1024 * 1024
    proxy = await start("--route", f"/fn={fake.url}", "--region", "us-east-1", env=KEYS)
    try:
        async with aiohttp.ClientSession() as client:
            async with client.get(proxy.url + "/fn/bytes/1000") as warm:
                await warm.read()
            baseline = _rss_kib(proxy.process.pid)
            peak = baseline
            received = 0
            async with client.get(proxy.url + f"/fn/stream/{size}/4096") as response:
                async for chunk in response.content.iter_chunked(1 << 20):
                    received += len(chunk)
                    peak = max(peak, _rss_kib(proxy.process.pid))
        assert received == size
        growth_mib = (peak - baseline) / 1024
        print(f"proxy RSS {baseline / 1024:.1f} MiB, peak growth {growth_mib:.1f} MiB for 256 MiB")
        assert growth_mib < 32
    finally:
        await stop(proxy)


def test_sigterm_exits_zero_quickly() -> None:
    proxy = spawn(
        [
            "lambda-url-proxy",
            "--port",
            "0",
            "--route",
            "/fn=http://127.0.0.1:9",
            "--region",
            "us-east-1",
        ],
        KEYS,
    )
    started = time.monotonic()
    proxy.process.send_signal(signal.SIGTERM)
    assert proxy.process.wait(10) == 0
    assert time.monotonic() - started < 5
    assert "Traceback" not in "".join(proxy.lines)


def _run_in_terminal(env: dict[str, str], fake_url: str) -> str:
    """The proxy with its stderr on a pseudo-terminal, as in a developer's shell."""
    import os
    import pty
    import select
    import urllib.request

    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        ["lambda-url-proxy", "--port", "0", "--region", "us-east-1", "--route", f"/fn={fake_url}"],
        stdout=terminal,
        stderr=terminal,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **env},
    )
    os.close(terminal)
    output = b""
    deadline = time.monotonic() + 15
    try:
        while time.monotonic() < deadline and b" 404 " not in output:
            if select.select([controller], [], [], 0.1)[0]:
                output += os.read(controller, 65536)
            if (port := re.search(rb"listening on http://127\.0\.0\.1:(\d+)", output)) and (
                b"/fn/ok" not in output
            ):
                for path in ("/fn/ok", "/missing"):
                    with contextlib.suppress(OSError):  # a 404 raises; its log line is the point
                        urllib.request.urlopen(
                            f"http://127.0.0.1:{int(port.group(1))}{path}", timeout=5
                        )
                output += b"/fn/ok requested\n"
    finally:
        process.terminate()
        process.wait(10)
        os.close(controller)
    return output.decode(errors="replace")


async def test_terminal_output_is_aligned_and_coloured(fake: FakeFunctionUrl) -> None:
    output = await asyncio.to_thread(_run_in_terminal, KEYS, fake.url)
    assert "\x1b[32m200\x1b[0m" in output  # 2xx green
    assert "\x1b[33m404\x1b[0m" in output  # 4xx yellow
    access = [line for line in output.splitlines() if "/fn/ok id=" in line or "/missing" in line]
    visible = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in access]
    assert len({line.index("ms ") for line in visible}) == 1, visible  # aligned on screen


async def test_no_colour_when_asked_or_not_a_terminal(fake: FakeFunctionUrl) -> None:
    output = await asyncio.to_thread(_run_in_terminal, {**KEYS, "NO_COLOR": "1"}, fake.url)
    assert " 200 " in output and "\x1b[" not in output
