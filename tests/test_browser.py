"""End to end with real frontend parts: dev servers, headless Chromium, the proxy, the fake.

tests/browser/ is a small frontend project, the one docs/frontend.md describes:

- page 1 (index.html, src/index.js) is served by a real Vite dev server whose `server.proxy`
  sends /users to the real `lambda-url-proxy` process, which signs and forwards to the fake
  Function URL. Vite runs in a copy laid out as `npm create vite@latest` makes a project
  ("type": "module", so the recipe's vite.config.js loads as an ES module);
- page 2 (page2.html, src/page2.js), on another origin, calls the proxy directly: with
  `--cors-origin <its origin>` the browser's preflight is answered by the proxy; without, the
  browser blocks the call;
- page 3 (blind.html) makes the requests a page can make without an Origin (images, scripts,
  stylesheets, form GETs, no-cors fetches), served as a page of another site (evil.test, which
  Chromium resolves to 127.0.0.1), of the proxy's own site and of an allowed loopback origin;
- webpack-dev-server's `devServer.proxy` recipe is run for real too (plain HTTP, no browser), and
  the Next.js recipe is loaded and checked as configuration.

Chromium is Debian's (/usr/bin/chromium), driven by playwright-core (tests/browser/drive.mjs).
`.ci/browser-deps.sh` installs both; without chromium, node or npm these tests skip, saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, ClientTimeout, web
from multidict import CIMultiDict

from proxy.cli import build_parser
from tests.conftest import AKID, ROOT, ProxyProcess
from tests.fake_function_url import FakeFunctionUrl

PROJECT = ROOT / "tests" / "browser"
DOCS = (ROOT / "docs" / "frontend.md", ROOT / "README.md")  # the recipes, wherever they live
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
DEPS = "install them with `bash .ci/browser-deps.sh`"
PAGE_TIMEOUT = 20.0  # one page in Chromium, its start included
SERVER_START = 30.0  # a dev server's start
REQUEST_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
DEFAULT_PROXY = "http://127.0.0.1:8080"
# The package.json `npm create vite@latest` writes (create-vite 9.3.0, vanilla template): an ES
# module project. Its other templates differ only in their dependencies.
CREATE_VITE_PACKAGE = {
    "name": "vite-project",
    "private": True,
    "version": "0.0.0",
    "type": "module",
    "scripts": {"dev": "vite", "build": "vite build", "preview": "vite preview"},
    "devDependencies": {"vite": "^8.3.4"},
}
NODE_FOR_VITE = "vite 8 needs Node.js ^20.19 or >=22.12"

# A first `npm ci` (outside CI, where .ci/browser-deps.sh ran it) may take a few minutes; every
# wait below has its own, shorter bound.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SpawnProxy = Callable[..., ProxyProcess]


@pytest.fixture(scope="session")
def node_project() -> Path:
    """tests/browser with its node_modules as package-lock.json pins them (`npm ci` if not)."""
    for tool in ("node", "npm", "npx"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed ({NODE_FOR_VITE}): {DEPS}")
    version = subprocess.run(
        ["node", "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    major, minor = (int(part) for part in version.lstrip("v").split(".")[:2])
    if not ((major == 20 and minor >= 19) or (major == 22 and minor >= 12) or major >= 23):
        pytest.fail(f"node {version} is too old: {NODE_FOR_VITE}")
    check = subprocess.run(
        ["node", "check-install.cjs"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if check.returncode != 0:
        ci = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert ci.returncode == 0, f"npm ci failed ({check.stdout.strip()}):\n{ci.stderr}"
    return PROJECT


def create_vite_project(directory: Path, config_name: str = "vite.config.js") -> Path:
    """`directory` laid out as `npm create vite@latest` makes a project, with tests/browser's
    pages, the recipe as `config_name` and tests/browser's node_modules."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "package.json").write_text(json.dumps(CREATE_VITE_PACKAGE, indent=2) + "\n")
    for name in ("index.html", "page2.html"):
        shutil.copy(PROJECT / name, directory / name)
    shutil.copytree(PROJECT / "src", directory / "src")
    shutil.copy(PROJECT / "vite.config.js", directory / config_name)
    (directory / "node_modules").symlink_to(PROJECT / "node_modules")
    return directory


