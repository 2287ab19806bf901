#!/usr/bin/env bash
# What tests/test_browser.py needs, on a clean Debian machine, as root: Debian's Chromium and the
# npm packages of tests/browser (vite, webpack-dev-server, playwright-core), installed with
# `npm ci` from its package-lock.json. Idempotent: what is already there is left as it is.
# Only the package registries are used (Debian's and npm's); no browser download.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    apt-get update -qq
    apt_updated=1
  fi
  apt-get install -y -qq "$@" >/dev/null
}

if [ -x /usr/bin/chromium ]; then
  echo "browser-deps: chromium already installed: $(/usr/bin/chromium --version 2>/dev/null)"
else
  echo "browser-deps: installing chromium (apt-get)"
  apt_install chromium
  echo "browser-deps: installed $(/usr/bin/chromium --version 2>/dev/null)"
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  # Debian 12's nodejs is 18, too old for vite 8; Debian 13's is 20.19. The project's machines
  # come with Node.js 20.19+ and npm.
  echo "browser-deps: installing nodejs and npm (apt-get)"
  apt_install nodejs npm
fi
node_version=$(node --version)
if ! node -e '
  const [major, minor] = process.versions.node.split(".").map(Number)
  process.exit((major === 20 && minor >= 19) || (major === 22 && minor >= 12) || major >= 23 ? 0 : 1)
'; then
  echo "browser-deps: node $node_version is too old: vite 8 needs ^20.19 or >=22.12" >&2
  exit 1
fi
echo "browser-deps: node $node_version, npm $(npm --version 2>/dev/null)"

cd tests/browser
if node check-install.cjs >/dev/null 2>&1; then
  echo "browser-deps: tests/browser/node_modules already matches package-lock.json"
else
  echo "browser-deps: npm ci in tests/browser ($(node check-install.cjs || true))"
  npm ci --no-audit --no-fund --loglevel=error
  node check-install.cjs >/dev/null
  echo "browser-deps: installed $(ls node_modules | wc -l) packages in tests/browser/node_modules"
fi
