#!/bin/bash
# testbeds/htcondor.sh - a real HTCondor 23.9 central manager (Debian 13 packages, in a chroot) for marea.
#
#   testbeds/htcondor.sh install   debootstrap a trixie minbase rootfs and apt-get install htcondor INSIDE it
#                                  (reused when present; nothing goes into the host system or its /etc/apt)
#   testbeds/htcondor.sh start     collector + negotiator + schedd in network namespace $NS (bridge br0 with
#                                  $SUBNET.1/24), a pool signing key and a worker IDTOKEN, a client config
#   testbeds/htcondor.sh status    daemons and the pool's ads
#   testbeds/htcondor.sh exec CMD  run an HTCondor tool in the manager's chroot + namespace (as root)
#   testbeds/htcondor.sh submit ARGS  condor_submit as the unprivileged submit user $TUSER
#   testbeds/htcondor.sh env       print the environment lines for host-side clients (PyPI bindings)
#   testbeds/htcondor.sh load-image IMAGE  copy IMAGE from the host's podman into $TUSER's rootless podman
#                                  storage in the rootfs (what offloaded pods run on the workers; no registry)
#   testbeds/htcondor.sh podman ARGS  podman as $TUSER on that storage (what the workers' jobs see)
#   testbeds/htcondor.sh stop      stop the manager, kill what is left in $NS, delete the namespace
#
# Workers are not started here: each worker "VM" of marea's local cloud driver runs the user-data template
# src/marea/batch/templates/htcondor-worker.sh, which makes the same rootfs its root (pivot_root; variable
# CONDOR_ROOTFS) and starts a startd-only condor_master that joins this collector with the IDTOKEN written by
# `start`. The rootfs also holds podman, runc, uidmap and catatonit: jobs of the offload `htcondor` backend
# run pods with rootless podman as the submit user.
#
# Pitfalls (found on this machine): HTCondor binds 0.0.0.0, hence the namespace; a namespace with only `lo`
# breaks address selection, hence the bridge address; `nsenter --net`, not `ip netns exec` (which remounts
# /sys in the caller's mount namespace); condor_master changes host-wide sysctls at start unless
# ENABLE_KERNEL_TUNING = False; the rootfs must be a mount point or every job is held with errno 22; the
# schedd refuses jobs owned by root (clients claim the user $TUSER); the packaged config.d enables security
# the test pool does not set up, so each daemon reads only the files written here.
#
# env: MAREA_CONDOR_BASE (/var/lib/marea-htcondor)  MAREA_CONDOR_NS (marea-condor)
#      MAREA_CONDOR_SUBNET (10.232.0)  MAREA_CONDOR_MIRROR (the host's Debian mirror)
set -euo pipefail

BASE=${MAREA_CONDOR_BASE:-/var/lib/marea-htcondor}
R=$BASE/rootfs
RUN=$BASE/run
NS=${MAREA_CONDOR_NS:-marea-condor}
SUBNET=${MAREA_CONDOR_SUBNET:-10.232.0}
CM_IP=$SUBNET.1
TUSER=tester
DOMAIN=condor.test
#: paths INSIDE the rootfs
CDIR=/etc/marea-condor
CM_LOCAL=/var/lib/marea-condor/cm
PATHS=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { echo "[htcondor.sh $(date +%T)] $*" >&2; }

