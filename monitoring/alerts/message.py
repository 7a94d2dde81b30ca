"""Alert email content and the pure message builder (jinja2 templates, text and HTML).

``build_alert_email`` turns a window's assessment into a ``multipart/alternative`` email
(plain text and HTML). One template pair serves four kinds of email (``EmailKind``):
a drift ``alert``, ``retrain_started`` (training runs elsewhere), ``retrain_result``
(trained in the monitor run: promoted or not) and a ``reminder`` of an ongoing episode.
Each opens with a summary a person reads in ten seconds (what drifted and how much in
plain words, estimated vs realized performance with the estimate's trust signal, the
model version), then what happens next and what to do (with the commands), then the
details. The Evidently report is linked; it is attached only under a size bound, so an
email stays well under 1 MB.

Every free-text string that reaches the email (dataset name, reasons, sample values,
column names) goes through ``scrub_pii``; the HTML template escapes everything.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from monitoring.alerts.pii import one_line, scrub_pii
from monitoring.alerts.smtp import message_domain
from monitoring.drift import DriftResult, ModalityDrift
from monitoring.estimate import Metric, PerformanceEstimate
from monitoring.policy import Decision, p_text

if TYPE_CHECKING:
    import jinja2

    from monitoring.assessment import WindowAssessment

_SUBJECT_MAX = 200
EmailKind = Literal["alert", "retrain_started", "retrain_result", "reminder"]
_KIND_LABEL = {
    "alert": "ALERT",
    "retrain_started": "RETRAIN STARTED",
    "retrain_result": "RETRAINED",
    "reminder": "REMINDER",
}
# The whole email must stay under 1 MB: the report is attached only below this.
DEFAULT_MAX_ATTACHMENT_BYTES = 600_000


class RetrainSummary(BaseModel):
    """What came of a retrain the decision asked for."""

    model_config = ConfigDict(frozen=True)

    version: str | None = Field(default=None, description="The version trained, if done.")
    promoted: bool | None = Field(default=None, description="Whether the gate promoted it.")
    verdict: str = Field(default="", description="The gate's reason, one line.")
    flow_run: str | None = Field(
        default=None, description="Prefect flow run training it, when it runs elsewhere."
    )
    blocked: str = Field(
        default="",
        description="Why the training-data integrity check blocked it (nothing trained); "
        "empty when it was not blocked.",
    )


_HTTP_URL = re.compile(r"https?://[^\s<>\"']+", re.IGNORECASE)
_TEMPLATES = Path(__file__).parent / "templates"


class AlertContent(BaseModel):
    """Everything an alert email shows about one monitored window."""

    model_config = ConfigDict(frozen=True)

    dataset: str = Field(description="Dataset (or model) name shown in the subject.")
    kind: EmailKind = Field(default="alert", description="Which email this is.")
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
    retrain: RetrainSummary | None = Field(
        default=None, description="The retrain this window started, and its outcome."
    )
    episode: list[str] = Field(
        default_factory=list,
        description="Earlier windows of the same drift episode, one line each, oldest first.",
    )
    episode_retrains: list[str] = Field(
        default_factory=list,
        description="Retrains already done in this episode (for reminders), one line each.",
    )
    explanations: list[str] = Field(
        default_factory=list,
        description="What drives the drift, briefly (over-represented clusters, example "
        "rows, tabular columns); scrubbed.",
    )
    ui_hint: str | None = Field(
        default=None, description="How to open the MLflow UI the links point to."
    )
    report_file: str | None = Field(
        default=None, description="Where the full report lies on the monitoring machine."
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


def _p(value: float | None) -> str:
    return "n/a" if value is None else p_text(value)


def _ordered_modalities(drift: DriftResult) -> list[ModalityDrift]:
    return sorted(drift.modalities.values(), key=lambda m: (not m.drifted, m.p_value))


def _what(content: AlertContent) -> str:
    drifted = content.drift.drifted_modalities
    if drifted:
        return f"drift in {', '.join(drifted)}"
    if content.decision.fingerprint == "performance":
        return "estimated performance drop"
    if content.decision.fingerprint == "concept":
        return "realized performance drop (concept drift)"
    return "no drift detected"


def alert_subject(content: AlertContent) -> str:
    """One line: the kind of email, the dataset, the version and what happened."""
    label = _KIND_LABEL[content.kind]
    retrain = content.retrain
    if content.kind == "alert" and content.decision.action == "retrain":
        label = "RETRAIN"
    if retrain is not None and retrain.blocked:
        label = "RETRAIN BLOCKED"
    version = f" v{content.model_version}" if content.model_version else ""
    outcome = ""
    if content.kind == "retrain_result" and retrain is not None and retrain.version:
        verdict = "promoted" if retrain.promoted else "not promoted"
        outcome = f" -> v{retrain.version} {verdict}"
    subject = f"[mmops] {label} {content.dataset}{version}{outcome}: {_what(content)}"
    return one_line(scrub_pii(subject), _SUBJECT_MAX)


def _evidence_words(p_value: float) -> str:
    if p_value < 1e-6:
        return "very strong evidence"
    if p_value < 1e-3:
        return "strong evidence"
    return "evidence"


def _plain_test(test: str, score: float) -> str:
    """A test's statistic in plain words, with its name and unit."""
    if test == "ks":
        return f"distributions differ by up to {abs(score):.0%} of rows (KS statistic {score:.2f})"
    if test == "chi2":
        return (
            f"{abs(score):.0%} of rows would have to change category to match "
            f"(total-variation distance {score:.2f})"
        )
    if test == "fisher":
        return f"presence rate changed by {score:+.0%} points"
    if test == "mmd":
        return f"embedding distributions differ (MMD² {score:.3g}; 0 = identical)"
    return f"{test} statistic {score:.3g}"


