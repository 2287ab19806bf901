"""The proxy's container run as deploy/kubernetes/'s pod runs it, with a real Docker engine.

There is no kubelet here. A pod is stood in for by containers that share one network namespace,
as a pod's containers do, each started with the docker options that the manifests' security
context and resources mean (read from the rendered manifests, not written again here): the
proxy's image as shipped, read-only, uid 1000, no capabilities, no privilege escalation,
Docker's default seccomp profile, the memory and CPU limits. Its environment is the ConfigMap's
and the container's, plus what EKS's webhook adds for each credential variant.

The first container holds the namespace and stands in for what the pod reaches for credentials:
EKS Pod Identity's agent (on a real node at 169.254.170.23; here on the pod's 127.0.0.1, which
botocore also accepts) and STS's AssumeRoleWithWebIdentity for IRSA (reached through
AWS_ENDPOINT_URL_STS, a test-only setting). It checks the pod's token and issues temporary keys;
the fake Function URL, on the gateway of the session's internal bridge, accepts those keys only.
The probes are the manifests' httpGet requests, sent as the kubelet sends them: from outside
the pod to its IP (here the holder's address on the bridge); the app is a container of the same
namespace that calls http://127.0.0.1:8080.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from proxy.settings import env_name
from tests.conftest import ROOT, spawn
from tests.engine import TOKEN, Bridge, docker, log_records, output, state
from tests.kubernetes_files import (
    PROBES,
    RESTING_RSS_MIB,
    Manifests,
    cores,
    manifests,
    mebibytes,
    probe_request,
)
from tests.test_metrics import P, parse, value

# Not in the development loop; the first test of a session pays for the image build.
# 600 s: the first test to ask for the image pays for its build (engine.py: up to 480 s).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REGION: Final = "ap-southeast-2"  # the fake's; as EKS's webhook would set AWS_REGION
AGENT_PORT: Final = 8100
ROLE_ARN_ANNOTATION: Final = "eks.amazonaws.com/role-arn"
TICKS: Final = 4  # the slow stream: a line a second, so SIGTERM lands while it runs


@dataclass(frozen=True)
class Variant:
    """What EKS's webhook sets in the proxy's container, and the keys the stand-in issues."""

    mount: str  # where the webhook mounts the projected token
    token_file: str
    source: str  # botocore's name for the provider, as /_proxy/ready reports it
    access_key: str

    def environment(self, rendered: Manifests) -> dict[str, str]:
        token = f"{self.mount}/{self.token_file}"
        region = {"AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION}
        regional = {"AWS_STS_REGIONAL_ENDPOINTS": "regional"}
        if self.source == "container-role":
            agent = f"http://127.0.0.1:{AGENT_PORT}/v1/credentials"  # EKS: 169.254.170.23
            return {
                **region,
                **regional,
                "AWS_CONTAINER_CREDENTIALS_FULL_URI": agent,
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": token,
            }
        account = rendered.one("ServiceAccount")["metadata"]["annotations"]
        return {
            **region,
            **regional,
            "AWS_ROLE_ARN": account[ROLE_ARN_ANNOTATION],
            "AWS_WEB_IDENTITY_TOKEN_FILE": token,
            "AWS_ENDPOINT_URL_STS": f"http://127.0.0.1:{AGENT_PORT}",  # test only: STS's stand-in
        }


VARIANTS: Final = {
    "pod-identity": Variant(
        "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount",
        "eks-pod-identity-token",
        "container-role",
        "ASIAPODIDENTITY00001",
    ),
    "irsa": Variant(
        "/var/run/secrets/eks.amazonaws.com/serviceaccount",
        "token",
        "assume-role-with-web-identity",
        "ASIAWEBIDENTITY00001",
    ),
}

# The stand-in for Pod Identity's agent and STS, in the pod's namespace: python's standard
# library, run by the proxy's image.
AGENT: Final = r"""
import datetime, http.server, json, os, urllib.parse
KEY, SECRET, SESSION = os.environ["AGENT_KEY"].split(":")
TOKEN, ROLE = os.environ["AGENT_TOKEN"], os.environ.get("AGENT_ROLE_ARN")
later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
EXPIRES = later.strftime("%Y-%m-%dT%H:%M:%SZ")
STS = '''<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
<AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>%s</AccessKeyId>
<SecretAccessKey>%s</SecretAccessKey><SessionToken>%s</SessionToken><Expiration>%s</Expiration>
</Credentials><AssumedRoleUser><AssumedRoleId>AROAEXAMPLE:pod</AssumedRoleId>
<Arn>arn:aws:sts::111122223333:assumed-role/invoke-users/pod</Arn></AssumedRoleUser>
</AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>'''

class Agent(http.server.BaseHTTPRequestHandler):
    def answer(self, status, body, kind):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body.encode())))
        self.end_headers()
        self.wfile.write(body.encode())

    def do_GET(self):  # Pod Identity's agent: the token in Authorization
        if self.path != "/v1/credentials" or self.headers.get("Authorization") != TOKEN:
            return self.answer(401, '{"message": "wrong path or token"}', "application/json")
        keys = {"AccessKeyId": KEY, "SecretAccessKey": SECRET, "Token": SESSION}
        self.answer(200, json.dumps({**keys, "Expiration": EXPIRES}), "application/json")

    def do_POST(self):  # STS AssumeRoleWithWebIdentity, unsigned: the token in the form
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        form = dict(urllib.parse.parse_qsl(body))
        asked = (form.get("Action"), form.get("RoleArn"), form.get("WebIdentityToken"))
        if asked != ("AssumeRoleWithWebIdentity", ROLE, TOKEN):
            denied = "<ErrorResponse><Error><Code>AccessDenied</Code></Error></ErrorResponse>"
            return self.answer(403, denied, "text/xml")
        self.answer(200, STS % (KEY, SECRET, SESSION, EXPIRES), "text/xml")

http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["AGENT_PORT"])), Agent).serve_forever()
"""
# The app's stand-in: prints each line of the answer as it arrives.
CLIENT: Final = """
import sys, urllib.request as u
with u.build_opener(u.ProxyHandler({})).open(sys.argv[1], timeout=20) as answer:
    for line in answer:
        print(line.decode(), end="", flush=True)
"""


def session_keys(variant: Variant) -> tuple[str, str, str]:
    return variant.access_key, f"secret-{variant.access_key}", f"session-{variant.access_key}"


@pytest.fixture(scope="module")
def fake_url(bridge: Bridge) -> Iterator[str]:
    """The fake Function URL, for REGION, that accepts only the keys the stand-ins issue."""
    keys = [arg for v in VARIANTS.values() for arg in ("--key", ":".join(session_keys(v)))]
    options = ["--host", bridge.gateway, "--port", "0", "--region", REGION, *keys]
    fake = spawn([sys.executable, str(ROOT / "tests" / "fake_function_url.py"), *options])
    try:
        yield f"http://{bridge.gateway}:{fake.port}"
    finally:
        fake.stop()


def security_options(rendered: Manifests, container: dict[str, Any]) -> list[str]:
    """`docker run` options for what the pod's and the container's securityContext and
    resources say."""
    pod = rendered.pod["spec"]["securityContext"]
    context = container["securityContext"]
    options = ["--user", f"{context['runAsUser']}:{context['runAsGroup']}"]
    options += ["--group-add", str(pod["fsGroup"])]
    assert context["readOnlyRootFilesystem"] is True
    options.append("--read-only")
    assert context["allowPrivilegeEscalation"] is False
    options += ["--security-opt", "no-new-privileges"]
    options += [f"--cap-drop={capability}" for capability in context["capabilities"]["drop"]]
    # RuntimeDefault: the runtime's own profile, which Docker applies unless told otherwise.
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    limits = container["resources"]["limits"]
    memory = f"{int(mebibytes(limits['memory']))}m"
    options += ["--memory", memory, "--memory-swap", memory]  # no swap, as on a kubelet's node
    if "cpu" in limits:
        options += ["--cpus", str(cores(limits["cpu"]))]
    return options


@dataclass(frozen=True)
class Pod:
    holder: str  # owns the network namespace; the credential stand-ins run in it
    proxy: str
    variant: Variant
    rendered: Manifests

    def run_app(self, image: str, url: str) -> subprocess.CompletedProcess[str]:
        return docker(*self.app_command(image, url), check=False)

    def app_command(self, image: str, url: str) -> list[str]:
        """A container of the pod, as the app runs, that fetches `url` with python's urllib."""
        options = security_options(self.rendered, self.rendered.app)
        network = f"container:{self.holder}"
        base = ["run", "--rm", "--network", network, *options, "--entrypoint", "python", image]
        return [*base, "-c", CLIENT, url]

    @property
    def ip(self) -> str:
        """The pod's IP: the holder's address on the bridge."""
        networks = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        return docker("inspect", "--format", networks, self.holder).stdout.strip()

    def get(self, port: int, path: str, timeout: float) -> tuple[int, bytes]:
        """GET http://<pod IP>:port/path from this host, as the kubelet and Prometheus do; no
        proxy in between (the kubelet's probes ignore HTTP_PROXY too)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://{self.ip}:{port}{path}", timeout=timeout) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
        except OSError:
            return 0, b""  # not listening (yet)

    def probe(self, kind: str) -> bool:
        """The kubelet's httpGet probe: passed if the answer is 200 to 399."""
        port, path = probe_request(self.rendered.proxy, kind)
        status, _ = self.get(port, path, self.rendered.proxy[kind]["timeoutSeconds"])
        return 200 <= status < 400


