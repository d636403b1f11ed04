"""One IDTOKEN per HTCondor worker, minted when it boots and revoked when it is removed.

Why: a pool-wide worker token handed to every worker lives as long as the pool key, and whoever copies it once (a
leaked user-data, a snapshot of a worker's disk) can advertise startds into the pool for ever, and so be matched
with users' jobs. A token per worker, revoked the moment marea removes that worker, lives exactly as long as the
worker. HTCondor checks revocation itself: `SEC_TOKEN_REVOCATION_EXPR` on the central manager names the `jti`
(the token's unique id) of every revoked token, and `condor_reconfig` makes the daemons read it.

Why no expiry (`-lifetime`): daemons authenticate again with the token whenever a security session ends, so a
token that expires under a running worker takes it out of the pool with its jobs. The worker's own life is the
bound; the registry of issued and revoked ids is a small JSON file beside the engine's state.

The token is a secret: it is returned to the caller (the worker's user-data) and never logged; errors name the
command's exit status, not its output.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from marea.batch.base import BatchError

#: a `jti` goes into HTCondor's configuration: only these characters may (HTCondor makes hex ids)
_JTI_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")


def token_id(token: str) -> str:
    """The `jti` claim of an IDTOKEN (a JWT: header.claims.signature, base64url without padding)."""
    if not _TOKEN_RE.match(token):
        raise BatchError("htcondor: the token command did not print an IDTOKEN")
    claims_b64 = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(claims_b64 + "=" * (-len(claims_b64) % 4)))
    except (binascii.Error, ValueError):
        raise BatchError("htcondor: the token command printed an unreadable IDTOKEN") from None
    jti = claims.get("jti") if isinstance(claims, dict) else None
    if not isinstance(jti, str) or not _JTI_RE.match(jti):
        raise BatchError("htcondor: the IDTOKEN carries no usable jti (unique id); it could never be revoked")
    return jti


def revocation_config(revoked: list[str]) -> str:
    """The central manager's configuration that refuses every token in `revoked`."""
    head = "# written by marea: IDTOKENs of the workers it removed are refused (do not edit)\n"
    if not revoked:
        return head
    ids = ", ".join(f'"{jti}"' for jti in revoked if _JTI_RE.match(jti))
    return head + f"SEC_TOKEN_REVOCATION_EXPR = member(jti, {{{ids}}})\n"


def _write_atomically(path: Path, text: str, mode: int = 0o600) -> None:
    """Atomically, with `mode` set before the file appears: a crash leaves the old file or the new one, never
    half of one, and the file is never readable by others with content it should not show them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class WorkerTokens:
    """Mint a token for a booting worker; revoke it when the worker is removed.

    `mint_command` prints one IDTOKEN (typically `condor_token_create -identity condor@DOMAIN -key POOL -authz
    ADVERTISE_STARTD -authz ADVERTISE_MASTER -authz READ`); `revocation_file` is a file the central manager's
    configuration includes; `reconfig_command` makes the daemons read it again.
    """

    def __init__(
        self,
        mint_command: list[str],
        registry: Path,
        revocation_file: Path,
        reconfig_command: list[str],
        timeout_s: float = 30.0,
    ) -> None:
        self.mint_command = mint_command
        self.registry = registry
        self.revocation_file = revocation_file
        self.reconfig_command = reconfig_command
        self.timeout_s = timeout_s

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.registry.read_text())
        except FileNotFoundError:
            return {"issued": {}, "revoked": []}
        except (OSError, ValueError) as exc:
            raise BatchError(f"htcondor: token registry {self.registry} unreadable: {exc}") from None
        return {"issued": dict(data.get("issued", {})), "revoked": list(data.get("revoked", []))}

    def _save(self, data: dict[str, Any]) -> None:
        _write_atomically(self.registry, json.dumps(data, indent=1, sort_keys=True) + "\n")

    def _run(self, argv: list[str], what: str) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout_s)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BatchError(f"htcondor: {what} could not run: {type(exc).__name__}") from None
        if done.returncode != 0:  # its output may hold a token: name the status only
            raise BatchError(f"htcondor: {what} failed with exit status {done.returncode}")
        return done.stdout

    def mint(self, worker: str) -> str:
        """A new token for `worker`, recorded before it is handed out (so that it can always be revoked)."""
        token = self._run(self.mint_command, "the token command").strip()
        jti = token_id(token)
        data = self._load()
        data["issued"][worker] = jti
        self._save(data)
        return token

    def revoke(self, worker: str) -> bool:
        """Refuse `worker`'s token from now on. True when a token was revoked, False when it had none."""
        data = self._load()
        jti = data["issued"].pop(worker, None)
        if jti is None:
            return False
        if jti not in data["revoked"]:
            data["revoked"].append(jti)
        # the configuration first: if reconfig fails, the next removal (or a daemon restart) applies it
        # HTCondor's daemons read it (it holds ids, not secrets)
        _write_atomically(self.revocation_file, revocation_config(data["revoked"]), mode=0o644)
        self._save(data)
        self._run(self.reconfig_command, "condor_reconfig")
        return True

    def issued(self) -> dict[str, str]:
        """worker -> jti of the tokens not revoked yet."""
        return dict(self._load()["issued"])
