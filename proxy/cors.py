"""Which browser origins may use the proxy, and the CORS headers they get.

Function URLs with AWS_IAM auth cannot answer an unsigned preflight, so the proxy answers it.
Independently of CORS, a request whose Origin is a website beyond this machine is refused unless
allowed: any page the developer visits could otherwise make the browser send requests here, and
the proxy would sign them with the developer's AWS identity.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from multidict import istr

from proxy.errors import OriginNotAllowed

if TYPE_CHECKING:  # for the types only: `check` runs without aiohttp
    from aiohttp.web import BaseRequest

# "*" in cors_origins: any origin on this machine, whatever the port.
LOOPBACK_ORIGIN: Final = re.compile(
    r"https?://(?:localhost|[a-z0-9-]+\.localhost|127(?:\.\d{1,3}){3}|\[::1\])(?::\d{1,5})?"
)
# istr: a name looked up in the request's headers without a case-folded copy of it, every request
SEC_FETCH_SITE: Final = istr("Sec-Fetch-Site")
ORIGIN: Final = istr("Origin")
REQUEST_METHOD: Final = istr("Access-Control-Request-Method")
VARY_ORIGIN: Final = b"Vary: Origin\r\n"
ALLOWED_METHODS: Final = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
MAX_AGE: Final = "600"
# Headers a page can read without being told (Fetch standard, CORS-safelisted response headers).
SAFELISTED: Final = frozenset(
    {
        "cache-control",
        "content-language",
        "content-length",
        "content-type",
        "expires",
        "last-modified",
        "pragma",
    }
)


def is_loopback_origin(origin: str) -> bool:
    return LOOPBACK_ORIGIN.fullmatch(origin) is not None


class CorsPolicy:
    def __init__(self, origins: Iterable[str]) -> None:
        origins = list(origins)
        self.enabled = bool(origins)
        self.any_loopback = "*" in origins
        self.origins = frozenset(origin.rstrip("/") for origin in origins if origin != "*")

    def allows(self, origin: str) -> bool:
        """May a page from `origin` read the proxy's answers (CORS)?"""
        return origin in self.origins or (self.any_loopback and is_loopback_origin(origin))

    def check_origin(self, request: BaseRequest) -> str | None:
        """The request's Origin, refused if it is a remote website that is not allowed; and a
        request a page of another site made without saying its origin refused too."""
        headers = request.headers
        origin = headers.get(ORIGIN)
        if origin is None:
            # <img>, <script>, <link>, form GETs and no-cors fetches carry no Origin; every
            # current browser marks those from another site with Sec-Fetch-Site. Requests
            # without it (curl, dev-server proxies) and navigations ("none") pass.
            if headers.get(SEC_FETCH_SITE) == "cross-site":
                raise OriginNotAllowed(
                    "a page of another site made this request (Sec-Fetch-Site: cross-site) "
                    "without saying which: refused, since the proxy signs with your AWS "
                    "identity. Open the URL yourself, call the proxy through your dev server's "
                    "proxy, or fetch() it with CORS from an origin in cors_origins"
                )
            return None
        if self.allows(origin) or is_loopback_origin(origin):
            return origin
        raise OriginNotAllowed(
            f"requests from pages at {origin!r} are refused: the proxy signs with your AWS "
            "identity, so only pages on this machine may use it. To allow this origin, add it to "
            "cors_origins (--cors-origin)"
        )

    @staticmethod
    def is_preflight(request: BaseRequest) -> bool:
        return (
            request.method == "OPTIONS"
            and ORIGIN in request.headers
            and REQUEST_METHOD in request.headers
        )

    def preflight(self, request: BaseRequest, origin: str) -> bytes:
        """The header lines of the proxy's 204 answer to a preflight from `origin`."""
        if not self.allows(origin):
            raise OriginNotAllowed(
                f"CORS preflight from {origin!r} refused: it is not in cors_origins; add it "
                "(--cors-origin) to let that page call the proxy"
            )
        lines = (
            f"Access-Control-Allow-Origin: {origin}\r\n"
            "Access-Control-Allow-Credentials: true\r\n"
            f"Access-Control-Allow-Methods: {ALLOWED_METHODS}\r\n"
            f"Access-Control-Max-Age: {MAX_AGE}\r\n"
            "Vary: Origin, Access-Control-Request-Method, Access-Control-Request-Headers\r\n"
        )
        if requested := request.headers.get("Access-Control-Request-Headers"):
            lines += f"Access-Control-Allow-Headers: {requested}\r\n"
        return lines.encode("utf-8", "surrogateescape")

    def grant(self, request: BaseRequest, names: Iterable[str]) -> bytes:
        """The proxy's CORS header lines for an answer whose other headers are `names` (the
        function's own Access-Control-* already left out: headers.response_header_lines). Every
        answer varies with Origin, those to requests without one included: a cache must not
        give a page the answer made for no page (curl, a dev server's proxy), or for another
        page, nor the reverse."""
        origin = request.headers.get(ORIGIN)
        if origin is None or not self.allows(origin):
            return VARY_ORIGIN
        exposed = sorted({name for name in names if name.lower() not in SAFELISTED})
        lines = (
            f"Access-Control-Allow-Origin: {origin}\r\nAccess-Control-Allow-Credentials: true\r\n"
        )
        if exposed:
            lines += f"Access-Control-Expose-Headers: {', '.join(exposed)}\r\n"
        return lines.encode("utf-8", "surrogateescape") + VARY_ORIGIN
