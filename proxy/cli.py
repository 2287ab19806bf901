"""The command line: flags + environment + file into Settings, then serve on uvloop.

Flags are generated from the Settings fields, so each one appears in --help with its
environment variable and default, and is validated like the file and the environment; `--help`
reads them from the flag table (proxy/flags.py) and imports neither pydantic nor asyncio.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from proxy import __version__

EXIT_CONFIG = 2


def _route_flag(text: str) -> dict[str, str]:
    from proxy.settings import parse_route

    try:
        return parse_route(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    """The parser, from the flag table (proxy/flags.py): neither pydantic nor the settings
    module is imported until the arguments are parsed, so `--help` answers at once."""
    from proxy._flags import FLAGS

    parser = argparse.ArgumentParser(
        prog="lambda-url-proxy",
        description="Local reverse proxy that signs requests with AWS SigV4 for Lambda Function "
        "URLs (auth type AWS_IAM). Precedence: flags > environment > config file > defaults.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Credentials come from the standard AWS chain: environment, AWS_PROFILE and "
        "~/.aws files, SSO, credential_process, container and instance metadata.",
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=["serve", "check"],
        default="serve",
        help="serve (the default), or check: resolve every route's credentials, print the "
        "route table and exit 0 only if all are usable",
    )
    parser.add_argument("--check", action="store_true", help="the same as the check command")
    parser.add_argument(
        "--probe",
        metavar="PATH",
        help="with check: send one signed GET of PATH to each route (which runs its function) "
        "and explain the answer",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    types: dict[str | None, Any] = {"route": _route_flag, "path": Path, None: None}
    for flag in FLAGS:
        parser.add_argument(
            *flag.names,
            dest=flag.dest,
            action="append" if flag.append else "store",
            type=types[flag.kind],
            metavar=flag.metavar,
            choices=flag.choices,
            help=flag.help,
        )
    return parser


def _fail(message: str, json_logs: bool) -> NoReturn:
    if json_logs:
        import logging

        from proxy.logs import configure

        configure("json", "info")
        logging.getLogger("proxy").error(message, extra={"fields": {"event": "config_error"}})
    else:
        print(f"lambda-url-proxy: {message}", file=sys.stderr)
    sys.exit(EXIT_CONFIG)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)  # `--help` and `--version` end here
    from proxy.settings import CONFIG_ENV, ConfigError, load_settings

    flags: dict[str, Any] = {
        name: value
        for name, value in vars(args).items()
        if value is not None and name not in ("config", "command", "check", "probe")
    }
    json_logs = flags.get("log_format") == "json"
    config_file = args.config or (Path(p) if (p := os.environ.get(CONFIG_ENV)) else None)
    try:
        settings = load_settings(flags, config_file=config_file)
    except ConfigError as error:
        _fail(str(error), json_logs)
    import logging  # none of these for `--help`, nor asyncio (in _run)

    from proxy.logs import configure

    log = logging.getLogger("proxy")

    configure(settings.log_format, settings.log_level)
    checking = args.check or args.command == "check"
    if args.probe is not None and not (checking and args.probe.startswith("/")):
        _fail(
            f"--probe {args.probe!r}: give a path that starts with / to `check`, as in "
            "`lambda-url-proxy check --probe /health`",
            json_logs,
        )
    if checking:
        from proxy.check import check

        try:
            sys.exit(check(settings, args.probe))
        except ConfigError as error:
            _fail(str(error), json_logs)
    from proxy.server import serve  # after logging is set: importing aiohttp is the slow part

    try:
        if settings.workers > 1:
            from proxy.workers import supervise

            sys.exit(supervise(settings, flags, config_file))
        _run(serve(settings, lambda: load_settings(flags, config_file=config_file), config_file))
    except ConfigError as error:
        _fail(str(error), settings.log_format == "json")
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            log.error(
                "cannot listen on %s:%d: the port is in use; pick another with --port",
                settings.host,
                settings.port,
            )
        else:
            log.error("cannot listen on %s:%d: %s", settings.host, settings.port, error.strerror)
        sys.exit(1)
    except KeyboardInterrupt:
        pass


def _run(coroutine: Any) -> None:
    import asyncio

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        asyncio.run(coroutine)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coroutine)