@pytest.fixture(scope="session")
def vite_project(node_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_vite_project(tmp_path_factory.mktemp("create-vite") / "vite-project")


@pytest.fixture
def chromium(node_project: Path) -> Path:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (Debian: chromium): {DEPS}")
    return CHROMIUM


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def stop(process: asyncio.subprocess.Process) -> None:
    """End the process and everything it started (its own process group): npx runs the dev
    server as a grandchild that outlives npx if only npx is told to stop."""
    with contextlib.suppress(ProcessLookupError):
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 5)
        os.killpg(process.pid, signal.SIGKILL)  # stragglers of the group, if any
    await process.wait()


async def _pump(stream: asyncio.StreamReader, lines: list[str]) -> None:
    async for raw in stream:
        lines.append(raw.decode(errors="replace"))


@asynccontextmanager
async def dev_server(
    args: list[str], ready: str, env: dict[str, str] | None = None, cwd: Path = PROJECT
) -> AsyncIterator[list[str]]:
    """Run a dev server from `cwd` until it prints `ready`; yield its output so far."""
    process = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0", **(env or {})},
        start_new_session=True,
    )
    assert process.stdout is not None
    output: list[str] = []
    pump = asyncio.create_task(_pump(process.stdout, output))
    try:
        deadline = time.monotonic() + SERVER_START
        while not any(ready in line for line in output):
            if process.returncode is not None or time.monotonic() > deadline:
                raise AssertionError(f"{shlex.join(args)} did not start:\n" + "".join(output))
            await asyncio.sleep(0.05)
        yield output
    finally:
        await stop(process)
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump


@asynccontextmanager
async def vite(project: Path, proxy_url: str, port: int | None = None) -> AsyncIterator[int]:
    """`npx vite` serving `project` on 127.0.0.1:`port`, its server.proxy at `proxy_url`."""
    port = port or free_port()
    # npx --no: never download; "--": what follows is vite's, not npm's.
    args = ["npx", "--no", "--", "vite", "--port", str(port), "--strictPort", "--host", "127.0.0.1"]
    ready = f"http://127.0.0.1:{port}/"
    async with dev_server(args, ready, {"LAMBDA_PROXY_URL": proxy_url}, project):
        yield port


@dataclass
class Page:
    state: str | None  # "done" or "error": what the page itself says
    text: dict[str, str]  # textContent of every element with an id
    console: list[str]
    # "METHOD URL" of every request the page started, preflights included (a request that its
    # preflight stopped is listed too: Chromium reports it, as failed)
    requests: list[str]


async def run_driver(script: str, *args: str, timeout: float = PAGE_TIMEOUT + 15) -> Any:
    """Run a Chromium driver of tests/browser (drive.mjs, visit.mjs); what it printed, as JSON."""
    process = await asyncio.create_subprocess_exec(
        "node",
        script,
        *args,
        cwd=PROJECT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "CHROMIUM": str(CHROMIUM)},
        start_new_session=True,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        await stop(process)
    report = stdout.decode(errors="replace").strip()
    assert process.returncode == 0, f"{script} {args} failed:\n{report}\n{stderr.decode()}"
    return json.loads(report.splitlines()[-1])


async def open_page(url: str) -> Page:
    """Load `url` in headless Chromium until the page says it is done; read what it shows."""
    data = await run_driver("drive.mjs", url, str(int(PAGE_TIMEOUT * 1000)))
    return Page(data["state"], data["text"], data["console"], data["requests"])


@dataclass
class Visit:
    url: str
    status: int | None  # of the answer to the navigation
    state: str | None  # a page of the tests: "done" or "error", what the page itself says
    text: dict[str, str]  # a page of the tests: textContent of every element with an id
    body: str  # the text the page shows (an answer of the proxy: its JSON)


