"""What an upstream 403 says about its cause beyond its x-amzn-ErrorType, read from its body.

A signature scoped to the wrong region is refused as InvalidSignatureException, the type a
clock or key problem gets too; only the body tells them apart. Lambda answers
`{"message":"Credential should be scoped to a valid region. "}` (other services add
", not 'eu-west-1'", or say "scoped to correct region"): they all name the region.
"""

from __future__ import annotations

import re
from typing import Final

from yarl import URL

from proxy.settings import region_from_url

# The messages are short; a body that is not one of them is not read further than this.
READ_AT_MOST: Final = 1024
_NAMES_REGION: Final = re.compile(rb"\bregion\b", re.IGNORECASE)


def region_hint(
    prefix: str,
    url: str,
    signed_region: str,
    error_type: str | None,
    body: bytes,
    region_source: str | None = None,
) -> str | None:
    """The hint for a 403 that says the signature's region is wrong, else None. With the
    region's source ("AWS_REGION", "profile dev"), the hint says where to change it."""
    if error_type != "InvalidSignatureException" or not _NAMES_REGION.search(body[:READ_AT_MOST]):
        return None
    said = f"AWS refused the signature's region: route {prefix} signed for region {signed_region}"
    if region_source:
        said += f" (from {region_source})"
    url_region = region_from_url(URL(url))
    if url_region is None:
        return (
            f"{said}, and the function is probably in another region: give the function's "
            "region as region on the route, --region or AWS_REGION"
        )
    if url_region != signed_region:
        return (
            f"{said}, but its URL's host names {url_region}, where the function probably is: "
            f"set region on the route to {url_region}, or remove it (the URL's region is used)"
        )
    return (
        f"{said}, the region its URL's host names, and AWS expects another: check that {url} "
        "is the function's URL"
    )
