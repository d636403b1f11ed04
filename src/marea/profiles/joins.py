"""Join parameters: the secrets a worker needs to join the cluster's batch system, made at `marea cluster create`.

They are made on the admin's machine before the master boots, so that the master's user-data and the worker
template agree without any exchange after boot:
- Slurm: a munge key (the controller address is the master's port, created first);
- HTCondor: a pool signing key; each worker's IDTOKEN is signed with it on the master by the engine
  (`condor_token_create`), since only HTCondor's own tools derive the signing secret from the key file;
- Kubernetes: nothing. kubeadm makes the cluster CA on the master, and the engine's driver creates one
  bootstrap token per worker through the API with a short lifetime (docs/security.md); no join secret is
  ever in a user-data.
`JoinSecrets.secrets()` lists every secret value, so logs and errors can be scrubbed of them.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass


@dataclass(frozen=True)
class JoinSecrets:
    munge_key_b64: str = ""
    condor_signing_key_b64: str = ""

    def __repr__(self) -> str:  # never print key material
        return "JoinSecrets(<hidden>)"

    def secrets(self) -> list[str]:
        return [v for v in (self.munge_key_b64, self.condor_signing_key_b64) if v]


def make_join_secrets(system: str, cluster: str) -> JoinSecrets:
    """The secrets of `system`'s workers (`cluster` names them where a system wants it)."""
    if system == "slurm":
        return JoinSecrets(munge_key_b64=base64.b64encode(secrets.token_bytes(1024)).decode())
    if system == "htcondor":
        return JoinSecrets(condor_signing_key_b64=base64.b64encode(secrets.token_bytes(64)).decode())
    return JoinSecrets()
