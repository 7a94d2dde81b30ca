"""SMTP delivery of alert emails, the outbox for what could not be delivered, and its
re-sending.

``send_alert`` delivers with ``smtplib``, retrying transient failures with bounded
exponential backoff (one tenacity policy). When delivery fails for good, the message is
written to the outbox as an ``.eml`` file and ``AlertDeliveryError`` is raised, so an
alert is never silently lost; ``send_outbox`` (run at the start of every monitor run and
by ``mmops outbox send``) delivers what the outbox holds and moves each delivered file to
``outbox/sent/``. Delivery is at-least-once: a connection lost after the server accepted
the message can lead to a duplicate.
"""

from __future__ import annotations

import email
import email.policy
import logging
import os
import re
import smtplib
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from features.state_io import atomic_write_bytes
from monitoring.alerts.pii import one_line

logger = logging.getLogger(__name__)


def message_domain(sender: str) -> str:
    """The domain part of ``sender`` for Message-IDs (a safe default when odd)."""
    domain = sender.rpartition("@")[2].strip(" >")
    return domain if re.fullmatch(r"[A-Za-z0-9.-]+", domain or "") else "mmops.local"


class SmtpConfig(BaseModel):
    """Where and how alerts are delivered; the password is never shown."""

    # hide_input_in_errors: a ValidationError would otherwise echo the raw password.
    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)

    host: str = Field(min_length=1, description="SMTP server host.")
    port: int = Field(ge=1, le=65535, description="SMTP server port.")
    security: Literal["none", "starttls", "ssl"] = Field(
        default="starttls",
        description="none: plain SMTP; starttls: upgrade after EHLO; ssl: implicit TLS.",
    )
    user: str | None = Field(default=None, description="Login name, if the server needs one.")
    password: SecretStr | None = Field(default=None, description="Login password (never shown).")
    sender: str = Field(min_length=3, description="Envelope and From address.")
    recipients: list[str] = Field(min_length=1, description="Envelope and To addresses.")
    timeout: float = Field(default=10.0, gt=0.0, description="Seconds per socket operation.")
    retries: int = Field(
        default=3, ge=0, le=10, description="Retries after the first attempt on transient errors."
    )
    backoff: float = Field(
        default=1.0,
        ge=0.0,
        description="Seconds before the first retry; doubled before each further one.",
    )
    max_backoff: float = Field(default=30.0, ge=0.0, description="Cap on one backoff wait.")
    ca_file: Path | None = Field(
        default=None,
        description="CA bundle to verify the server with (a private CA); default: the "
        "system's trust store. Verification is never turned off.",
    )
    outbox_dir: Path = Field(description="Undeliverable alerts are written here as .eml files.")

    @model_validator(mode="after")
    def _credentials(self) -> SmtpConfig:
        if (self.user is None) != (self.password is None):
            raise ValueError("user and password must be given together")
        if self.user is not None and self.security == "none":
            raise ValueError("refusing to send credentials without TLS: use starttls or ssl")
        return self


class AlertDelivery(BaseModel):
    """How the delivery of one alert went."""

    model_config = ConfigDict(frozen=True)

    sent: bool = Field(description="Whether the server accepted the message.")
    attempts: int = Field(description="Connections tried.")
    outbox_path: Path | None = Field(
        default=None, description="The .eml written when delivery failed."
    )
    message_id: str = Field(description="The Message-ID header of the email.")
    refused: list[str] = Field(
        default_factory=list, description="Recipients the server refused (others got it)."
    )


class AlertDeliveryError(RuntimeError):
    """An alert could not be delivered; ``delivery`` says where it was saved instead."""

    def __init__(self, message: str, delivery: AlertDelivery) -> None:
        super().__init__(message)
        self.delivery = delivery


def _is_transient(error: Exception) -> bool:
    if isinstance(error, smtplib.SMTPAuthenticationError | smtplib.SMTPNotSupportedError):
        return False
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return all(400 <= code < 500 for code, _ in error.recipients.values())
    if isinstance(error, smtplib.SMTPResponseException):
        return 400 <= error.smtp_code < 500
    if isinstance(error, ssl.SSLCertVerificationError):
        return False
    return isinstance(error, smtplib.SMTPException | OSError)


def _describe(error: Exception, smtp: SmtpConfig) -> str:
    text = f"{type(error).__name__}: {error}"
    if smtp.password is not None and smtp.password.get_secret_value():
        text = text.replace(smtp.password.get_secret_value(), "**********")
    return one_line(text, 300)


def _deliver_once(message: EmailMessage, smtp: SmtpConfig) -> dict[str, tuple[int, bytes]]:
    context = None
    if smtp.security != "none":
        context = ssl.create_default_context(
            cafile=str(smtp.ca_file) if smtp.ca_file is not None else None
        )
    client: smtplib.SMTP
    if smtp.security == "ssl":
        client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout, context=context)
    else:
        client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
    try:
        client.ehlo()
        if smtp.security == "starttls":
            client.starttls(context=context)
            client.ehlo()
        if smtp.user is not None and smtp.password is not None:
            client.login(smtp.user, smtp.password.get_secret_value())
        refused = client.send_message(message, from_addr=smtp.sender, to_addrs=smtp.recipients)
    except BaseException:
        client.close()
        raise
    # The message is accepted: a failing QUIT must not cause a second delivery.
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()
    return refused


