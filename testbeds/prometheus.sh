#!/bin/bash
# testbeds/prometheus.sh - Debian's Prometheus (prometheus, promtool) and the headless browser (chromium,
# chromium-driver) for marea's monitoring tests (tests/ops).
#
#   testbeds/prometheus.sh install   apt-get install them (skipped when present)
#
# The tests start their own Prometheus on a private port and data directory, and their own browser with a
# fresh profile; nothing here starts a service. The package's own prometheus.service is kept from starting
# (policy-rc.d) where the machine runs services at all: the tests need the binary, not a second Prometheus.
set -euo pipefail

cmd_install() {
  if command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v chromium >/dev/null \
     && command -v chromedriver >/dev/null; then
    echo "prometheus already installed: $(prometheus --version 2>&1 | head -1)"
    echo "chromium already installed: $(chromium --version 2>/dev/null || true)"
    return 0
  fi
  local policy=/usr/sbin/policy-rc.d created=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    prometheus chromium chromium-driver >/dev/null
  if [ "$created" = 1 ]; then rm -f "$policy"; fi
  prometheus --version 2>&1 | head -1
  chromium --version
}

case "${1:-}" in
  install) cmd_install ;;
  *) echo "usage: $0 install" >&2; exit 2 ;;
esac
