#!/bin/bash
# testbeds/guests.sh - the guest images and the wheelhouse of the OpenStack testbed's booting cloud.
#
#   testbeds/guests.sh install     debootstrap two Debian 13 root filesystems (reused when present):
#                                  base  = systemd, cloud-init, openssh, python3-venv: an image with NO batch software
#                                  batch = base + Slurm (slurmctld, slurmd, client) + munge + HTCondor, all from
#                                          Debian 13's own packages (how the HTCondor testbed gets HTCondor)
#                                  each packed as a tar (the Glance image data, container_format=docker)
#   testbeds/guests.sh wheelhouse DIR  build marea's wheel from this checkout and download its dependencies for
#                                  the guests' Python (3.13) into DIR (what guests pip-install, no index inside)
#   testbeds/guests.sh status
#
# Why Debian 13 and not 12: Debian 12 has no HTCondor package, and one image must carry both batch systems.
# The images are "offline" images: no apt sources (guests reach nothing but the host), so cloud-init's
# `package_update` is a no-op and `packages:` finds everything installed; real images install the same packages
# from their mirror with the same user-data.
#
# env: MAREA_GUEST_BASE (/var/lib/marea-guests)  MAREA_GUEST_MIRROR (the host's Debian mirror)
set -euo pipefail

BASE=${MAREA_GUEST_BASE:-/var/lib/marea-guests}
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# net-tools: cloud-init's ifupdown rendering sets network_data.json's routes (the default route among them) with
# `route add`; nftables: as on Debian's cloud images, the firewall marea's user-data uses to keep jobs away from
# the metadata service
BASE_PACKAGES=(systemd-sysv cloud-init ifupdown net-tools nftables iproute2 iputils-ping netcat-openbsd udev kmod
               procps dbus python3-venv python3-pip openssh-server sudo ca-certificates less curl)
BATCH_PACKAGES=(slurmctld slurmd slurm-client munge htcondor)

log() { echo "[guests.sh $(date +%T)] $*" >&2; }

