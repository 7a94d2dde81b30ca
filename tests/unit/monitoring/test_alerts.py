from __future__ import annotations

import email
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from pydantic import ValidationError

from monitoring.alerts import (
    AlertContent,
    AlertState,
    SmtpConfig,
    alert_subject,
    build_alert_email,
    load_alert_state,
    save_alert_state,
    scrub_pii,
    should_send,
    update_alert_state,
)
from monitoring.drift import ColumnDrift, DriftResult, ModalityDrift
from monitoring.estimate import PerformanceEstimate
from monitoring.policy import Decision, PolicyConfig, PolicyState, decide

T0 = datetime(2026, 7, 1, 12, tzinfo=UTC)
PASSWORD = "s3cr3t-Pa55word!"


def drift_result(drifted: set[str] = frozenset({"text"})) -> DriftResult:
    def modality(name: str) -> ModalityDrift:
        is_drifted = name in drifted
        return ModalityDrift(
            modality=name,
            score=0.31 if is_drifted else 0.02,
            p_value=1.2e-6 if is_drifted else 0.48,
            threshold=0.0125,
            drifted=is_drifted,
            n_tests=3,
            n_window=500,
            n_reference=2000,
            top=[
                ColumnDrift(name=f"{name}_col:pc1", test="ks", score=0.29, p_value=3e-7),
                ColumnDrift(name=f"{name}_col:presence", test="fisher", score=0.1, p_value=None),
            ],
        )

    return DriftResult(
        window_start=T0 - timedelta(days=1),
        window_end=T0,
        n_rows=500,
        alpha=0.05,
        modalities={m: modality(m) for m in ("tabular", "text", "image", "output")},
    )


def estimate(f1: float = 0.71) -> PerformanceEstimate:
    return PerformanceEstimate(
        n_rows=500,
        classes=["neg", "pos"],
        expected_accuracy=f1,
        expected_macro_f1=f1,
        accuracy_band=(f1 - 0.04, f1 + 0.04),
        macro_f1_band=(f1 - 0.04, f1 + 0.04),
        confidence=0.9,
        expected_confusion=[[0.0, 0.0], [0.0, 0.0]],
    )


def decision(action="alert", fingerprint="text", reasons=None) -> Decision:
    return Decision(
        action=action,
        reasons=reasons or [f"{fingerprint} drifted"],
        fingerprint=fingerprint,
        state=PolicyState(),
    )


def content(**overrides) -> AlertContent:
    values = {
        "dataset": "reviews",
        "decision": decision(),
        "drift": drift_result(),
        "estimate": estimate(),
        "reference_performance": 0.80,
        "created_at": T0,
    }
    return AlertContent(**(values | overrides))


def build(**overrides) -> EmailMessage:
    return build_alert_email(
        content(**overrides), sender="mmops@example.org", recipients=["oncall@example.org"]
    )


def parts(message: EmailMessage) -> tuple[str, str]:
    parsed = email.message_from_bytes(message.as_bytes(), policy=policy.default)
    text = parsed.get_body(preferencelist=("plain",))
    html = parsed.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


# scrub_pii ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "jane.doe+news@example.co.uk",
        "J_Smith@mail-server.de",
    ],
)
def test_scrub_replaces_emails(raw):
    assert scrub_pii(f"contact {raw} please") == "contact [EMAIL] please"


@pytest.mark.parametrize(
    "raw",
    [
        "+33 6 12 34 56 78",
        "+44 20 7946 0958",
        "(555) 123-4567",
        "555-123-4567",
        "555.123.4567",
        "0612345678",
        "+4915112345678",
    ],
)
def test_scrub_replaces_phone_numbers(raw):
    assert scrub_pii(f"call {raw} today") == "call [PHONE] today"


@pytest.mark.parametrize(
    "raw", ["4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111", "378282246310005"]
)
def test_scrub_replaces_card_numbers(raw):
    assert scrub_pii(f"card {raw} expired") == "card [CARD] expired"


