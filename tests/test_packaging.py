"""requirements.lock, the runtime dependencies the image installs, agrees with pyproject.toml and
with what the code imports; this venv runs those versions; the build warns of nothing."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Final

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import ROOT
from tests.lockfile import IMAGE_PLATFORMS, LOCK, locked, locked_here, pinned


def on_image_platforms(marker: Marker | None) -> bool:
    return marker is None or any(marker.evaluate(dict(env)) for env in IMAGE_PLATFORMS)


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(text) for text in project["dependencies"]]


def imported_distributions() -> set[str]:
    """The distributions that proxy/ imports from (its own modules and the stdlib left out)."""
    modules: set[str] = set()
    for path in (ROOT / "proxy").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.partition(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.partition(".")[0])
    modules -= {"proxy", *sys.stdlib_module_names}
    owners = importlib.metadata.packages_distributions()
    missing = sorted(module for module in modules if module not in owners)
    assert not missing, f"imported but not installed: {missing}"
    return {canonicalize_name(dist) for module in modules for dist in owners[module]}


def test_the_lock_says_how_to_regenerate_it() -> None:
    head = LOCK.read_text().splitlines()[:2]
    assert any("uv pip compile pyproject.toml" in line for line in head), head
    assert all(line.startswith("#") for line in head)


def test_the_lock_pins_every_runtime_dependency_within_its_specifier() -> None:
    for requirement in runtime_requirements():
        entry = locked().get(canonicalize_name(requirement.name))
        assert entry is not None, f"{requirement}: not in requirements.lock: regenerate it"
        version = pinned(entry)
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements.lock has {entry.name}=={version}, pyproject.toml wants {requirement}:"
            " regenerate the lock"
        )
        for env in IMAGE_PLATFORMS:
            wanted = requirement.marker is None or requirement.marker.evaluate(dict(env))
            installed = entry.marker is None or entry.marker.evaluate(dict(env))
            assert wanted == installed, f"{requirement} vs the lock's {entry} on {env}"


def test_every_locked_package_has_hashes_and_belongs_to_the_runtime() -> None:
    text = LOCK.read_text()
    for name, entry in locked().items():
        block = re.search(rf"(?mi)^{re.escape(entry.name)}==.*?(?=^\S|\Z)", text, re.S)
        assert block and "--hash=sha256:" in block[0], f"{name}: no hash"
    assert "pytest" not in locked() and "mypy" not in locked(), "test tools stay out of the image"


@pytest.mark.slow
def test_the_runtime_imports_only_what_pyproject_declares() -> None:
    declared = {canonicalize_name(r.name) for r in runtime_requirements()}
    undeclared = imported_distributions() - declared
    assert not undeclared, f"proxy/ imports these without declaring them: {sorted(undeclared)}"
    assert imported_distributions() <= set(locked()), "imported, so locked too"


def test_this_venv_runs_the_locked_versions() -> None:
    """What CI tests is what the image ships: .ci/run installs the lock before the test tools."""
    wrong = {}
    for name, version in locked_here().items():
        try:
            installed = Version(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[name] = f"{installed} installed, {version} locked"
    assert not wrong, f"run `pip install --require-hashes -r requirements.lock`: {wrong}"


def test_the_lock_holds_everything_its_packages_need() -> None:
    """Each locked package's own requirements (read from its installed metadata) are locked too:
    pip's --require-hashes in the image build refuses anything else."""
    for name in locked():
        requires = importlib.metadata.requires(name) or []
        for text in requires:
            requirement = Requirement(text)
            if on_image_platforms(requirement.marker):
                assert canonicalize_name(requirement.name) in locked(), f"{name} needs {text}"


# A Python warning as printed: "path/to/module.py:123: SomeCategory: message".
PYTHON_WARNING: Final = re.compile(r"^.*\.py:\d+: \w+: .*$", re.M)


def pip(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "pip", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("editable", [False, True], ids=["wheel", "editable"])
def test_the_build_warns_of_nothing(editable: bool, tmp_path: Path) -> None:
    """The image builds a wheel, developers and CI an editable install. Verbose, because
    setuptools' warnings reach pip's quiet output only in newer pips."""
    if editable:
        # A scratch venv without pip of its own: this venv's pip installs into it.
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", tmp_path], check=True)
        output = pip(
            "--python",
            str(tmp_path / "bin" / "python"),
            "install",
            "-v",
            "--no-deps",
            "-e",
            str(ROOT),
        )
    else:
        output = pip("wheel", "-v", "--no-deps", "-w", str(tmp_path), str(ROOT))
    assert not PYTHON_WARNING.findall(output), "\n".join(PYTHON_WARNING.findall(output))


@pytest.mark.slow
def test_the_wheel_ships_the_inspector_page(tmp_path: Path) -> None:
    """The image installs the wheel: the inspector's page (issue #15) must be in it, every
    file the page names included, and nothing fetched from elsewhere."""
    pip("wheel", "--no-deps", "-w", str(tmp_path), str(ROOT))
    (wheel,) = tmp_path.glob("lambda_url_proxy-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if name.startswith("proxy/static/")}
        page = archive.read("proxy/static/inspector.html").decode()
    source = {f"proxy/static/{path.name}" for path in (ROOT / "proxy" / "static").iterdir()}
    assert shipped == source
    named = set(re.findall(r'(?:src|href)="/_proxy/([^"]+)"', page))
    assert {f"proxy/static/{name}" for name in named} <= shipped
    assert named == {"inspector.js", "inspector.css", "favicon.svg"}
    assert not re.search(r'(?:src|href)="(?!/_proxy/)', page)  # no CDN, nothing elsewhere