host_mirror() {   # the host's own Debian mirror: no registry address is hard-coded here
  { awk '/^URIs:/{print $2}' /etc/apt/sources.list.d/*.sources; awk '/^deb /{print $2}' /etc/apt/sources.list; } \
    2>/dev/null | grep -v -e security -e '^$' | head -1 || true
}

in_root() {  # ROOT CMD: a command chrooted in ROOT with /proc and /dev, in a private mount namespace
  local root=$1; shift
  unshare --mount --propagation private sh -c '
    R=$1; shift; mount -t proc proc "$R/proc" && mount --rbind /dev "$R/dev" && exec chroot "$R" "$@"' - \
    "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"
}

apt_in() {  # ROOT PACKAGES...
  local root=$1; shift
  in_root "$root" sh -c "apt-get update -qq && apt-get install -y -q --no-install-recommends $* \
    && apt-get clean && rm -rf /var/lib/apt/lists/*"
}

finish_image() {  # ROOT NAME: seal a root filesystem as an image tar
  local root=$1 name=$2
  rm -f "$root/usr/sbin/policy-rc.d"
  # an offline image: no apt sources (guests reach only the host); cloud-init must not write any either
  rm -f "$root/etc/apt/sources.list"; : > "$root/etc/apt/sources.list"
  rm -f "$root/etc/apt/sources.list.d/"*
  : > "$root/etc/machine-id"; echo localhost > "$root/etc/hostname"
  # debootstrap copied the host's resolver, which guests cannot reach: every lookup would wait for its timeout
  # (slurmctld looks up each client's address and its clients time out). No nameserver: lookups fail at once.
  printf '# the testbed has no DNS for guests\n' > "$root/etc/resolv.conf"
  rm -f "$root"/etc/ssh/ssh_host_*   # each guest makes its own host keys at first boot
  # the testbed's Nova driver hands the config drive over as cloud-init's seed directory; minbase has no locales
  cat > "$root/etc/cloud/cloud.cfg.d/90_marea_testbed.cfg" <<'EOF'
# marea OpenStack testbed image: the config drive (written by the testbed's Nova driver) is the datasource
datasource_list: [ ConfigDrive, None ]
locale: C.UTF-8
# as Debian's own cloud images: the hostname resolves (sudo asks)
manage_etc_hosts: true
apt:
  preserve_sources_list: true
EOF
  echo LANG=C.UTF-8 > "$root/etc/default/locale"
  tar -C "$root" --numeric-owner --xattrs -cf "$BASE/$name.tar.tmp" .
  mv "$BASE/$name.tar.tmp" "$BASE/$name.tar"
  log "image $name: $(du -sh "$BASE/$name.tar" | cut -f1)"
}

cmd_install() {
  local t0=$SECONDS mirror
  mkdir -p "$BASE"
  # nft: the host runs marea's metadata guard in a namespace of its own (tests/cluster/test_metadata_guard.py)
  { command -v systemd-nspawn && command -v nft; } >/dev/null || {
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
      systemd-container debootstrap iptables nftables >/dev/null; }
  if [ -f "$BASE/base.tar" ] && [ -f "$BASE/batch.tar" ] && cmp -s "$BASE/.installed" "$0"; then
    log "images present: $BASE/base.tar, $BASE/batch.tar"; return 0
  fi
  mirror=${MAREA_GUEST_MIRROR:-$(host_mirror)}
  mirror=${mirror:-http://deb.debian.org/debian}
  local R=$BASE/rootfs
  rm -rf "$R" "$BASE/base.tar" "$BASE/batch.tar"
  debootstrap --variant=minbase trixie "$R" "$mirror" >"$BASE/debootstrap.log" 2>&1 \
    || { tail -20 "$BASE/debootstrap.log" >&2; exit 1; }
  printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d"; chmod +x "$R/usr/sbin/policy-rc.d"
  apt_in "$R" "${BASE_PACKAGES[*]}" >"$BASE/apt-base.log" 2>&1 || { tail -20 "$BASE/apt-base.log" >&2; exit 1; }
  finish_image "$R" base
  printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d"; chmod +x "$R/usr/sbin/policy-rc.d"
  printf 'deb %s trixie main\n' "$mirror" > "$R/etc/apt/sources.list"
  cp /etc/resolv.conf "$R/etc/resolv.conf"   # apt needs the host's resolver; finish_image takes it away again
  apt_in "$R" "${BATCH_PACKAGES[*]}" >"$BASE/apt-batch.log" 2>&1 || { tail -20 "$BASE/apt-batch.log" >&2; exit 1; }
  # installed, not configured: a daemon that starts at boot before cloud-init wrote its configuration hangs the
  # boot (slurmd without slurm.conf blocks multi-user.target, and cloud-final waits for it); user-data starts them
  in_root "$R" systemctl disable slurmd slurmctld munge condor >>"$BASE/apt-batch.log" 2>&1
  finish_image "$R" batch
  rm -rf "$R"
  cp "$0" "$BASE/.installed"
  log "installed in $((SECONDS - t0)) s"
}

cmd_wheelhouse() {  # DIR [PYTHON]: marea's wheel from this checkout + its dependencies for the guests' Python
  local dir=${1:?usage: $0 wheelhouse DIR} py=${2:-python3} repo tag src
  repo=$(cd "$HERE/.." && pwd)
  mkdir -p "$dir"
  rm -f "$dir"/marea-*.whl
  # built from a copy of what the wheel is made of: pip builds in the source tree, and would leave build/ there
  src=$(mktemp -d)
  cp -r "$repo/src" "$repo/pyproject.toml" "$repo/README.md" "$repo/LICENSE" "$src"/
  "$py" -m pip wheel -q --no-deps -w "$dir" "$src" >/dev/null
  rm -rf "$src"
  # the guests run Debian 13's CPython 3.13 (glibc 2.41): binary wheels for it, never an sdist to build there
  tag=(--only-binary=:all: --implementation cp --python-version 3.13 --abi cp313 --abi abi3 --abi none
       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64
       --platform manylinux_2_34_x86_64 --platform any)
  "$py" -m pip download -q "${tag[@]}" -d "$dir" --find-links "$dir" "marea[openstack,htcondor]" >/dev/null
  "$py" -m pip download -q "${tag[@]}" -d "$dir" pip setuptools wheel >/dev/null
  log "wheelhouse $dir: $(ls "$dir" | wc -l) files, $(du -sh "$dir" | cut -f1)"
}

cmd_status() {
  ls -la "$BASE"/*.tar 2>/dev/null || { echo "no images: run '$0 install'"; return 1; }
}

case "${1:-}" in
  install) cmd_install ;;
  wheelhouse) shift; cmd_wheelhouse "$@" ;;
  status) cmd_status ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac
