"""Drift alert emails: a pure message builder, a de-duplication gate and a thin SMTP edge.

``build_alert_email`` turns a window's drift, performance estimate and policy decision
into a ``multipart/alternative`` email (plain text and HTML), with the Evidently report
attached. Every free-text string that reaches the email (dataset name, reasons, sample
values, column names) goes through ``scrub_pii`` and is HTML-escaped in the HTML part.

``should_send`` decides whether a decision deserves a new email: the same ongoing issue
(same ``Decision.fingerprint``) is mailed once and then again only after
``renotify_after``; a ``none`` decision ends the episode. ``update_alert_state`` records
what happened; ``load_alert_state`` / ``save_alert_state`` keep it as JSON between runs.

``send_alert`` delivers with ``smtplib``, retrying transient failures with bounded
exponential backoff. When delivery fails for good, the message is written to the outbox
as an ``.eml`` file and ``AlertDeliveryError`` is raised, so an alert is never silently
lost. Delivery is at-least-once: a connection lost after the server accepted the
message can lead to a duplicate.
"""

from __future__ import annotations

import html
import logging
import os
import re
import smtplib
import ssl
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from monitoring.drift import DriftResult, ModalityDrift
from monitoring.estimate import Metric, PerformanceEstimate
from monitoring.policy import Action, Decision

logger = logging.getLogger(__name__)

_SUBJECT_MAX = 200
_DRIFT_HEADERS = (
    "modality",
    "drifted",
    "score",
    "p-value",
    "threshold",
    "top columns / components",
)
_HTTP_URL = re.compile(r"https?://[^\s<>\"']+", re.IGNORECASE)


# Personal-data scrubbing ---------------------------------------------------------------

# ISO dates and timestamps are kept verbatim: reasons carry them (cooldown ends) and the
# phone pattern would otherwise read ``2026-07-01`` as a number.
_ISO_DATETIME = re.compile(
    r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
)
_URL_WITH_QUERY = re.compile(r"\b(?:https?|ftp)://[^\s<>\"']*\?[^\s<>\"']*", re.IGNORECASE)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_CARD = re.compile(r"(?<![\w.+])\d(?:[ -]?\d){12,18}(?![\w]|\.\d)")
_PHONE = re.compile(
    r"(?<![\w.+-])(?<!\d:)"  # not inside a word, number or time
    r"(?:\+\d{1,3}[ .-]?)?"  # country code
    r"(?:\(\d{1,5}\)[ .-]?)?"  # area code in parentheses
    r"\d{1,12}(?:[ .-]\d{1,12}){0,6}"
    r"(?![\w]|[.-]\d)"
)


def _scrub_iban(match: re.Match[str]) -> str:
    digits = sum(c.isdigit() for c in match.group())
    return "[IBAN]" if digits >= 10 else match.group()


def _scrub_phone(match: re.Match[str]) -> str:
    text = match.group()
    digits = sum(c.isdigit() for c in text)
    local = re.sub(r"^(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?", "", text)
    separators = set(re.findall(r"(?<=\d)[ .-](?=\d)", local))
    # A decimal point next to other separators is a list of numbers ("0.12 0.34"),
    # and one alone between two runs is a decimal ("12345.678").
    if "." in separators and (len(separators) > 1 or re.fullmatch(r"\d+\.\d+", local)):
        return text
    # Bare runs of 8 digits are often counts or codes; separated groups or a country
    # code read as a phone number from 8 digits on.
    separated = bool(separators) or text.startswith(("+", "("))
    if 8 <= digits <= 15 and (separated or digits >= 9):
        return "[PHONE]"
    return text


def _scrub_segment(text: str) -> str:
    text = _URL_WITH_QUERY.sub("[URL]", text)
    text = _EMAIL.sub("[EMAIL]", text)
    text = _IBAN.sub(_scrub_iban, text)
    text = _CARD.sub("[CARD]", text)
    return _PHONE.sub(_scrub_phone, text)


