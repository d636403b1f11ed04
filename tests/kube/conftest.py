"""Fixtures of the Kubernetes driver's tests: the API stand-in (tests/kube/fake_cluster.py, objects validated
against the official schemas) on a real socket, a real CA made by openssl, and a kubeconfig that carries both."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from marea.batch.kubernetes import KubernetesBatch
from marea.config import KubernetesSection
from tests.kube.fake_cluster import FakeCluster
from tests.offload.fake_kube import TOKEN


@dataclass
class Api:
    fake: FakeCluster
    kubeconfig: Path
    ca_pem: str

    def batch(self, cluster: str = "kc", **section: object) -> KubernetesBatch:
        return KubernetesBatch(KubernetesSection(kubeconfig=str(self.kubeconfig), **section), cluster=cluster)


def make_ca(directory: Path, kind: str = "rsa") -> str:
    """A self-signed CA like kubeadm's (RSA 2048 by default), made by openssl."""
    key, crt = directory / f"ca-{kind}.key", directory / f"ca-{kind}.crt"
    algo = ["-newkey", "rsa:2048"] if kind == "rsa" else ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    subprocess.run(["openssl", "req", "-x509", *algo, "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "2",
                    "-subj", "/CN=kubernetes"], check=True, capture_output=True)  # fmt: skip
    return crt.read_text()


def server_cert(directory: Path) -> tuple[str, str]:
    """The API server's certificate for 127.0.0.1, signed by the CA of make_ca(directory)."""
    key, csr, crt = directory / "apiserver.key", directory / "apiserver.csr", directory / "apiserver.crt"
    subprocess.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
                    "-subj", "/CN=kube-apiserver"], check=True, capture_output=True)  # fmt: skip
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(directory / "ca-rsa.crt"), "-CAkey",
                    str(directory / "ca-rsa.key"), "-CAcreateserial", "-out", str(crt), "-days", "2", "-extfile",
                    str(ext)], check=True, capture_output=True)  # fmt: skip
    return str(crt), str(key)


@dataclass
class Pki:
    ca_pem: str
    ca_file: str
    cert: str
    key: str


def make_pki(directory: Path) -> Pki:
    """A CA and the API server's certificate it signed, in `directory` (shared with the OpenStack engine test)."""
    pem = make_ca(directory)
    cert, key = server_cert(directory)
    return Pki(pem, str(directory / "ca-rsa.crt"), cert, key)


@contextmanager
def serving(pki: Pki) -> Iterator[FakeCluster]:
    """The API stand-in on a real socket for the block; on a clean exit, every object it took passed the schemas."""
    fake = FakeCluster((pki.cert, pki.key, pki.ca_file)).start()
    try:
        yield fake
        assert fake.invalid == [], "objects failed the official schemas"
    finally:
        fake.stop()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def write_kubeconfig(path: Path, server: str, ca_pem: str) -> Path:
    ca_data = base64.b64encode(ca_pem.encode()).decode()
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "marea",
        "clusters": [{"name": "c", "cluster": {"server": server, "certificate-authority-data": ca_data}}],
        "users": [{"name": "u", "user": {"token": TOKEN}}],
        "contexts": [{"name": "marea", "context": {"cluster": "c", "user": "u"}}],
    }  # fmt: skip
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def api(tmp_path: Path, pki: Pki) -> Iterator[Api]:
    with serving(pki) as fake:
        yield Api(fake, write_kubeconfig(tmp_path / "kubeconfig", fake.url, pki.ca_pem), pki.ca_pem)
