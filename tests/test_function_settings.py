"""A route names a function instead of a URL: the flag, the file, the environment, the checks,
and the region rule with a function's ARN in the URL host's place."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from proxy.aws_config import AwsConfig, Resolved, resolve_route
from proxy.cli import build_parser
from proxy.settings import ConfigError, Route, load_settings, parse_route

ARN = "arn:aws:lambda:eu-west-1:123456789012:function:my-fn"


def flags(*argv: str) -> Route:
    """The route --route gives, parsed by the real parser."""
    args = build_parser().parse_args(["--route", *argv])
    return load_settings({"routes": args.routes}).routes[0]


def test_the_flag_names_a_function() -> None:
    route = flags("/users=function:my-fn")

    assert (route.prefix, route.function, route.url) == ("/users", "my-fn", None)
    assert (route.qualifier, route.invoke_mode) == (None, "BUFFERED")
    assert route.target == "function my-fn"


def test_the_flag_takes_options_as_url_routes_do() -> None:
    route = flags("/feed=function:feed,qualifier=prod,invoke_mode=RESPONSE_STREAM,timeout=5")

    assert (route.function, route.qualifier, route.invoke_mode, route.timeout) == (
        "feed",
        "prod",
        "RESPONSE_STREAM",
        5.0,
    )
    assert route.target == "function feed (qualifier prod)"


def test_the_flag_takes_a_function_arn() -> None:
    assert flags(f"/users=function:{ARN}").function == ARN


@pytest.mark.parametrize(
    "function", [f"{ARN}:prod", "my-fn:prod", "123456789012:function:my-fn:prod"]
)
def test_a_qualifier_in_the_name_moves_to_qualifier(function: str) -> None:
    route = flags(f"/users=function:{function}")

    assert (route.function, route.qualifier) == (function.removesuffix(":prod"), "prod")


def test_the_same_qualifier_twice_is_fine_two_are_refused() -> None:
    assert flags("/u=function:my-fn:prod,qualifier=prod").qualifier == "prod"
    with pytest.raises(ConfigError, match="names qualifier 'prod' and qualifier is 'dev'"):
        flags("/u=function:my-fn:prod,qualifier=dev")


def test_the_file_names_a_function(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text(
        '[[routes]]\nprefix = "/users"\nfunction = "my-fn"\nqualifier = "prod"\n'
        'invoke_mode = "RESPONSE_STREAM"\n'
    )

    route = load_settings(config_file=config).routes[0]

    assert (route.function, route.qualifier, route.invoke_mode) == (
        "my-fn",
        "prod",
        "RESPONSE_STREAM",
    )


def test_the_environment_names_a_function(monkeypatch: pytest.MonkeyPatch) -> None:
    routes = [{"prefix": "/users", "function": ARN, "qualifier": "prod"}]
    monkeypatch.setenv("LAMBDA_URL_PROXY_ROUTES", json.dumps(routes))

    settings = load_settings()

    assert (settings.routes[0].function, settings.routes[0].qualifier) == (ARN, "prod")


def test_the_flag_syntax_in_the_environment_is_shown_as_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LAMBDA_URL_PROXY_ROUTES", "/users=function:my-fn")

    with pytest.raises(ConfigError) as refused:
        load_settings()

    assert """'[{"prefix": "/users", "function": "my-fn"}]'""" in str(refused.value)


@pytest.mark.parametrize(
    ("route", "message"),
    [
        (
            {"url": "https://abc.lambda-url.us-east-1.on.aws", "function": "my-fn"},
            "route '/u' needs either url (a Function URL) or function (a function's name or "
            "ARN), not both",
        ),
        (
            {},
            "needs either url (a Function URL) or function (a function's name or ARN), not neither",
        ),
        (
            {"url": "https://abc.lambda-url.us-east-1.on.aws", "qualifier": "prod"},
            "route '/u': qualifier apply to routes naming a function, not to a url",
        ),
        (
            {"url": "http://127.0.0.1:9", "invoke_mode": "BUFFERED"},
            "invoke_mode apply to routes naming a function",
        ),
        ({"function": "my fn"}, "function 'my fn' is not a function name"),
        ({"function": "x" * 65}, "is not a function name (up to 64"),
        ({"function": "my-fn", "qualifier": "a.b"}, "qualifier 'a.b' is not an alias or version"),
        ({"function": "my-fn", "invoke_mode": "STREAM"}, "invoke_mode: Input should be"),
    ],
)
def test_bad_function_routes_are_refused_saying_why(
    route: Mapping[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({"routes": [{"prefix": "/u", **route}]})

    assert message in str(refused.value)


def test_an_empty_function_is_not_the_flag_syntax() -> None:
    with pytest.raises(ValueError, match="PREFIX=function:NAME"):
        parse_route("/u=function:")


@pytest.mark.slow
def test_url_and_function_together_exit_2_with_the_reason(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text(
        '[[routes]]\nprefix = "/u"\nurl = "https://abc.lambda-url.us-east-1.on.aws"\n'
        'function = "my-fn"\n'
    )

    result = subprocess.run(
        ["lambda-url-proxy", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert "routes[0]: route '/u' needs either url (a Function URL) or function" in result.stderr
    assert "Traceback" not in result.stderr


# --- The region: a function's ARN takes the place of the URL's host -----------------------------


def region_of(route: Mapping[str, object], **settings: object) -> Resolved:
    loaded = load_settings({"routes": [{"prefix": "/a", **route}], **settings})
    return resolve_route(loaded.routes[0], loaded, AwsConfig()).region


def test_the_arns_region_beats_region_settings_and_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_REGION", "ca-central-1")

    assert region_of({"function": ARN}, region="sa-east-1") == Resolved(
        "eu-west-1", "the function's ARN"
    )


def test_the_routes_region_beats_the_arn() -> None:
    assert region_of({"function": ARN, "region": "ap-south-1"}) == Resolved(
        "ap-south-1", "route /a"
    )


@pytest.mark.parametrize("function", ["my-fn", "123456789012:function:my-fn"])
def test_a_name_or_partial_arn_takes_the_region_from_the_settings(
    function: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_REGION", "ca-central-1")

    assert region_of({"function": function}, region="sa-east-1") == Resolved(
        "sa-east-1", "--region"
    )
    assert region_of({"function": function}) == Resolved("ca-central-1", "AWS_REGION")


def test_no_region_anywhere_names_the_function() -> None:
    with pytest.raises(ConfigError, match=r"function 'my-fn' does not reveal its region"):
        region_of({"function": "my-fn"})
