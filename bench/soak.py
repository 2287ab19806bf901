"""Soak run (issue 6): the real `lambda-url-proxy` under mixed traffic for a bounded time, while
its credentials rotate every few seconds; says whether its RSS or open fds keep growing.

    python -m bench.soak                 # 180 s
    python -m bench.soak --seconds 20    # the CI version (tests/test_soak.py)

Loopback only. It starts the fake Function URL and a fake container-credentials endpoint in this
process (both from tests/, so the test extra with awscrt is needed), the proxy as a subprocess in
a session of its own, and stops the proxy (by its pid) on every way out, Ctrl-C and SIGTERM too.
Exit 0: flat and no unexpected failure; 1: growing, or a request other than the deliberate
disconnects failed; 2: could not set up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

from aiohttp import ClientSession, ClientTimeout, DummyCookieJar, TCPConnector

from tests.fake_credential_sources import FakeContainerCredentials
from tests.fake_function_url import FakeFunctionUrl, pattern

KINDS: Final = ("small", "upload", "stream", "disconnect")
WEIGHTS: Final = (50, 20, 15, 15)
STREAM_BYTES: Final = 256 * 1024
STREAM_CHUNKS: Final = 20
STREAM_DELAY: Final = 0.02  # 20 chunks 20 ms apart: each stream lasts ~0.4 s
SLOW_STREAM: Final = "/fn/slow-stream/1000/0.01"  # 10 s if nobody hung up
# Tolerances of the verdict (see bench/README.md, "Soak"): the middle third of the samples is
# the reference (the first third is warm-up: pools, caches, allocator arenas fill up), the last
# third is compared with it.
RSS_GROWTH_FRACTION: Final = 0.10
RSS_GROWTH_MIB: Final = 16.0
FDS_GROWTH: Final = 4


@dataclass
class Tally:
    done: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    first_errors: list[str] = field(default_factory=list)
    access_keys: set[str] = field(default_factory=set)

    def fail(self, kind: str, why: str) -> None:
        self.errors[kind] += 1
        if len(self.first_errors) < 10:
            self.first_errors.append(f"{kind}: {why}")


@dataclass
class Sample:
    at: float
    rss_mib: float
    fds: int


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def expected_stream() -> bytes:
    return b"".join(pattern(0, STREAM_BYTES))


async def small(session: ClientSession, base: str, rng: random.Random, tally: Tally) -> None:
    async with session.get(f"{base}/fn/small/{rng.randrange(1000)}?q={rng.random()}") as reply:
        body = await reply.read()
    if reply.status != 200:
        tally.fail("small", f"status {reply.status}: {body[:200]!r}")
        return
    tally.access_keys.add(_json_field(body, "access_key"))
    tally.done["small"] += 1


async def upload(session: ClientSession, base: str, rng: random.Random, tally: Tally) -> None:
    data = rng.randbytes(rng.randint(64 * 1024, 1024 * 1024))
    async with session.post(f"{base}/fn/upload", data=data) as reply:
        body = await reply.read()
    if reply.status != 200:
        tally.fail("upload", f"status {reply.status}: {body[:200]!r}")
    elif _json_field(body, "body_sha256") != hashlib.sha256(data).hexdigest():
        tally.fail("upload", f"the function received other bytes than the {len(data)} sent")
    else:
        tally.access_keys.add(_json_field(body, "access_key"))
        tally.done["upload"] += 1


async def stream(session: ClientSession, base: str, expected: bytes, tally: Tally) -> None:
    url = f"{base}/fn/stream/{STREAM_BYTES}/{STREAM_CHUNKS}?delay={STREAM_DELAY}"
    async with session.get(url) as reply:
        body = await reply.read()
    if reply.status != 200:
        tally.fail("stream", f"status {reply.status}: {body[:200]!r}")
    elif body != expected:
        tally.fail("stream", f"truncated or corrupt: {len(body)} of {len(expected)} bytes")
    else:
        tally.done["stream"] += 1


async def disconnect(port: int, rng: random.Random, tally: Tally) -> None:
    """Start a 10 s stream, read its beginning, hang up (RST): the proxy must cut upstream."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {SLOW_STREAM} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            tally.fail("disconnect", f"answered {head[:100]!r}")
            return
        await reader.read(64)
        await asyncio.sleep(rng.uniform(0, 0.05))  # hang up at a few different points
        tally.done["disconnect"] += 1
    finally:
        writer.transport.abort()


def _json_field(body: bytes, name: str) -> str:
    match = re.search(rb'"' + name.encode() + rb'": "([^"]*)"', body)
    return match.group(1).decode() if match else ""


