#!/bin/bash
# testbeds/slurm.sh - a real Slurm 22.05 controller (Debian packages) for marea's tests and demo.
#
#   testbeds/slurm.sh install   apt-get install slurmctld slurmd slurm-client munge (skipped when present)
#   testbeds/slurm.sh start     munged + slurmctld in network namespace $NS (bridge br0, $SUBNET.1/24)
#   testbeds/slurm.sh status    sinfo + squeue
#   testbeds/slurm.sh exec CMD  run a Slurm client inside the namespace with SLURM_CONF set
#   testbeds/slurm.sh env       print the environment lines for clients
#   testbeds/slurm.sh stop      stop every daemon started from $BASE, delete the namespaces
#
# The controller has no NodeName lines: workers are Slurm *dynamic nodes* (`slurmd -Z`), which marea's local
# cloud driver starts, one per "VM", each in its own network namespace plugged into br0 (a dynamic node needs
# its own address). Pending jobs in partition `marea` wait with reason PartitionConfig until a node with the
# feature `marea` joins; marea's policy, not Slurm's power saving, decides when to boot one.
#
# Pitfalls (found on this machine): slurmctld binds 0.0.0.0, hence the namespace; a namespace with only `lo`
# breaks Slurm's name resolution, hence the bridge address; `ip netns exec` remounts /sys and breaks slurmd,
# hence `nsenter --net`; MaxNodeCount must not be 1; a joined node gets work at the next backfill pass, hence
# bf_interval=2; without DefMemPerCPU a job takes the whole node's memory.
#
# env: MAREA_SLURM_BASE (/tmp/marea-slurm)  MAREA_SLURM_NS (marea-slurm)  MAREA_SLURM_SUBNET (10.231.0)
#      MAREA_SLURM_MAX_NODES (64)
set -euo pipefail

BASE=${MAREA_SLURM_BASE:-/tmp/marea-slurm}
NS=${MAREA_SLURM_NS:-marea-slurm}
SUBNET=${MAREA_SLURM_SUBNET:-10.231.0}
MAX_NODES=${MAREA_SLURM_MAX_NODES:-64}
PORT_BASE=${MAREA_SLURM_PORT_BASE:-17000}
CONF=$BASE/etc/slurm.conf

in_ns() { SLURM_CONF=$CONF nsenter --net=/run/netns/$NS "$@"; }

cmd_install() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v squeue >/dev/null \
     && command -v munged >/dev/null; then
    echo "slurm already installed: $(slurmctld -V)"
    return 0
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge iproute2 util-linux >/dev/null
  slurmctld -V
}

write_conf() {
  mkdir -p "$BASE"/{etc,state,spool,log,run,munge}
  cat > "$CONF" <<EOF
ClusterName=marea
SlurmctldHost=$(hostname -s)($SUBNET.1)
SlurmctldPort=$((PORT_BASE - 183))
SlurmdPort=$((PORT_BASE - 182))
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$BASE/munge/munge.sock
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool/%n
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd-%n.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=100
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=600
MaxNodeCount=$MAX_NODES
TreeWidth=65533
Nodeset=mareaset Feature=marea
PartitionName=marea Nodes=mareaset Default=YES MaxTime=INFINITE State=UP
EOF
}

cmd_start() {
  if [ -f "$BASE/run/slurmctld.pid" ] && kill -0 "$(cat "$BASE/run/slurmctld.pid")" 2>/dev/null; then
    echo "slurmctld already running"; cmd_env; return 0
  fi
  write_conf
  if [ ! -e "/run/netns/$NS" ]; then
    ip netns add "$NS"
    ip -n "$NS" link set lo up
    ip -n "$NS" link add br0 type bridge
    ip -n "$NS" addr add "$SUBNET.1/24" dev br0
    ip -n "$NS" link set br0 up
  fi
  chmod 711 "$BASE/munge"
  if [ ! -f "$BASE/munge/munge.key" ]; then
    (umask 077; dd if=/dev/urandom of="$BASE/munge/munge.key" bs=1024 count=1 status=none)
  fi
  if ! { [ -f "$BASE/munge/munged.pid" ] && kill -0 "$(cat "$BASE/munge/munged.pid")" 2>/dev/null; }; then
    munged -f --socket="$BASE/munge/munge.sock" --key-file="$BASE/munge/munge.key" \
      --log-file="$BASE/munge/munged.log" --pid-file="$BASE/munge/munged.pid" --seed-file="$BASE/munge/munged.seed"
  fi
  # A clean state each start: the testbed is for tests, and stale dynamic nodes would confuse them.
  rm -rf "$BASE/state"/*
  in_ns slurmctld -i
  for _ in $(seq 1 50); do in_ns scontrol ping >/dev/null 2>&1 && break; sleep 0.2; done
  in_ns scontrol ping >/dev/null || { echo "slurmctld did not start; see $BASE/log/slurmctld.log" >&2; exit 1; }
  cmd_env
}

cmd_env() {
  echo "export SLURM_CONF=$CONF"
  echo "# run clients with: nsenter --net=/run/netns/$NS <cmd>   (or: $0 exec <cmd>)"
}

cmd_stop() {
  local f n
  for f in "$BASE"/run/slurmd-*.pid "$BASE"/run/slurmctld.pid; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
  done
  for _ in $(seq 1 30); do
    alive=0
    for f in "$BASE"/run/slurmd-*.pid "$BASE"/run/slurmctld.pid; do
      [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && alive=1
    done
    [ $alive = 0 ] && break; sleep 0.2
  done
  for f in "$BASE"/run/slurmd-*.pid "$BASE"/run/slurmctld.pid; do
    [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true
  done
  [ -f "$BASE/munge/munged.pid" ] && kill "$(cat "$BASE/munge/munged.pid")" 2>/dev/null || true
  rm -f "$BASE"/run/*.pid
  [ -e "/run/netns/$NS" ] && ip netns del "$NS" || true
  echo stopped
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  env) cmd_env ;;
  status) in_ns sinfo; in_ns squeue ;;
  exec) shift; in_ns "$@" ;;
  *) sed -n '2,10p' "$0"; exit 2 ;;
esac