def _deliver_with_retries(
    message: EmailMessage, smtp: SmtpConfig, sleep: Callable[[float], None]
) -> tuple[dict[str, tuple[int, bytes]], int]:
    """Deliver, retrying transient failures; returns (refused recipients, attempts).

    Raises:
        Exception: the last error, with ``attempts`` set on it.
    """
    message_id = str(message["Message-ID"])
    endpoint = f"{smtp.host}:{smtp.port}"
    total = smtp.retries + 1
    attempts = 0

    def once() -> dict[str, tuple[int, bytes]]:
        nonlocal attempts
        attempts += 1
        try:
            return _deliver_once(message, smtp)
        except Exception as error:
            logger.warning(
                "alert %s to %s failed (attempt %d of %d, %s): %s",
                message_id,
                endpoint,
                attempts,
                total,
                "transient" if _is_transient(error) else "permanent",
                _describe(error, smtp),
            )
            raise

    retrying = Retrying(
        stop=stop_after_attempt(total),
        wait=wait_exponential(multiplier=smtp.backoff, max=smtp.max_backoff),
        retry=retry_if_exception(_is_transient),
        sleep=sleep,
        reraise=True,
    )
    try:
        refused = retrying(once)
    except Exception as error:
        error.attempts = attempts  # type: ignore[attr-defined]
        raise
    return refused, attempts


def outbox_path(outbox_dir: Path, message_id: str, now: datetime) -> Path:
    """Where an undelivered message is kept."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", message_id.strip("<>"))[:80] or "alert"
    return Path(outbox_dir) / f"{now.strftime('%Y%m%dT%H%M%S')}-{stem}.eml"


def save_to_outbox(message: EmailMessage, outbox_dir: Path) -> Path:
    """Write a message to the outbox atomically (re-sent by :func:`send_outbox`)."""
    if message["Message-ID"] is None:
        message["Message-ID"] = make_msgid(idstring="mmops-alert", domain="mmops.local")
    path = outbox_path(outbox_dir, str(message["Message-ID"]), datetime.now(UTC))
    return atomic_write_bytes(path, message.as_bytes())


def send_alert(
    message: EmailMessage,
    smtp: SmtpConfig,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> AlertDelivery:
    """Deliver an alert by SMTP, or save it to the outbox and raise.

    Transient failures (connection errors, timeouts, 4xx replies) are retried
    ``smtp.retries`` times, waiting ``smtp.backoff`` seconds doubled each time (at most
    ``smtp.max_backoff``). Permanent ones (authentication, 5xx, certificate) are not.

    Args:
        message: the email (``build_alert_email``); a missing Message-ID is added.
        smtp: the server and the envelope addresses.
        sleep: waits between attempts (injected by tests).

    Returns:
        The delivery, with ``sent=True``.

    Raises:
        AlertDeliveryError: every attempt failed; the message is in ``smtp.outbox_dir``
            (named in the error) unless writing it failed too. The error never contains
            the password.
    """
    if message["Message-ID"] is None:
        message["Message-ID"] = make_msgid(
            idstring="mmops-alert", domain=message_domain(smtp.sender)
        )
    message_id = str(message["Message-ID"])
    endpoint = f"{smtp.host}:{smtp.port}"
    try:
        refused, attempts = _deliver_with_retries(message, smtp, sleep)
    except Exception as error:  # every failure ends in the outbox, never unnoticed
        attempts = getattr(error, "attempts", 1)
        last_error = _describe(error, smtp)
    else:
        if refused:
            logger.warning("alert %s: recipients refused: %s", message_id, sorted(refused))
        logger.info("alert %s delivered to %s (attempt %d)", message_id, endpoint, attempts)
        return AlertDelivery(
            sent=True, attempts=attempts, message_id=message_id, refused=sorted(refused)
        )

    path = outbox_path(smtp.outbox_dir, message_id, datetime.now(UTC))
    try:
        atomic_write_bytes(path, message.as_bytes())
    except OSError as error:
        delivery = AlertDelivery(sent=False, attempts=attempts, message_id=message_id)
        raise AlertDeliveryError(
            f"alert {message_id} not delivered to {endpoint} after {attempts} attempt(s) "
            f"({last_error}) and not saved to {smtp.outbox_dir}: {type(error).__name__}: "
            f"{error}",
            delivery,
        ) from None
    delivery = AlertDelivery(sent=False, attempts=attempts, outbox_path=path, message_id=message_id)
    raise AlertDeliveryError(
        f"alert {message_id} not delivered to {endpoint} after {attempts} attempt(s) "
        f"({last_error}); saved to {path}",
        delivery,
    )


class OutboxResult(BaseModel):
    """What one pass over the outbox did."""

    model_config = ConfigDict(frozen=True)

    sent: list[str] = Field(default_factory=list, description="Files delivered (now in sent/).")
    failed: dict[str, str] = Field(
        default_factory=dict, description="Files still undelivered, with the last error."
    )


def send_outbox(smtp: SmtpConfig, *, sleep: Callable[[float], None] = time.sleep) -> OutboxResult:
    """Deliver every ``.eml`` in the outbox, oldest first; each delivered file is moved to
    ``outbox/sent/``, each failed one stays for the next pass.

    Delivery is at-least-once: a crash between the server's acceptance and the move
    sends that message again on the next pass.
    """
    folder = Path(smtp.outbox_dir)
    sent, failed = [], {}
    for path in sorted(folder.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        try:
            _deliver_with_retries(message, smtp, sleep)  # type: ignore[arg-type]
        except Exception as error:
            failed[path.name] = _describe(error, smtp)
            continue
        target = folder / "sent" / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        sent.append(path.name)
        logger.info("outbox: %s delivered", path.name)
    return OutboxResult(sent=sent, failed=failed)


__all__ = [
    "AlertDelivery",
    "AlertDeliveryError",
    "OutboxResult",
    "SmtpConfig",
    "message_domain",
    "outbox_path",
    "save_to_outbox",
    "send_alert",
    "send_outbox",
]