def scrub_pii(text: str) -> str:
    """Replace personal data in free text with placeholders.

    Emails become ``[EMAIL]``, phone numbers ``[PHONE]``, IBANs ``[IBAN]``, runs of 13 to
    19 digits (card-like, spaces or dashes allowed) ``[CARD]`` and URLs with a query
    string ``[URL]``. ISO dates and timestamps, decimals and short numbers are kept, so
    policy reasons (p-values, metrics, cooldown ends) read unchanged.

    Args:
        text: any free text (sample values, reasons, names).

    Returns:
        The text with the personal data replaced.
    """
    parts: list[str] = []
    position = 0
    for match in _ISO_DATETIME.finditer(text):
        parts.append(_scrub_segment(text[position : match.start()]))
        parts.append(match.group())
        position = match.end()
    parts.append(_scrub_segment(text[position:]))
    return "".join(parts)


# Configuration and content ---------------------------------------------------------------


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


class AlertContent(BaseModel):
    """Everything an alert email shows about one monitored window."""

    model_config = ConfigDict(frozen=True)

    dataset: str = Field(description="Dataset (or model) name shown in the subject.")
    decision: Decision = Field(description="The policy's decision and its reasons.")
    drift: DriftResult = Field(description="The window's drift, per modality.")
    estimate: PerformanceEstimate | None = Field(
        default=None, description="Label-free performance estimate of the window."
    )
    reference_performance: float | None = Field(
        default=None, description="The champion's metric on its reference data."
    )
    metric: Metric = Field(default="macro_f1", description="Metric the policy judges.")
    mlflow_run_url: str | None = Field(default=None, description="Link to the MLflow run.")
    report_url: str | None = Field(default=None, description="Link to the Evidently report.")
    flow_run_url: str | None = Field(default=None, description="Link to the Prefect flow run.")
    report_path: Path | None = Field(
        default=None, description="Evidently HTML report to attach, if any."
    )
    sample_rows: list[dict[str, str]] = Field(
        default_factory=list,
        description="A few window rows or top values to illustrate the drift; scrubbed.",
    )
    created_at: datetime = Field(
        default_factory=lambda: datetime.now(UTC), description="Date of the email."
    )

    @field_validator("mlflow_run_url", "report_url", "flow_run_url")
    @classmethod
    def _http_only(cls, value: str | None) -> str | None:
        if value is not None and not _HTTP_URL.fullmatch(value):
            raise ValueError("links must be http(s) URLs without spaces or quotes")
        return value


# Building the email ------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ordered_modalities(drift: DriftResult) -> list[ModalityDrift]:
    return sorted(drift.modalities.values(), key=lambda m: (not m.drifted, m.p_value))


def alert_subject(content: AlertContent) -> str:
    """One-line subject naming the action, the dataset and the drifted modalities."""
    drifted = content.drift.drifted_modalities
    if drifted:
        what = f"drift in {', '.join(drifted)}"
    elif content.decision.fingerprint == "performance":
        what = "estimated performance drop"
    elif content.decision.fingerprint == "concept":
        what = "realized performance drop (concept drift)"
    else:
        what = "no drift detected"
    subject = f"[mmops] {content.decision.action.upper()} {content.dataset}: {what}"
    return _clip(_one_line(scrub_pii(subject)), _SUBJECT_MAX)


def _performance_lines(content: AlertContent) -> list[str]:
    lines: list[str] = []
    estimate, reference = content.estimate, content.reference_performance
    if estimate is not None:
        low, high = estimate.band(content.metric)
        value = estimate.value(content.metric)
        line = (
            f"estimated {content.metric} {value:.3f} "
            f"({estimate.confidence:.0%} band {low:.3f}-{high:.3f}, {estimate.n_rows} rows)"
        )
        if reference is not None:
            line += f" vs reference {reference:.3f} ({value - reference:+.3f})"
        lines.append(line)
    elif reference is not None:
        lines.append(f"reference {content.metric} {reference:.3f} (no estimate)")
    realized = content.drift.realized
    if realized is not None:
        value = realized.value(content.metric)
        line = f"realized {content.metric} {value:.3f} on {realized.n_rows} labels"
        if reference is not None:
            line += f" ({value - reference:+.3f})"
        lines.append(line)
    return lines


def _links(content: AlertContent) -> list[tuple[str, str]]:
    candidates = [
        ("MLflow run", content.mlflow_run_url),
        ("Drift report", content.report_url),
        ("Prefect flow run", content.flow_run_url),
    ]
    return [(label, url) for label, url in candidates if url]


def _window_line(drift: DriftResult) -> str:
    start = drift.window_start.isoformat() if drift.window_start else "?"
    end = drift.window_end.isoformat() if drift.window_end else "?"
    return f"window {start} to {end}, {drift.n_rows} rows, alpha {drift.alpha:g}"