@pytest.mark.parametrize("raw", ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432"])
def test_scrub_replaces_ibans(raw):
    assert scrub_pii(f"pay to {raw}.") == "pay to [IBAN]."


def test_scrub_replaces_urls_with_query_but_keeps_plain_urls():
    text = "see https://shop.example.com/item?id=42&user=jane@example.com or https://example.com/a"
    assert scrub_pii(text) == "see [URL] or https://example.com/a"


@pytest.mark.parametrize(
    "text",
    [
        "retrain blocked: cooldown until 2026-07-02T12:00:00+00:00",
        "text drifted (p=1.2e-06 <= 0.0125; top: review:pc1, review:presence)",
        "estimated macro_f1 0.712 is 0.088 below the reference 0.800",
        "scores 0.123 0.456 0.789 on 500 rows, order 12345678, price 12345.678901",
        "version 1.4.6 from 10 to 20 of 30",
    ],
)
def test_scrub_keeps_text_without_personal_data(text):
    assert scrub_pii(text) == text


def test_scrub_keeps_reasons_of_a_real_policy_decision():
    made = decide(
        drift_result({"text", "image"}),
        estimate(0.6),
        reference_performance=0.8,
        state=PolicyState(),
        config=PolicyConfig(),
        now=T0,
    )
    assert made.action == "alert"
    assert [scrub_pii(r) for r in made.reasons] == made.reasons


# build_alert_email ------------------------------------------------------------------------


def test_subject_names_action_dataset_and_drifted_modalities():
    subject = alert_subject(content(drift=drift_result({"text", "image"})))
    assert subject == "[mmops] ALERT reviews: drift in image, text"


def test_subject_is_scrubbed_and_single_line():
    subject = alert_subject(content(dataset="reviews of jane@example.com\nBcc: x@y.z"))
    assert "@" not in subject and "\n" not in subject
    assert "[EMAIL]" in subject


def test_email_has_plain_and_html_alternatives():
    message = build()
    alternative = next(p for p in message.walk() if p.get_content_type() == "multipart/alternative")
    subtypes = [p.get_content_type() for p in alternative.iter_parts()]
    assert subtypes == ["text/plain", "text/html"]
    text, html = parts(message)
    for body in (text, html):
        assert "text" in body and "1.2e-06" in body and "0.0125" in body
        assert "text_col:pc1" in body
        assert "0.710" in body and "0.670-0.750" in body and "0.800" in body
        assert "text drifted" in body
    assert message["X-Mmops-Fingerprint"] == "text"
    assert message["Message-ID"].endswith("@example.org>")


def test_html_part_escapes_everything():
    message = build(
        dataset="<b>reviews</b>",
        decision=decision(reasons=["drift in <script>alert(1)</script>"]),
        sample_rows=[{"review": '<img src=x onerror="steal()"> great & cheap'}],
    )
    _, html = parts(message)
    assert "<script>" not in html and "<img" not in html and "<b>reviews" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=&#34;steal()&#34;&gt; great &amp; cheap" in html


def test_free_text_is_scrubbed_in_both_parts():
    message = build(
        decision=decision(reasons=["customer jane@example.com complained"]),
        sample_rows=[
            {"review": "call me on +44 20 7946 0958", "note": "card 4111 1111 1111 1111"},
            {"review": "ok", "note": "https://t.example.com/?ref=abc"},
        ],
    )
    text, html = parts(message)
    for body in (text, html, str(message["Subject"])):
        assert "jane@example.com" not in body
        assert "7946" not in body and "4111" not in body and "ref=abc" not in body
    for body in (text, html):
        assert "[EMAIL]" in body and "[PHONE]" in body and "[CARD]" in body and "[URL]" in body


def test_links_appear_in_html_and_text():
    message = build(
        mlflow_run_url="http://mlflow.local/#/experiments/1/runs/abc",
        report_url="http://reports.local/drift.html",
        flow_run_url="http://prefect.local/runs/flow-run/123?tab=logs&x=1",
    )
    text, html = parts(message)
    assert 'href="http://prefect.local/runs/flow-run/123?tab=logs&amp;x=1"' in html
    assert 'href="http://mlflow.local/#/experiments/1/runs/abc"' in html
    assert "http://reports.local/drift.html" in text


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", 'http://x" onclick="y', "ftp://x", "http://x\nBcc: y"]
)
def test_links_must_be_http(url):
    with pytest.raises(ValidationError):
        content(report_url=url)


def test_report_is_attached_as_html_file(tmp_path: Path):
    report = tmp_path / "drift report.html"
    report.write_text("<html><body>Evidently</body></html>")
    message = build(report_path=report)
    assert message.get_content_type() == "multipart/mixed"
    attachments = list(message.iter_attachments())
    assert len(attachments) == 1
    assert attachments[0].get_content_type() == "text/html"
    assert attachments[0].get_filename() == "drift_report.html"
    assert attachments[0].get_payload(decode=True) == report.read_bytes()


def test_no_attachment_without_report_and_large_report_is_skipped(tmp_path: Path):
    assert list(build().iter_attachments()) == []
    report = tmp_path / "big.html"
    report.write_bytes(b"x" * 2000)
    message = build_alert_email(
        content(report_path=report, report_url="http://reports.local/big.html"),
        sender="mmops@example.org",
        recipients=["oncall@example.org"],
        max_attachment_bytes=1000,
    )
    assert list(message.iter_attachments()) == []
    assert "too large to attach" in parts(message)[0]


# Issue 14: one template per kind, a ten-second summary, next steps, small emails ----------