async def drive(port: int, until: float, concurrency: int, seed: int, tally: Tally) -> None:
    base = f"http://127.0.0.1:{port}"
    expected = expected_stream()
    connector = TCPConnector(limit=concurrency)
    async with ClientSession(
        connector=connector,
        auto_decompress=False,
        cookie_jar=DummyCookieJar(),
        timeout=ClientTimeout(total=30),
    ) as session:

        async def worker(n: int) -> None:
            rng = random.Random(seed + n)  # noqa: S311 (traffic mix, reproducible)
            while time.monotonic() < until:
                kind = rng.choices(KINDS, WEIGHTS)[0]
                try:
                    if kind == "small":
                        await small(session, base, rng, tally)
                    elif kind == "upload":
                        await upload(session, base, rng, tally)
                    elif kind == "stream":
                        await stream(session, base, expected, tally)
                    else:
                        await disconnect(port, rng, tally)
                except (OSError, TimeoutError, asyncio.IncompleteReadError) as error:
                    tally.fail(kind, f"{type(error).__name__}: {error}")
                except Exception as error:  # aiohttp's ClientPayloadError and the like
                    tally.fail(kind, f"{type(error).__name__}: {error}")

        await asyncio.gather(*(worker(n) for n in range(concurrency)))


def growth(samples: list[Sample]) -> tuple[float, float, float, float]:
    """(RSS middle, RSS last, fds middle, fds last): medians of the middle and last thirds."""
    third = len(samples) // 3
    middle, last = samples[third : 2 * third], samples[2 * third :]
    return (
        statistics.median(s.rss_mib for s in middle),
        statistics.median(s.rss_mib for s in last),
        statistics.median(s.fds for s in middle),
        statistics.median(s.fds for s in last),
    )


def start_proxy(
    fake_url: str, creds: FakeContainerCredentials, log: IO[str]
) -> subprocess.Popen[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "LAMBDA_URL_PROXY_"))
        and key.lower() not in {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    }
    home = tempfile.mkdtemp(prefix="soak-")
    env |= {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": creds.url,
        "AWS_CONTAINER_AUTHORIZATION_TOKEN": creds.TOKEN,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": f"{home}/no-config",
        "AWS_SHARED_CREDENTIALS_FILE": f"{home}/no-credentials",
    }
    command = [
        *_proxy_command(),
        *("--route", f"/fn={fake_url}", "--region", "us-east-1"),
        *("--host", "127.0.0.1", "--port", "0"),
    ]
    return subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=home,
        start_new_session=True,  # Ctrl-C reaches the soak only; the soak stops the proxy
    )


def _proxy_command() -> list[str]:
    beside = Path(sys.executable).with_name("lambda-url-proxy")
    return [str(beside)] if beside.exists() else ["lambda-url-proxy"]


def _read(path: Path) -> str:
    return path.read_text()


async def wait_listening(process: subprocess.Popen[str], log_path: Path) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and process.poll() is None:
        if match := re.search(r"listening on http://[^ ]+:(\d+)", _read(log_path)):
            return int(match.group(1))
        await asyncio.sleep(0.05)
    raise RuntimeError("the proxy did not start:\n" + _read(log_path)[-3000:])


def stop_proxy(process: subprocess.Popen[str]) -> int | None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


async def soak(args: argparse.Namespace) -> int:
    interval = args.interval or min(10.0, max(1.0, args.seconds / 40))
    tally = Tally()
    samples: list[Sample] = []
    keys_used: set[str] = set()
    unverified = 0
    with tempfile.TemporaryDirectory(prefix="soak-log-") as tmp:
        log_path = Path(tmp) / "proxy.log"
        async with (
            FakeFunctionUrl(region="us-east-1") as fake,
            FakeContainerCredentials(fake, lifetime=args.key_lifetime) as creds,
        ):
            with log_path.open("w") as log:
                process = start_proxy(fake.url, creds, log)
            traffic: asyncio.Task[None] | None = None
            try:
                port = await wait_listening(process, log_path)
                pid = process.pid
                print(
                    f"soak: {args.seconds:.0f} s, {args.concurrency} concurrent, proxy pid {pid}"
                    f" on :{port}, keys expire every {args.key_lifetime:g} s, sample every"
                    f" {interval:g} s",
                    flush=True,
                )
                started = time.monotonic()
                traffic = asyncio.create_task(
                    drive(port, started + args.seconds, args.concurrency, args.seed, tally)
                )
                while not traffic.done():
                    await asyncio.wait({traffic}, timeout=interval)
                    if traffic.done():
                        break  # a sample of the last, partial interval would be at rest
                    if process.poll() is not None:
                        raise RuntimeError(f"the proxy exited with {process.returncode}")
                    # The fake keeps every request (bodies too): tally and drop them.
                    received, fake.received = fake.received, []
                    fake.peers.clear()
                    keys_used.update(
                        a for r in received if (a := _access_key(r.headers)) is not None
                    )
                    unverified += sum(not r.verified for r in received)
                    sample = Sample(time.monotonic() - started, rss_mib(pid), open_fds(pid))
                    samples.append(sample)
                    done = " ".join(f"{k}={tally.done[k]}" for k in KINDS)
                    print(
                        f"{sample.at:7.1f} s  {done}  errors={sum(tally.errors.values())}"
                        f"  keys={len(creds.issued)}  RSS {sample.rss_mib:6.1f} MiB"
                        f"  fds {sample.fds}",
                        flush=True,
                    )
                await traffic
                # At rest: every upstream stream cut by a disconnect must have been cancelled.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(fake.wait_stream_cancelled(tally.done["disconnect"]), 5)
                await asyncio.sleep(1.0)
                rest = Sample(time.monotonic() - started, rss_mib(pid), open_fds(pid))
            finally:
                if traffic is not None and not traffic.done():
                    # Interrupted: hang up every client first, so that the proxy has nothing
                    # in flight to wait for when it is told to stop.
                    traffic.cancel()
                    await asyncio.gather(traffic, return_exceptions=True)
                code = await asyncio.to_thread(stop_proxy, process)
            text = log_path.read_text()
    return verdict(args, tally, samples, rest, creds, fake, keys_used, unverified, code, text)