def _drift_summary(content: AlertContent) -> list[str]:
    lines = []
    far = content.estimate.far_share_by_column if content.estimate is not None else {}
    for m in _ordered_modalities(content.drift):
        if not m.drifted:
            continue
        line = f"{m.modality}: {_evidence_words(m.p_value)} (p-value {_p(m.p_value)})"
        strongest = next((c for c in m.top if c.p_value is not None), None)
        if strongest is not None:
            line += f"; {strongest.name}: {_plain_test(strongest.test, strongest.score)}"
        lines.append(line)
    shares = [f"{s:.0%} of the {c} rows" for c, s in far.items() if s >= 0.05]
    if lines and shares:
        lines.append(f"{', '.join(shares)} lie far from anything in the reference")
    return lines or ["nothing drifted"]


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
        if estimate.trusted:
            lines.append(f"the estimate is {estimate.trust_line()}")
        else:
            lines.append(
                f"the estimate is {estimate.trust_line()}; read the band's low end "
                f"({low:.3f}), not the point value"
            )
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


def _action_line(content: AlertContent) -> str:
    action = content.decision.action
    retrain = content.retrain
    if retrain is not None and retrain.flow_run:
        return f"retraining started (Prefect flow run {retrain.flow_run})"
    if retrain is not None and retrain.blocked:
        return (
            "retrain blocked by the training-data integrity check: nothing was trained; "
            f"v{content.model_version} stays champion"
        )
    if retrain is not None and retrain.version:
        if retrain.promoted:
            return f"retrained: v{retrain.version} passed the gate and is champion now"
        return f"retrained: v{retrain.version} did not pass the gate; v{content.model_version} stays champion"
    if action == "retrain":
        return "retraining was decided but not started here (act=false)"
    if action == "alert":
        return "alert only: nothing was changed"
    return "none"


