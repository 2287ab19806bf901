"""requirements.lock, read: the runtime dependencies the image installs, pinned and hashed."""

from __future__ import annotations

import re
from functools import cache
from typing import Final

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import ROOT

LOCK: Final = ROOT / "requirements.lock"
# The image's platforms (python:3.11-slim on amd64 and arm64), as markers see them.
IMAGE_PLATFORMS: Final = tuple(
    {
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "platform_machine": machine,
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "python_version": "3.11",
        "python_full_version": "3.11.0",
        "extra": "",
    }
    for machine in ("x86_64", "aarch64")
)


@cache
def locked() -> dict[str, Requirement]:
    """The lock's entries by canonical name: `name==version ; marker`, hashes left out."""
    text = re.sub(r"\\\n", " ", LOCK.read_text())  # join the continued lines
    entries: dict[str, Requirement] = {}
    for line in text.splitlines():
        line = re.sub(r"--hash=\S+", "", line.partition("#")[0]).strip()
        if line:
            requirement = Requirement(line)
            entries[canonicalize_name(requirement.name)] = requirement
    return entries


def pinned(requirement: Requirement) -> Version:
    [spec] = requirement.specifier
    assert spec.operator == "==", f"{requirement}: the lock pins with =="
    return Version(spec.version)


def locked_here() -> dict[str, Version]:
    """The locked versions for this machine's platform (the markers evaluated here)."""
    return {
        name: pinned(entry)
        for name, entry in locked().items()
        if entry.marker is None or entry.marker.evaluate()
    }