async def visit(urls: list[str], host_resolver_rules: str = "") -> list[Visit]:
    """Open each of `urls` as if typed in the address bar, one after another, in one headless
    Chromium (its start is most of a page's time); what each showed."""
    timeout = PAGE_TIMEOUT * len(urls)
    data = await run_driver(
        "visit.mjs", str(int(PAGE_TIMEOUT * 1000)), host_resolver_rules, *urls, timeout=timeout
    )
    return [Visit(**visited) for visited in data["visits"]]


async def log_line(proxy: ProxyProcess, *words: str, timeout: float = 5.0) -> str:
    """The first line the proxy printed with all of `words` (the access log line comes once the
    answer is sent, so it may trail what the page shows)."""
    deadline = time.monotonic() + timeout
    while True:
        for line in list(proxy.lines):
            if all(word in line for word in words):
                return line
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no line with {words} in the proxy's output:\n" + "".join(proxy.lines)
            )
        await asyncio.sleep(0.05)


def start_proxy(spawn_proxy: SpawnProxy, fake: FakeFunctionUrl, *flags: str) -> ProxyProcess:
    return spawn_proxy("--route", f"/users={fake.url}", "--region", "us-east-1", *flags)


async def test_page_served_by_vite_reaches_the_function_through_the_proxy(
    chromium: Path,
    vite_project: Path,
    fake: FakeFunctionUrl,
    aws_keys: None,
    spawn_proxy: SpawnProxy,
) -> None:
    proxy = start_proxy(spawn_proxy, fake)
    async with vite(vite_project, proxy.url) as port:
        page = await open_page(f"http://127.0.0.1:{port}/")

    assert page.state == "done", page
    assert page.text["get-path"] == "/42"  # /users/42 -> Vite -> proxy, prefix stripped
    assert page.text["get-access-key"] == AKID  # the fake verified the signature, with this key
    assert page.text["post-body"] == '{"name":"Ada"}'
    assert REQUEST_ID.fullmatch(page.text["request-id"]), page.text
    # What reached the fake, each signature recomputed with awscrt and found right.
    assert [(r.method, r.raw_path, r.verified, r.error_type) for r in fake.received] == [
        ("GET", "/42?from=vite", True, None),
        ("POST", "/", True, None),
    ]
    await log_line(proxy, "GET", "/users/42", page.text["request-id"])


async def test_page_on_another_origin_calls_the_proxy_with_cors(
    chromium: Path,
    vite_project: Path,
    fake: FakeFunctionUrl,
    aws_keys: None,
    spawn_proxy: SpawnProxy,
) -> None:
    port = free_port()
    origin = f"http://localhost:{port}"  # page 2's origin: another host name and port
    proxy = start_proxy(spawn_proxy, fake, "--cors-origin", origin)
    async with vite(vite_project, proxy.url, port):
        page = await open_page(f"{origin}/page2.html?proxy={proxy.url}")

    assert page.state == "done", page
    assert page.text["method"] == "PUT"
    assert page.text["path"] == "/42"
    assert page.text["x-client"] == "page2"  # the custom header reached the function
    assert page.text["body"] == '{"from":"page2"}'
    # Read from JS: only possible because the proxy lists it in Access-Control-Expose-Headers.
    assert REQUEST_ID.fullmatch(page.text["request-id"]), page.text

    target = f"{proxy.url}/users/42"
    calls = [request for request in page.requests if request.endswith(" " + target)]
    # The browser did send a preflight (Chromium may report the two in either order).
    assert sorted(calls) == [f"OPTIONS {target}", f"PUT {target}"]
    await log_line(proxy, "OPTIONS", "/users/42", "cors_preflight")  # ... the proxy answered it
    assert [r.method for r in fake.received] == ["PUT"]  # ... and it never went further
    put = fake.received[0]
    assert put.verified and put.error_type is None
    headers = CIMultiDict(put.headers)
    assert headers["X-Client"] == "page2"
    assert headers["Origin"] == origin  # passed on to the function as it came
    await log_line(proxy, "PUT", "/users/42", page.text["request-id"])


