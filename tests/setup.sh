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

# GStreamer's WebRTC stack and Debian's Python bindings for it: a WHIP publisher
# on webrtcbin (tests/gst_whip_client.py, run by /usr/bin/python3).
if ! /usr/bin/python3 -c "import gi; gi.require_version('GstWebRTC', '1.0')" 2>/dev/null \
    || ! command -v gst-inspect-1.0 >/dev/null || ! gst-inspect-1.0 webrtcbin >/dev/null 2>&1; then
    apt_install --no-install-recommends python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 \
        gir1.2-gst-plugins-bad-1.0 gstreamer1.0-tools gstreamer1.0-plugins-base \
        gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-nice
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
