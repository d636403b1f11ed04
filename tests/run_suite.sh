#!/bin/bash
# tests/run_suite.sh [BIN] - the whole suite as two pytest runs side by side (what `make test` runs):
#   - the OpenStack testbed's tests (tests/openstack): they mostly wait on the cloud and its booting guests;
#   - every other test, in one sequence as before: their testbeds (Slurm, HTCondor, podman, PostgreSQL) use fixed
#     namespaces, paths and ports, so two of them must never run at once.
# The same tests as one `pytest`, in about the wall time of the longer half. Both reports are printed (the
# OpenStack one last); the exit status is non-zero when either half failed.
# (pytest-xdist's `loadgroup` would do this inside one run, but with pytest 9 it ignores the groups.)
set -u
BIN=${1:-.venv/bin}
cd "$(dirname "$0")/.."
log=$(mktemp /tmp/marea-pytest-openstack.XXXXXX)
"$BIN/pytest" -q -ra -p no:cacheprovider tests/openstack >"$log" 2>&1 &
openstack_pid=$!
"$BIN/pytest" -q -ra --ignore=tests/openstack
others=$?
wait "$openstack_pid"
openstack=$?
echo
echo "==================== tests/openstack (ran beside the others; exit $openstack) ===================="
cat "$log"
rm -f "$log"
echo "others: exit $others; openstack: exit $openstack"
[ "$others" -eq 0 ] && [ "$openstack" -eq 0 ]
