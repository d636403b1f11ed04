"""kubeadm bootstrap tokens and the CA pin a worker joins with: pure functions, no I/O.

Why marea makes the token: a kubeadm cluster's own token lives 24 h by default or forever (`--ttl 0`), and a
master that hands the same one to every worker for the cluster's life gives any leaked user-data the power to add
nodes. marea creates one token per worker, valid for `bootstrap_token_ttl_s`, as the `bootstrap.kubernetes.io/token`
Secret kubeadm itself writes (the API server's token cleaner deletes it at `expiration`; marea also deletes it
when the worker goes). The CA pin is what `kubeadm join --discovery-token-ca-cert-hash` checks: sha256 over the
DER SubjectPublicKeyInfo of the cluster CA, computed here from the certificate without a crypto library.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import secrets
import string
from typing import Any

TOKEN_RE = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}$")
GROUP = "system:bootstrappers:kubeadm:default-node-token"
_ALPHABET = string.ascii_lowercase + string.digits


def token_id(worker: str) -> str:
    """The token id of `worker`'s token, derived from its name: the id is the public half of a bootstrap token,
    and knowing it from the name lets the driver delete the Secret by name, so its identity needs no right to
    read or list the Secrets of kube-system."""
    n = int.from_bytes(hashlib.sha256(f"marea-worker:{worker}".encode()).digest()[:8], "big")
    out = ""
    for _ in range(6):
        n, r = divmod(n, len(_ALPHABET))
        out += _ALPHABET[r]
    return out


def new_token(worker: str) -> tuple[str, str]:
    """(token id, token secret) in kubeadm's format; the secret is random, the id is `token_id(worker)`."""
    return token_id(worker), "".join(secrets.choice(_ALPHABET) for _ in range(16))


def token_secret(token_id: str, secret: str, expires: float, worker: str, labels: dict[str, str]) -> dict[str, Any]:
    """The Secret `kubeadm token create` would write, plus marea's labels (to find a worker's token again)."""
    expiration = dt.datetime.fromtimestamp(int(expires), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    data = {
        "token-id": token_id,
        "token-secret": secret,
        "expiration": expiration,
        "usage-bootstrap-authentication": "true",
        "usage-bootstrap-signing": "true",
        "auth-extra-groups": GROUP,
        "description": f"marea: join token of worker {worker}",
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "bootstrap.kubernetes.io/token",
        "metadata": {"name": f"bootstrap-token-{token_id}", "namespace": "kube-system", "labels": labels},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


class CertError(ValueError):
    pass


def _tlv(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at `pos`."""
    if pos + 2 > len(der):
        raise CertError("truncated certificate")
    tag, length = der[pos], der[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or pos + n > len(der):
            raise CertError("bad DER length")
        length = int.from_bytes(der[pos : pos + n], "big")
        pos += n
    if pos + length > len(der):
        raise CertError("truncated certificate")
    return tag, pos, pos + length


def pem_to_der(pem: str) -> bytes:
    m = re.search(r"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", pem, re.S)
    if not m:
        raise CertError("no PEM certificate")
    try:
        return base64.b64decode("".join(m.group(1).split()), validate=True)
    except ValueError:
        raise CertError("bad base64 in the certificate") from None


def spki_der(cert_der: bytes) -> bytes:
    """The SubjectPublicKeyInfo of an X.509 certificate: the 7th field of tbsCertificate, counting the optional
    [0] version (RFC 5280: version, serial, signature, issuer, validity, subject, subjectPublicKeyInfo)."""
    tag, start, _ = _tlv(cert_der, 0)
    if tag != 0x30:
        raise CertError("not a certificate")
    tag, pos, end = _tlv(cert_der, start)  # tbsCertificate
    if tag != 0x30:
        raise CertError("not a certificate")
    _, _, nxt = _tlv(cert_der, pos)
    if cert_der[pos] == 0xA0:  # explicit version
        pos = nxt
    for _ in range(5):  # serial, signature, issuer, validity, subject
        _, _, pos = _tlv(cert_der, pos)
    tag, _, spki_end = _tlv(cert_der, pos)
    if tag != 0x30 or spki_end > end:
        raise CertError("no public key in the certificate")
    return cert_der[pos:spki_end]


def ca_cert_hash(pem: str) -> str:
    """kubeadm's `sha256:<hex>` pin of the CA (the first certificate of `pem`)."""
    return "sha256:" + hashlib.sha256(spki_der(pem_to_der(pem))).hexdigest()
