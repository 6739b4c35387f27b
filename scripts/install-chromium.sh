#!/usr/bin/env bash
# Installs Chromium (Debian's `chromium` package) for the browser suites (test/browser/) when it is
# missing: run by .ci/run before them. It exits 0 when a Chromium is there (already, or now);
# otherwise it says why on stderr and exits 1. Only as root with apt-get: it never asks for a
# password, and nothing downloads a browser of its own (playwright-core drives this one).
set -uo pipefail

found() { [ -n "${CHROMIUM:-}" ] && [ -x "$CHROMIUM" ] || command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }

if found; then exit 0; fi
if [ "$(uname -s)" != Linux ]; then echo "Chromium is not installed, and this is not Linux: set CHROMIUM to a Chromium or Chrome executable" >&2; exit 1; fi
if [ "$(id -u)" != 0 ]; then echo "Chromium is not installed, and installing it needs root (apt-get install chromium), or set CHROMIUM" >&2; exit 1; fi
if ! command -v apt-get >/dev/null 2>&1; then echo "Chromium is not installed, and there is no apt-get to install it with: set CHROMIUM" >&2; exit 1; fi

log=$(mktemp)
install() { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends chromium; }
if ! install >"$log" 2>&1; then
  # A fresh machine may have no package lists yet.
  apt-get -o DPkg::Lock::Timeout=300 update >>"$log" 2>&1
  install >>"$log" 2>&1
fi
if found; then rm -f "$log"; exit 0; fi
echo "Chromium is not installed, and apt-get install chromium failed: $(tail -n 3 "$log" | tr '\n' ' ')" >&2
rm -f "$log"
exit 1
