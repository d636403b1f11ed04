#!/bin/bash
# testbeds/podman.sh - podman + runc and a local busybox image for marea's offload tests (no registry needed).
#
#   testbeds/podman.sh install   apt-get install podman runc busybox-static (skipped when present), then build
#                                docker.io/library/busybox:latest from busybox-static with `podman import`
#   testbeds/podman.sh status    podman version and the busybox image
#
# No image can be pulled on CI machines, so the image is made here: a rootfs holding Debian's static busybox
# and one symlink per applet, packed with tar and imported. Idempotent: the import is skipped when the image
# exists. Pitfalls (found on this machine): podman's default OCI runtime (crun) fails on hybrid cgroups and
# its default rlimits exceed the sandbox's hard limits, hence the global flags below and, at run time,
# `--ulimit nofile=1024:1024 --ulimit nproc=1024:1024`.
set -euo pipefail

IMAGE=${MAREA_BUSYBOX_IMAGE:-docker.io/library/busybox:latest}
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs --events-backend file)

cmd_install() {
  if ! command -v podman >/dev/null || ! command -v runc >/dev/null || [ ! -x /bin/busybox ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      podman runc busybox-static >/dev/null
  fi
  if "${PODMAN[@]}" image exists "$IMAGE"; then
    echo "image $IMAGE already present"
    return 0
  fi
  local root
  root=$(mktemp -d)
  trap 'rm -rf "$root"' RETURN
  mkdir -p "$root"/{bin,etc,tmp,proc,sys,dev,root}
  cp /bin/busybox "$root/bin/busybox"
  local applet
  for applet in $("$root/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
  echo 'root:x:0:' >"$root/etc/group"
  chmod 1777 "$root/tmp"
  tar -C "$root" -c . | "${PODMAN[@]}" import --change 'CMD ["sh"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$IMAGE" >/dev/null
  echo "imported $IMAGE"
}

case "${1:-}" in
  install) cmd_install ;;
  status) podman --version; "${PODMAN[@]}" image ls "$IMAGE" ;;
  *) sed -n '2,6p' "$0"; exit 2 ;;
esac
