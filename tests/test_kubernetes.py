"""deploy/kubernetes/ agrees with the Kubernetes API schemas and with the code, without a cluster.

Each variant (and the base) is rendered as kustomize renders it (tests/kubernetes_files.py) and
validated with kubernetes-validate against the API schemas it ships, strictly (an unknown field is
an error). Then the pod is checked against the code: settings, reserved paths, port, the drain's
budget, the image's user and command, the bench's memory figures. tests/test_kubernetes_engine.py
runs the proxy's container as the pod would, with a real Docker engine.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Final

import kubernetes_validate
import pytest

from proxy.access import is_loopback
from proxy.admin import SERVED
from proxy.app import HEALTH_PATH, METRICS_PATH, create_app
from proxy.lifetime import FIRST_RESOLUTION_WAIT
from proxy.settings import (
    CONFIG_ENV,
    IdentityOptions,
    MiB,
    Settings,
    env_name,
    load_settings,
)
from tests.conftest import ROOT
from tests.container_files import expand, final, image_port, service
from tests.kubernetes_files import (
    APP,
    DEPLOY,
    DOCS,
    PROBES,
    RESTING_RSS_MIB,
    VARIANTS,
    WAITING_UPLOAD_KIB,
    Manifests,
    cores,
    load_documents,
    manifests,
    mebibytes,
    probe_request,
)

# The oldest Kubernetes these manifests run on with its default feature gates (native sidecars:
# 1.29; the preStop sleep action: 1.30), and the newest the validator ships schemas for.
KUBERNETES_VERSIONS: Final = ("1.30", "1.37")
READY_PATH: Final = "/_proxy/ready"


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """What the proxy loads in the pod: the image's ENV, the ConfigMap, the container's env."""
    for key, value in manifests("base").proxy_settings_environment().items():
        monkeypatch.setenv(key, value)
    return load_settings()


# --- the schemas ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("folder", ["base", *VARIANTS])
def test_every_resource_validates_against_the_kubernetes_schemas(folder: str, version: str) -> None:
    documents = manifests(folder).documents
    assert documents
    for document in documents:
        kubernetes_validate.validate(document, version, strict=True)


def test_the_validator_refuses_an_unknown_field() -> None:
    """Strict means strict: a misspelt field is an error, not silently dropped."""
    deployment = copy.deepcopy(manifests("base").one("Deployment"))
    init = deployment["spec"]["template"]["spec"]["initContainers"][0]
    init["readOnlyRootFileSystem"] = init.pop("securityContext")["readOnlyRootFilesystem"]
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFileSystem"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def kubectl_kustomize(folder: Path) -> Manifests:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl here: kustomize itself is not run")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60, check=False
    )
    assert rendered.returncode == 0, rendered.stderr
    return Manifests(load_documents(rendered.stdout))


@pytest.mark.parametrize("folder", ["base", *VARIANTS])
def test_kubectl_kustomize_renders_what_the_tests_check(folder: str) -> None:
    def key(document: dict[str, Any]) -> tuple[str, str]:
        return document["kind"], document["metadata"]["name"]

    rendered = kubectl_kustomize(DEPLOY / folder).documents
    assert sorted(rendered, key=key) == sorted(manifests(folder).documents, key=key)


def test_the_overlay_example_renders_as_the_docs_say(tmp_path: Path) -> None:
    """docs/kubernetes.md's own overlay, beside a copy of the shipped folders: the image, the
    namespace and the routes it sets, and the image its commands build and push."""
    docs = DOCS.read_text()
    [overlay] = [
        block for block in re.findall(r"```yaml\n(.*?)```", docs, re.S) if "images:" in block
    ]
    shutil.copytree(DEPLOY, tmp_path / "kubernetes")
    (tmp_path / "kubernetes" / "mine").mkdir()
    (tmp_path / "kubernetes" / "mine" / "kustomization.yaml").write_text(overlay)
    rendered = kubectl_kustomize(tmp_path / "kubernetes" / "mine")
    assert {document["metadata"]["namespace"] for document in rendered.documents} == {"shop"}
    image = rendered.proxy["image"]
    assert f"docker build -t {image} ." in docs and f"docker push {image}" in docs
    routes = json.loads(rendered.environment(rendered.proxy)[env_name("routes")])
    assert [route["prefix"] for route in routes] == ["/orders"]
    for entry in rendered.documents:
        kubernetes_validate.validate(entry, KUBERNETES_VERSIONS[-1], strict=True)


# --- the pod and the code -----------------------------------------------------------------------


def test_every_proxy_variable_is_a_setting() -> None:
    known = {env_name(name) for name in Settings.model_fields} | {CONFIG_ENV}
    assert set(manifests("base").proxy_settings_environment()) <= known
    files = [*sorted(DEPLOY.rglob("*.yaml")), DOCS]  # comments and the documentation included
    for path in files:
        mentioned = set(re.findall(r"\bLAMBDA_URL_PROXY_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
        assert mentioned <= known, f"{path.name}: not settings: {sorted(mentioned - known)}"


def test_the_configmap_loads_and_every_route_compiles(settings: Settings) -> None:
    assert settings.host == "127.0.0.1", "only the pod's own containers reach it"
    assert settings.routes and all((r.url or "").startswith("https://") for r in settings.routes)
    create_app(settings)  # every route compiles: the region comes from the Function URL's host
    env = [variable["name"] for variable in manifests("base").proxy["env"]]
    assert env_name("host") in env, "`env`, not the ConfigMap: an edit there cannot widen it"


def test_the_proxy_is_a_native_sidecar_that_starts_before_the_app() -> None:
    pod = manifests("base").pod["spec"]
    proxy = manifests("base").proxy
    assert proxy["restartPolicy"] == "Always", "an init container that keeps running"
    assert [entry["name"] for entry in pod["containers"]] == [APP]
    startup = proxy["startupProbe"]  # the app starts once it passes
    window = startup["periodSeconds"] * startup["failureThreshold"]
    assert window >= FIRST_RESOLUTION_WAIT + 10, "credentials' first wait, python's start-up"


def test_probes_ask_the_admin_listener_on_the_pods_ip(settings: Settings) -> None:
    """The kubelet's httpGet probes connect to the pod's IP, which the loopback listener does not
    answer: they ask the admin listener, bound to every address of the pod, on its port."""
    proxy = manifests("base").proxy
    assert settings.admin_address is not None, "LAMBDA_URL_PROXY_ADMIN_LISTEN in the pod"
    host, admin_port = settings.admin_address
    assert host == "0.0.0.0" and is_loopback(settings.host), "admin on the pod's IP, not the rest"
    paths = {}
    for probe in PROBES:
        port, path = probe_request(proxy, probe)
        assert port == admin_port
        paths[probe] = path
    assert paths == {
        "startupProbe": HEALTH_PATH,
        "livenessProbe": HEALTH_PATH,
        "readinessProbe": READY_PATH,
    }
    assert set(paths.values()) <= set(SERVED), "what the admin listener serves"


def test_the_port_agrees_everywhere(settings: Settings) -> None:
    base = manifests("base")
    port = settings.port
    assert port == image_port(), "the image's port: the same number in every guide"
    api_url = base.environment(base.app)["API_URL"]
    assert api_url == f"http://127.0.0.1:{port}", "the app calls it in its own pod"
    assert settings.admin_address is not None
    admin_port = settings.admin_address[1]
    assert int(base.pod["metadata"]["annotations"]["prometheus.io/port"]) == admin_port
    declared = [(p["name"], p["containerPort"]) for p in base.proxy["ports"]]
    assert declared == [("admin", admin_port)], "the loopback listener has no port on the pod's IP"


def test_the_grace_period_covers_the_app_then_the_proxys_drain(settings: Settings) -> None:
    """The kubelet stops a native sidecar only after the app has exited, all within
    terminationGracePeriodSeconds: the app's preStop, its own shutdown, then the proxy's drain."""
    base = manifests("base")
    grace = base.pod["spec"]["terminationGracePeriodSeconds"]
    pre_stop = base.app["lifecycle"]["preStop"]["sleep"]["seconds"]
    last_request = re.search(r"--max-time (\d+)", " ".join(base.app["command"]))
    assert last_request, "the example app bounds its requests"
    assert "trap 'exit 0' TERM" in base.app["command"][-1], "the app exits on SIGTERM"
    budget = pre_stop + int(last_request[1]) + settings.shutdown_grace
    assert grace > budget
    assert "lifecycle" not in base.proxy, "no preStop: the sidecar's order does its work"


def test_the_security_context_is_the_images_user_and_nothing_more() -> None:
    base = manifests("base")
    user = final().last("USER")
    assert user is not None
    uid, _, gid = expand(user.text, final().args()).partition(":")
    pod = base.pod["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["fsGroup"] == int(gid), "the AWS token, readable by the proxy"
    proxy = base.proxy["securityContext"]
    assert (proxy["runAsUser"], proxy["runAsGroup"]) == (int(uid), int(gid))
    for entry in (base.proxy, base.app):
        context = entry["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False


def test_the_image_and_its_command_are_the_shipped_ones() -> None:
    proxy = manifests("base").proxy
    assert proxy["image"] == service("lambda-url-proxy")["image"], "what docker-compose builds"
    assert "command" not in proxy and "args" not in proxy, "the entrypoint is the proxy itself"


def test_resources_are_sized_from_the_bench(settings: Settings) -> None:
    """Requests cover the proxy at rest; the limit covers the worst the bench measured under a
    flood of uploads, scaled to the ConfigMap's max_buffered_bodies and max_connections."""
    bench = (ROOT / "bench" / "README.md").read_text()
    resting = [
        float(rss) for pair in re.findall(r"RSS (\d+\.\d) → (\d+\.\d) MiB", bench) for rss in pair
    ]
    assert resting and max(resting) <= RESTING_RSS_MIB
    assert f"(at most {WAITING_UPLOAD_KIB})" in bench

    # Bodies may briefly be held twice (aiohttp joins a body's pieces: bench/README.md).
    per_process = (
        RESTING_RSS_MIB
        + 2 * settings.max_buffered_bodies / MiB
        + settings.max_connections * WAITING_UPLOAD_KIB / 1024
    )
    bound = settings.workers * per_process  # the probes are the kubelet's: no process here
    resources = manifests("base").proxy["resources"]
    assert mebibytes(resources["limits"]["memory"]) >= bound
    assert mebibytes(resources["requests"]["memory"]) >= RESTING_RSS_MIB
    assert cores(resources["limits"]["cpu"]) >= settings.workers, "a core per process"


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_gives_the_pod_its_service_account(variant: str) -> None:
    rendered = manifests(variant)
    account = rendered.one("ServiceAccount")
    assert account["metadata"]["name"] == rendered.pod["spec"]["serviceAccountName"]
    annotations = account["metadata"].get("annotations", {})
    if variant == "irsa":
        IdentityOptions(role_arn=annotations["eks.amazonaws.com/role-arn"])  # a role's ARN
    else:  # Pod Identity: the association is made with the EKS API, not on the ServiceAccount
        assert "eks.amazonaws.com/role-arn" not in annotations
    skipped = rendered.pod["metadata"]["annotations"]["eks.amazonaws.com/skip-containers"]
    assert skipped.split(",") == [APP], "only the proxy gets the AWS identity"


def test_the_scrape_annotations_name_the_metrics_endpoint() -> None:
    annotations = manifests("base").pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == METRICS_PATH
    assert METRICS_PATH in SERVED, "the admin listener's, on the annotated port"


def test_the_readme_points_here_where_it_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    where = readme[readme.index("## Where it runs") :]
    assert "(docs/kubernetes.md)" in where[: where.index("\n## ", 1)]
