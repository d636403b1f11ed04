"""Bootstrap tokens and the CA pin of the Kubernetes driver, against the API stand-in (tests/kube/fake_cluster.py:
every Secret it accepts is validated against the official Kubernetes 1.30 schemas) and against openssl, which
computes the pin the way kubeadm's documentation does."""

from __future__ import annotations

import base64
import logging
import subprocess
import time
from pathlib import Path

import pytest

from marea.batch.base import BatchError
from marea.batch.kube_tokens import TOKEN_RE, ca_cert_hash
from tests.kube.conftest import Api, make_ca


def openssl_pin(pem: str) -> str:
    """`openssl x509 -pubkey | openssl pkey -pubin -outform der | sha256sum`, kubeadm's documented recipe."""
    pub = subprocess.run(["openssl", "x509", "-pubkey", "-noout"], input=pem.encode(), capture_output=True, check=True)
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub.stdout, capture_output=True,
                         check=True)  # fmt: skip
    digest = subprocess.run(["sha256sum"], input=der.stdout, capture_output=True, check=True)
    return "sha256:" + digest.stdout.split()[0].decode()


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_ca_pin_is_kubeadms(tmp_path: Path, kind: str) -> None:
    pem = make_ca(tmp_path, kind)
    assert ca_cert_hash(pem) == openssl_pin(pem)


def test_each_worker_gets_its_own_short_lived_token_as_a_bootstrap_secret(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    batch = api.batch(bootstrap_token_ttl_s=900)
    before = time.time()
    one, two = batch.join_variables("kc-aaa111"), batch.join_variables("kc-bbb222")
    assert set(one) == {"MAREA_K8S_ENDPOINT", "MAREA_K8S_TOKEN", "MAREA_K8S_CA_HASH"}
    assert one["MAREA_K8S_ENDPOINT"] == f"127.0.0.1:{api.fake.port}"
    assert one["MAREA_K8S_CA_HASH"] == openssl_pin(api.ca_pem)
    assert one["MAREA_K8S_TOKEN"] != two["MAREA_K8S_TOKEN"]
    for worker, vars_ in (("kc-aaa111", one), ("kc-bbb222", two)):
        token = vars_["MAREA_K8S_TOKEN"]
        assert TOKEN_RE.match(token)
        token_id, _, secret = token.partition(".")
        obj = api.fake.get("secrets", "kube-system", f"bootstrap-token-{token_id}")
        assert obj is not None and obj["type"] == "bootstrap.kubernetes.io/token"
        data = {k: base64.b64decode(v).decode() for k, v in obj["data"].items()}
        assert data["token-id"] == token_id and data["token-secret"] == secret
        assert data["usage-bootstrap-authentication"] == data["usage-bootstrap-signing"] == "true"
        assert data["auth-extra-groups"] == "system:bootstrappers:kubeadm:default-node-token"
        assert worker in data["description"]
        expires = time.mktime(time.strptime(data["expiration"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
        assert before + 900 - 2 <= expires <= time.time() + 900
        assert obj["metadata"]["labels"] == {"marea.io/worker": worker, "marea.io/cluster": "kc"}
        assert api.fake.bootstrap_token_valid(token)
        assert token not in caplog.text and secret not in caplog.text
    # removal of a worker that never registered still deletes its token
    assert batch.remove("kc-aaa111") is True
    assert not api.fake.bootstrap_token_valid(one["MAREA_K8S_TOKEN"])
    assert api.fake.bootstrap_token_valid(two["MAREA_K8S_TOKEN"])
    assert api.fake.register_node("kc-aaa111", "kc", "m1.big", one["MAREA_K8S_TOKEN"]) == 401
    batch.close()


def test_api_errors_are_one_line_and_name_no_credential(api: Api, tmp_path: Path) -> None:
    bad = tmp_path / "bad-kubeconfig"
    bad.write_text(api.kubeconfig.read_text().replace("fake-kube-token-123", "wrong-token-secret-xyz"))
    from marea.batch.kubernetes import KubernetesBatch
    from marea.config import KubernetesSection

    batch = KubernetesBatch(KubernetesSection(kubeconfig=str(bad)), cluster="kc")
    with pytest.raises(BatchError) as err:
        batch.join_variables("kc-ccc333")
    assert str(err.value) == "kubernetes: create a bootstrap token failed: HTTP 401 Unauthorized"
    batch.close()
    with pytest.raises(BatchError, match="cannot load the client configuration"):
        KubernetesBatch(KubernetesSection(kubeconfig=str(tmp_path / "missing")))
