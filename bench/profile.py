"""`--profile`: py-spy samples the proxy (GIL holder only: its CPU, not its idle waits) under one
scenario (GET small by default); the samples are grouped into the steps of the request path.

Needs py-spy (`pip install -e '.[bench]'`) and the right to ptrace the proxy (root, or
kernel.yama.ptrace_scope=0). The collapsed stacks are kept beside the JSON: open them with
speedscope or flamegraph.pl.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Final

from bench import load, nginx
from bench.load import Scenario

# (step, frame markers): a sample goes to the step of the innermost frame that has a marker.
STEPS: Final = (
    (
        "access log (Exchange, log_access, batched write)",
        ("log_access (", "Exchange.__init__ (", "LogHandler.", "TextFormatter.access_line ("),
    ),
    (
        "signing",
        (
            "sign_request (",
            "authorization (signing.py",
            "signed_header_lines (",
            "SigningKey.",
            "string_to_sign (",
            "canonical_request (",
            "proxy_headers (",
            "AmzClock.",
        ),
    ),
    ("signed request head (wire.request_head, less the signing)", ("request_head (wire.py",)),
    ("target canonicalisation", ("split_target (",)),
    ("routing", ("Router.match (",)),
    ("request header filter", ("request_header_lines (",)),
    (
        "response header lines",
        ("response_header_lines (", "holds_control_bytes (", "split_lines (", "kept_names ("),
    ),
    ("CORS origin check", ("check_origin (", "is_preflight (", "CorsPolicy.")),
    ("body read + hash", ("read_body (", "sha256")),
    ("upstream client: writing the request (its syscall)", ("Wire.send (",)),
    (
        "upstream client: reading the answer (httptools)",
        (
            "Wire.data_received (",
            "Wire.on_",
            "Wire._feed_head_only (",
            "Wire._complete (",
            "Wire._wake (",
            "Wire.head (",
            "Wire.ask (",
            "Wire.whole (",
            "Wire._wait (",
            "Wire.take (",
            "Wire.more (",
            "Wire.read_nowait (",
        ),
    ),
    ("upstream client: the pool", ("UpstreamClient.",)),
    (
        "the answer to the client: its write (the syscall)",
        (
            "whole (downstream.py",
            "own (downstream.py",
            "_send (downstream.py",
            "written (",
            "Written.",
            "keeps_alive (",
            "status_line (",
            "connection_line (",
            "HttpDate.",
        ),
    ),
    ("streaming loop (downstream.stream)", ("stream (downstream.py",)),
    (
        "proxy handler, own lines (handle, forward)",
        (
            "handle (app.py",
            "_serve (app.py",
            "_admit (app.py",
            "_check_request_line (",
            "forward (forward.py",
            "_signed_head (forward.py",
            "_noted (forward.py",
            "_done (forward.py",
            "_send_again (forward.py",
            "_connect (forward.py",
            "_late (forward.py",
            "Deadline.",
        ),
    ),
    (
        "AWS's clock and refusals (issue 13: skew, review)",
        ("AwsClock.", "Clocks.", "review (review.py", "_diagnose (", "_cure (", "http_date ("),
    ),
    (
        "aiohttp server: parsing, dispatch, keep-alive",
        ("RequestHandler.", "web_protocol", "HttpRequestParser", "JsonErrorRequestHandler."),
    ),
)
OTHER: Final = "event loop and the rest"


def _short(frame: str) -> str:
    """`func (/long/path/file.py:12)` -> `func (file.py:12)`."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1]}" if where else name


def summarize(raw: Path, cpu_us: float | None, title: str = "load") -> dict[str, Any]:
    """Share of the samples per step; µs per request when the CPU per request is known."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not number.isdigit():
            continue
        n = int(number)
        total += n
        frames = [_short(frame) for frame in stack.split(";")]
        step = OTHER
        for frame in reversed(frames):
            found = next((s for s, marks in STEPS if any(m in frame for m in marks)), None)
            if found:
                step = found
                break
        counts[step] += n
    rows: list[dict[str, Any]] = []
    lines = [f"Where the proxy's CPU goes under {title} ({total} samples, GIL holder)"]
    width = max((len(step) for step in counts), default=10)
    for step, n in counts.most_common():
        share = n / total
        us = share * cpu_us if cpu_us else None
        rows.append({"step": step, "share": share, "us_per_request": us})
        shown = f"{us:7.1f} us/req" if us is not None else ""
        lines.append(f"  {step:<{width}} {100 * share:5.1f}%  {shown}")
    return {
        "samples": total,
        "cpu_us_per_request": cpu_us,
        "rows": rows,
        "summary": "\n".join(lines),
    }


def find_py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).is_file():
        raise nginx.MissingTool("--profile needs py-spy: pip install -e '.[bench]' (or py-spy)")
    return found


def profile(
    tools: nginx.Tools,
    port: int,
    pid: int,
    scenario: Scenario,
    seconds: float,
    workdir: Path,
    stem: Path,
) -> dict[str, Any]:
    """Record the proxy for `seconds` while wrk runs the scenario against it."""
    py_spy = find_py_spy()
    script = load.wrk_script(scenario, workdir)
    raw = stem.with_name(stem.name + "-profile.txt")
    raw.parent.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {}
    from bench import procs

    user_before, system_before = procs.cpu_split(pid)

    def drive() -> None:
        figures.update(
            load.run_wrk(tools.wrk, f"http://127.0.0.1:{port}", scenario, seconds + 2, script)
        )

    driver = threading.Thread(target=drive)
    driver.start()
    try:
        recorder = subprocess.run(
            [
                py_spy,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, round(seconds))),
                "--rate",
                "250",
                "--gil",
                "--format",
                "raw",
                "--output",
                str(raw),
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=False,
        )
    finally:
        driver.join()
    if recorder.returncode != 0 or not raw.exists():
        raise RuntimeError(f"py-spy failed: {recorder.stderr.strip()[-500:]}")
    user_after, system_after = procs.cpu_split(pid)
    requests = max(1, int(figures.get("requests", 1)))
    user_us = (user_after - user_before) / requests * 1e6
    system_us = (system_after - system_before) / requests * 1e6
    summary = summarize(raw, user_us + system_us, scenario.title)
    summary["scenario"] = scenario.name
    summary["user_us_per_request"] = user_us
    summary["system_us_per_request"] = system_us
    summary["summary"] += (
        f"\n  (CPU per request while sampled: {user_us:.0f} us user + {system_us:.0f} us system;"
        " shares are of the samples taken while the proxy held the GIL)"
    )
    summary["raw"] = str(raw)
    summary["req_s_while_sampled"] = figures.get("requests", 0) / (
        figures.get("duration_us", 1) / 1e6
    )
    return summary
