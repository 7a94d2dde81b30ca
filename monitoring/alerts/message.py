"""Alert email content and the pure message builder (jinja2 templates, text and HTML).

``build_alert_email`` turns a window's assessment into a ``multipart/alternative`` email
(plain text and HTML), with the Evidently report attached under a size bound. Every
free-text string that reaches the email (dataset name, reasons, sample values, column
names) goes through ``scrub_pii``; the HTML template escapes everything it is given.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from monitoring.alerts.pii import one_line, scrub_pii
from monitoring.alerts.smtp import message_domain
from monitoring.drift import DriftResult, ModalityDrift
from monitoring.estimate import Metric, PerformanceEstimate
from monitoring.policy import Decision

if TYPE_CHECKING:
    import jinja2

    from monitoring.assessment import WindowAssessment

_SUBJECT_MAX = 200
_HTTP_URL = re.compile(r"https?://[^\s<>\"']+", re.IGNORECASE)
_TEMPLATES = Path(__file__).parent / "templates"


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
    model_version: str | None = Field(default=None, description="The judged model version.")
    realized: list[str] = Field(
        default_factory=list,
        description="Realized performance lines, each naming its labelled window and version.",
    )
    notes: list[str] = Field(
        default_factory=list,
        description="What happened or will happen (retraining outcome, drift reference).",
    )
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

    @classmethod
    def from_assessment(cls, assessment: WindowAssessment, **extra: Any) -> AlertContent:
        """The content of a window's alert, from its assessment (plus links, notes)."""
        return cls(
            dataset=assessment.dataset,
            decision=assessment.decision,
            drift=assessment.drift,
            estimate=assessment.estimate,
            reference_performance=assessment.champion.performance,
            metric=assessment.metric,
            model_version=assessment.champion.version,
            realized=assessment.realized_lines(),
            **extra,
        )


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def _p(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"< {1e-16:g}" if value < 1e-16 else f"{value:.2g}"


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
    version = f" v{content.model_version}" if content.model_version else ""
    subject = f"[mmops] {content.decision.action.upper()} {content.dataset}{version}: {what}"
    return one_line(scrub_pii(subject), _SUBJECT_MAX)


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
    lines.extend(content.realized)
    realized = content.drift.realized
    if realized is not None and not content.realized:
        value = realized.value(content.metric)
        line = f"realized {content.metric} {value:.3f} on {realized.n_rows} labels of this window"
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


@cache
def _environment(autoescape: bool) -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _context(content: AlertContent, attachment_note: str | None, sample_chars: int) -> dict:
    """What the templates show, already scrubbed and formatted (templates only lay out)."""
    columns = _sample_columns(content.sample_rows)
    return {
        "subject": alert_subject(content),
        "action": content.decision.action,
        "model_version": content.model_version,
        "reasons": [scrub_pii(r) for r in content.decision.reasons],
        "window": _window_line(content.drift),
        "modalities": [
            {
                "name": m.modality,
                "drifted": m.drifted,
                "score": _fmt(m.score),
                "p_value": _p(m.p_value),
                "threshold": _fmt(m.threshold),
                "n_tests": m.n_tests,
                "n_window": m.n_window,
                "n_reference": m.n_reference,
                "top": [
                    {
                        "name": scrub_pii(c.name),
                        "test": c.test,
                        "score": _fmt(c.score),
                        "p_value": _p(c.p_value),
                    }
                    for c in m.top
                ],
            }
            for m in _ordered_modalities(content.drift)
        ],
        "performance": _performance_lines(content),
        "notes": [scrub_pii(n) for n in content.notes],
        "sample_columns": [scrub_pii(c) for c in columns],
        "sample_rows": [
            [one_line(scrub_pii(row.get(c, "")), sample_chars) for c in columns]
            for row in content.sample_rows
        ],
        "sample_cells": [
            "; ".join(
                f"{scrub_pii(k)}={one_line(scrub_pii(v), sample_chars)}" for k, v in row.items()
            )
            for row in content.sample_rows
        ],
        "links": _links(content),
        "attachment_note": attachment_note,
    }


def render_alert(
    content: AlertContent, attachment_note: str | None = None, sample_chars: int = 200
) -> tuple[str, str]:
    """The plain-text and HTML bodies of an alert."""
    context = _context(content, attachment_note, sample_chars)
    text = _environment(False).get_template("alert.txt.j2").render(**context)
    html = _environment(True).get_template("alert.html.j2").render(**context)
    return text, html


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

    text, html = render_alert(content, attachment_note, sample_chars)
    message = EmailMessage()
    message["Subject"] = alert_subject(content)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = format_datetime(content.created_at.astimezone(UTC))
    message["Message-ID"] = make_msgid(idstring="mmops-alert", domain=message_domain(sender))
    message["X-Mmops-Action"] = content.decision.action
    message["X-Mmops-Fingerprint"] = content.decision.fingerprint or "-"
    if content.model_version:
        message["X-Mmops-Model-Version"] = scrub_pii(content.model_version)[:64]
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    if report_bytes is not None and content.report_path is not None:
        filename = re.sub(r"[^A-Za-z0-9._-]", "_", content.report_path.name) or "report.html"
        message.add_attachment(report_bytes, maintype="text", subtype="html", filename=filename)
    return message


__all__ = ["AlertContent", "alert_subject", "build_alert_email", "render_alert"]
