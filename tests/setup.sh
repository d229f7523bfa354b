#!/usr/bin/env bash
# Set up everything the tests need, on a fresh machine or again on a used one:
# the virtual environment .venv with torch and livegen's test extra, Debian's
# Chromium for the browser tests (tests/web; Playwright drives /usr/bin/chromium and
# never downloads a browser of its own), and fal's JavaScript client for tests/fal.
# Non-interactive: runs under CI=true with no standard input.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        sudo=(sudo -n)  # never prompts: fails with a message when it would need a password
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q </dev/null
    "${sudo[@]}" apt-get install -y -q "$@" </dev/null
}

python3 -m venv .venv
.venv/bin/pip install --no-input torch==2.13.0
.venv/bin/pip install --no-input -e '.[test]'

if [ ! -x /usr/bin/chromium ]; then
    apt_install chromium
fi

# HAProxy, the entry in front of replicas, from Debian (tests/scaleout; 2.6 on Debian 12).
if ! command -v haproxy >/dev/null && [ ! -x /usr/sbin/haproxy ]; then
    apt_install haproxy
fi

# fal's published JavaScript client runs under Node from tests/fal/js, installed
# from npm at the version its lock file pins (node_modules is git-ignored).
if ! command -v npm >/dev/null; then
    apt_install nodejs npm
fi
npm ci --prefix tests/fal/js --no-audit --no-fund </dev/null
# Eyevinn's WHIP and WHEP browser clients (tests/web/test_whip_clients.py), and
# esbuild to bundle them for a page, the same way.
npm ci --prefix tests/web/whip_js --no-audit --no-fund </dev/null
