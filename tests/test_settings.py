"""One schema for file, environment and flags; precedence; clear errors for bad configuration."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from proxy.cli import build_parser
from proxy.settings import ConfigError, Settings, load_settings
from tests.conftest import ROOT

EXAMPLE = ROOT / "config" / "lambda-url-proxy.toml"
USERS = "https://abc123.lambda-url.us-east-1.on.aws"


def test_example_config_loads() -> None:
    settings = load_settings(config_file=EXAMPLE)
    assert [(r.prefix, r.url) for r in settings.routes] == [
        ("/users", USERS),
        ("/orders", "https://def456.lambda-url.eu-west-1.on.aws/v1"),
    ]
    assert settings.routes[1].timeout == 300
    assert settings.max_body_size == 6 * 1024 * 1024
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)


def test_defaults() -> None:
    settings = load_settings({"routes": [{"prefix": "/u", "url": USERS}]})
    assert (settings.host, settings.port, settings.log_format) == ("127.0.0.1", 8080, "text")
    route = settings.routes[0]
    assert (route.strip_prefix, route.service, route.timeout, route.region) == (
        True,
        "lambda",
        60.0,
        None,
    )


def test_precedence_flags_over_environment_over_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text(
        '[server]\nport = 1111\nhost = "127.0.0.2"\nlog_level = "debug"\n'
        f'[[routes]]\nprefix = "/file"\nurl = "{USERS}"\n'
    )
    assert load_settings(config_file=config).port == 1111

    monkeypatch.setenv("LAMBDA_URL_PROXY_PORT", "2222")
    monkeypatch.setenv("LAMBDA_URL_PROXY_ROUTES", f'[{{"prefix": "/env", "url": "{USERS}"}}]')
    from_env = load_settings(config_file=config)
    assert from_env.port == 2222
    assert [r.prefix for r in from_env.routes] == ["/env"]
    assert from_env.host == "127.0.0.2"  # not overridden: still the file's
    assert from_env.log_level == "debug"

    from_flags = load_settings(
        {"port": 3333, "routes": [{"prefix": "/flag", "url": USERS}]}, config
    )
    assert from_flags.port == 3333
    assert [r.prefix for r in from_flags.routes] == ["/flag"]


def test_config_file_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDA_URL_PROXY_CONFIG", str(EXAMPLE))
    assert len(load_settings().routes) == 2


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        (
            [{"prefix": "/a", "url": "ftp://x.example"}],
            r"routes\[0\]\.url: url 'ftp://x.example' must start with https://",
        ),
        ([{"prefix": "/a", "url": "not a url"}], r"routes\[0\]\.url: url 'not a url' must start"),
        ([{"prefix": "/a", "url": "https://"}], r"routes\[0\]\.url: url 'https://' .*"),
        ([{"prefix": "/a", "url": "https://u:p@x.example"}], "must not carry a user name"),
        ([{"prefix": "/a", "url": "https://x.example/?q=1"}], "must not have a query"),
        ([{"prefix": "a", "url": USERS}], r"routes\[0\]\.prefix: prefix 'a' must start with '/'"),
        ([{"prefix": "/_proxy/x", "url": USERS}], "reserved"),
        (
            [{"prefix": "/a", "url": USERS}, {"prefix": "/a/", "url": USERS}],
            "prefix '/a' is configured twice",
        ),
        (
            [{"prefix": "/a", "url": USERS, "colour": "red"}],
            r"routes\[0\]\.colour: unknown setting",
        ),
        ([{"prefix": "/a", "url": USERS, "timeout": 0}], r"routes\[0\]\.timeout"),
        ([{"prefix": "/a", "url": USERS, "region": "mars"}], "region 'mars' is not an AWS region"),
        ([], "no routes configured"),
    ],
)
def test_bad_routes_are_named_with_their_value(routes: list[object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({"routes": routes})


def test_unknown_environment_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDA_URL_PROXY_PROT", "8080")
    with pytest.raises(ConfigError, match="unknown environment variable LAMBDA_URL_PROXY_PROT"):
        load_settings({"routes": [{"prefix": "/u", "url": USERS}]})


def test_routes_in_the_environment_in_flag_syntax_are_shown_as_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LAMBDA_URL_PROXY_ROUTES", "/users=https://x,region=us-east-1")
    with pytest.raises(ConfigError) as refused:
        load_settings()
    message = str(refused.value)
    assert message.startswith("LAMBDA_URL_PROXY_ROUTES is not valid JSON")
    assert "it must be a JSON list of routes, for example [{" in message
    assert (
        "In JSON, what you wrote is: LAMBDA_URL_PROXY_ROUTES='"
        '[{"prefix": "/users", "url": "https://x", "region": "us-east-1"}]\'' in message
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('[{"prefix": "/a", "url": "https://x"}', "is not valid JSON (Expecting ',' delimiter"),
        ('{"prefix": "/a", "url": "https://x"}', "must be a JSON list of routes, even for one"),
    ],
)
def test_malformed_routes_in_the_environment_name_the_variable_and_the_shape(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("LAMBDA_URL_PROXY_ROUTES", value)
    with pytest.raises(ConfigError, match=r"^LAMBDA_URL_PROXY_ROUTES ") as refused:
        load_settings()
    assert message in str(refused.value)
    assert '[{"prefix": "/users", "url": "https://abc123.lambda-url' in str(refused.value)


@pytest.mark.parametrize(
    ("value", "origins"),
    [
        ("http://localhost:5173", ["http://localhost:5173"]),
        ('"http://localhost:5173"', ["http://localhost:5173"]),
        (
            "http://localhost:5173, http://localhost:3000",
            ["http://localhost:5173", "http://localhost:3000"],
        ),
        ('["http://localhost:5173"]', ["http://localhost:5173"]),
        ("*", ["*"]),
    ],
)
def test_cors_origins_in_the_environment_may_be_bare(
    monkeypatch: pytest.MonkeyPatch, value: str, origins: list[str]
) -> None:
    monkeypatch.setenv("LAMBDA_URL_PROXY_CORS_ORIGINS", value)
    assert load_settings({"routes": [{"prefix": "/u", "url": USERS}]}).cors_origins == origins


def test_allowed_clients_in_the_environment_may_be_bare(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDA_URL_PROXY_ALLOWED_CLIENTS", "10.0.0.0/8,172.16.0.0/12")
    settings = load_settings({"routes": [{"prefix": "/u", "url": USERS}]})
    assert [str(network) for network in settings.allowed_clients] == ["10.0.0.0/8", "172.16.0.0/12"]


@pytest.mark.parametrize(
    ("route", "guess"),
    [
        (
            {"strip": False},
            "routes[0].strip: unknown setting (value False); did you mean `strip_prefix`?",
        ),
        ({"timout": 3}, "did you mean `timeout`?"),
        ({"rolearn": "x"}, "did you mean `role_arn`?"),
    ],
)
def test_an_unknown_route_key_gets_the_closest_one(route: dict[str, object], guess: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({"routes": [{"prefix": "/u", "url": USERS, **route}]})
    assert guess in str(refused.value)
    assert "a route's settings (besides prefix, and url or function): strip_prefix, region," in str(
        refused.value
    )


def test_an_unknown_variable_gets_the_closest_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDA_URL_PROXY_CORS_ORIGIN", "http://localhost:5173")
    with pytest.raises(ConfigError, match=r"did you mean LAMBDA_URL_PROXY_CORS_ORIGINS\?"):
        load_settings({"routes": [{"prefix": "/u", "url": USERS}]})


def test_help_lists_the_route_options() -> None:
    text = " ".join(build_parser().format_help().split())
    assert (
        "OPTIONs are route settings: strip_prefix, region, service, timeout, qualifier, "
        "invoke_mode, profile, role_arn, external_id, role_session_name, duration_seconds" in text
    )


def test_unknown_key_in_file(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(f'[server]\nprot = 8080\n[[routes]]\nprefix = "/u"\nurl = "{USERS}"\n')
    with pytest.raises(ConfigError, match="prot: unknown setting"):
        load_settings(config_file=config)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[server\nport = 1\n")
    with pytest.raises(ConfigError, match=r"bad\.toml' is not valid TOML"):
        load_settings(config_file=config)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read: No such file"):
        load_settings(config_file=tmp_path / "absent.toml")


def test_help_names_every_setting_with_its_environment_variable() -> None:
    text = build_parser().format_help()
    for name in Settings.model_fields:
        assert f"LAMBDA_URL_PROXY_{name.upper()}" in text, name
    for flag in (
        "--route",
        "--host",
        "--port",
        "--config",
        "--region",
        "--log-format",
        "--version",
    ):
        assert flag in text
    assert "(default: 8080)" in text and "(default: 127.0.0.1)" in text


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--route", "/a=ftp://x.example"], "url 'ftp://x.example' must start with https://"),
        (["--route", "/a=" + USERS, "--route", "/a=" + USERS], "configured twice"),
        (["--port", "http"], "port"),
        ([], "no routes configured"),
        (["--route", "/a=http://127.0.0.1:9"], "does not reveal its region"),
        (["--route", "/a=https://x.example", "--config", "/nonexistent.toml"], "cannot be read"),
    ],
)
def test_cli_refuses_bad_configuration_with_exit_2(args: list[str], message: str) -> None:
    result = subprocess.run(
        ["lambda-url-proxy", *args], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.slow
def test_cli_route_flag_must_be_prefix_equals_url() -> None:
    result = subprocess.run(
        ["lambda-url-proxy", "--route", "/users"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "'/users' is not PREFIX=URL" in result.stderr


@pytest.mark.slow
def test_cli_configuration_error_in_json_logs_is_one_json_line() -> None:
    result = subprocess.run(
        ["lambda-url-proxy", "--log-format", "json", "--route", "/a=ftp://x.example"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["level"] == "error"
    assert "url 'ftp://x.example' must start with https://" in record["message"]


@pytest.mark.parametrize("host", ["http://proxy.internal", "proxy.internal:8080", "a b", ""])
def test_allowed_hosts_are_names_without_scheme_or_port(host: str) -> None:
    with pytest.raises(ConfigError, match=r"allowed_hosts: allowed host .* must be a name"):
        load_settings({"routes": [{"prefix": "/u", "url": USERS}], "allowed_hosts": [host]})
