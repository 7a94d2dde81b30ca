"""Drift alert emails: personal-data scrubbing (``pii``), the message built from a
window's assessment with jinja2 templates (``message``), de-duplication and the alert
state (``state``), and SMTP delivery with its outbox (``smtp``)."""

from monitoring.alerts.message import (
    AlertContent,
    EmailKind,
    RetrainSummary,
    alert_subject,
    build_alert_email,
    render_alert,
)
from monitoring.alerts.pii import scrub_pii
from monitoring.alerts.smtp import (
    AlertDelivery,
    AlertDeliveryError,
    OutboxResult,
    SmtpConfig,
    save_to_outbox,
    send_alert,
    send_outbox,
)
from monitoring.alerts.state import (
    AlertCheck,
    AlertState,
    load_alert_state,
    save_alert_state,
    should_send,
    update_alert_state,
)

__all__ = [
    "AlertCheck",
    "AlertContent",
    "AlertDelivery",
    "AlertDeliveryError",
    "AlertState",
    "EmailKind",
    "OutboxResult",
    "RetrainSummary",
    "SmtpConfig",
    "alert_subject",
    "build_alert_email",
    "load_alert_state",
    "render_alert",
    "save_alert_state",
    "save_to_outbox",
    "scrub_pii",
    "send_alert",
    "send_outbox",
    "should_send",
    "update_alert_state",
]