def _sample_columns(rows: list[dict[str, str]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    return columns


def _render_text(content: AlertContent, attachment_note: str | None, sample_chars: int) -> str:
    decision = content.decision
    lines = [
        alert_subject(content),
        "",
        f"Decision: {decision.action}",
        *(f"  - {scrub_pii(r)}" for r in decision.reasons),
        "",
        f"Drift ({_window_line(content.drift)}):",
    ]
    for m in _ordered_modalities(content.drift):
        flag = "DRIFTED" if m.drifted else "ok"
        lines.append(
            f"  {m.modality}: {flag}, score {_fmt(m.score)}, p-value {_fmt(m.p_value)} "
            f"vs threshold {_fmt(m.threshold)} ({m.n_tests} tests, "
            f"{m.n_window} window / {m.n_reference} reference rows)"
        )
        for column in m.top:
            lines.append(
                f"      {scrub_pii(column.name)} ({column.test}): score {_fmt(column.score)}, "
                f"p {_fmt(column.p_value)}"
            )
    performance = _performance_lines(content)
    if performance:
        lines += ["", "Performance:", *(f"  {line}" for line in performance)]
    if content.sample_rows:
        lines += ["", "Sample rows (personal data scrubbed):"]
        for row in content.sample_rows:
            cells = [
                f"{scrub_pii(k)}={_clip(_one_line(scrub_pii(v)), sample_chars)}"
                for k, v in row.items()
            ]
            lines.append("  " + "; ".join(cells))
    links = _links(content)
    if links:
        lines += ["", "Links:", *(f"  {label}: {url}" for label, url in links)]
    if attachment_note:
        lines += ["", attachment_note]
    return "\n".join(lines) + "\n"


def _render_html(content: AlertContent, attachment_note: str | None, sample_chars: int) -> str:
    e = html.escape
    decision = content.decision
    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8"><style>'
        "body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}"
        ".drifted{background:#fdd}</style></head><body>",
        f"<h2>{e(alert_subject(content))}</h2>",
        f"<h3>Decision: {e(decision.action)}</h3>",
        "<ul>",
        *(f"<li>{e(scrub_pii(r))}</li>" for r in decision.reasons),
        "</ul>",
        f"<h3>Drift</h3><p>{e(_window_line(content.drift))}</p>",
        "<table>",
        "<tr>" + "".join(f"<th>{h}</th>" for h in _DRIFT_HEADERS) + "</tr>",
    ]
    for m in _ordered_modalities(content.drift):
        top = "<br>".join(
            f"{e(scrub_pii(c.name))} ({e(c.test)}): score {e(_fmt(c.score))}, "
            f"p {e(_fmt(c.p_value))}"
            for c in m.top
        )
        row_class = ' class="drifted"' if m.drifted else ""
        parts.append(
            f"<tr{row_class}>"
            f"<td>{e(m.modality)}</td>"
            f"<td>{'yes' if m.drifted else 'no'}</td>"
            f"<td>{e(_fmt(m.score))}</td>"
            f"<td>{e(_fmt(m.p_value))}</td>"
            f"<td>{e(_fmt(m.threshold))}</td>"
            f"<td>{top}</td></tr>"
        )
    parts.append("</table>")
    performance = _performance_lines(content)
    if performance:
        parts += ["<h3>Performance</h3><ul>", *(f"<li>{e(p)}</li>" for p in performance), "</ul>"]
    if content.sample_rows:
        columns = _sample_columns(content.sample_rows)
        parts += [
            "<h3>Sample rows (personal data scrubbed)</h3>",
            "<table><tr>",
            *(f"<th>{e(scrub_pii(c))}</th>" for c in columns),
            "</tr>",
        ]
        for row in content.sample_rows:
            values = (_clip(_one_line(scrub_pii(row.get(c, ""))), sample_chars) for c in columns)
            parts.append("<tr>" + "".join(f"<td>{e(v)}</td>" for v in values) + "</tr>")
        parts.append("</table>")
    links = _links(content)
    if links:
        parts += [
            "<h3>Links</h3><ul>",
            *(f'<li><a href="{e(url, quote=True)}">{e(label)}</a></li>' for label, url in links),
            "</ul>",
        ]
    if attachment_note:
        parts.append(f"<p>{e(attachment_note)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _message_domain(sender: str) -> str:
    domain = sender.rpartition("@")[2].strip(" >")
    return domain if re.fullmatch(r"[A-Za-z0-9.-]+", domain or "") else "mmops.local"


def build_alert_email(
    content: AlertContent,
    *,
    sender: str,
    recipients: Sequence[str],
    max_attachment_bytes: int = 10_000_000,
    sample_chars: int = 200,
) -> EmailMessage:
    """Build the alert email of one window.

    The body is ``multipart/alternative`` (plain text, then HTML); the Evidently report,
    when ``content.report_path`` is set, is attached as a ``text/html`` file (the
    message then becomes ``multipart/mixed``). Free text is scrubbed of personal data
    and everything in the HTML part is escaped.

    Args:
        content: what the email reports.
        sender: the From address.
        recipients: the To addresses.
        max_attachment_bytes: a larger report is not attached; the email says so.
        sample_chars: sample values are cut to this many characters.

    Returns:
        The message, with ``Message-ID``, ``Date`` and an ``X-Mmops-Fingerprint`` header.

    Raises:
        FileNotFoundError: ``content.report_path`` does not exist.
        ValueError: no recipients.
    """
    if not recipients:
        raise ValueError("an alert needs at least one recipient")
    report_bytes: bytes | None = None
    attachment_note: str | None = None
    if content.report_path is not None:
        size = content.report_path.stat().st_size
        if size > max_attachment_bytes:
            attachment_note = f"The drift report ({size / 1e6:.1f} MB) is too large to attach" + (
                "; follow the drift report link." if content.report_url else "."
            )
        else:
            report_bytes = content.report_path.read_bytes()
            attachment_note = f"The drift report is attached ({content.report_path.name})."

    message = EmailMessage()
    message["Subject"] = alert_subject(content)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = format_datetime(content.created_at.astimezone(UTC))
    message["Message-ID"] = make_msgid(idstring="mmops-alert", domain=_message_domain(sender))
    message["X-Mmops-Action"] = content.decision.action
    message["X-Mmops-Fingerprint"] = content.decision.fingerprint or "-"
    message.set_content(_render_text(content, attachment_note, sample_chars))
    message.add_alternative(_render_html(content, attachment_note, sample_chars), subtype="html")
    if report_bytes is not None and content.report_path is not None:
        filename = re.sub(r"[^A-Za-z0-9._-]", "_", content.report_path.name) or "report.html"
        message.add_attachment(report_bytes, maintype="text", subtype="html", filename=filename)
    return message


# De-duplication ----------------------------------------------------------------------------


class AlertState(BaseModel):
    """What was last mailed about the ongoing issue; store it as JSON between runs."""

    model_config = ConfigDict(frozen=True)

    fingerprint: str = Field(default="", description="Issue last mailed; '' when none ongoing.")
    action: Action = Field(default="none", description="Action of the last email.")
    first_sent_at: datetime | None = Field(default=None, description="First email of the issue.")
    last_sent_at: datetime | None = Field(default=None, description="Latest email of the issue.")
    emails: int = Field(default=0, description="Emails sent about the issue.")
    suppressed: int = Field(default=0, description="Decisions not mailed since the last email.")

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str) -> AlertState:
        return cls.model_validate_json(text)


class AlertCheck(BaseModel):
    """Whether a decision calls for an email, and why."""

    model_config = ConfigDict(frozen=True)

    send: bool
    reason: str


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")


def should_send(
    decision: Decision,
    state: AlertState,
    now: datetime,
    renotify_after: timedelta | None = timedelta(hours=24),
) -> AlertCheck:
    """Decide whether a decision deserves a new email.

    ``none`` is never mailed. A retrain is always mailed (it is an action taken, and the
    policy's cooldown bounds how often). An alert is mailed when its fingerprint names an
    issue not yet mailed in the ongoing episode (episodes end with a ``none`` decision),
    or when ``renotify_after`` has passed since the last email.

    Args:
        decision: the policy's decision for this window.
        state: the alert state after the previous window.
        now: the time of the decision, timezone-aware.
        renotify_after: repeat an unchanged alert after this long; None: never.

    Raises:
        ValueError: ``now`` is naive or ``renotify_after`` is not positive.
    """
    _require_aware(now)
    if renotify_after is not None and renotify_after <= timedelta(0):
        raise ValueError("renotify_after must be positive")
    if decision.action == "none":
        return AlertCheck(send=False, reason="nothing to report")
    if decision.action == "retrain":
        return AlertCheck(send=True, reason="retraining was triggered")
    if not _covered(decision.fingerprint, state.fingerprint) or state.last_sent_at is None:
        previous = state.fingerprint or "none"
        return AlertCheck(
            send=True, reason=f"new issue {decision.fingerprint!r} (was {previous!r})"
        )
    elapsed = now - state.last_sent_at
    if renotify_after is not None and elapsed >= renotify_after:
        return AlertCheck(
            send=True, reason=f"{decision.fingerprint!r} still ongoing after {elapsed}"
        )
    return AlertCheck(
        send=False, reason=f"{decision.fingerprint!r} already reported at {state.last_sent_at}"
    )


def _parts(fingerprint: str) -> set[str]:
    return {part for part in fingerprint.split("+") if part}


def _covered(fingerprint: str, mailed: str) -> bool:
    """Whether every issue in ``fingerprint`` was already mailed in this episode.

    Drift in an episode flickers ('image', then 'image+output', then 'image'): that is
    the same ongoing drift, not a new issue each window.
    """
    return _parts(fingerprint) <= _parts(mailed)


def _union(first: str, second: str) -> str:
    return "+".join(sorted(_parts(first) | _parts(second)))


def update_alert_state(
    state: AlertState, decision: Decision, now: datetime, sent: bool
) -> AlertState:
    """The alert state after a decision: reset on ``none``, else record the email or not.

    Record ``sent=True`` only once the email is delivered (or saved to the outbox), so a
    failed delivery is tried again on the next run.

    Raises:
        ValueError: ``now`` is naive.
    """
    _require_aware(now)
    if decision.action == "none":
        return AlertState()
    if not sent:
        return state.model_copy(update={"suppressed": state.suppressed + 1})
    same_issue = state.first_sent_at is not None
    return AlertState(
        fingerprint=_union(state.fingerprint, decision.fingerprint)
        if same_issue
        else decision.fingerprint,
        action=decision.action,
        first_sent_at=state.first_sent_at if same_issue else now,
        last_sent_at=now,
        emails=state.emails + 1 if same_issue else 1,
        suppressed=0,
    )


def _write_atomic(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load_alert_state(path: Path) -> AlertState:
    """Read the alert state; a missing file is the empty state."""
    return AlertState.from_json(path.read_text()) if path.exists() else AlertState()


def save_alert_state(state: AlertState, path: Path) -> Path:
    """Write the alert state as JSON, atomically."""
    return _write_atomic(path, state.to_json().encode("utf-8"))


# Delivery ------------------------------------------------------------------------------------


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
    return _clip(_one_line(text), 300)


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


def _outbox_path(smtp: SmtpConfig, message_id: str, now: datetime) -> Path:
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", message_id.strip("<>"))[:80] or "alert"
    return smtp.outbox_dir / f"{now.strftime('%Y%m%dT%H%M%S')}-{stem}.eml"


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
            idstring="mmops-alert", domain=_message_domain(smtp.sender)
        )
    message_id = str(message["Message-ID"])
    endpoint = f"{smtp.host}:{smtp.port}"
    total = smtp.retries + 1
    attempts = 0
    last_error = ""
    for attempt in range(1, total + 1):
        attempts = attempt
        try:
            refused = _deliver_once(message, smtp)
        except Exception as error:  # every failure ends in the outbox, never unnoticed
            last_error = _describe(error, smtp)
            transient = _is_transient(error)
            logger.warning(
                "alert %s to %s failed (attempt %d of %d, %s): %s",
                message_id,
                endpoint,
                attempt,
                total,
                "transient" if transient else "permanent",
                last_error,
            )
            if not transient or attempt == total:
                break
            sleep(min(smtp.backoff * 2 ** (attempt - 1), smtp.max_backoff))
            continue
        if refused:
            logger.warning("alert %s: recipients refused: %s", message_id, sorted(refused))
        logger.info("alert %s delivered to %s (attempt %d)", message_id, endpoint, attempt)
        return AlertDelivery(
            sent=True, attempts=attempt, message_id=message_id, refused=sorted(refused)
        )

    path = _outbox_path(smtp, message_id, datetime.now(UTC))
    try:
        _write_atomic(path, message.as_bytes())
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
