"""SMTP with STARTTLS and implicit TLS against a real aiosmtpd server holding a self-signed
certificate, login over TLS, DKIM signatures checked with dkimpy against the test key, and
a certificate the sender does not trust."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dkim
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from tests.conftest import Tenant
from tests.messaging.conftest import (
    AT,
    MakeCustomer,
    SmtpSink,
    deliveries,
    email_setup,
    free_port,
    request,
    run_jobs,
)

from tactful.core import clock
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.messaging import service


@dataclass(frozen=True)
class Keys:
    cert_pem: str
    cert_file: Path
    key_file: Path
    dkim_private: str
    dkim_record: bytes


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    (folder / "cert.pem").write_text(cert_pem)
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    signing = _key()
    public = signing.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Keys(
        cert_pem=cert_pem,
        cert_file=folder / "cert.pem",
        key_file=folder / "key.pem",
        dkim_private=signing.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode(),
        dkim_record=b"v=DKIM1; k=rsa; p=" + base64.b64encode(public),
    )


def _server_context(keys: Keys) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(keys.cert_file, keys.key_file)
    return context


class Logins:
    def __init__(self) -> None:
        self.seen: list[tuple[str, bool]] = []

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        ok = (data.login, data.password) == (b"news", b"s3cret")
        self.seen.append((data.login.decode(), ok))
        return AuthResult(success=ok, handled=False)


@pytest.fixture
def starttls(keys: Keys) -> Iterator[tuple[SmtpSink, int, Logins]]:
    sink, logins, port = SmtpSink(), Logins(), free_port()
    controller = Controller(
        sink,
        hostname="127.0.0.1",
        port=port,
        tls_context=_server_context(keys),
        require_starttls=True,
        authenticator=logins,
        auth_require_tls=True,
    )
    controller.start()
    try:
        yield sink, port, logins
    finally:
        controller.stop()


@pytest.fixture
def implicit_tls(keys: Keys) -> Iterator[tuple[SmtpSink, int]]:
    sink, port = SmtpSink(), free_port()
    controller = Controller(
        sink, hostname="127.0.0.1", port=port, ssl_context=_server_context(keys)
    )
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


def _send_one(runtime: Runtime, brand: Any, cid: int, worker: Worker) -> None:
    with clock.frozen(AT), runtime.db.scope() as session:
        service.send(session, [request(brand, cid, message_class="transactional", topic=None)])
    with clock.frozen(AT):
        run_jobs(worker)


def test_starttls_login_and_a_dkim_signature_that_verifies(
    runtime: Runtime,
    tenant: Tenant,
    keys: Keys,
    starttls: tuple[SmtpSink, int, Logins],
    make_customer: MakeCustomer,
    worker: Worker,
) -> None:
    sink, port, logins = starttls
    brand = email_setup(
        runtime,
        tenant,
        port,
        security="starttls",
        ca_pem=keys.cert_pem,
        username="news",
        password="s3cret",
        dkim={"selector": "mail", "domain": "shop.example", "private_key": keys.dkim_private},
    )
    _send_one(runtime, brand, make_customer(), worker)
    [delivery] = deliveries(runtime)
    assert (delivery.status, delivery.error) == ("sent", None)
    assert logins.seen == [("news", True)]
    [(_from, _to, raw)] = sink.messages
    assert raw.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;")
    signature = raw.split(b"\r\n\r\n", 1)[0]
    assert b"d=shop.example" in signature
    assert b"s=mail" in signature

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"mail._domainkey.shop.example."
        return keys.dkim_record

    assert dkim.verify(raw, dnsfunc=dns)
    tampered = raw.replace(b"Subject: ", b"Subject: Re: ", 1)
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_implicit_tls_with_the_servers_certificate_trusted(
    runtime: Runtime,
    tenant: Tenant,
    keys: Keys,
    implicit_tls: tuple[SmtpSink, int],
    make_customer: MakeCustomer,
    worker: Worker,
) -> None:
    sink, port = implicit_tls
    brand = email_setup(runtime, tenant, port, security="tls", ca_pem=keys.cert_pem)
    _send_one(runtime, brand, make_customer(), worker)
    [delivery] = deliveries(runtime)
    assert delivery.status == "sent"
    [(_from, to, _raw)] = sink.messages
    assert to == ["p1@example.com"]


def test_an_untrusted_certificate_is_never_sent_to_and_retried_later(
    runtime: Runtime,
    tenant: Tenant,
    implicit_tls: tuple[SmtpSink, int],
    make_customer: MakeCustomer,
    worker: Worker,
) -> None:
    sink, port = implicit_tls
    brand = email_setup(runtime, tenant, port, security="tls")  # system CAs only
    _send_one(runtime, brand, make_customer(), worker)
    [delivery] = deliveries(runtime)
    assert (delivery.status, delivery.attempts, delivery.sent_at) == ("planned", 1, None)
    assert delivery.error is not None
    assert "CERTIFICATE_VERIFY_FAILED" in delivery.error
    assert delivery.send_at == AT + dt.timedelta(seconds=30)
    assert sink.messages == []
