# lambda-url-proxy as a container: build from the repository root with `docker build .`
# Configured entirely by LAMBDA_URL_PROXY_* variables (see README, "Configuration").
# Written for the official python:3.11-slim image. tests/test_container_engine.py builds it as it
# is and runs it with a real engine; tests/test_container.py checks it against the code.

# --- build: install the project and its dependencies into a self-contained venv --------------
FROM python:3.11-slim AS build
# A C compiler for mypyc, which compiles the request path (setup.py), and Python's headers where
# the base lacks them (the official image has them; Debian's python3 needs python3-dev).
# This stage only: the final image has no compiler.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && { test -f "$(python -c 'import sysconfig; print(sysconfig.get_path("include"))')/Python.h" \
      || apt-get install -y --no-install-recommends python3-dev; } \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
WORKDIR /src
# Only what the install needs (.dockerignore keeps everything else out of the context).
# The dependencies first, from the lock: the exact versions CI tested, each file checked against
# its hash. Every one ships manylinux wheels for amd64 and arm64: none needs the compiler.
# A layer of its own, so that a change to the code does not download them again.
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
        --require-hashes -r requirements.lock
COPY pyproject.toml setup.py README.md ./
COPY proxy/ proxy/
# The project alone, compiled (setup.py: USE_MYPYC=1): --no-deps, so nothing beyond the lock
# gets in; pip builds it in an isolated environment with the mypy and setuptools pyproject.toml
# names. pip and setuptools are build tools: removed, so the final image carries only the runtime.
RUN USE_MYPYC=1 /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps . \
 && /opt/venv/bin/pip uninstall --yes --disable-pip-version-check pip setuptools

# --- final: the same slim base, the venv and an unprivileged user; no sources, no compilers --
FROM python:3.11-slim
# uid/gid 1000: the usual owner of ~/.aws on a Linux host, so a read-only mount of it is readable
# (its files are mode 0600). Another uid: `user:` in docker-compose.yml (HOME stays below).
# Not named `proxy`: Debian's base-passwd already has that user and group (uid/gid 13) in every
# Debian-based python image, and groupadd would fail. The home keeps the name the docs mount at.
RUN groupadd --gid 1000 lambda-url-proxy \
 && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/proxy \
        --shell /usr/sbin/nologin lambda-url-proxy
COPY --from=build /opt/venv /opt/venv
# HOME is explicit so that ~/.aws is /home/proxy/.aws whichever uid the container runs as.
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/proxy \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LAMBDA_URL_PROXY_HOST=0.0.0.0 \
    LAMBDA_URL_PROXY_PORT=8080 \
    LAMBDA_URL_PROXY_LOG_FORMAT=json
USER 1000:1000
WORKDIR /home/proxy
EXPOSE 8080
# The slim image has no curl: python's urllib, on loopback and the configured port, ignoring any
# HTTP(S)_PROXY meant for the upstream calls. Exit 0 on a 200, 1 otherwise (refused, error, 5xx).
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:' + os.environ.get('LAMBDA_URL_PROXY_PORT', '8080') + '/_proxy/health', timeout=2)"]
# Exec form: the proxy is PID 1 and receives docker stop's SIGTERM itself, then drains in-flight
# requests. Flags may be appended: `docker run IMAGE --route /users=https://...`.
ENTRYPOINT ["lambda-url-proxy"]
