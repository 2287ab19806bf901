"""--workers N: N server processes sharing one port (SO_REUSEPORT); the parent supervises.

Each worker is a whole proxy (own event loop, pool, credential cache): the kernel spreads new
connections between them. The workers run in their own session, so a terminal's Ctrl-C reaches
the parent only, which passes each signal on: the second Ctrl-C still exits at once.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
from multiprocessing.synchronize import Barrier
from pathlib import Path
from types import FrameType
from typing import Any

from proxy.settings import Settings, load_settings

log = logging.getLogger("proxy")

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STARTUP_TIMEOUT = 60.0


def reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    """Bind (without listening) so that port 0 becomes one port all workers share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    reserved = socket.socket(family, socket.SOCK_STREAM)
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reserved.bind((host, port))
    return reserved, reserved.getsockname()[1]


def _worker(
    flags: dict[str, Any],
    config_file: Path | None,
    port: int,
    index: int,
    all_listening: Barrier,
) -> None:
    os.setsid()
    from proxy.cli import _run
    from proxy.logs import configure
    from proxy.server import serve

    def load() -> Settings:
        return load_settings({**flags, "port": port, "workers": 1}, config_file=config_file)

    settings = load()
    configure(settings.log_format, settings.log_level)
    # The banner (worker 0's) tells clients where to connect: only once every worker listens.
    _run(
        serve(
            settings,
            load,
            config_file,
            reuse_port=True,
            announce=index == 0,
            listening=lambda: all_listening.wait(STARTUP_TIMEOUT),
        )
    )


def supervise(settings: Settings, flags: dict[str, Any], config_file: Path | None) -> int:
    """Run the workers until they exit; 0 only if every one exited 0."""
    reserved, port = reserve_port(settings.host, settings.port)
    context = multiprocessing.get_context("spawn")
    all_listening = context.Barrier(settings.workers)
    workers = [
        context.Process(
            target=_worker, args=(flags, config_file, port, index, all_listening), name=f"w{index}"
        )
        for index in range(settings.workers)
    ]
    log.info("starting %d worker processes on port %d", len(workers), port)

    def forward(signum: int, frame: FrameType | None) -> None:
        for worker in workers:
            if worker.pid is not None and worker.exitcode is None:
                os.kill(worker.pid, signum)

    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward)
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    reserved.close()
    codes = [worker.exitcode for worker in workers]
    if any(codes):
        log.error("worker exit codes: %s", codes)
        return 1
    return 0
