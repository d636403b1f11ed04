"""moto's EC2 in server mode: a real HTTP server on a loopback socket, spoken to by boto3 as to any EC2 cloud."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from marea.config import Ec2CloudSection

moto_server = pytest.importorskip("moto.moto_server.threaded_moto_server")

#: an AMI id moto ships in its default image list
AMI = "ami-12c6146b"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def ec2_settings(moto_endpoint: str) -> Ec2CloudSection:
    return Ec2CloudSection(
        endpoint_url=moto_endpoint,
        region_name="eu-south-1",
        aws_access_key_id="AKIAMAREATEST",
        aws_secret_access_key=SecretStr("moto-secret-key-value"),
        image_id=AMI,
    )
