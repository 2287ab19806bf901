"""`python -m bench.instructions` (issue #16): its arguments, the callgrind dump it reads, the
table's medians and ratios, the upstream stand-in it uses without nginx, and a real count under
valgrind (slow; skipped where valgrind is not installed)."""

from __future__ import annotations

import http.client
import itertools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import instructions, micro, nginx, procs
from bench.instructions import callgrind_totals, parse_args, shares, split_command
from bench.load import Scenario
from bench.procs import Processes
from bench.standin import StandIn
from tests.conftest import PYTHON, ROOT

NEEDS_VALGRIND = pytest.mark.skipif(
    shutil.which("valgrind") is None or shutil.which("callgrind_control") is None,
    reason="valgrind is not installed (apt-get install -y valgrind)",
)


def test_the_defaults_measure_the_installed_proxy() -> None:
    options = parse_args([])
    assert options.commands == (str(Path(sys.executable).parent / "lambda-url-proxy"),)
    assert (options.requests, options.concurrency, options.repeat) == (2000, 10, 1)
    assert options.scenario.name == "get_small"
    assert instructions.ANSWERS[options.scenario.name] == nginx.SMALL_JSON.encode()


def test_commands_scenario_and_counts_are_taken_as_given() -> None:
    options = parse_args(
        [
            "env PYTHONPATH=/tmp/base python -m proxy",
            "lambda-url-proxy",
            "--requests",
            "200",
            "--concurrency",
            "4",
            "--scenario",
            "post_10k",
            "--repeat",
            "3",
        ]
    )
    assert options.commands == ("env PYTHONPATH=/tmp/base python -m proxy", "lambda-url-proxy")
    assert (options.requests, options.concurrency, options.repeat) == (200, 4, 3)
    assert (options.scenario.method, options.scenario.body_bytes) == ("POST", 10240)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--requests", "0"], "--requests must be at least 1, not 0"),
        (["--repeat", "0"], "--repeat must be at least 1, not 0"),
        (["--requests", "5", "--concurrency", "10"], "--concurrency 10 is more than --requests 5"),
        (["--scenario", "get_1m"], "invalid choice: 'get_1m'"),
        (["env -i python -m proxy"], "env's options are not supported, only NAME=VALUE"),
        (["env A=1"], "'env A=1' names no program to run"),
    ],
)
def test_bad_arguments_exit_2_saying_what_is_wrong(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    assert said in capsys.readouterr().err


def test_env_assignments_become_the_commands_environment() -> None:
    """valgrind must start the proxy's program itself: `env` would exec it out of sight."""
    assert split_command("env PYTHONPATH=/tmp/base OFF=1 python -m proxy") == (
        {"PYTHONPATH": "/tmp/base", "OFF": "1"},
        ["python", "-m", "proxy"],
    )
    assert split_command("A='x y' lambda-url-proxy --log-level warning") == (
        {"A": "x y"},
        ["lambda-url-proxy", "--log-level", "warning"],
    )
    assert split_command("lambda-url-proxy") == ({}, ["lambda-url-proxy"])


@pytest.mark.parametrize(("total", "parts"), [(2000, 10), (200, 7), (3, 3), (10, 1)])
def test_requests_are_shared_evenly_and_all_counted(total: int, parts: int) -> None:
    split = shares(total, parts)
    assert len(split) == parts
    assert sum(split) == total
    assert max(split) - min(split) <= 1


def test_the_dumps_totals_line_is_read_not_its_summary() -> None:
    """With --instr-atstart=no callgrind writes `summary: 0` above the real `totals:`."""
    dump = "events: Ir\nsummary: 0\nfn=(1) x\n5 7\ntotals: 64413745\n"
    assert callgrind_totals(dump) == 64413745
    with pytest.raises(ValueError, match="no totals: line"):
        callgrind_totals("summary: 12\n")


def test_the_table_gives_each_commands_median_and_its_ratio_to_the_first() -> None:
    rows = instructions.summarize(
        [
            ("env PYTHONPATH=/tmp/base python -m proxy", [335_000.0, 340_000.0, 334_000.0]),
            ("lambda-url-proxy", [322_000.0, 321_000.0, 330_000.0]),
        ]
    )
    assert [row["median"] for row in rows] == [335_000.0, 322_000.0]
    assert [round(row["ratio"], 4) for row in rows] == [1.0, round(322 / 335, 4)]
    table = instructions.render(rows, "heading").splitlines()
    assert table[0] == "heading"
    assert re.fullmatch(r"command\s+instr/request\s+ratio\s+runs", table[1])
    assert re.fullmatch(
        r"env PYTHONPATH=/tmp/base python -m proxy\s+335,000\s+1\.000\s+335,000, 340,000, 334,000",
        table[2],
    )
    assert re.fullmatch(
        r"lambda-url-proxy\s+322,000\s+0\.961\s+322,000, 321,000, 330,000", table[3]
    )
    rows[1]["seconds"] = [18.4, 46.6, 20.9]  # each run's counted seconds, when measured
    assert (
        instructions.render(rows, "")
        .splitlines()[3]
        .endswith("322,000 (18 s), 321,000 (47 s), 330,000 (21 s)")
    )


def test_the_stand_in_answers_as_the_bench_nginx_does() -> None:
    """Without nginx the count runs against this upstream: same bodies, a Function URL's
    headers, the Authorization it received echoed on /headers, keep-alive throughout."""
    with StandIn() as stand_in:
        connection = http.client.HTTPConnection("127.0.0.1", stand_in.port, timeout=10)
        try:
            for scenario in instructions.SCENARIOS.values():
                instructions.exchange(connection, scenario)
            connection.request("GET", "/headers", headers={"Authorization": "AWS4-HMAC-SHA256 x"})
            answer = connection.getresponse()
            assert (answer.status, answer.read()) == (200, b"AWS4-HMAC-SHA256 x\n")
            assert answer.getheader("x-amzn-RequestId")
            connection.request("GET", "/small")
            assert connection.getresponse().read() == nginx.SMALL_JSON.encode()
        finally:
            connection.close()


def test_without_valgrind_it_exits_2_saying_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert instructions.main(["--output", str(tmp_path / "out.json")]) == 2
    said = capsys.readouterr().err
    assert "valgrind (callgrind) is missing" in said
    assert "apt-get install -y valgrind" in said
    assert not (tmp_path / "out.json").exists()


@pytest.mark.slow
@NEEDS_VALGRIND
@pytest.mark.timeout(300)
def test_a_real_count_under_callgrind(tmp_path: Path) -> None:
    """The installed proxy and the checkout's `python -m proxy` (the same code, through the
    `env NAME=VALUE` door) counted for real: every answer checked, a table, the JSON figures."""
    output = tmp_path / "figures.json"
    installed = str(Path(PYTHON).parent / "lambda-url-proxy")
    checkout = f"env PYTHONPATH={ROOT} {PYTHON} -m proxy"
    flags = ["--requests", "200", "--warmup", "50", "--output", str(output)]
    result = subprocess.run(
        [PYTHON, "-m", "bench.instructions", installed, checkout, *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    said = result.stdout + result.stderr
    print(said)
    assert result.returncode == 0, said
    assert "upstream: nginx" in said or "upstream: an asyncio stand-in" in said
    assert "200 requests over 10 connections" in said
    figures = json.loads(output.read_text())
    first, second = figures["rows"]
    assert len(first["seconds"]) == 1 and first["seconds"][0] > 0
    assert (first["command"], second["command"]) == (installed, checkout)
    assert first["ratio"] == 1.0
    # The same code twice: the ratio says the two doors count the same work (callgrind counts
    # repeat to within about 1 %; 10 % is far outside that and far inside any real difference).
    assert 0.9 < second["ratio"] < 1.1, figures["rows"]
    assert first["median"] > 10_000, "a proxied request takes far more than 10k instructions"
    assert re.search(
        rf"^{re.escape(installed)}\s+[\d,]+\s+1\.000\s+[\d,]+ \(\d+ s\)$", result.stdout, re.M
    )


@pytest.mark.slow
@NEEDS_VALGRIND
@pytest.mark.timeout(180)
def test_a_proxy_that_does_not_start_exits_1_with_its_log(tmp_path: Path) -> None:
    broken = f"{PYTHON} -c \"import sys; print('refusing to start: no such flag'); sys.exit(3)\""
    result = subprocess.run(
        [
            PYTHON,
            "-m",
            "bench.instructions",
            broken,
            "--requests",
            "10",
            "--output",
            str(tmp_path / "x.json"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "exited with code 3 before it answered" in result.stderr
    assert "refusing to start: no such flag" in result.stderr
    assert not (tmp_path / "x.json").exists()


def test_the_signature_check_wants_the_bench_keys() -> None:
    """The check is the bench's: the example access key under a SigV4 Authorization."""
    assert micro.ACCESS_KEY == "AKIAIOSFODNN7EXAMPLE"
    with StandIn() as stand_in, pytest.raises(instructions.Failed, match="did not sign"):
        instructions.check_signed(stand_in.port)  # nothing in between: no Authorization at all
    with pytest.raises(instructions.Failed, match="GET /headers through the proxy: Connection"):
        instructions.check_signed(procs.free_port())  # a proxy gone: said, not a traceback


def test_without_nginx_the_count_runs_against_the_stand_in_and_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def missing() -> nginx.Tools:
        raise nginx.MissingTool(f"missing nginx: {nginx.INSTALL_HINT}")

    monkeypatch.setattr(nginx, "find_tools", missing)
    with Processes(tmp_path) as processes, instructions.upstream(processes, tmp_path) as found:
        port, described = found
        assert described.startswith("an asyncio stand-in in this process (no nginx: missing")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            instructions.exchange(connection, instructions.SCENARIOS["get_small"])
        finally:
            connection.close()
        assert processes.services == []  # no nginx started


def test_a_wrong_answer_fails_the_count_saying_what_came() -> None:
    """Nothing is counted over wrong answers: the first one ends the run with what it was."""
    wrong = Scenario("get_small", "GET small JSON", "GET", "/headers", connections=10)
    with StandIn() as stand_in, pytest.raises(instructions.Failed) as failed:
        instructions.drive(stand_in.port, wrong, total=20, concurrency=4)
    assert "GET /headers answered 200 b'\\n', not 200 b'{\"message\"" in str(failed.value)


def test_get_distinct_gives_every_request_its_own_target_through_warm_up_and_count() -> None:
    """As the bench's wrk script does (`?n=<count>`): no cache of the proxy's (signatures of
    requests alike, canonical targets) helps, in the warm-up or in the counted requests."""
    scenario = parse_args(["--scenario", "get_distinct"]).scenario
    numbers = itertools.count(1)
    with StandIn() as stand_in:
        instructions.drive(stand_in.port, scenario, total=30, concurrency=3, numbers=numbers)
        instructions.drive(stand_in.port, scenario, total=50, concurrency=7, numbers=numbers)
        targets = list(stand_in.targets)
    assert sorted(targets) == sorted(b"/small?n=%d" % n for n in range(1, 81))
    with StandIn() as stand_in:
        instructions.drive(stand_in.port, instructions.SCENARIOS["get_small"], 20, 4)
        assert set(stand_in.targets) == {b"/small"}
