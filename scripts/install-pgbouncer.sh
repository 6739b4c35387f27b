#!/usr/bin/env bash
# Installs PgBouncer (Debian's `pgbouncer` package) for the pooler suite (test/pgbouncer.e2e-spec.ts)
# when it is missing: run by .ci/run before the tests, and by the suite itself. It exits 0 when
# pgbouncer is there (already, or now); otherwise it says why on stderr and exits 1, and the suite
# skips its tests with that reason. Only as root with apt-get: it never asks for a password.
set -uo pipefail

found() { command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; }

if found; then exit 0; fi
if [ "$(uname -s)" != Linux ]; then echo "pgbouncer is not installed, and this is not Linux (install it yourself)" >&2; exit 1; fi
if [ "$(id -u)" != 0 ]; then echo "pgbouncer is not installed, and installing it needs root (apt-get install pgbouncer)" >&2; exit 1; fi
if ! command -v apt-get >/dev/null 2>&1; then echo "pgbouncer is not installed, and there is no apt-get to install it with" >&2; exit 1; fi

# The package's service is not started (policy-rc.d in containers; the suite starts its own).
# Another apt-get may hold the lock for a while: wait for it rather than fail.
install() { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends pgbouncer; }
if ! install >/tmp/install-pgbouncer.$$.log 2>&1; then
  # A fresh machine may have no package lists yet.
  apt-get -o DPkg::Lock::Timeout=300 update >>/tmp/install-pgbouncer.$$.log 2>&1
  install >>/tmp/install-pgbouncer.$$.log 2>&1
fi
if found; then rm -f /tmp/install-pgbouncer.$$.log; exit 0; fi
echo "pgbouncer is not installed, and apt-get install pgbouncer failed: $(tail -n 3 /tmp/install-pgbouncer.$$.log | tr '\n' ' ')" >&2
rm -f /tmp/install-pgbouncer.$$.log
exit 1
