"""Building blocks of marea's `#cloud-config` documents, shared by every batch profile.

JSON is YAML: cloud-init reads a JSON body as a #cloud-config document, and marea needs no YAML library.
The first act of every document is METADATA_GUARD: the user-data may hold join secrets, and the metadata
service would hand it back to anyone on the VM (docs/security.md).
"""

from __future__ import annotations

import json
from typing import Any

#: the metadata service, where anyone on the VM can read its user-data (the join secrets) back
METADATA_V4, METADATA_V6 = "169.254.169.254", "fe80::a9fe:a9fe"
#: the first act of every marea user-data (`bootcmd`, at every boot, before SSH logins or jobs are possible): only
#: root may reach the metadata service (cloud-init has read it by then). With nftables, else iptables; an image
#: with neither gets a `prohibit` route, which shuts root out too (nothing after boot needs the service).
METADATA_GUARD = (
    "(nft add table inet marea_guard"
    " && nft 'add chain inet marea_guard output { type filter hook output priority 0; policy accept; }'"
    " && nft flush chain inet marea_guard output"
    f" && nft add rule inet marea_guard output ip daddr {METADATA_V4} meta skuid != 0 reject"
    f" && nft add rule inet marea_guard output ip6 daddr {METADATA_V6} meta skuid != 0 reject)"
    f" || (iptables -C OUTPUT -d {METADATA_V4} -m owner ! --uid-owner 0 -j REJECT"
    f" || iptables -I OUTPUT -d {METADATA_V4} -m owner ! --uid-owner 0 -j REJECT)"
    f" || ip route replace prohibit {METADATA_V4}/32"
)


def document(body: dict[str, Any]) -> str:
    """A #cloud-config document whose first act is the metadata guard."""
    body = {"bootcmd": [["sh", "-c", METADATA_GUARD]], **body}
    if "runcmd" in body:
        # cloud-init writes runcmd as one shell script and judges it by its last command: stop at the first
        # failure, so a failed step shows as `cloud-init status: error` instead of a broken service later
        body = {**body, "runcmd": ["set -e", *body["runcmd"]]}
    return "#cloud-config\n" + json.dumps(body, indent=2) + "\n"


def plain_file(path: str, content: str, mode: str = "0644", **extra: Any) -> dict[str, Any]:
    return {"path": path, "content": content, "permissions": mode, **extra}


def secret_file(path: str, content_b64: str, owner: str, mode: str = "0400") -> dict[str, Any]:
    """A key file written after packages created its owner (`defer`), readable by that owner only."""
    return {
        "path": path,
        "encoding": "b64",
        "content": content_b64,
        "owner": owner,
        "permissions": mode,
        "defer": True,
    }
