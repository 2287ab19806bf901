"""Which browser origins may use the proxy, and the CORS headers they get.

Function URLs with AWS_IAM auth cannot answer an unsigned preflight, so the proxy answers it.
Independently of CORS, a request whose Origin is a website beyond this machine is refused unless
allowed: any page the developer visits could otherwise make the browser send requests here, and
the proxy would sign them with the developer's AWS identity.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from aiohttp import hdrs, web

from proxy.errors import OriginNotAllowed

# "*" in cors_origins: any origin on this machine, whatever the port.
LOOPBACK_ORIGIN: Final = re.compile(
    r"https?://(?:localhost|[a-z0-9-]+\.localhost|127(?:\.\d{1,3}){3}|\[::1\])(?::\d{1,5})?"
)
SEC_FETCH_SITE: Final = "Sec-Fetch-Site"
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

    def check_origin(self, request: web.BaseRequest) -> str | None:
        """The request's Origin, refused if it is a remote website that is not allowed; and a
        request a page of another site made without saying its origin refused too."""
        headers = request.headers
        origin = headers.get(hdrs.ORIGIN)
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
    def is_preflight(request: web.BaseRequest) -> bool:
        return (
            request.method == hdrs.METH_OPTIONS
            and hdrs.ORIGIN in request.headers
            and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
        )

    def preflight(self, request: web.BaseRequest, origin: str) -> web.Response:
        if not self.allows(origin):
            raise OriginNotAllowed(
                f"CORS preflight from {origin!r} refused: it is not in cors_origins; add it "
                "(--cors-origin) to let that page call the proxy"
            )
        headers = {
            hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: origin,
            hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS: "true",
            hdrs.ACCESS_CONTROL_ALLOW_METHODS: ALLOWED_METHODS,
            hdrs.ACCESS_CONTROL_MAX_AGE: MAX_AGE,
            hdrs.VARY: "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        }
        if requested := request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS):
            headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = requested
        return web.Response(status=204, headers=headers)

    def apply(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        """Replace whatever CORS headers the function sent with the proxy's, on every answer
        (called before each answer is prepared, when CORS is enabled)."""
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None or self.is_preflight(request):
            return
        headers = response.headers
        for name in [name for name in headers if name.lower().startswith("access-control-")]:
            del headers[name]
        if not self.allows(origin):
            return
        exposed = sorted({name for name in headers if name.lower() not in SAFELISTED})
        headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
        headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"
        if exposed:
            headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = ", ".join(exposed)
        headers.add(hdrs.VARY, "Origin")
