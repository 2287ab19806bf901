"""The bench's own wiring that no run checks: the profile's step markers still name functions of
proxy/, and `--peer` finds another signing proxy on the PATH or says why it is skipped."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from bench import cli, profile
from tests.conftest import ROOT

# `name (file.py` or `Class.name (`: a marker that names one function of proxy/.
MARKER = re.compile(r"^(?:(\w+)\.)?(\w+) \((?:(\w+)\.py)?$")


def _defined() -> dict[str, set[str]]:
    """Per module of proxy/ (and "*" for all): `function` and `Class.method` names."""
    names: dict[str, set[str]] = {"*": set()}
    for path in (ROOT / "proxy").glob("*.py"):
        found = names.setdefault(path.stem, set())
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                found.add(node.name)
            elif isinstance(node, ast.ClassDef):
                found.add(f"{node.name}.__init__")  # a dataclass's is generated
                for item in node.body:
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                        # py-spy names a method `Class.name`: a bare marker matches it too
                        found |= {f"{node.name}.{item.name}", item.name}
        names["*"] |= found
    return names


def test_the_profiles_markers_name_functions_the_proxy_has() -> None:
    """A marker left behind by a refactor would quietly put its samples under "the rest"."""
    defined = _defined()
    checked = 0
    for step, markers in profile.STEPS:
        for marker in markers:
            match = MARKER.match(marker)
            if match is None:
                continue  # a prefix (`UpstreamClient.`, `Wire.on_`) or aiohttp's own names
            owner, name, module = match.groups()
            qualified = f"{owner}.{name}" if owner else name
            assert qualified in defined.get(module or "*", set()), f"{step}: {marker!r}"
            checked += 1
    assert checked > 20


def test_a_peer_not_on_the_path_is_skipped_with_a_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert cli.find_peers(["aws-sigv4-proxy"]) == []
    said = capsys.readouterr().err
    assert "--peer aws-sigv4-proxy: no `aws-sigv4-proxy` on the PATH" in said
    assert "awslabs/aws-sigv4-proxy" in said


def test_a_peer_on_the_path_signs_for_lambda_in_front_of_the_upstream(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    binary = tmp_path / "aws-sigv4-proxy"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert cli.find_peers(["aws-sigv4-proxy"]) == [("aws-sigv4-proxy", str(binary))]
    argv = cli.peer_argv(str(binary), 9001, 9002)
    options = dict(zip(argv[1::2], argv[2::2], strict=True))
    assert options == {
        "--port": "127.0.0.1:9002",
        "--name": "lambda",
        "--region": "us-east-1",
        "--host": "127.0.0.1:9001",
        "--upstream-url-scheme": "http",
    }


@pytest.mark.slow
def test_the_distinct_scenario_sends_every_request_to_its_own_target(tmp_path: Path) -> None:
    """`get_distinct` exists to defeat the proxy's caches (targets, signatures): wrk, driven by
    the script the bench writes, must send each request to a target no other request had."""
    import shutil
    import socket
    import threading

    wrk = shutil.which("wrk")
    if wrk is None:
        pytest.skip("wrk is not installed (apt-get install wrk; .ci/run does)")
    from bench import load

    scenario = next(s for s in cli.SCENARIOS if s.name == "get_distinct")
    script = load.wrk_script(scenario, tmp_path)
    targets: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        # wrk first connects once and hangs up (its check of the address): serve each in turn.
        with listener:
            for _ in range(5):
                connection, _ = listener.accept()
                connection.settimeout(5)
                with connection:
                    buffered = b""
                    while len(targets) < 200:
                        data = connection.recv(65536)
                        if not data:
                            break
                        buffered += data
                        while b"\r\n\r\n" in buffered:
                            head, _, buffered = buffered.partition(b"\r\n\r\n")
                            targets.append(head.split(b" ")[1])
                            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                if len(targets) >= 200:
                    return

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    port = listener.getsockname()[1]
    single = load.Scenario(**{**vars(scenario), "connections": 1})
    load.run_wrk(wrk, f"http://127.0.0.1:{port}", single, 1, script)
    server.join(10)
    assert len(targets) >= 20
    assert len(set(targets)) == len(targets)
    assert all(target.startswith(b"/small?n=") for target in targets)


def _result(figures: dict[str, dict[str, float]]) -> dict[str, object]:
    """A run's result holding GET small medians for the given targets."""
    targets = {name: {"median": median} for name, median in figures.items()}
    return {"scenarios": {"get_small": {"targets": targets}}}


def test_the_report_holds_each_proxy_to_both_go_builds() -> None:
    """Issue 16: one process at least the shipped Go proxy's requests/s, `--workers 2` at least
    the pooled build's, CPU at most theirs; each check from figures of the same run."""
    from bench import report

    result = _result(
        {
            "nginx": {"req_s": 20000.0, "cpu_us": 50.0},
            "lambda-url-proxy": {"req_s": 4400.0, "cpu_us": 200.0},
            report.PEER: {"req_s": 4000.0, "cpu_us": 330.0},
            report.POOLED_PEER: {"req_s": 6400.0, "cpu_us": 205.0},
        }
    )
    found = {c["check"]: c for c in report.checks(result, ["lambda-url-proxy"])}
    shipped = found["GET small req/s vs aws-sigv4-proxy"]
    assert (shipped["value"], shipped["pass"]) == (1.1, True)
    pooled = found["GET small req/s vs aws-sigv4-proxy-pooled"]
    assert (pooled["value"], pooled["pass"]) == (4400.0 / 6400.0, False)
    cpu = found["GET small CPU/req vs aws-sigv4-proxy-pooled"]
    assert (cpu["value"], cpu["pass"]) == (200.0 / 205.0, True)


def test_without_a_peer_in_the_run_no_check_is_made_against_it() -> None:
    from bench import report

    result = _result(
        {"nginx": {"req_s": 20000.0, "cpu_us": 50.0}, "proxy": {"req_s": 4400.0, "cpu_us": 200.0}}
    )
    names = [c["check"] for c in report.checks(result, ["proxy"])]
    assert names and not any("aws-sigv4-proxy" in name for name in names)


def test_both_go_builds_are_peers_the_bench_knows() -> None:
    from bench import report

    assert (report.PEER, report.POOLED_PEER) == cli.PEERS
