"""The command line: flags + environment + file into Settings, then serve on uvloop.

Flags are generated from the Settings fields, so each one appears in --help with its
environment variable and default, and is validated like the file and the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn, get_args, get_origin

from pydantic import ByteSize
from pydantic_core import PydanticUndefined

from proxy import __version__
from proxy.logs import configure
from proxy.settings import (
    CONFIG_ENV,
    ROUTES_EXAMPLE,
    ConfigError,
    Settings,
    env_name,
    load_settings,
    parse_route,
    route_options,
)

log = logging.getLogger("proxy")

EXIT_CONFIG = 2


def _route_flag(text: str) -> dict[str, str]:
    try:
        return parse_route(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
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
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"TOML configuration file [env: {CONFIG_ENV}]",
    )
    for name, field in Settings.model_fields.items():
        env = env_name(name)
        if name == "routes":
            parser.add_argument(
                "--route",
                dest="routes",
                action="append",
                type=_route_flag,
                metavar="PREFIX=URL|function:NAME[,OPTION=VALUE...]",
                help=f"{field.description}; OPTIONs are route settings: "
                f"{', '.join(route_options())} (e.g. profile=dev,timeout=30; qualifier=prod) "
                f"[env: {env} as JSON, e.g. '{ROUTES_EXAMPLE}']",
            )
            continue
        if get_origin(field.annotation) is list:
            singular = name.removesuffix("s").replace("_", "-")
            parser.add_argument(
                f"--{singular}",
                dest=name,
                action="append",
                metavar=singular.split("-")[-1].upper(),
                help=f"{field.description} [env: {env} as JSON list]",
            )
            continue
        default = field.default
        if isinstance(default, ByteSize):
            default = default.human_readable(separator=" ")
        shown = "" if default in (None, PydanticUndefined) else f" (default: {default})"
        if field.annotation is bool:
            parser.add_argument(
                f"--{name.replace('_', '-')}",
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{field.description} [env: {env}]{shown}",
            )
            continue
        choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else None
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            metavar="{" + ",".join(choices) + "}" if choices else name.upper(),
            choices=choices,
            help=f"{field.description} [env: {env}]{shown}",
        )
    return parser


def _fail(message: str, json_logs: bool) -> NoReturn:
    if json_logs:
        configure("json", "info")
        logging.getLogger("proxy").error(message, extra={"fields": {"event": "config_error"}})
    else:
        print(f"lambda-url-proxy: {message}", file=sys.stderr)
    sys.exit(EXIT_CONFIG)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    flags: dict[str, Any] = {
        name: value
        for name, value in vars(args).items()
        if value is not None and name not in ("config", "command", "check")
    }
    json_logs = flags.get("log_format") == "json"
    config_file = args.config or (Path(p) if (p := os.environ.get(CONFIG_ENV)) else None)
    try:
        settings = load_settings(flags, config_file=config_file)
    except ConfigError as error:
        _fail(str(error), json_logs)
    configure(settings.log_format, settings.log_level)
    if args.check or args.command == "check":
        from proxy.check import check

        try:
            sys.exit(check(settings))
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
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        asyncio.run(coroutine)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coroutine)
