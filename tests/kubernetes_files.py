"""deploy/kubernetes/, read as kustomize and the kubelet read it.

A small renderer for the kustomizations (only `resources`, files and folders, as they use:
anything else fails the test instead of being misread; tests/test_kubernetes.py checks it against
`kubectl kustomize` where kubectl is installed), and the parts of the pod that the checks of
tests/test_kubernetes.py and tests/test_kubernetes_engine.py read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

import yaml

from proxy.settings import ENV_PREFIX
from tests.conftest import ROOT
from tests.container_files import final

DEPLOY: Final = ROOT / "deploy" / "kubernetes"
DOCS: Final = ROOT / "docs" / "kubernetes.md"
VARIANTS: Final = ("pod-identity", "irsa")
PROXY: Final = "lambda-url-proxy"  # the sidecar's container name
APP: Final = "app"
# What the renderer understands of a kustomization.
KUSTOMIZATION_KEYS: Final = frozenset({"apiVersion", "kind", "resources"})
PROBES: Final = ("startupProbe", "readinessProbe", "livenessProbe")
# bench/README.md's figures, which size the proxy's memory (docs/kubernetes.md, "Resources"):
RESTING_RSS_MIB: Final = 72  # RSS at rest, streaming 1 GiB: 67.9 -> 68.5 MiB; 69.1 in the image
# with the metrics and the inspector (issue 15), measured by tests/test_kubernetes_engine.py
WAITING_UPLOAD_KIB: Final = 384  # what aiohttp reads of an upload waiting for room, at most


def load_documents(text: str) -> list[dict[str, Any]]:
    documents = [document for document in yaml.safe_load_all(text) if document is not None]
    assert all(isinstance(document, dict) for document in documents), text[:200]
    return documents


def render(folder: Path) -> list[dict[str, Any]]:
    """The resources `kubectl kustomize folder` lists, in the order of the kustomizations."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KUSTOMIZATION_KEYS
    assert not unknown, f"{folder}: {sorted(unknown)}: not understood by this test's renderer"
    documents: list[dict[str, Any]] = []
    for entry in kustomization["resources"]:
        path = (folder / entry).resolve()
        documents += render(path) if path.is_dir() else load_documents(path.read_text())
    names = [(document["kind"], document["metadata"]["name"]) for document in documents]
    assert len(names) == len(set(names)), f"{folder}: a resource twice: {names}"
    return documents


@dataclass(frozen=True)
class Manifests:
    """One folder of deploy/kubernetes/, rendered."""

    documents: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [document for document in self.documents if document["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if name is None or d["metadata"]["name"] == name]
        assert len(found) == 1, f"{len(found)} {kind} named {name or 'anything'}"
        return found[0]

    @property
    def pod(self) -> dict[str, Any]:
        """The Deployment's pod template."""
        template = self.one("Deployment")["spec"]["template"]
        assert isinstance(template, dict)
        return template

    @property
    def proxy(self) -> dict[str, Any]:
        """The sidecar: an init container, so that it starts first and stops last."""
        return container(self.pod["spec"].get("initContainers", []), PROXY)

    @property
    def app(self) -> dict[str, Any]:
        return container(self.pod["spec"]["containers"], APP)

    def environment(self, entry: dict[str, Any]) -> dict[str, str]:
        """A container's environment as the kubelet builds it: `envFrom` ConfigMaps, then
        `env`, which wins."""
        environment: dict[str, str] = {}
        for source in entry.get("envFrom", []):
            assert set(source) == {"configMapRef"}, f"envFrom {source}: not understood"
            configmap = self.one("ConfigMap", source["configMapRef"]["name"])
            environment.update(configmap["data"])
        for variable in entry.get("env", []):
            assert "value" in variable, f"env {variable}: only plain values are understood"
            environment[variable["name"]] = variable["value"]
        return environment

    def proxy_settings_environment(self) -> dict[str, str]:
        """The LAMBDA_URL_PROXY_* variables the proxy sees: the image's ENV, then the pod's."""
        environment = {**final().env(), **self.environment(self.proxy)}
        return {key: value for key, value in environment.items() if key.startswith(ENV_PREFIX)}


def container(entries: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [entry for entry in entries if entry["name"] == name]
    assert len(found) == 1, f"no single container {name!r} in {[e['name'] for e in entries]}"
    return found[0]


@cache
def manifests(folder: str) -> Manifests:
    """`base`, or one of VARIANTS."""
    return Manifests(render(DEPLOY / folder))


def probe_request(entry: dict[str, Any], probe: str) -> tuple[int, str]:
    """The port (a named one resolved, as the kubelet does) and path an httpGet probe asks for."""
    handler = entry[probe]
    assert set(handler) & {"exec", "httpGet", "tcpSocket", "grpc"} == {"httpGet"}, handler
    request = handler["httpGet"]
    assert set(request) <= {"path", "port"}, f"{request}: the kubelet's defaults are assumed"
    port = request["port"]
    if isinstance(port, str):
        [port] = [p["containerPort"] for p in entry.get("ports", []) if p.get("name") == port]
    assert isinstance(port, int) and isinstance(request["path"], str)
    return port, request["path"]


_QUANTITY: Final = re.compile(r"(\d+)(m|Mi|Gi)?")


def mebibytes(quantity: str) -> float:
    """A memory quantity as these manifests write them: 96Mi, 1Gi."""
    match = _QUANTITY.fullmatch(quantity)
    assert match and match[2] in ("Mi", "Gi"), f"memory {quantity!r}: write it in Mi or Gi"
    return int(match[1]) * (1024 if match[2] == "Gi" else 1)


def cores(quantity: str) -> float:
    """A CPU quantity: 100m, 1."""
    match = _QUANTITY.fullmatch(quantity)
    assert match and match[2] in (None, "m"), f"cpu {quantity!r}: write it in cores or m"
    return int(match[1]) / (1000 if match[2] == "m" else 1)