def test_alert_summary_names_version_drift_in_plain_words_and_the_trust_signal():
    shifted = estimate(0.79).model_copy(
        update={
            "trusted": False,
            "trust_reasons": ["38% of rows are far from the reference embeddings"],
            "far_share_by_column": {"text_col": 0.38},
            "method": "distance_checked",
        }
    )
    text, html = parts(build(estimate=shifted, model_version="3"))
    for body in (text, html):
        head = body[: body.index("What happens next")]
        assert "v3" in head
        assert "1 of 4 modalities drifted" in head
        assert "text: strong evidence (p-value 1.2e-06)" in head
        assert "38% of the text_col rows lie far from anything in the reference" in head
        assert "distributions differ by up to 29% of rows (KS statistic 0.29)" in head
        assert "UNTRUSTED (distance_checked)" in head and "low end (0.750)" in head
        assert "mmops status" in body
    # Quiet modalities list no tests; the drifted one lists only its significant ones.
    assert "image_col:pc1" not in text and "tabular_col" not in text
    assert "text_col:pc1: distributions differ" in text


def test_retrain_result_email_says_what_the_gate_did_and_how_to_undo_it():
    from monitoring.alerts import RetrainSummary

    promoted = build(
        kind="retrain_result",
        decision=decision(action="retrain"),
        model_version="1",
        retrain=RetrainSummary(version="2", promoted=True, verdict="macro_f1 +0.04"),
    )
    assert promoted["Subject"] == "[mmops] RETRAINED reviews v1 -> v2 promoted: drift in text"
    text, _ = parts(promoted)
    assert "v2 passed the gate and is champion now" in text
    assert "mmops rollback" in text
    rejected = build(
        kind="retrain_result",
        decision=decision(action="retrain"),
        model_version="1",
        retrain=RetrainSummary(version="2", promoted=False),
    )
    assert "v2 not promoted" in rejected["Subject"]
    text, _ = parts(rejected)
    assert "v1 stays champion" in text and "mmops promote 2 --force" in text


def test_a_retrain_the_integrity_check_blocked_says_so_and_what_to_look_at():
    """Found on the poison_trigger demo: the blocked retrain's email said "retraining was
    decided but not started here (act=false)" although it ran and was blocked."""
    from monitoring.alerts import RetrainSummary

    why = "a possible trigger: token 'zq7' (review) in 62 new rows. Look at: the new rows"
    blocked = build(
        kind="retrain_result",
        decision=decision(action="retrain"),
        model_version="1",
        retrain=RetrainSummary(blocked=why),
    )
    assert blocked["Subject"].startswith("[mmops] RETRAIN BLOCKED reviews v1: drift in text")
    text, html = parts(blocked)
    assert "act=false" not in text
    head = text[: text.index("What happens next")]
    assert "retrain blocked by the training-data integrity check: nothing was trained" in head
    assert "v1 stays champion" in head
    assert "zq7" in text and "zq7" in html
    assert "mmops golden freeze" not in text  # a block is about the data, not the gate


def test_retrain_started_and_reminder_kinds():
    from monitoring.alerts import RetrainSummary

    started = build(
        kind="retrain_started",
        decision=decision(action="retrain"),
        retrain=RetrainSummary(flow_run="f-123"),
    )
    assert started["Subject"].startswith("[mmops] RETRAIN STARTED reviews")
    assert "Prefect flow run f-123" in parts(started)[0]
    reminder = build(
        kind="reminder",
        episode=["2026-06-29 00:00 (v1): alert, drift in text"],
        episode_retrains=["the window of 2026-06-29 00:00 triggered a retrain of v1"],
    )
    assert reminder["Subject"].startswith("[mmops] REMINDER reviews")
    text, html = parts(reminder)
    for body in (text, html):
        assert "Already done in this episode" in body and "triggered a retrain of v1" in body
        assert "Earlier windows of this episode" in body


def test_a_large_report_is_linked_not_attached_and_the_email_stays_under_1_mb(tmp_path: Path):
    # Issue 14: the 4.3 MB report was attached to every email (5.8 MB each).
    report = tmp_path / "report.html"
    report.write_bytes(b"<html>" + b"x" * 4_300_000 + b"</html>")
    message = build(
        report_path=report,
        report_file=str(report),
        report_url="http://mlflow.local/#/experiments/1/runs/abc/artifacts",
        mlflow_run_url="http://mlflow.local/#/experiments/1/runs/abc",
    )
    assert len(message.as_bytes()) < 1_000_000
    assert list(message.iter_attachments()) == []
    text, _ = parts(message)
    assert "too large to attach; follow the drift report link" in text
    assert "http://mlflow.local/#/experiments/1/runs/abc/artifacts" in text


def test_recipients_required():
    with pytest.raises(ValueError, match="recipient"):
        build_alert_email(content(), sender="mmops@example.org", recipients=[])