@pytest.mark.parametrize(
    "cors_origin",
    [None, "http://localhost:5173"],
    ids=["cors-off", "other-origin-allowed"],
)
async def test_without_cors_for_its_origin_the_page_is_blocked(
    chromium: Path,
    vite_project: Path,
    fake: FakeFunctionUrl,
    aws_keys: None,
    spawn_proxy: SpawnProxy,
    cors_origin: str | None,
) -> None:
    port = free_port()
    flags = [] if cors_origin is None else ["--cors-origin", cors_origin]
    proxy = start_proxy(spawn_proxy, fake, *flags)
    async with vite(vite_project, proxy.url, port):
        page = await open_page(f"http://localhost:{port}/page2.html?proxy={proxy.url}")

    assert page.state == "error", page
    assert page.text["error"] == "TypeError: Failed to fetch"
    assert page.text["method"] == page.text["request-id"] == ""
    assert any("blocked by CORS policy" in message for message in page.console), page.console
    assert f"OPTIONS {proxy.url}/users/42" in page.requests  # the preflight was tried
    if cors_origin is None:
        # CORS off: the preflight is an ordinary request, signed and forwarded; the function's
        # answer allows nothing.
        assert [(r.method, r.verified) for r in fake.received] == [("OPTIONS", True)]
    else:
        assert fake.received == []
        await log_line(proxy, "OPTIONS", "/users/42", "origin_not_allowed")


