#!/usr/bin/env bash
# The dashboard at scale (issue 22 item 2): 1,000 services and 10,000
# instances in the real registry, the pages in headless Chromium. Prints
# how long the pages take to show them, to follow changes and to filter.
#
#   bench/dashboard.sh
#
# No peer runs beside it: neither Consul's UI nor Eureka's dashboard can be
# installed on this machine (no Debian package, no registry reachable).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
cargo test --locked -q -p switchyard-registry --test browser -- --nocapture dashboard_at_scale 2>&1 \
  | grep '^dashboard '