def _access_key(headers: list[tuple[str, str]]) -> str | None:
    for name, value in headers:
        if name.lower() == "authorization" and (m := re.search(r"Credential=([^/]+)/", value)):
            return m.group(1)
    return None


def verdict(
    args: argparse.Namespace,
    tally: Tally,
    samples: list[Sample],
    rest: Sample,
    creds: FakeContainerCredentials,
    fake: FakeFunctionUrl,
    keys_used: set[str],
    unverified: int,
    exit_code: int | None,
    log_text: str,
) -> int:
    total = sum(tally.done.values())
    errors = sum(tally.errors.values())
    print(
        f"\nsummary: {total} requests in {args.seconds:.0f} s ("
        + ", ".join(f"{k} {tally.done[k]}" for k in KINDS)
        + f"), errors {errors}"
        + (" (" + ", ".join(f"{k} {n}" for k, n in tally.errors.items()) + ")" if errors else "")
    )
    for line in tally.first_errors:
        print(f"  error: {line}")
    print(
        f"credentials: {len(creds.issued)} keys issued by the container endpoint"
        f" ({creds.calls} calls), {len(keys_used)} distinct keys reached the function,"
        f" {unverified} requests refused by it"
    )
    print(
        f"disconnects: {tally.done['disconnect']} clients hung up mid-stream, upstream streams"
        f" cancelled {fake.stream_cancelled}"
    )
    tracebacks = log_text.count("Traceback")
    errors_logged = len(re.findall(r"^\S+ \S+ ERROR", log_text, re.MULTILINE))
    print(
        f"proxy: exit code {exit_code} after SIGTERM, {errors_logged} ERROR lines,"
        f" {tracebacks} tracebacks in its log; at rest: RSS {rest.rss_mib:.1f} MiB, fds {rest.fds}"
    )
    failed = False
    if len(samples) < 6:
        print(f"verdict: too few samples ({len(samples)}) to judge growth; run longer")
        failed = True
    else:
        rss_mid, rss_last, fds_mid, fds_last = growth(samples)
        rss_up = rss_last - rss_mid
        fds_up = fds_last - fds_mid
        rss_grows = rss_up >= RSS_GROWTH_MIB or rss_up >= RSS_GROWTH_FRACTION * rss_mid
        fds_grow = fds_up > FDS_GROWTH
        print(
            f"RSS: median {rss_mid:.1f} MiB (middle third) -> {rss_last:.1f} MiB (last third),"
            f" {rss_up:+.1f} MiB ({rss_up / rss_mid:+.1%}); limit < {RSS_GROWTH_FRACTION:.0%}"
            f" and < {RSS_GROWTH_MIB:g} MiB: {'GROWING' if rss_grows else 'flat'}"
        )
        print(
            f"fds: median {fds_mid:g} -> {fds_last:g}, {fds_up:+g}; limit <= {FDS_GROWTH}:"
            f" {'GROWING' if fds_grow else 'flat'}"
        )
        failed = rss_grows or fds_grow
    if errors:
        failed = True
    if len(creds.issued) < 2:
        print("no credential rotation happened (one key issued): lower --key-lifetime")
        failed = True
    print(f"verdict: {'FAIL' if failed else 'PASS'}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--seconds", type=float, default=180.0, help="traffic time (180)")
    parser.add_argument("--concurrency", type=int, default=16, help="clients at once (16)")
    parser.add_argument(
        "--interval", type=float, default=0.0, help="seconds between samples (seconds/40, 1-10)"
    )
    parser.add_argument(
        "--key-lifetime", type=float, default=6.0, help="lifetime of each issued key (6 s)"
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    async def run() -> int:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await soak(args)
        except RuntimeError as error:
            print(f"soak: {error}", file=sys.stderr)
            return 2

    try:
        return asyncio.run(run())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("soak: interrupted; every process it started is stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
