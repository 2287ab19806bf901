"""The resolution rule itself, for the rows no local fake can stand in for: a Function URL's host
names its region (no local name has that shape), and settings read from the profile."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from proxy.aws_config import AwsConfig, Resolved, RouteAws, resolve_route
from proxy.settings import ConfigError, load_settings
from proxy.state import ProxyState

FUNCTION_URL = "https://x1y2.lambda-url.eu-west-3.on.aws"


def region_of(route: Mapping[str, object], **settings: object) -> RouteAws:
    loaded = load_settings({"routes": [route], **settings})
    return resolve_route(loaded.routes[0], loaded, AwsConfig())


@pytest.fixture
def aws_files(tmp_path: Path) -> Path:
    (tmp_path / "aws-config").write_text(
        "[default]\nregion = us-east-1\nca_bundle = /etc/default-ca.pem\n"
        "[profile dev]\nregion = ap-south-1\nca_bundle = /etc/dev-ca.pem\n"
    )
    return tmp_path


def test_the_function_urls_host_beats_region_settings_and_the_environment(
    aws_files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_REGION", "ca-central-1")
    resolved = region_of({"prefix": "/a", "url": FUNCTION_URL}, region="sa-east-1")
    assert resolved.region == Resolved("eu-west-3", "the URL's host")


def test_the_routes_region_beats_the_host() -> None:
    route = {"prefix": "/a", "url": FUNCTION_URL, "region": "ap-south-1"}
    assert region_of(route).region == Resolved("ap-south-1", "route /a")


def test_the_region_flag_is_named_as_its_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "ca-central-1")
    route = {"prefix": "/a", "url": "http://127.0.0.1:9"}
    assert region_of(route, region="sa-east-1").region == Resolved("sa-east-1", "--region")
    assert region_of(route).region == Resolved("ca-central-1", "AWS_REGION")


def test_no_region_anywhere_is_a_config_error_naming_every_way() -> None:
    with pytest.raises(ConfigError, match=r"set region on the route, pass --region, set AWS_REG"):
        region_of({"prefix": "/a", "url": "http://127.0.0.1:9"})


def test_routes_with_the_same_problem_are_named_together() -> None:
    routes = [{"prefix": p, "url": "http://127.0.0.1:9"} for p in ("/a", "/b")]
    with pytest.raises(ConfigError, match=r"^routes '/a', '/b': url 'http://127.0.0.1:9' does"):
        ProxyState.build(load_settings({"routes": routes}))


def test_ca_bundle_setting_then_aws_ca_bundle_then_the_profiles(
    aws_files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    route = {"prefix": "/a", "url": FUNCTION_URL}

    def ca_bundle(**settings: object) -> Path | None:
        return ProxyState.build(load_settings({"routes": [route], **settings})).ca_bundle

    assert ca_bundle() == Path("/etc/default-ca.pem")
    assert ca_bundle(profile="dev") == Path("/etc/dev-ca.pem")
    monkeypatch.setenv("AWS_PROFILE", "dev")
    assert ca_bundle() == Path("/etc/dev-ca.pem")
    monkeypatch.setenv("AWS_CA_BUNDLE", "/etc/env-ca.pem")
    assert ca_bundle() == Path("/etc/env-ca.pem")
    assert ca_bundle(ca_bundle="/etc/flag-ca.pem") == Path("/etc/flag-ca.pem")


def test_assume_role_is_called_in_the_base_profiles_region(
    aws_files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    role = "arn:aws:iam::123456789012:role/r"
    route = {"prefix": "/a", "url": FUNCTION_URL, "profile": "dev", "role_arn": role}
    state = ProxyState.build(load_settings({"routes": [route]}))
    assert [spec.sts_region for spec in state.identities] == ["ap-south-1"]
    monkeypatch.setenv("AWS_REGION", "ca-central-1")
    state = ProxyState.build(load_settings({"routes": [route]}))
    assert [spec.sts_region for spec in state.identities] == ["ca-central-1"]


def test_a_config_file_that_does_not_parse_is_named(tmp_path: Path) -> None:
    (tmp_path / "aws-config").write_text("[default\nregion = us-east-1\n")
    with pytest.raises(ConfigError, match=r"the AWS config file .*aws-config cannot be parsed"):
        AwsConfig()
