#!/bin/sh
# marea worker user-data for Slurm: join the running slurmctld as a dynamic node (`slurmd -Z`) named after the
# VM, with the flavour's cores and memory and the feature that puts it in marea's partition.
# On a real cloud image, prepend the steps that install slurmd and the munge key (see `marea cluster`).
set -eu
export SLURM_CONF="${MAREA_SLURM_CONF}"
spool="$(sed -n 's/^SlurmdSpoolDir=//p' "$SLURM_CONF" | sed "s/%n/${MAREA_NAME}/")"
[ -n "$spool" ] && mkdir -p "$spool"
echo "joining Slurm as ${MAREA_NAME} (${MAREA_CORES} cores, ${MAREA_MEMORY_MB} MiB)"
exec slurmd -D -Z -N "${MAREA_NAME}" --conf "CPUs=${MAREA_CORES} RealMemory=${MAREA_MEMORY_MB} Feature=${MAREA_SLURM_FEATURE}"
