"""Join parameters: the secrets and addresses a worker needs to join the cluster's batch system.

They are made on the admin's machine at `marea cluster create`, before the master boots, so that the master's
user-data and the worker template agree without any exchange after boot:
- Slurm: a munge key, and the controller address (the master's port is created first, so its IP is known);
- Kubernetes: a kubeadm bootstrap token and a cluster CA made here, whose public-key hash workers pin;
- HTCondor: a pool signing key; the worker IDTOKEN is signed with it on the master at first boot
  (`condor_token_create`), since only HTCondor's own tools derive the signing secret from the key file.
`JoinSecrets.secrets()` lists every secret value, so logs and errors can be scrubbed of them.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import secrets
import string
from dataclasses import dataclass, field


@dataclass(frozen=True)
class JoinSecrets:
    munge_key_b64: str = ""
    condor_signing_key_b64: str = ""
    kubeadm_token: str = ""
    k8s_ca_cert_pem: str = ""
    k8s_ca_key_pem: str = field(default="", repr=False)
    k8s_ca_hash: str = ""

    def __repr__(self) -> str:  # never print key material
        return "JoinSecrets(<hidden>)"

    def secrets(self) -> list[str]:
        values = [self.munge_key_b64, self.condor_signing_key_b64, self.kubeadm_token, self.k8s_ca_key_pem]
        return [v for v in values if v]


def kubeadm_token() -> str:
    """A kubeadm bootstrap token: `[a-z0-9]{6}.[a-z0-9]{16}`."""
    alphabet = string.ascii_lowercase + string.digits

    def pick(n: int) -> str:
        return "".join(secrets.choice(alphabet) for _ in range(n))

    return f"{pick(6)}.{pick(16)}"


def kubernetes_ca(cluster: str) -> tuple[str, str, str]:
    """A self-signed cluster CA for kubeadm: (cert PEM, key PEM, `sha256:<hash of the public key info>`)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"kubernetes-{cluster}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=True,
                key_cert_sign=True,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert_pem, key_pem, "sha256:" + hashlib.sha256(spki).hexdigest()


def make_join_secrets(system: str, cluster: str) -> JoinSecrets:
    if system == "slurm":
        return JoinSecrets(munge_key_b64=base64.b64encode(secrets.token_bytes(1024)).decode())
    if system == "htcondor":
        return JoinSecrets(condor_signing_key_b64=base64.b64encode(secrets.token_bytes(64)).decode())
    cert, key, digest = kubernetes_ca(cluster)
    return JoinSecrets(kubeadm_token=kubeadm_token(), k8s_ca_cert_pem=cert, k8s_ca_key_pem=key, k8s_ca_hash=digest)