@asynccontextmanager
async def page_server() -> AsyncIterator[int]:
    """tests/browser/blind.html from 127.0.0.1, whatever name the browser calls it by; the port."""
    page = (PROJECT / "blind.html").read_bytes()

    async def blind(_: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html")

    app = web.Application()
    app.router.add_get("/blind.html", blind)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port: int = runner.addresses[0][1]
        yield port
    finally:
        await runner.cleanup()


BLIND = ("img", "script", "style", "form", "no-cors")  # blind.html's requests without Origin
KINDS = (*BLIND, "cors")  # and the one CORS fetch, which reads its answer


async def test_blind_requests_from_another_site_are_refused(
    chromium: Path, fake: FakeFunctionUrl, aws_keys: None, spawn_proxy: SpawnProxy
) -> None:
    """Issue #12: a page of another site made Chromium send five kinds of request that carry no
    Origin, and the proxy signed them all. Chromium marks them Sec-Fetch-Site: cross-site; the
    proxy refuses those. In the same browser run, the controls: pages on the proxy's own site
    (127.0.0.1 calling 127.0.0.1, localhost calling localhost: same-site) get every request
    through; a page on a loopback origin calling the proxy by another name (localhost calling
    127.0.0.1: cross-site) gets its CORS fetch through, its origin being allowed, but not its
    blind requests; and an address typed in the address bar (Sec-Fetch-Site: none) works."""
    async with page_server() as port:
        page, loopback, evil = (
            f"http://{h}:{port}" for h in ("127.0.0.1", "localhost", "evil.test")
        )
        proxy = start_proxy(spawn_proxy, fake, "--cors-origin", page, "--cors-origin", loopback)
        by_name = proxy.url.replace("127.0.0.1", "localhost")
        pages = [
            f"{site}/blind.html?proxy={target}&tag={tag}"
            for site, target, tag in (
                (evil, proxy.url, "evil"),
                (page, proxy.url, "same-site"),
                (loopback, by_name, "localhost"),
                (loopback, proxy.url, "cross-site"),
            )
        ]
        *visited, typed = await visit(
            [*pages, f"{proxy.url}/users/typed"], "MAP evil.test 127.0.0.1"
        )

    assert [v.state for v in visited] == ["done"] * 4, visited
    # What the CORS fetch read: refused for evil.test (403, so no CORS headers), else the answer.
    assert [v.text["cors"] for v in visited] == [
        "TypeError: Failed to fetch",
        "200 /same-site/cors",
        "200 /localhost/cors",
        "200 /cross-site/cors",
    ]
    assert (typed.status, json.loads(typed.body)["path"]) == (200, "/typed")
    # What reached the function, signed, and what Chromium said of each request's site.
    assert all(r.verified for r in fake.received)
    seen = {r.raw_path: CIMultiDict(r.headers).get("Sec-Fetch-Site") for r in fake.received}
    assert seen == {
        **{f"/{tag}/{kind}": "same-site" for tag in ("same-site", "localhost") for kind in KINDS},
        "/cross-site/cors": "cross-site",
        "/typed": "none",
    }
    refused = [f"/users/evil/{kind}" for kind in KINDS] + [f"/users/cross-site/{k}" for k in BLIND]
    for path in refused:
        await log_line(proxy, " 403 ", f" {path} id=", "origin_not_allowed")


async def test_webpack_dev_server_recipe(
    node_project: Path, fake: FakeFunctionUrl, aws_keys: None, spawn_proxy: SpawnProxy
) -> None:
    proxy = start_proxy(spawn_proxy, fake)
    port = free_port()
    site = f"http://127.0.0.1:{port}"
    args = ["npx", "--no", "--", "webpack", "serve", "--port", str(port), "--host", "127.0.0.1"]
    async with dev_server(args, "compiled successfully", {"LAMBDA_PROXY_URL": proxy.url}):
        async with ClientSession(timeout=ClientTimeout(total=20)) as client:
            async with client.get(f"{site}/users/42?from=webpack") as response:
                assert response.status == 200, await response.text()
                got = await response.json()
            async with client.post(
                f"{site}/users", json={"name": "Ada"}, headers={"Origin": site}
            ) as response:
                assert response.status == 200, await response.text()
                posted = await response.json()
    assert (got["path"], got["access_key"]) == ("/42", AKID)
    assert (posted["method"], posted["path"], posted["body"]) == ("POST", "/", '{"name": "Ada"}')
    assert [(r.method, r.raw_path, r.verified) for r in fake.received] == [
        ("GET", "/42?from=webpack", True),
        ("POST", "/", True),
    ]


LOAD_CONFIGS = """
import { createRequire } from 'node:module'
import { loadConfigFromFile } from 'vite'

const require = createRequire(process.cwd() + '/')
const vite = await loadConfigFromFile({ command: 'serve', mode: 'development' }, 'vite.config.js')
console.log(JSON.stringify({
  vite: vite.config.server.proxy,
  webpack: require('./webpack.config.js').devServer.proxy,
  next: await require('./next.config.js').rewrites(),
}))
"""


def run_module(script: str, cwd: Path, proxy_url: str | None, *args: str) -> Any:
    """Run `script` as an ES module in `cwd` with LAMBDA_PROXY_URL set to `proxy_url` (None:
    unset); what its last line printed, as JSON."""
    env = {key: value for key, value in os.environ.items() if key != "LAMBDA_PROXY_URL"}
    if proxy_url is not None:
        env["LAMBDA_PROXY_URL"] = proxy_url
    result = subprocess.run(
        ["node", "--input-type=module", "-e", script, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("proxy_url", [None, "http://127.0.0.1:9999"], ids=["default", "env"])
def test_dev_server_configs_point_at_the_proxy(node_project: Path, proxy_url: str | None) -> None:
    """The three configs as each tool loads them (Vite's own loader; webpack and Next.js read
    theirs with require): valid JS, each sending /users to the proxy."""
    configs = run_module(LOAD_CONFIGS, PROJECT, proxy_url)
    target = proxy_url or DEFAULT_PROXY
    assert configs == {
        "vite": {"/users": target},
        "webpack": [{"context": ["/users"], "target": target}],
        "next": [{"source": "/users/:path*", "destination": f"{target}/users/:path*"}],
    }


LOAD_VITE_CONFIG = """
import { loadConfigFromFile } from 'vite'
const loaded = await loadConfigFromFile({ command: 'serve', mode: 'development' }, process.argv[1])
console.log(JSON.stringify({ file: loaded.path, proxy: loaded.config.server.proxy }))
"""


@pytest.mark.parametrize("config_name", ["vite.config.js", "vite.config.ts"])
def test_the_vite_recipe_loads_in_a_project_made_by_create_vite(
    node_project: Path, tmp_path: Path, config_name: str
) -> None:
    """In an ES module project as `npm create vite@latest` makes it, the recipe as the
    JavaScript templates name the file and as the TypeScript ones do, read by Vite's loader."""
    project = create_vite_project(tmp_path / "vite-project", config_name)
    loaded = run_module(LOAD_VITE_CONFIG, project, None, config_name)
    assert loaded == {"file": str(project / config_name), "proxy": {"/users": DEFAULT_PROXY}}


def installed_version(package: str) -> str:
    version: str = json.loads((PROJECT / "node_modules" / package / "package.json").read_text())[
        "version"
    ]
    return version


def test_the_docs_name_the_versions_tested(node_project: Path) -> None:
    """docs/frontend.md's "tested with" versions are the ones package-lock.json installs."""
    docs = (ROOT / "docs" / "frontend.md").read_text()
    for package in ("vite", "webpack", "webpack-dev-server"):
        named = set(re.findall(rf"(?<![\w-]){re.escape(package)} (\d+(?:\.\d+)*)", docs))
        assert named, f"docs/frontend.md names no {package} version"
        installed = installed_version(package)
        for version in named:
            assert installed == version or installed.startswith(version + "."), (
                f"docs/frontend.md says {package} {version}; package-lock.json has {installed}"
            )


TESTED_BLOCK = re.compile(r"<!-- tested: (?P<path>\S+) -->\n```\w*\n(?P<code>.*?)```", re.DOTALL)


def _docs() -> str:
    return "".join(doc.read_text() for doc in DOCS if doc.exists())


def test_the_docs_show_the_tested_files() -> None:
    """Each code block marked `<!-- tested: PATH -->` in the recipes is verbatim in PATH."""
    blocks = [(m["path"], m["code"]) for m in TESTED_BLOCK.finditer(_docs())]
    for path, code in blocks:
        assert code in (ROOT / path).read_text(), f"the docs' block for {path} is not in {path}"
    assert {path for path, _ in blocks} >= {
        "tests/browser/vite.config.js",
        "tests/browser/webpack.config.js",
        "tests/browser/next.config.js",
        "tests/browser/src/page2.js",
    }


def test_the_docs_command_lines_parse() -> None:
    """Every `lambda-url-proxy ...` command in the recipes is one the CLI accepts."""
    text = _docs().replace("\\\n", " ")
    commands = [
        shlex.split(line.split("$ ", 1)[-1], comments=True)[1:]
        for line in text.splitlines()
        if re.match(r"\s*(\$ )?lambda-url-proxy --", line)
    ]
    assert any("--cors-origin" in args for args in commands), commands
    parser = build_parser()
    for args in commands:
        try:
            parser.parse_args(args)
        except SystemExit:
            raise AssertionError(f"lambda-url-proxy refuses {shlex.join(args)}") from None


async def test_the_inspector_shows_requests_live_and_replays_them(
    chromium: Path,
    fake: FakeFunctionUrl,
    aws_keys: None,
    spawn_proxy: SpawnProxy,
    tmp_path: Path,
) -> None:
    """Issue #15, end to end: the inspector page open in Chromium, requests sent with curl
    appear without a reload; filtered; one opened (headers redacted, bodies, timings, what was
    signed); replayed (a new row, the function called again); copied as curl from the
    clipboard, and that line, run by a shell, goes through the proxy as the first did. The
    screenshot is saved for the README: into docs/inspector.png with UPDATE_SCREENSHOTS=1, else
    beside the test's other files (a test run leaves the checkout as it found it)."""
    proxy = start_proxy(spawn_proxy, fake, "--access-token", "page-token-123")
    token = ["-H", "X-Proxy-Token: page-token-123"]
    body = '{"name": "Ada", "tags": ["a", "b"]}'
    curls = [
        [f"{proxy.url}/users/42?from=curl", *token, "-H", "Cookie: session=hunter2"],
        [f"{proxy.url}/users", *token, "-H", "Content-Type: application/json", "-d", body],
        [f"{proxy.url}/users/status/404", *token],
        [f"{proxy.url}/nowhere", *token],
    ]
    docs = ROOT / "docs" if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path
    screenshot = docs / "inspector.png"
    report = await run_driver(
        "inspect.mjs",
        f"{proxy.url}/_proxy/#token=page-token-123",
        str(int(PAGE_TIMEOUT * 1000)),
        str(screenshot),
        json.dumps(curls),
        "/users",
        timeout=PAGE_TIMEOUT * 3,
    )

    # Opened without the token (a typed address): the page loads, holds no data, asks for it.
    assert (report["withoutToken"], report["tokenFormShown"]) == ("token", True)
    # ... and that refusal is in the ring, as every request the proxy refused.
    assert [(r["cells"][2], r["cells"][4]) for r in report["before"]] == [("/_proxy/events", "401")]
    assert report["curl"] == ["200", "200", "404", "404"], report
    assert report["loads"] == 1  # they appeared without a reload
    assert report["connection"] == "live"
    # Newest first: path (cell 2) and status (cell 4).
    assert [(row["cells"][2], row["cells"][4]) for row in report["rows"]] == [
        ("/nowhere", "404"),
        ("/users/status/404", "404"),
        ("/users", "200"),
        ("/users/42?from=curl", "200"),
        ("/_proxy/events", "401"),
    ]
    assert report["filtered4xx"] == ["/nowhere", "/users/status/404", "/_proxy/events"]
    assert report["filteredText"] == ["/users/status/404", "/users", "/users/42?from=curl"]

    detail = report["detail"]
    assert detail["detail-title"] == "POST /users → 200"
    assert detail["request-body"] == json.dumps(json.loads(body), indent=2)
    assert json.loads(detail["response-body"])["body"] == body  # the function's echo
    headers = dict(detail["request-headers"])
    assert headers["X-Proxy-Token"] == "<redacted>"
    assert "page-token-123" not in json.dumps(report["detail"])
    assert detail["canonical-request"].startswith("POST\n/\n\nhost:127.0.0.1:")
    assert detail["string-to-sign"].startswith("AWS4-HMAC-SHA256\n")
    assert [name for name, _ in detail["timings"]] == [
        "wait for credentials", "signing", "upstream connect", "first byte", "total",
    ]  # fmt: skip
    assert all(float(value) >= 0 for _, value in detail["timings"])
    assert screenshot.stat().st_size > 10_000

    assert report["replayed"] == "200"
    newest = report["afterReplay"][0]["cells"]
    assert (newest[1], newest[2], newest[4]) == ("POST", "/users", "200")
    posts = [r for r in fake.received if r.method == "POST"]
    assert [(r.raw_path, r.body, r.verified) for r in posts] == [("/", body.encode(), True)] * 2

    assert report["copied"] == "yes"
    line = report["clipboard"]
    assert line == detail["curl"]
    assert line.endswith(
        ' -H "X-Proxy-Token: $LAMBDA_URL_PROXY_ACCESS_TOKEN"'
        + (f" --data-binary {shlex.quote(body)}")
    )
    shell = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        line.replace("curl ", "curl -sS --fail ", 1),
        env={**os.environ, "LAMBDA_URL_PROXY_ACCESS_TOKEN": "page-token-123"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(shell.communicate(), 30)
    assert shell.returncode == 0, stderr
    assert json.loads(stdout)["body"] == body
    posts = [r for r in fake.received if r.method == "POST"]
    assert len(posts) == 3 and posts[-1].body == body.encode() and posts[-1].verified
