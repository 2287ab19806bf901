"""The tools the bench needs, and the two nginx configurations it writes.

nginx plays two parts, in two separate instances (so that CPU time is never mixed up):

- the fast upstream, a stand-in for a Function URL that checks no signature: `return` for the
  small JSON answers, the echo module (which Debian's nginx-light ships) for chunked streams and
  the delayed chunked stream, a sparse file for the 1 GiB answer;
- the reference reverse proxy, plain `proxy_pass` with a keep-alive pool to the upstream.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

INSTALL_HINT: Final = (
    "install them with: apt-get update && apt-get install -y nginx-light wrk "
    "(Debian/Ubuntu; nginx-light brings the echo module, libnginx-mod-http-echo)"
)

# One 1 KiB line, repeated by echo_duplicate to make the streamed bodies.
KIB_LINE: Final = ("0123456789abcdef" * 64)[:1023] + "\n"
SMALL_JSON: Final = (
    '{"message": "hello from a fake Function URL", "ok": true, '
    '"items": [1, 2, 3, 4, 5, 6, 7, 8], "request": "bench"}'
)


# The same answer as a function's result for Invoke (payload format 2.0), its body a JSON string:
# each `"` of it written `\\\"` in nginx's quoted string, which turns `\\` into `\`, `\"` into `"`.
INVOKE_RESULT: Final = (
    '{"statusCode": 200, "headers": {"content-type": "application/json"}, "body": "'
    + SMALL_JSON.replace('"', '\\\\\\"')
    + '"}'
)
# GetFunctionUrlConfig for a function without a URL, as the Lambda API answers it.
NO_URL: Final = '{"Type": "User", "Message": "The resource you requested does not exist."}'


class MissingTool(RuntimeError):
    pass


@dataclass(frozen=True)
class Tools:
    nginx: str
    nginx_version: str
    echo_module: Path
    wrk: str
    wrk_version: str


def _find(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin", "/usr/local/bin", "/usr/bin"):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def find_tools() -> Tools:
    """nginx (with the echo module) and wrk, or MissingTool saying how to install them."""
    nginx = _find("nginx")
    wrk = _find("wrk")
    missing = [name for name, path in (("nginx", nginx), ("wrk", wrk)) if path is None]
    if nginx is None or wrk is None:
        raise MissingTool(f"missing {' and '.join(missing)}: {INSTALL_HINT}")
    info = subprocess.run(
        [nginx, "-V"], capture_output=True, text=True, timeout=10, check=False
    ).stderr
    version = re.search(r"nginx/(\S+)", info)
    modules = re.search(r"--modules-path=(\S+)", info)
    folders = [Path(modules.group(1))] if modules else []
    folders += [Path("/usr/lib/nginx/modules"), Path("/usr/share/nginx/modules")]
    echo = next(
        (
            f / "ngx_http_echo_module.so"
            for f in folders
            if (f / "ngx_http_echo_module.so").is_file()
        ),
        None,
    )
    if echo is None:
        raise MissingTool(f"nginx has no echo module (ngx_http_echo_module.so): {INSTALL_HINT}")
    wrk_info = subprocess.run(
        [wrk, "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    wrk_version = re.search(r"wrk (\S+)", wrk_info.stdout + wrk_info.stderr)
    return Tools(
        nginx=nginx,
        nginx_version=version.group(1) if version else "?",
        echo_module=echo,
        wrk=wrk,
        wrk_version=wrk_version.group(1) if wrk_version else "?",
    )


def _main_block(workdir: Path, name: str, workers: int, modules: str) -> str:
    temp = workdir / f"{name}-temp"
    temp.mkdir(exist_ok=True)
    # Workers started by a root master run as `nobody`, who cannot read the bench's private dir.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    paths = "\n".join(
        f"    {kind}_temp_path {temp / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{modules}{user}worker_processes {workers};
daemon off;
master_process on;
pid {workdir / name}.pid;
error_log {workdir / name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
{paths}
"""


def upstream_conf(
    workdir: Path, port: int, echo_module: Path, big_file: Path, workers: int = 1
) -> str:
    """The fake Function URL: answers at once, checks nothing, logs nothing."""
    slow_parts = "\n".join(
        f"            echo_sleep {delay};\n"
        f"            echo '{{\"part\": {n}}}';\n"
        "            echo_flush;"
        for n, delay in enumerate(("0.010", "0.020", "0.020"), 1)
    )
    ids = "add_header x-amzn-RequestId $request_id;\n        add_header X-Amzn-Trace-Id bench;"
    return (
        _main_block(workdir, "upstream", workers, f"load_module {echo_module};\n")
        + f"""
    access_log off;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        {ids}
        location = /_bench/health {{ return 200 "ok\\n"; }}
        location = /small {{
            default_type application/json;
            return 200 '{SMALL_JSON}';
        }}
        location = /post {{
            client_max_body_size 8m;  # the hostile part's 6 MiB uploads
            default_type application/json;
            return 200 '{{"received": true}}';
        }}
        location = /headers {{
            default_type text/plain;
            echo "$http_authorization";
        }}
        location = /bytes/1m {{
            echo_duplicate 1024 "{KIB_LINE.rstrip()}\\n";
        }}
        location = /bytes/1g {{
            alias {big_file};
        }}
        location = /slow {{
            default_type application/x-ndjson;
{slow_parts}
        }}
        # The Lambda API, for a route naming a function without a URL (AWS_ENDPOINT_URL_LAMBDA):
        # the lookup finds no URL, Invoke answers /small's body as a function's result.
        location ~ ^/2021-10-31/functions/[^/]+/url$ {{
            default_type application/json;
            add_header x-amzn-ErrorType ResourceNotFoundException always;
            return 404 '{NO_URL}';
        }}
        location ~ ^/2015-03-31/functions/[^/]+/invocations$ {{
            client_max_body_size 8m;
            default_type application/json;
            return 200 '{INVOKE_RESULT}';
        }}
    }}
}}
"""
    )


def proxy_conf(workdir: Path, port: int, upstream_port: int, workers: int = 1) -> str:
    """nginx as a plain reverse proxy: keep-alive pool upstream, one access-log line a request
    (the proxy logs one too), buffering as nginx does by default except on the slow stream."""
    forward = (
        "proxy_pass http://function_url;\n"
        "            proxy_http_version 1.1;\n"
        '            proxy_set_header Connection "";'
    )
    return (
        _main_block(workdir, "nginx-proxy", workers, "")
        + f"""
    access_log {workdir / "nginx-proxy-access.log"};
    upstream function_url {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /_bench/health {{ access_log off; return 200 "ok\\n"; }}
        location / {{
            {forward}
        }}
        location = /slow {{
            {forward}
            proxy_buffering off;
        }}
    }}
}}
"""
    )


def make_sparse_file(path: Path, size: int) -> None:
    """A file of zeros that takes no disk; read once so that its pages are in the page cache
    (the first reader would otherwise pay for filling it: about 400 MiB/s instead of 2 GiB/s)."""
    with path.open("wb") as handle:
        handle.truncate(size)
    buffer = bytearray(1 << 20)
    with path.open("rb", buffering=0) as handle:
        while handle.readinto(buffer):
            pass
