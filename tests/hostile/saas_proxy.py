"""The SaaS APIs (SendGrid, Amazon SNS, X) answered on 127.0.0.1, reached by the real
client libraries through nothing but their standard environment: ``HTTPS_PROXY``
points at this proxy, which accepts ``CONNECT``, ends TLS with a certificate for the
vendor's host signed by a CA of the test's own (trusted through ``SSL_CERT_FILE``,
``REQUESTS_CA_BUNDLE`` and ``AWS_CA_BUNDLE``), and answers as the vendor would.

So a runbook runs exactly as deployed (no endpoint argument, no seam in our code) and
the test sees every request, headers included: the credentials really were used.
No name is ever looked up: the proxy never connects anywhere. Behind the TLS, the
vendors are the project's one stand-in server (:mod:`tests.standin`), which records
the requests and answers them.
"""

from __future__ import annotations

import datetime as dt
import socketserver
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.standin import Reply, Request, StandIn, http_server
from tests.threads import serving

SNS_HOST = "sns.af-south-1.amazonaws.com"  # examples/fleet.yaml's SMS region
HOSTS = ("api.sendgrid.com", "api.twitter.com", "api.x.com", SNS_HOST)
SNS_REPLY = (
    '<PublishResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><PublishResult>'
    "<MessageId>0f1e2d3c-0000-4000-8000-000000000001</MessageId></PublishResult>"
    "<ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata></PublishResponse>"
)


@dataclass
class Seen(StandIn):
    """The vendors behind the tunnel (a :mod:`tests.standin` stand-in, told apart by the
    ``Host`` header): every request they got, answered as each vendor would."""

    def respond(self, request: Request) -> Reply:
        host = _host(request)
        if host == "api.sendgrid.com":
            return Reply(202, headers={"Content-Type": "application/json"})
        if host == SNS_HOST:
            return Reply.xml(200, SNS_REPLY)
        text = (request.json() or {}).get("text", "")
        return Reply.json(201, {"data": {"id": "1790000000000000001", "text": text}})

    def hosts(self) -> set[str]:
        return {_host(r) for r in self.requests}

    def text(self) -> str:
        """Headers and bodies as one text, to check the credentials reached the vendor."""
        return "\n".join(f"{r.headers}\n{r.body.decode(errors='replace')}" for r in self.requests)


def _host(request: Request) -> str:
    host = {k.lower(): v for k, v in request.headers.items()}.get("host", "")
    return host.rsplit(":", 1)[0] if host.endswith(":443") else host


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
        with tls:
            self.server.vendors.finish_request(tls, self.client_address)  # type: ignore[attr-defined]


@contextmanager
def saas_proxy(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Seen]:
    """Run the proxy and point this process's HTTPS clients at it until the block ends."""
    ca, cert, key = _certificates(directory)
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Tunnel)
    server.daemon_threads = True
    server.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # type: ignore[attr-defined]
    server.tls.load_cert_chain(cert, key)  # type: ignore[attr-defined]
    proxy = f"http://127.0.0.1:{server.server_address[1]}"
    for name in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "AWS_CA_BUNDLE"):
        monkeypatch.setenv(name, str(ca))
    seen = Seen()
    with http_server(seen) as vendors:
        server.vendors = vendors  # type: ignore[attr-defined]
        with serving(server):
            yield seen