def token_folder(root: Path, variant: Variant, group: int) -> Path:
    """The projected token as the kubelet leaves it with an fsGroup: mode 0640, owned by root
    and the pod's fsGroup."""
    folder = root / variant.source
    folder.mkdir()
    token = folder / variant.token_file
    token.write_text(f"token-for-{variant.source}")
    os.chown(token, 0, group)
    token.chmod(0o640)
    return folder


def start_pod(name: str, image: str, bridge: Bridge, fake_url: str, tokens: Path) -> Pod:
    variant, rendered = VARIANTS[name], manifests(name)
    proxy = rendered.proxy
    folder = token_folder(tokens, variant, rendered.pod["spec"]["securityContext"]["fsGroup"])
    webhook = variant.environment(rendered)
    agent = {
        "AGENT_KEY": ":".join(session_keys(variant)),
        "AGENT_TOKEN": (folder / variant.token_file).read_text(),
        "AGENT_PORT": str(AGENT_PORT),
        "AGENT_ROLE_ARN": webhook.get("AWS_ROLE_ARN", ""),
    }
    holder = f"lup-k8s-{TOKEN}-{name}"
    docker(
        "run", "--detach", "--name", holder, "--network", bridge.name,
        "--read-only", "--user", "65534:65534", "--cap-drop=ALL",
        *[arg for key, value in agent.items() for arg in ("--env", f"{key}={value}")],
        "--entrypoint", "python", image, "-c", AGENT,
    )  # fmt: skip
    environment = {**rendered.environment(proxy), **webhook}
    routes = json.loads(environment[env_name("routes")])
    environment[env_name("routes")] = json.dumps([{**r, "url": fake_url} for r in routes])
    docker(
        "run", "--detach", "--name", f"{holder}-proxy", "--network", f"container:{holder}",
        *security_options(rendered, proxy),
        "--volume", f"{folder}:{variant.mount}:ro",
        *[arg for key, value in environment.items() for arg in ("--env", f"{key}={value}")],
        proxy["image"],
    )  # fmt: skip
    return Pod(holder, f"{holder}-proxy", variant, rendered)


@pytest.fixture(scope="module")
def pods(
    image: str, bridge: Bridge, fake_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Pod]]:
    """One pod per credential variant, started at once; each ready when its startup probe
    passes, as the kubelet would start the app then."""
    started: dict[str, Pod] = {}
    tokens = tmp_path_factory.mktemp("tokens")
    tokens.chmod(0o755)
    try:
        for name in VARIANTS:
            started[name] = start_pod(name, image, bridge, fake_url, tokens)
        for pod in started.values():
            wait_started(pod)
        yield started
    finally:
        for pod in started.values():
            docker("rm", "--force", pod.proxy, pod.holder, check=False)


def wait_started(pod: Pod) -> None:
    """The startup probe, on the kubelet's schedule (periodSeconds, up to failureThreshold)."""
    probe = pod.rendered.proxy["startupProbe"]
    for _ in range(probe["failureThreshold"]):
        if pod.probe("startupProbe"):
            return
        assert state(pod.proxy)["Status"] == "running", output(pod.proxy)
        time.sleep(probe["periodSeconds"])
    raise AssertionError(f"{pod.proxy}: the startup probe never passed:\n{output(pod.proxy)}")


def assert_signed_with(body: str, variant: Variant) -> None:
    """The fake echoes only what it verified (signature, session token, expiry): check that it
    was the variant's temporary key, for the pod's region."""
    echo = json.loads(body)
    assert (echo["access_key"], echo["region"], echo["raw_path"]) == (
        variant.access_key,
        REGION,
        "/42",
    )
    headers = {name.lower(): value for name, value in echo["headers"]}
    assert headers["x-amz-security-token"] == session_keys(variant)[2]


# --- the tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_probes_pass_as_the_manifests_run_them(pods: dict[str, Pod], variant: str) -> None:
    pod = pods[variant]
    for kind in PROBES:
        assert pod.probe(kind), f"{kind}:\n{output(pod.proxy)}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_app_calls_it_on_loopback_and_it_signs_with_the_pods_identity(
    image: str, pods: dict[str, Pod], variant: str
) -> None:
    pod = pods[variant]
    port = pod.rendered.environment(pod.rendered.proxy)[env_name("port")]
    prefix = json.loads(pod.rendered.environment(pod.rendered.proxy)[env_name("routes")])[0]
    called = pod.run_app(image, f"http://127.0.0.1:{port}{prefix['prefix']}/42")
    assert called.returncode == 0, called.stderr
    assert_signed_with(called.stdout, pod.variant)
    ready = pod.run_app(image, f"http://127.0.0.1:{port}/_proxy/ready")
    [identity] = json.loads(ready.stdout)["identities"]
    assert (identity["source"], identity["usable"]) == (pod.variant.source, True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_prometheus_scrapes_the_admin_listener_which_is_all_the_pods_ip_answers(
    image: str, pods: dict[str, Pod], variant: str
) -> None:
    pod = pods[variant]
    environment = pod.rendered.environment(pod.rendered.proxy)
    port = int(environment[env_name("port")])
    prefix = json.loads(environment[env_name("routes")])[0]["prefix"]
    for _ in range(3):
        called = pod.run_app(image, f"http://127.0.0.1:{port}{prefix}/scraped")
        assert called.returncode == 0, called.stderr
    annotations = pod.rendered.pod["metadata"]["annotations"]
    admin = int(annotations["prometheus.io/port"])
    status, body = pod.get(admin, annotations["prometheus.io/path"], timeout=5)
    assert status == 200
    samples = parse(body.decode())
    assert value(samples, f"{P}_requests_total", route=prefix, method="GET", status="2xx") >= 3
    # The pod's temporary keys: their expiry, an hour or so ahead.
    assert value(samples, f"{P}_credentials_expire_in_seconds", identity="default") > 60
    status, body = pod.get(admin, f"{prefix}/42", timeout=5)
    assert status == 404 and json.loads(body)["error"] == "no_route", "it never forwards"
    assert pod.get(port, "/_proxy/health", timeout=2)[0] == 0, "the signing listener: loopback"


@pytest.mark.parametrize("variant", VARIANTS)
def test_read_only_unprivileged_and_within_its_memory(pods: dict[str, Pod], variant: str) -> None:
    """What the kernel says of the proxy's process, and what it costs at rest; the log says
    where it listens and has no error."""
    pod = pods[variant]
    status = docker("exec", pod.proxy, "cat", "/proc/1/status").stdout
    fields = dict(re.findall(r"^(\w+):\s+(.*)$", status, re.M))
    assert fields["Uid"].split() == ["1000"] * 4
    assert fields["CapEff"] == fields["CapPrm"] == "0" * 16, "no capabilities at all"
    assert fields["NoNewPrivs"] == "1" and fields["Seccomp"] == "2", "no-new-privs, seccomp filter"
    resting = int(fields["VmRSS"].split()[0]) / 1024
    requested = mebibytes(pod.rendered.proxy["resources"]["requests"]["memory"])
    assert resting <= RESTING_RSS_MIB <= requested
    written = docker("exec", pod.proxy, "touch", "/tmp/x", check=False)
    assert written.returncode != 0 and "Read-only file system" in written.stderr

    records = log_records(pod.proxy)
    messages = [str(record["message"]) for record in records]
    assert any("listening on http://127.0.0.1:8080 (event loop: uvloop)" in m for m in messages)
    warnings = [str(r["message"]) for r in records if r["level"] in ("warning", "error")]
    # The one expected: the fake Function URL speaks plain http (a real one, https).
    assert [w for w in warnings if "signed requests" not in w] == [], messages
    assert all("over plain http to" in w for w in warnings), warnings
    assert "Traceback" not in output(pod.proxy)


def test_sigterm_lets_the_apps_last_request_finish_within_the_grace_period(
    image: str, pods: dict[str, Pod]
) -> None:
    """The kubelet sends the sidecar SIGTERM once the app has exited, and kills it when
    terminationGracePeriodSeconds run out: the proxy drains and exits 0 well within it.
    Last of the tests on this pod: it stops it."""
    pod = pods["pod-identity"]
    grace = pod.rendered.pod["spec"]["terminationGracePeriodSeconds"]
    prefix = json.loads(pod.rendered.environment(pod.rendered.proxy)[env_name("routes")])[0]
    url = f"http://127.0.0.1:8080{prefix['prefix']}/slow-stream/{TICKS}/1"
    app = subprocess.Popen(
        ["docker", *pod.app_command(image, url)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert app.stdout is not None
        first = app.stdout.readline()  # the stream has begun: the request is in flight
        started = time.monotonic()
        stop = docker("stop", "--time", str(grace), pod.proxy, timeout=grace + 15)
        rest, errors = app.communicate(timeout=30)
    finally:
        if app.poll() is None:
            app.kill()
    assert stop.returncode == 0 and app.returncode == 0, errors
    assert first + rest == "tick\n" * TICKS
    assert time.monotonic() - started < grace
    stopped = state(pod.proxy)
    assert (stopped["ExitCode"], stopped["OOMKilled"]) == (0, False)
    messages = [str(record["message"]) for record in log_records(pod.proxy)]
    assert any("shutting down" in m and "1 in-flight" in m for m in messages), messages