def _next_steps(content: AlertContent) -> list[str]:
    """What happens next on its own, and what the reader can do, with the commands."""
    steps: list[str] = []
    retrain, version = content.retrain, content.model_version
    if retrain is not None and retrain.flow_run:
        steps.append(
            "Next: the train flow run trains, evaluates and puts the new version through "
            "the promotion gate; check it with `mmops status`."
        )
    elif retrain is not None and retrain.blocked:
        steps.append(f"Why it was blocked: {retrain.blocked}")
        steps.append(
            f"Next: v{version} keeps serving. A later retrain checks the same rows, so it "
            "stays blocked until they change."
        )
        steps.append(
            "Look at the flagged rows (the run's integrity/ artifacts: report, plot, "
            "flags.parquet). Poisoned: correct their labels at the source and re-deliver them "
            "(`mmops labels <file>`; each overwrite is recorded), then `mmops train`. "
            "Genuine: relax the bound named in the reason, on the record, e.g. "
            "`mmops train --set integrity.block_on_trigger=false` (trigger rows stay "
            "quarantined) or `--set integrity.max_duplicate_share=0.05`."
        )
    elif retrain is not None and retrain.version and retrain.promoted:
        steps.append(
            f"Next: v{retrain.version} scores from now on and the monitor judges the next "
            f"window against v{retrain.version}'s reference."
        )
        steps.append(
            f'If v{retrain.version} misbehaves: `mmops rollback --reason "..."` restores '
            f"v{version}."
        )
    elif retrain is not None and retrain.version:
        steps.append(
            f"Next: v{version} keeps serving; v{retrain.version} stays `challenger`. Review "
            "the gate's verdict on the version page in MLflow."
        )
        if "golden" in retrain.verdict:
            steps.append(
                "The golden holdout (labels frozen before) disagrees with it. If the labels' "
                "meaning really changed (concept drift) that is expected, but label poisoning "
                "looks the same to the data: once a person has confirmed the change, "
                '`mmops golden freeze --since <episode start> --reason "..."`, then '
                f"`mmops promote {retrain.version}`."
            )
        steps.append(
            f'To promote it anyway: `mmops promote {retrain.version} --force --reason "..."` '
            "(recorded in the alias history)."
        )
    elif content.decision.action == "alert":
        steps.append(
            "Next: the monitor re-checks every window; drift that persists with a performance "
            "drop (estimated, untrusted on a drifted window, or realized) triggers a retrain "
            "on its own (cooldown and daily cap apply)."
        )
        steps.append(
            "If the change is expected and harmless, nothing is needed; if it is a broken "
            "feed, fix the source before the next window."
        )
    steps.append("`mmops status` shows the champion, the challenger and the latest windows.")
    return steps


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


def _significant(m: ModalityDrift) -> list:
    """The drifted modality's tests worth listing: significant after the modality's
    Bonferroni step, or components that are only reported (MMD tests them jointly)."""
    if not m.drifted:
        return []
    return [
        c
        for c in m.top
        if c.p_value is None or min(1.0, c.p_value * max(m.n_tests, 1)) <= m.threshold
    ]


def _context(content: AlertContent, attachment_note: str | None, sample_chars: int) -> dict:
    """What the templates show, already scrubbed and formatted (templates only lay out)."""
    columns = _sample_columns(content.sample_rows)
    drift = content.drift
    return {
        "subject": alert_subject(content),
        "kind": content.kind,
        "action": content.decision.action,
        "action_line": scrub_pii(_action_line(content)),
        "model_version": content.model_version,
        "summary_drift": [scrub_pii(line) for line in _drift_summary(content)],
        "n_drifted": len(drift.drifted_modalities),
        "n_modalities": len(drift.modalities),
        "next_steps": [scrub_pii(line) for line in _next_steps(content)],
        "reasons": [scrub_pii(r) for r in content.decision.reasons],
        "window": _window_line(drift),
        "modalities": [
            {
                "name": m.modality,
                "drifted": m.drifted,
                "p_value": _p(m.p_value),
                "threshold": f"{m.threshold:.3g}",
                "n_tests": m.n_tests,
                "n_window": m.n_window,
                "n_reference": m.n_reference,
                "top": [
                    {
                        "name": scrub_pii(c.name),
                        "statistic": scrub_pii(_plain_test(c.test, c.score)),
                        "p_value": _p(c.p_value) if c.p_value is not None else "joint test",
                    }
                    for c in _significant(m)
                ],
            }
            for m in _ordered_modalities(drift)
        ],
        "performance": [scrub_pii(line) for line in _performance_lines(content)],
        "explanations": [one_line(scrub_pii(e), 400) for e in content.explanations],
        "episode": [scrub_pii(line) for line in content.episode],
        "episode_retrains": [scrub_pii(line) for line in content.episode_retrains],
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
        "ui_hint": scrub_pii(content.ui_hint) if content.ui_hint else None,
        "report_file": content.report_file,
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
    max_attachment_bytes: int = DEFAULT_MAX_ATTACHMENT_BYTES,
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
        max_attachment_bytes: a larger report is not attached (it is linked); the email
            says so. The default keeps the whole email under 1 MB.
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
            where = (
                "; follow the drift report link"
                if content.report_url
                else f"; it is at {content.report_file}"
                if content.report_file
                else ""
            )
            attachment_note = (
                f"The full drift report ({size / 1e6:.1f} MB) is too large to attach{where}."
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


__all__ = [
    "DEFAULT_MAX_ATTACHMENT_BYTES",
    "AlertContent",
    "EmailKind",
    "RetrainSummary",
    "alert_subject",
    "build_alert_email",
    "render_alert",
]
