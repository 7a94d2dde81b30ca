"""Alert delivery against a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import email
import ipaddress
import logging
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from monitoring.alerts import (
    AlertContent,
    AlertDeliveryError,
    SmtpConfig,
    build_alert_email,
    send_alert,
)
from monitoring.drift import ColumnDrift, DriftResult, ModalityDrift
from monitoring.estimate import PerformanceEstimate
from monitoring.policy import Decision, PolicyState

pytestmark = pytest.mark.integration

T0 = datetime(2026, 7, 1, 12, tzinfo=UTC)
USER = "mmops"
PASSWORD = "Sm7p-s3cret-Passw0rd"
SENDER = "mmops@example.org"
RECIPIENTS = ["oncall@example.org", "ml-team@example.org"]
REPORT_HTML = b"<html><body><h1>Evidently data drift</h1></body></html>"


@dataclass
class Inbox:
    """What the test server received."""

    envelopes: list = field(default_factory=list)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd hook)
        self.envelopes.append(envelope)
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        self.logins.append((auth_data.login, auth_data.password))
        ok = auth_data.login == USER.encode() and auth_data.password == PASSWORD.encode()
        # handled=False lets aiosmtpd answer 535 itself on failure.
        return AuthResult(success=ok, handled=False, auth_data=auth_data)


@dataclass
class FlakyInbox(Inbox):
    """Answers the first DATA with a temporary failure (451), then accepts."""

    refusals: int = 1

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd hook)
        if self.refusals > 0:
            self.refusals -= 1
            return "451 4.3.0 Try again later"
        return await super().handle_DATA(server, session, envelope)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Certificates:
    ca_file: Path
    server_context: ssl.SSLContext


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Certificates:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it."""
    folder = tmp_path_factory.mktemp("tls")
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mmops test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = folder / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file = folder / "server.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file = folder / "server.key"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return Certificates(ca_file=ca_file, server_context=context)


def start_server(inbox: Inbox, **kwargs) -> Controller:
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port(), **kwargs)
    controller.start()
    return controller


@pytest.fixture
def plain_server() -> Iterator[tuple[Controller, Inbox]]:
    inbox = Inbox()
    controller = start_server(inbox)
    yield controller, inbox
    controller.stop()


@pytest.fixture
def starttls_server(certificates) -> Iterator[tuple[Controller, Inbox]]:
    inbox = Inbox()
    controller = start_server(
        inbox,
        tls_context=certificates.server_context,
        require_starttls=True,
        auth_required=True,
        authenticator=inbox.authenticate,
    )
    yield controller, inbox
    controller.stop()


def alert(tmp_path: Path) -> EmailMessage:
    top = [ColumnDrift(name="review:embedding", test="mmd", score=0.12, p_value=0.001)]
    modalities = {
        "text": ModalityDrift(
            modality="text",
            score=0.12,
            p_value=0.004,
            threshold=0.0125,
            drifted=True,
            n_tests=3,
            n_window=400,
            n_reference=1000,
            top=top,
        ),
        "tabular": ModalityDrift(
            modality="tabular",
            score=0.03,
            p_value=0.6,
            threshold=0.0125,
            drifted=False,
            n_tests=4,
            n_window=400,
            n_reference=1000,
            top=[],
        ),
    }
    report = tmp_path / "drift_report.html"
    report.write_bytes(REPORT_HTML)
    content = AlertContent(
        dataset="reviews",
        decision=Decision(
            action="alert",
            reasons=["text drifted (p=0.004 <= 0.0125; top: review:embedding)"],
            fingerprint="text",
            state=PolicyState(),
        ),
        drift=DriftResult(n_rows=400, alpha=0.05, modalities=modalities),
        estimate=PerformanceEstimate(
            n_rows=400,
            classes=["neg", "pos"],
            expected_accuracy=0.74,
            expected_macro_f1=0.73,
            accuracy_band=(0.70, 0.78),
            macro_f1_band=(0.69, 0.77),
            confidence=0.9,
            expected_confusion=[[0.0, 0.0], [0.0, 0.0]],
        ),
        reference_performance=0.80,
        mlflow_run_url="http://127.0.0.1:5000/#/experiments/1/runs/abc",
        flow_run_url="http://127.0.0.1:4200/runs/flow-run/1234",
        report_path=report,
        sample_rows=[{"review": "write to jane@example.com about <b>this</b>"}],
        created_at=T0,
    )
    return build_alert_email(content, sender=SENDER, recipients=RECIPIENTS)


def config(tmp_path: Path, port: int, **overrides) -> SmtpConfig:
    values = {
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "sender": SENDER,
        "recipients": RECIPIENTS,
        "timeout": 5.0,
        "retries": 2,
        "backoff": 0.05,
        "outbox_dir": tmp_path / "outbox",
    }
    return SmtpConfig(**(values | overrides))


def received_message(inbox: Inbox) -> email.message.EmailMessage:
    assert len(inbox.envelopes) == 1
    return email.message_from_bytes(inbox.envelopes[0].content, policy=policy.default)


