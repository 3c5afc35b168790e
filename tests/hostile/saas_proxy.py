"""The SaaS APIs (SendGrid, Amazon SNS, X) answered on 127.0.0.1, reached by the real
client libraries through nothing but their standard environment: ``HTTPS_PROXY``
points at this proxy, which accepts ``CONNECT``, ends TLS with a certificate for the
vendor's host signed by a CA of the test's own (trusted through ``SSL_CERT_FILE``,
``REQUESTS_CA_BUNDLE`` and ``AWS_CA_BUNDLE``), and answers as the vendor would.

So a runbook runs exactly as deployed (no endpoint argument, no seam in our code) and
the test sees every request, headers included: the credentials really were used.
No name is ever looked up: the proxy never connects anywhere.
"""

from __future__ import annotations

import datetime as dt
import json
import socketserver
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.threads import serving

SNS_HOST = "sns.af-south-1.amazonaws.com"  # examples/fleet.yaml's SMS region
HOSTS = ("api.sendgrid.com", "api.twitter.com", "api.x.com", SNS_HOST)
SNS_REPLY = (
    '<PublishResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><PublishResult>'
    "<MessageId>0f1e2d3c-0000-4000-8000-000000000001</MessageId></PublishResult>"
    "<ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata></PublishResponse>"
)


@dataclass
class Seen:
    """Every request the vendors got: (host, method, path, headers, body)."""

    requests: list[tuple[str, str, str, dict[str, str], bytes]] = field(default_factory=list)

    def hosts(self) -> set[str]:
        return {r[0] for r in self.requests}

    def text(self) -> str:
        """Headers and bodies as one text, to check the credentials reached the vendor."""
        return "\n".join(f"{r[3]}\n{r[4].decode(errors='replace')}" for r in self.requests)


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for every vendor host signed by it: (ca, cert, key)."""
    now = dt.datetime.now(dt.UTC)

    def build(subject: str, key: Any, issuer: str, signer: Any, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            names = [x509.DNSName(h) for h in HOSTS]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    ca = build("ppo-dr test CA", ca_key, "ppo-dr test CA", ca_key, True)
    leaf = build(HOSTS[0], leaf_key, "ppo-dr test CA", ca_key, False)
    paths = directory / "ca.pem", directory / "vendor.pem", directory / "vendor.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


class _Vendor(BaseHTTPRequestHandler):
    """One vendor API over the TLS tunnel; ``self.server`` carries host and record."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        host = self.server.vendor_host  # type: ignore[attr-defined]
        self.server.seen.requests.append(  # type: ignore[attr-defined]
            (host, "POST", self.path, dict(self.headers), body)
        )
        if host == "api.sendgrid.com":
            status, kind, reply = 202, "application/json", b""
        elif host == SNS_HOST:
            status, kind, reply = 200, "text/xml", SNS_REPLY.encode()
        else:
            text = json.loads(body or b"{}").get("text", "")
            status, kind = 201, "application/json"
            reply = json.dumps({"data": {"id": "1790000000000000001", "text": text}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


class _Tunnel(socketserver.StreamRequestHandler):
    """``CONNECT host:443``, then TLS as that host, then the vendor's HTTP."""

    def handle(self) -> None:
        line = self.rfile.readline(65536).decode("latin-1").split()
        while self.rfile.readline(65536) not in (b"\r\n", b"\n", b""):
            pass
        host = line[1].rsplit(":", 1)[0] if len(line) > 1 and line[0] == "CONNECT" else ""
        if host not in HOSTS:
            self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.wfile.flush()
        tls = self.server.tls.wrap_socket(self.connection, server_side=True)  # type: ignore[attr-defined]
        vendor = type("VendorServer", (), {"vendor_host": host, "seen": self.server.seen})()  # type: ignore[attr-defined]
        _Vendor(tls, self.client_address, vendor)  # type: ignore[arg-type]


@contextmanager
def saas_proxy(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Seen]:
    """Run the proxy and point this process's HTTPS clients at it until the block ends."""
    ca, cert, key = _certificates(directory)
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Tunnel)
    server.daemon_threads = True
    server.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # type: ignore[attr-defined]
    server.tls.load_cert_chain(cert, key)  # type: ignore[attr-defined]
    server.seen = seen = Seen()  # type: ignore[attr-defined]
    proxy = f"http://127.0.0.1:{server.server_address[1]}"
    for name in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "AWS_CA_BUNDLE"):
        monkeypatch.setenv(name, str(ca))
    with serving(server):
        yield seen