host_mirror() {   # the host's own Debian mirror: no registry address is hard-coded here
  { awk '/^URIs:/{print $2}' /etc/apt/sources.list.d/*.sources; awk '/^deb /{print $2}' /etc/apt/sources.list; } \
    2>/dev/null | grep -v -e security -e '^$' | head -1 || true
}

cmd_install() {
  local t0=$SECONDS mirror
  if [ -x "$R/usr/sbin/condor_master" ] && [ -x "$R/usr/bin/podman" ] && chroot "$R" id "$TUSER" >/dev/null 2>&1
  then
    log "rootfs present: $(chroot "$R" condor_version | head -1)"
    return 0
  fi
  command -v debootstrap >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  mirror=${MAREA_CONDOR_MIRROR:-$(host_mirror)}
  mirror=${mirror:-http://deb.debian.org/debian}
  mkdir -p "$BASE"
  if [ ! -x "$R/usr/bin/apt-get" ]; then
    rm -rf "$R"
    # bookworm's debootstrap knows trixie; --variant=minbase keeps the rootfs small
    debootstrap --variant=minbase trixie "$R" "$mirror" >"$BASE/debootstrap.log" 2>&1 \
      || { tail -20 "$BASE/debootstrap.log" >&2; exit 1; }
  fi
  # maintainer scripts must never start services
  printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d"
  chmod +x "$R/usr/sbin/policy-rc.d"
  if [ ! -x "$R/usr/sbin/condor_master" ] || [ ! -x "$R/usr/bin/podman" ]; then
    # podman, runc, uidmap, catatonit: rootless containers in jobs (the offload `htcondor` backend's pods)
    # apt needs /proc and /dev: mounted in a private mount namespace, so nothing is left to unmount
    unshare --mount --propagation private sh -c "
      mount -t proc proc '$R/proc' && mount --rbind /dev '$R/dev' &&
      DEBIAN_FRONTEND=noninteractive chroot '$R' sh -c 'apt-get update -qq &&
        apt-get install -y -q --no-install-recommends htcondor podman runc uidmap catatonit && apt-get clean && rm -rf /var/lib/apt/lists/*'" \
      >"$BASE/apt.log" 2>&1 || { tail -20 "$BASE/apt.log" >&2; exit 1; }
  fi
  chroot "$R" id "$TUSER" >/dev/null 2>&1 || chroot "$R" useradd -m -u 2001 -s /bin/bash "$TUSER"
  log "installed $(chroot "$R" condor_version | head -1) in $((SECONDS - t0)) s, rootfs $(du -sh "$R" | cut -f1)"
}

common_conf() {   # shared by the manager and every worker (workers get a copy through their user-data)
  cat <<EOF
# marea HTCondor test pool: common settings (generated by testbeds/htcondor.sh)
RELEASE_DIR = /usr
BIN = \$(RELEASE_DIR)/bin
SBIN = \$(RELEASE_DIR)/sbin
LIB = \$(RELEASE_DIR)/lib/condor
LIBEXEC = \$(RELEASE_DIR)/libexec/condor
SHARE = \$(RELEASE_DIR)/share/condor
ETC = /etc/condor
RUN = \$(LOCAL_DIR)/run
LOG = \$(LOCAL_DIR)/log
LOCK = \$(LOCAL_DIR)/lock
SPOOL = \$(LOCAL_DIR)/spool
EXECUTE = \$(LOCAL_DIR)/execute
CRED_STORE_DIR = \$(LOCAL_DIR)/cred_dir
LOCAL_CONFIG_FILE =
LOCAL_CONFIG_DIR =
REQUIRE_LOCAL_CONFIG_FILE = false
CONDOR_HOST = $CM_IP
COLLECTOR_HOST = \$(CONDOR_HOST)
UID_DOMAIN = $DOMAIN
FILESYSTEM_DOMAIN = $DOMAIN
TRUST_UID_DOMAIN = True
SOFT_UID_DOMAIN = True
# Test-pool security: host based inside the private subnet, CLAIMTOBE for clients, and IDTOKENS for the one
# thing that matters to marea: a startd may only advertise itself with the pool's token.
use SECURITY: host_based
ALLOW_READ = *
ALLOW_WRITE = $SUBNET.* 127.0.0.1
ALLOW_DAEMON = $SUBNET.* 127.0.0.1
ALLOW_ADMINISTRATOR = $SUBNET.* 127.0.0.1
ALLOW_NEGOTIATOR = $SUBNET.*
ALLOW_CONFIG = $SUBNET.*
SEC_DEFAULT_AUTHENTICATION_METHODS = FS, IDTOKENS, CLAIMTOBE
SEC_CLIENT_AUTHENTICATION_METHODS = FS, IDTOKENS, CLAIMTOBE
SEC_DEFAULT_ENCRYPTION = OPTIONAL
SEC_DEFAULT_INTEGRITY = OPTIONAL
# condor_master would change host-wide sysctls (kernel.pid_max...) at start
ENABLE_KERNEL_TUNING = False
LINUX_KERNEL_TUNING_SCRIPT =
MAIL = /bin/true
CONDOR_ADMIN =
# fast turnaround (defaults are minutes)
UPDATE_INTERVAL = 5
MASTER_UPDATE_INTERVAL = 10
NEGOTIATOR_INTERVAL = 5
NEGOTIATOR_MIN_INTERVAL = 1
NEGOTIATOR_CYCLE_DELAY = 1
SCHEDD_INTERVAL = 5
SCHEDD_MIN_INTERVAL = 1
STARTER_UPDATE_INTERVAL = 5
SHADOW_QUEUE_UPDATE_INTERVAL = 5
RunBenchmarks = False
# no claim reuse: a finished job's dynamic slot goes back to its partitionable slot at once, so new jobs of
# other shapes are matched at the next cycle instead of waiting for the schedd to drop an idle claim
CLAIM_WORKLIFE = 0
MaxJobRetirementTime = 3600
BASE_CGROUP =
CGROUP_MEMORY_LIMIT_POLICY = none
# a deleted worker's ads and jobs linger for these (defaults 900 s and 2400 s)
JOB_DEFAULT_LEASE_DURATION = 60
CLASSAD_LIFETIME = 60
EOF
}

cm_conf() {
  cat <<EOF
LOCAL_DIR = $CM_LOCAL
include : $CDIR/common.conf
NETWORK_INTERFACE = $CM_IP
use ROLE: CentralManager
use ROLE: Submit
# a startd ad is accepted only from a holder of the pool's IDTOKEN (workers get it in their user-data)
SEC_PASSWORD_DIRECTORY = $CDIR/passwords.d
SEC_TOKEN_POOL_SIGNING_KEY_FILE = $CDIR/passwords.d/POOL
SEC_TOKEN_ISSUER_KEY = POOL
TRUST_DOMAIN = $DOMAIN
SEC_ADVERTISE_STARTD_AUTHENTICATION = REQUIRED
SEC_ADVERTISE_STARTD_AUTHENTICATION_METHODS = IDTOKENS
ALLOW_ADVERTISE_STARTD = condor@$DOMAIN/$SUBNET.*
# where marea's engine revokes the IDTOKENs of the workers it removed (batch.htcondor.revocation_file)
include ifexist : $CDIR/revoked.conf
EOF
}

# in_cm CMD...: a command chrooted in the rootfs, inside the manager's network namespace, in a private mount
# namespace that has /proc and /dev (gone with its last process) and the rootfs bound on itself.
in_cm() {
  nsenter --net="/run/netns/$NS" unshare --mount --uts --propagation private /bin/sh -c '
    R=$1; shift; hostname cm; mount --bind "$R" "$R"; mount -t proc proc "$R/proc"; mount -t sysfs sysfs "$R/sys"
    mount --rbind /dev "$R/dev"; exec chroot "$R" "$@"' - \
    "$R" /usr/bin/env -i PATH=$PATHS HOME=/root CONDOR_CONFIG=$CDIR/cm.conf "$@"
}

cm_pid() {   # the manager's condor_master pid, only when it is really ours (guards against pid reuse)
  local f=$R$CM_LOCAL/run/master.pid pid
  [ -s "$f" ] || return 1
  pid=$(cat "$f")
  tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -x "CONDOR_CONFIG=$CDIR/cm.conf" >/dev/null || return 1
  echo "$pid"
}

cmd_start() {
  local t0=$SECONDS i
  [ -x "$R/usr/sbin/condor_master" ] || { echo "run '$0 install' first" >&2; exit 1; }
  if cm_pid >/dev/null; then log "already running (master $(cm_pid))"; return 0; fi
  # /var/lib/marea-condor/local: where each worker VM binds its own directory (see htcondor-worker.sh)
  mkdir -p "$R$CDIR/passwords.d" "$RUN" "$R/var/lib/marea-condor/local"
  common_conf >"$R$CDIR/common.conf"
  cm_conf >"$R$CDIR/cm.conf"
  rm -f "$R$CDIR/revoked.conf"   # a fresh pool revokes nothing
  printf '127.0.0.1\tlocalhost\n%s\tcm.%s cm\n' "$CM_IP" "$DOMAIN" >"$R/etc/hosts"
  if [ ! -s "$R$CDIR/passwords.d/POOL" ]; then
    (umask 077; head -c 64 /dev/urandom | base64 -w0 >"$R$CDIR/passwords.d/POOL")
  fi
  chmod 700 "$R$CDIR/passwords.d"
  rm -rf "${R:?}$CM_LOCAL"
  mkdir -p "$R$CM_LOCAL"/{run,log,lock,spool,execute,cred_dir}
  chroot "$R" chown -R condor:condor "$CM_LOCAL"
  chmod 700 "$R$CM_LOCAL/cred_dir"
  chroot "$R" chown root:root "$CM_LOCAL/cred_dir"
  if [ ! -e "/run/netns/$NS" ]; then
    ip netns add "$NS"
    ip -n "$NS" link set lo up
    ip -n "$NS" link add br0 type bridge
    ip -n "$NS" addr add "$CM_IP/24" dev br0
    ip -n "$NS" link set br0 up
  fi
  # the worker token: identity condor@$DOMAIN, signed with the pool key; readable by root only
  (umask 077; in_cm condor_token_create -identity "condor@$DOMAIN" -key POOL >"$RUN/worker.token")
  [ -s "$RUN/worker.token" ] || { echo "could not create the worker IDTOKEN" >&2; exit 1; }
  common_conf >"$RUN/common.conf"
  cmd_env_file
  in_cm /usr/sbin/condor_master -pidfile "$CM_LOCAL/run/master.pid"
  for i in $(seq 1 150); do
    in_cm condor_status -schedd -af Name 2>/dev/null | grep . >/dev/null && break
    sleep 0.2
  done
  in_cm condor_status -schedd -af Name 2>/dev/null | grep . >/dev/null || { echo "schedd did not come up" >&2; exit 1; }
  log "pool up in $((SECONDS - t0)) s (master $(cm_pid), collector $CM_IP:9618, netns $NS)"
}

cmd_env_file() {   # client config for host-side programs (PyPI bindings) running in the manager's netns
  cat >"$RUN/client.conf" <<EOF
CONDOR_HOST = $CM_IP
COLLECTOR_HOST = $CM_IP
SEC_CLIENT_AUTHENTICATION_METHODS = CLAIMTOBE
# a host process runs as root; the schedd refuses root-owned jobs, so the test client claims $TUSER
SEC_CLAIMTOBE_USER = $TUSER
SEC_CLAIMTOBE_INCLUDE_DOMAIN = False
UID_DOMAIN = $DOMAIN
FILESYSTEM_DOMAIN = $DOMAIN
LOCAL_CONFIG_FILE =
LOCAL_CONFIG_DIR =
EOF
}

cmd_env() {
  cat <<EOF
CONDOR_CONFIG=$RUN/client.conf
MAREA_CONDOR_NS=$NS
MAREA_CONDOR_COLLECTOR=$CM_IP:9618
MAREA_CONDOR_ROOTFS=$R
MAREA_CONDOR_TOKEN_FILE=$RUN/worker.token
MAREA_CONDOR_REVOCATION_FILE=$R$CDIR/revoked.conf
MAREA_CONDOR_COMMON_CONF=$RUN/common.conf
EOF
}

kill_ns_pids() {   # SIGKILL every process of OUR namespace (by pid, from `ip netns pids`)
  local p
  [ -e "/run/netns/$NS" ] || return 0
  for p in $(ip netns pids "$NS"); do kill -KILL "$p" 2>/dev/null || true; done
}

cmd_stop() {
  local pid i
  if pid=$(cm_pid); then
    kill -QUIT "$pid" 2>/dev/null || true   # fast shutdown: the manager runs no jobs
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  kill_ns_pids
  ip netns del "$NS" 2>/dev/null || true
  rm -f "$R$CM_LOCAL/run/master.pid"
  log "stopped"
}

cmd_status() {
  local pid
  if pid=$(cm_pid); then echo "manager: master $pid alive"; else echo "manager: not running"; return 1; fi
  in_cm condor_status -any -af MyType Name
}

# in_rootfs_as_user CMD: CMD as $TUSER with the rootfs as root (pivot_root: rootless podman needs user
# namespaces, which the kernel refuses inside a chroot), in private mount and pid namespaces, so podman's
# pause process ends with CMD.
in_rootfs_as_user() {
  unshare --mount --pid --fork --propagation private /bin/sh -c '
    set -e; R=$1; shift
    mount --bind "$R" "$R"; mount -t proc proc "$R/proc"; mount -t sysfs sysfs "$R/sys"
    mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup" 2>/dev/null || true; mount --rbind /dev "$R/dev"
    mkdir -p "$R/.oldroot"; cd "$R"; pivot_root . .oldroot; cd /; umount -l /.oldroot; mount --make-rshared /
    exec /usr/sbin/runuser -u '"$TUSER"' -- /usr/bin/env -i PATH='"$PATHS"' HOME=/home/'"$TUSER"' "$@"' - \
    "$R" "$@"
}

cmd_load_image() {
  local image=${1:?usage: $0 load-image IMAGE} archive
  [ -x "$R/usr/bin/podman" ] || { echo "run '$0 install' first" >&2; exit 1; }
  archive=$(mktemp -p "$R/tmp" image.XXXXXX.tar)
  podman save -q -o "$archive.new" "$image"
  mv -f "$archive.new" "$archive"
  chmod 644 "$archive"
  in_rootfs_as_user podman --events-backend file load -q -i "/tmp/${archive##*/}" >/dev/null
  rm -f "$archive"
  log "image $image loaded for $TUSER in the rootfs"
}

case ${1:-} in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  exec) shift; in_cm "$@" ;;
  submit) shift; in_cm /usr/sbin/runuser -u "$TUSER" -- /usr/bin/env HOME=/home/$TUSER condor_submit "$@" ;;
  env) cmd_env ;;
  load-image) shift; cmd_load_image "$@" ;;
  podman) shift; in_rootfs_as_user podman --events-backend file "$@" ;;
  *) sed -n '2,25p' "$0"; exit 2 ;;
esac
