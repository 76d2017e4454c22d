#!/usr/bin/env bash
# Install the Debian packages the tests drive as a stranger would: kcat (raw records, odd
# headers), chromium (the review page in a real browser) and prometheus (promtool checks the
# alert rules; a real Prometheus scrapes the workers). Root installs them with apt-get;
# anyone else is told what to install.
set -euo pipefail
need=()
command -v kcat >/dev/null 2>&1 || need+=(kcat)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || need+=(prometheus)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "test: error: missing ${need[*]}; install them with: sudo apt-get install -y ${need[*]}" >&2
    exit 1
fi
echo "test: installing ${need[*]} (apt-get)" >&2
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
