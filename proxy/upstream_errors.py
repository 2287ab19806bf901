"""How talking to an upstream fails: the exceptions the upstream client raises.

A module of their own so that they stay interpreted when the request path is compiled
(setup.py): mypyc cannot compile a subclass of ConnectionError.
"""

from __future__ import annotations


class ConnectFailed(Exception):
    """The connection could not be made (refused, DNS, TLS, a proxy's tunnel): no byte of the
    request went out, so an idempotent request may be tried again (unless `tls`)."""

    def __init__(self, cause: OSError | str, tls: bool = False) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.tls = tls


class UpstreamBroken(ConnectionError):
    """The connection ended (or broke) before the answer did."""


class Malformed(Exception):
    """The answer is not HTTP the proxy will pass on."""
