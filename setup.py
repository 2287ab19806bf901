"""Builds lambda-url-proxy: pure Python, or with its request path compiled by mypyc.

    pip install .                # pure Python: any machine
    USE_MYPYC=1 pip install .    # compiled: needs a C compiler and Python.h

mypyc is mypy's own compiler (mypy and black ship compiled with it; mypy's own source build
asks for MYPY_USE_MYPYC=1 as this one asks for USE_MYPYC=1): the same typed sources, turned
into C extension modules. A small GET then costs about 18 % fewer instructions
(bench/README.md, "Compiled with mypyc"); behaviour is the same, and tests/test_compiled.py runs
the tests against a compiled build. The image (Dockerfile) is built compiled. Not with `-e`: the
extension modules would then sit beside the sources and shadow every edit. Everything else
lives in pyproject.toml.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup

# The modules a request runs through. Left interpreted: lifetime.py (aiohttp's cleanup
# contexts are async generators, which mypyc does not compile), _aiohttp.py (the fence: its
# subclasses of aiohttp's private classes are read by the canary test), upstream_errors.py
# (mypyc cannot compile a subclass of ConnectionError), logs.py (compiled, its handler, a
# subclass of logging's, crashed the interpreter once freed: logging keeps weak references to
# handlers; bench/README.md), metrics.py (read at each scrape, not each request), and whatever
# start-up or the tests subclass (interpreted classes cannot inherit from compiled ones).
COMPILED = (
    "access",
    "app",
    "cors",
    "credentials",
    "deadline",
    "downstream",
    "exchange",
    "figures",
    "forward",
    "headers",
    "inspector",
    "memo",
    "routing",
    "signing",
    "skew",
    "trace",
    "trace_id",
    "upstream",
    "wire",
)

# setup.py's commands for pip's metadata hooks (get_requires, prepare_metadata).
METADATA_ONLY = frozenset({"egg_info", "dist_info"})


def compiled_modules() -> list[Extension]:
    """The extension modules to build: none unless USE_MYPYC=1, and none when pip only asks for
    the metadata (which does not depend on them): mypyc's type check then runs once, not twice."""
    if os.environ.get("USE_MYPYC", "0") != "1" or METADATA_ONLY.intersection(sys.argv[1:2]):
        return []
    from mypyc.build import mypycify  # only a compiled build needs mypy

    # mypy's options here, not pyproject.toml's: the build sees the same types wherever it runs,
    # in pip's isolated build environment as in a venv holding every dependency (whose types are
    # then Any: calls into them stay Python calls either way, and our own code is what compiles).
    options = ["--config-file=", "--no-site-packages", "--ignore-missing-imports"]
    sources = [f"proxy/{name}.py" for name in COMPILED]
    # -O2 without debug information: the same instructions a request as -O3 -g1, measured, and
    # 12 s less of gcc on two cores.
    return list(mypycify([*options, *sources], opt_level="2", debug_level="0"))


setup(ext_modules=compiled_modules())