# SmtpConfig -----------------------------------------------------------------------------------


def smtp_config(tmp_path: Path, **overrides) -> SmtpConfig:
    # The password comes first: pydantic cuts long inputs short, from the end.
    values = {
        "password": PASSWORD,
        "host": "mail.example.org",
        "port": 587,
        "security": "starttls",
        "user": "mmops",
        "sender": "mmops@example.org",
        "recipients": ["oncall@example.org"],
        "outbox_dir": tmp_path / "outbox",
    }
    return SmtpConfig(**(values | overrides))


def test_smtp_config_never_shows_the_password(tmp_path: Path):
    config = smtp_config(tmp_path)
    assert config.password is not None and config.password.get_secret_value() == PASSWORD
    for shown in (str(config), repr(config), config.model_dump_json(), str(config.model_dump())):
        assert PASSWORD not in shown


@pytest.mark.parametrize(
    "overrides",
    [{"port": 70000}, {"security": "none"}, {"user": None}, {"recipients": []}],
)
def test_smtp_config_errors_never_show_the_password(tmp_path: Path, overrides):
    with pytest.raises(ValidationError) as raised:
        smtp_config(tmp_path, **overrides)
    # pydantic shortens long inputs in messages: look for a prefix too.
    for shown in (str(raised.value), repr(raised.value)):
        assert PASSWORD[:8] not in shown


# De-duplication ---------------------------------------------------------------------------------


def run_alerts(decisions, renotify_after=timedelta(hours=6), step=timedelta(hours=1)):
    """Feed decisions one per step; return whether each was mailed."""
    state, sent = AlertState(), []
    for i, made in enumerate(decisions):
        now = T0 + i * step
        check = should_send(made, state, now, renotify_after)
        sent.append(check.send)
        state = update_alert_state(state, made, now, sent=check.send)
    return sent, state


def test_same_ongoing_drift_is_mailed_once():
    sent, state = run_alerts([decision() for _ in range(4)])
    assert sent == [True, False, False, False]
    assert state.emails == 1 and state.suppressed == 3 and state.fingerprint == "text"


def test_a_new_issue_in_the_episode_is_mailed_but_flicker_is_not():
    flicker = [
        decision(),
        decision(fingerprint="image+text"),
        decision(),
        decision(fingerprint="image"),
    ]
    sent, state = run_alerts(flicker)
    assert sent == [True, True, False, False]
    assert state.fingerprint == "image+text"


def test_a_new_episode_after_a_quiet_window_is_mailed_again():
    quiet = decision(action="none", fingerprint="")
    sent, _ = run_alerts([decision(), quiet, decision()])
    assert sent == [True, False, True]


def test_renotify_after_interval():
    sent, state = run_alerts([decision() for _ in range(8)], renotify_after=timedelta(hours=3))
    assert sent == [True, False, False, True, False, False, True, False]
    assert state.first_sent_at == T0 and state.emails == 3
    # A repeat is marked as a reminder (its email says so); a new issue is not.
    assert should_send(decision(), state, T0 + timedelta(hours=12), timedelta(hours=3)).reminder
    assert not should_send(decision(), AlertState(), T0).reminder


def test_never_renotify_when_interval_is_none():
    sent, _ = run_alerts([decision() for _ in range(30)], renotify_after=None)
    assert sent == [True] + [False] * 29


def test_none_resets_so_a_new_episode_alerts_again():
    quiet = decision(action="none", fingerprint="", reasons=["no drift and no performance drop"])
    sent, state = run_alerts([decision(), decision(), quiet, decision()])
    assert sent == [True, False, False, True]
    assert state.emails == 1 and state.first_sent_at == T0 + timedelta(hours=3)


def test_retrain_is_always_mailed():
    sent, state = run_alerts([decision(), decision(action="retrain"), decision()])
    assert sent == [True, True, False]
    assert state.action == "retrain"


def test_failed_delivery_is_retried_next_run():
    state = AlertState()
    check = should_send(decision(), state, T0)
    state = update_alert_state(state, decision(), T0, sent=False)
    assert check.send and should_send(decision(), state, T0 + timedelta(hours=1)).send


def test_naive_time_and_bad_interval_rejected():
    with pytest.raises(ValueError, match="timezone"):
        should_send(decision(), AlertState(), datetime(2026, 7, 1))
    with pytest.raises(ValueError, match="positive"):
        should_send(decision(), AlertState(), T0, timedelta(0))


def test_alert_state_round_trips_as_json(tmp_path: Path):
    path = tmp_path / "state" / "alerts.json"
    assert load_alert_state(path) == AlertState()
    _, state = run_alerts([decision(), decision()])
    save_alert_state(state, path)
    assert load_alert_state(path) == state
    assert list(path.parent.iterdir()) == [path]
