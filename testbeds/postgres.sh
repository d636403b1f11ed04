#!/bin/bash
# testbeds/postgres.sh install - Debian's PostgreSQL server binaries, for the store's PostgreSQL test.
# The test starts its own throwaway cluster (initdb + pg_ctl on a unix socket in a temp dir); nothing listens
# on TCP and the system's own cluster is not used.
set -euo pipefail
case "${1:-}" in
  install)
    if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then echo "postgresql already installed"; exit 0; fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    ;;
  *) echo "usage: $0 install"; exit 2 ;;
esac
