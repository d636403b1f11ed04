"""The ec2 driver's secret scrubbing, against an EC2 endpoint that echoes the secret key in its errors.

moto never puts a credential in an error, so the driver's scrubbing (`Ec2Cloud.error`) would pass any test
against it even if it were removed. This endpoint is a real HTTP server on a loopback socket that answers
every EC2 call with the error document EC2 sends (XML, HTTP 401 `AuthFailure`) whose message quotes the
configured secret access key, as a misbehaving EC2-compatible cloud or proxy could: the CloudError, and
everything logged, must not carry it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import SecretStr

from marea.clouds.base import CloudError, CloudErrorKind
from marea.clouds.ec2 import Ec2Cloud
from marea.config import Ec2CloudSection

SECRET = "wJalrXUtnFEMI-marea-scrub-test-K7MDENG"


class EchoingEc2(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>AuthFailure</Code>'
            f"<Message>key pair AKIAMAREATEST/{SECRET} was not accepted</Message></Error></Errors>"
            "<RequestID>5d6e2f0c-0000-4000-8000-000000000000</RequestID></Response>"
        ).encode()
        self.send_response(401)
        self.send_header("Content-Type", "text/xml;charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def echoing_endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoingEc2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_secret_echoed_by_the_cloud_is_scrubbed(echoing_endpoint: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="marea")
    settings = Ec2CloudSection(
        endpoint_url=echoing_endpoint,
        region_name="eu-south-1",
        aws_access_key_id="AKIAMAREATEST",
        aws_secret_access_key=SecretStr(SECRET),
        image_id="ami-12c6146b",
    )
    driver = Ec2Cloud(settings)
    try:
        with pytest.raises(CloudError) as info:
            driver.list_owned("scrub")
    finally:
        driver.close()
    reason = info.value.reason
    # the error did come back with the cloud's message (so scrubbing had something to do) ...
    assert info.value.kind is CloudErrorKind.AUTH and "AuthFailure" in reason and "was not accepted" in reason
    # ... and the secret is gone from it, replaced where it stood
    assert SECRET not in reason and "AKIAMAREATEST/***" in reason
    assert SECRET not in str(info.value) and SECRET not in caplog.text
