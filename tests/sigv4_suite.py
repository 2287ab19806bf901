"""Reader for AWS's official SigV4 test suite, vendored in tests/sigv4-test-suite (NOTICE.txt)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

SUITE = Path(__file__).resolve().parent / "sigv4-test-suite"


@dataclass
class Case:
    name: str
    context: dict[str, Any]
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    canonical_request: str
    string_to_sign: str
    signature: str

    @property
    def when(self) -> datetime:
        return datetime.fromisoformat(self.context["timestamp"].replace("Z", "+00:00"))


def _parse_request(raw: bytes) -> tuple[str, str, list[tuple[str, str]], bytes]:
    head, _, body = raw.partition(b"\n\n")
    lines = head.decode("utf-8").split("\n")
    method, rest = lines[0].split(" ", 1)
    target = rest.rsplit(" ", 1)[0]
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")  # obsolete line folding
        else:
            name, _, value = line.partition(":")
            headers.append((name, value))
    return method, target, headers, body


def load_cases() -> list[Case]:
    """Every case that applies to Lambda: the `-unnormalized` ones follow S3's rules."""
    cases = []
    for folder in sorted(SUITE.iterdir()):
        if not folder.is_dir():
            continue
        context = json.loads((folder / "context.json").read_text())
        if not context.get("normalize", True):
            continue
        method, target, headers, body = _parse_request((folder / "request.txt").read_bytes())
        cases.append(
            Case(
                name=folder.name,
                context=context,
                method=method,
                target=target,
                headers=headers,
                body=body,
                canonical_request=(folder / "header-canonical-request.txt").read_text(),
                string_to_sign=(folder / "header-string-to-sign.txt").read_text(),
                signature=(folder / "header-signature.txt").read_text().strip(),
            )
        )
    return cases


def canonical_headers(headers: list[tuple[str, str]]) -> tuple[str, str]:
    """(canonical header block, signed-header list) for any headers, as SigV4 defines it: names
    lowered and sorted, values trimmed with inner runs of white space folded, repeated names
    joined with commas in the order given. The test side of proxy.signing.proxy_headers, which
    only ever signs the proxy's own fixed set."""
    merged: dict[str, list[str]] = {}
    for name, value in headers:
        merged.setdefault(name.lower(), []).append(" ".join(value.split()))
    names = sorted(merged)
    block = "".join(f"{name}:{','.join(merged[name])}\n" for name in names)
    return block, ";".join(names)