def test_alert_is_delivered_with_both_parts_and_the_report(tmp_path, plain_server):
    controller, inbox = plain_server
    message = alert(tmp_path)
    delivery = send_alert(message, config(tmp_path, controller.port))

    assert delivery.sent and delivery.attempts == 1 and delivery.outbox_path is None
    envelope = inbox.envelopes[0]
    assert envelope.mail_from == SENDER
    assert sorted(envelope.rcpt_tos) == sorted(RECIPIENTS)
    received = received_message(inbox)
    assert received["Subject"] == "[mmops] ALERT reviews: drift in text"
    assert received["Message-ID"] == delivery.message_id
    assert [a.strip() for a in received["To"].split(",")] == RECIPIENTS
    text = received.get_body(preferencelist=("plain",)).get_content()
    html = received.get_body(preferencelist=("html",)).get_content()
    assert "text: DRIFTED, p-value 0.004 (threshold 0.0125" in text
    assert "review:embedding" in html and "0.730" in html and "0.800" in html
    assert "[EMAIL]" in html and "jane@example.com" not in received.as_string()
    assert "&lt;b&gt;this&lt;/b&gt;" in html
    assert 'href="http://127.0.0.1:4200/runs/flow-run/1234"' in html
    (attachment,) = list(received.iter_attachments())
    assert attachment.get_content_type() == "text/html"
    assert attachment.get_filename() == "drift_report.html"
    assert attachment.get_payload(decode=True) == REPORT_HTML
    assert not (tmp_path / "outbox").exists()


def test_temporary_refusal_is_retried(tmp_path):
    inbox = FlakyInbox()
    controller = start_server(inbox)
    waits: list[float] = []
    try:
        delivery = send_alert(
            alert(tmp_path), config(tmp_path, controller.port), sleep=waits.append
        )
    finally:
        controller.stop()
    assert delivery.sent and delivery.attempts == 2 and waits == [0.05]
    assert received_message(inbox)["Message-ID"] == delivery.message_id
    assert not (tmp_path / "outbox").exists()


def test_starttls_and_login_with_a_private_ca(tmp_path, starttls_server, certificates):
    controller, inbox = starttls_server
    smtp = config(
        tmp_path,
        controller.port,
        security="starttls",
        user=USER,
        password=PASSWORD,
        ca_file=certificates.ca_file,
    )
    delivery = send_alert(alert(tmp_path), smtp)

    assert delivery.sent and delivery.attempts == 1
    assert inbox.logins == [(USER.encode(), PASSWORD.encode())]
    assert received_message(inbox)["Subject"] == "[mmops] ALERT reviews: drift in text"


def test_implicit_tls(tmp_path, certificates):
    inbox = Inbox()
    controller = start_server(inbox, ssl_context=certificates.server_context)
    try:
        smtp = config(tmp_path, controller.port, security="ssl", ca_file=certificates.ca_file)
        assert send_alert(alert(tmp_path), smtp).sent
    finally:
        controller.stop()
    assert received_message(inbox)["X-Mmops-Fingerprint"] == "text"


def test_untrusted_certificate_is_not_retried_and_lands_in_the_outbox(tmp_path, starttls_server):
    controller, inbox = starttls_server
    smtp = config(tmp_path, controller.port, security="starttls", user=USER, password=PASSWORD)
    with pytest.raises(AlertDeliveryError) as raised:
        send_alert(alert(tmp_path), smtp, sleep=lambda _: None)
    assert raised.value.delivery.attempts == 1
    assert "SSLCertVerificationError" in str(raised.value)
    assert inbox.logins == [] and inbox.envelopes == []


def test_wrong_password_fails_once_without_leaking_it(
    tmp_path, starttls_server, certificates, caplog
):
    controller, inbox = starttls_server
    wrong = "Wr0ng-Passw0rd-123"
    smtp = config(
        tmp_path,
        controller.port,
        security="starttls",
        user=USER,
        password=wrong,
        ca_file=certificates.ca_file,
    )
    caplog.set_level(logging.DEBUG, logger="monitoring.alerts")
    with pytest.raises(AlertDeliveryError) as raised:
        send_alert(alert(tmp_path), smtp, sleep=lambda _: None)

    error = raised.value
    assert error.delivery.attempts == 1  # authentication failures are permanent
    assert "SMTPAuthenticationError" in str(error)
    # smtplib tries each offered mechanism (PLAIN, LOGIN) once per connection.
    assert set(inbox.logins) == {(USER.encode(), wrong.encode())} and inbox.envelopes == []
    for shown in (str(error), repr(error), caplog.text, error.delivery.model_dump_json()):
        assert wrong not in shown
    assert error.delivery.outbox_path is not None and error.delivery.outbox_path.exists()


def test_unreachable_server_is_retried_then_saved_to_the_outbox(tmp_path):
    # A bound socket that never listens: connections are refused and no one takes the port.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        smtp = config(tmp_path, port, retries=3, backoff=0.01, max_backoff=0.03)
        waits: list[float] = []
        message = alert(tmp_path)
        with pytest.raises(AlertDeliveryError) as raised:
            send_alert(message, smtp, sleep=waits.append)

    error = raised.value
    assert error.delivery.attempts == 4 and not error.delivery.sent
    assert waits == [0.01, 0.02, 0.03]
    assert f"127.0.0.1:{port}" in str(error)
    outbox = sorted((tmp_path / "outbox").iterdir())
    assert len(outbox) == 1 and outbox[0].suffix == ".eml"
    assert outbox[0] == error.delivery.outbox_path and str(outbox[0]) in str(error)
    saved = email.message_from_bytes(outbox[0].read_bytes(), policy=policy.default)
    assert saved["Subject"] == message["Subject"]
    assert saved["Message-ID"] == error.delivery.message_id
    assert list(saved.iter_attachments())[0].get_payload(decode=True) == REPORT_HTML


def test_real_backoff_waits_between_attempts(tmp_path):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        smtp = config(tmp_path, closed.getsockname()[1], retries=2, backoff=0.05)
        with pytest.raises(AlertDeliveryError) as raised:
            send_alert(alert(tmp_path), smtp)
    assert raised.value.delivery.attempts == 3
