"""`valdrix serve` over HTTPS as the API server calls it: verified server certificate, mTLS → tenant, rotation."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.test_admission import CONFIG_MAP, PATH
from tests.live import make_tenant
from tests.pg import free_port
from tests.unit.admission.test_translate import envelope, load, request_for
from valdrix.config import Settings
from valdrix.migrate import upgrade

NOW = dt.datetime.now(dt.UTC)


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def write(self, cert_path: Path, key_path: Path) -> None:
        key_path.write_bytes(self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
        cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))


def issue(cn: str, issuer: Issued | None = None, *, ca: bool = False, server: bool = False) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (x509.CertificateBuilder().subject_name(name)
               .issuer_name(issuer.cert.subject if issuer else name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(NOW - dt.timedelta(minutes=5))
               .not_valid_after(NOW + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return Issued(builder.sign(issuer.key if issuer else key, hashes.SHA256()), key)


@dataclass
class TLSServer:
    https: str
    http: str
    tls_port: int
    ca_file: Path
    client_cert: Path
    client_key: Path
    owner_key: str
    dir: Path
    ca: Issued


def _ready(url: str, verify: ssl.SSLContext | bool) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", verify=verify, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSServer]:
    d = tmp_path_factory.mktemp("tls")
    ca = issue("valdrix test CA", ca=True)
    (d / "ca.pem").write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    issue("valdrix-api.valdrix.svc", ca, server=True).write(d / "server.pem", d / "server.key")
    issue("kube-apiserver", ca).write(d / "client.pem", d / "client.key")
    url = f"sqlite:///{d / 'db.sqlite'}"
    upgrade(url)
    settings = Settings(database_url=url)  # type: ignore[call-arg]
    tenant = make_tenant(settings, "", name=f"cluster-{uuid.uuid4().hex[:8]}")
    port, tls_port = free_port(), free_port()
    env = {**os.environ, "VALDRIX_DATABASE_URL": url, "VALDRIX_PORT": str(port), "VALDRIX_TLS_PORT": str(tls_port),
           "VALDRIX_TLS_CERT_FILE": str(d / "server.pem"), "VALDRIX_TLS_KEY_FILE": str(d / "server.key"),
           "VALDRIX_TLS_CLIENT_CA_FILE": str(d / "ca.pem"),
           "VALDRIX_ADMISSION_MTLS_TENANTS": json.dumps({"kube-apiserver": tenant.name})}
    proc = subprocess.Popen([sys.executable, "-m", "valdrix", "serve", "--no-migrate"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        verify = ssl.create_default_context(cafile=str(d / "ca.pem"))
        _ready(f"https://127.0.0.1:{tls_port}", verify)
        yield TLSServer(f"https://127.0.0.1:{tls_port}", f"http://127.0.0.1:{port}", tls_port, d / "ca.pem",
                        d / "client.pem", d / "client.key", tenant.owner_key, d, ca)
    finally:
        proc.terminate()
        proc.wait(10)


def verifying(server: TLSServer, *, client_cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    if client_cert:
        ctx.load_cert_chain(server.client_cert, server.client_key)
    return ctx


def review(obj: dict[str, object]) -> dict[str, object]:
    return envelope(request_for(obj, uid=str(uuid.uuid4())))


def test_https_with_api_key_and_plain_http_alongside(tls_server: TLSServer) -> None:
    with httpx.Client(base_url=tls_server.https, verify=verifying(tls_server),
                      headers={"Authorization": f"Bearer {tls_server.owner_key}"}) as c:
        res = c.post(PATH, json=review(load("deployment-web-requests-limits.json"))).json()["response"]
        assert res["allowed"] is True and res["auditAnnotations"]["monthly-delta-usd"] == "19.6268"
    assert httpx.get(tls_server.http + "/healthz").status_code == 200
    # A client that does not trust our CA refuses the server, as the API server would without caBundle.
    with pytest.raises(httpx.ConnectError):
        httpx.get(tls_server.https + "/healthz", verify=ssl.create_default_context())


def test_mtls_client_certificate_maps_to_tenant(tls_server: TLSServer) -> None:
    with httpx.Client(base_url=tls_server.https, verify=verifying(tls_server, client_cert=True)) as c:
        assert c.post(PATH, json=review(CONFIG_MAP)).json()["response"]["allowed"] is True
        res = c.post(PATH, json=review(load("service-loadbalancer.json"))).json()["response"]
        assert res["auditAnnotations"]["monthly-delta-usd"] == "18.2500"
    with httpx.Client(base_url=tls_server.https, verify=verifying(tls_server),
                      headers={"Authorization": f"Bearer {tls_server.owner_key}"}) as owner:
        stored = owner.get(f"/api/v1/enforcement/decisions/{res['auditAnnotations']['decision-id']}").json()
        assert stored["source"] == "k8s_admission"
    # No certificate and no key: unauthenticated (the cluster tenant is off by default).
    with httpx.Client(base_url=tls_server.https, verify=verifying(tls_server)) as anonymous:
        res = anonymous.post(PATH, json=review(CONFIG_MAP)).json()["response"]
        assert res["allowed"] is False and res["status"]["code"] == 401
    # A certificate from another CA is refused during the handshake.
    stranger = issue("kube-apiserver", issue("other CA", ca=True))
    stranger.write(tls_server.dir / "stranger.pem", tls_server.dir / "stranger.key")
    ctx = verifying(tls_server)
    ctx.load_cert_chain(tls_server.dir / "stranger.pem", tls_server.dir / "stranger.key")
    with pytest.raises(httpx.HTTPError):
        httpx.post(tls_server.https + PATH, json=review(CONFIG_MAP), verify=ctx)


def served_serial(server: TLSServer) -> int:
    ctx = verifying(server)
    with socket.create_connection(("127.0.0.1", server.tls_port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_rotated_certificate_is_served_without_restart(tls_server: TLSServer) -> None:
    before = served_serial(tls_server)
    rotated = issue("valdrix-api.valdrix.svc", tls_server.ca, server=True)
    rotated.write(tls_server.dir / "server.pem", tls_server.dir / "server.key")
    assert served_serial(tls_server) == rotated.cert.serial_number != before
    with httpx.Client(base_url=tls_server.https, verify=verifying(tls_server, client_cert=True)) as c:
        assert c.post(PATH, json=review(CONFIG_MAP)).json()["response"]["allowed"] is True
