"""The monitor cycle under re-runs, faults and corrupt state (issues 9 and 10), through
the real flows: Feast on local files, MLflow on SQLite, a real SMTP server on loopback."""

from __future__ import annotations

import os
import socket
from datetime import timedelta

import pytest

from tests.integration.pipeline import build_small_pipeline, concept_drift_cycle

pytestmark = pytest.mark.integration


class Inbox:
    """A real SMTP server on loopback that keeps what it receives."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.received: list[bytes] = []
        inbox = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802
                inbox.received.append(envelope.content)
                return "250 OK"

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> Inbox:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from prefect.testing.utilities import prefect_test_harness

    data_dir = tmp_path_factory.mktemp("mmops-monitor")
    keys = ("MMOPS_DATA_DIR", "MMOPS_SMTP__PORT", "MMOPS_SMTP__RETRIES", "MMOPS_SMTP__BACKOFF")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ["MMOPS_DATA_DIR"] = str(data_dir)
    with prefect_test_harness(server_startup_timeout=120):
        from flows.runtime import get_runtime

        runtime = get_runtime()
        history_end, first = build_small_pipeline(runtime)
        yield {"runtime": runtime, "data_dir": data_dir, "history_end": history_end}
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _day(pipeline, day: int, scenario: str, rows: int = 300):
    from features.demo_data import DemoSources
    from features.drift_sim import simulate_window
    from tests.integration.pipeline import IMAGES, REVIEWS

    start = pipeline["history_end"] + timedelta(days=day)
    sources = DemoSources.load().subset(REVIEWS, IMAGES, pipeline["runtime"].settings.seed)
    raw, _ = simulate_window(
        sources,
        scenario,
        1.0,
        rows,
        start,
        start + timedelta(days=1),
        seed=900 + day,
        first_id=500_000 + 1_000 * day,
    )
    path = pipeline["data_dir"] / f"production-{day}.parquet"
    raw.to_parquet(path, index=False)
    return path, start


def _state_bytes(settings) -> dict[str, bytes]:
    names = ("policy_state.json", "alert_state.json", "drift_history.parquet")
    return {n: (settings.state_dir / n).read_bytes() for n in names}


def test_benign_drift_is_watched_and_a_rerun_changes_no_state(pipeline):
    from flows.cycle import CycleParams, cycle_flow
    from flows.monitor import MonitorParams, monitor_flow
    from monitoring.scoring import read_prediction_log
    from training.registry import connect

    runtime = pipeline["runtime"]
    settings = runtime.settings
    with Inbox() as inbox:
        os.environ["MMOPS_SMTP__PORT"] = str(inbox.port)
        path, start = _day(pipeline, 0, "benign")
        params = MonitorParams(start=start, end=start + timedelta(days=1), act=False)
        first = cycle_flow(
            CycleParams(
                start=start, end=start + timedelta(days=1), raw_path=str(path), monitor=params
            )
        ).monitor
        # monitor_only columns reach the prediction log and are tested as 'benign'.
        log = read_prediction_log(
            runtime.config, settings.prediction_log_dir, start, start + timedelta(days=1)
        )
        assert "warehouse_load" in log.columns
        assert "benign" in first.drifted, first.p_values
        assert first.action == "alert" and first.email.startswith("sent")
        before = _state_bytes(settings)
        mails = len(inbox.received)
        again = monitor_flow(params)
    assert again.replayed and again.action == first.action
    assert again.email.startswith("already handled")
    assert _state_bytes(settings) == before
    assert len(inbox.received) == mails
    client = connect(settings.tracking_uri)
    experiment = client.get_experiment_by_name("petfood-monitoring")
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`mmops.window_start` = '{start.isoformat()}'",
    )
    assert [r.info.run_id for r in runs] == [again.mlflow_run_id]


def test_smtp_down_on_a_retrain_day_retrains_once_and_the_outbox_is_resent(pipeline):
    import json

    from flows.monitor import MonitorParams, monitor_flow
    from monitoring.alerts import load_alert_state
    from monitoring.policy import PolicyConfig, PolicyState

    settings = pipeline["runtime"].settings
    os.environ["MMOPS_SMTP__PORT"] = str(_closed_port())
    os.environ["MMOPS_SMTP__RETRIES"] = "1"
    os.environ["MMOPS_SMTP__BACKOFF"] = "0"
    start = pipeline["history_end"] + timedelta(days=1)
    outcome = concept_drift_cycle(
        pipeline["runtime"],
        start,
        pipeline["data_dir"] / "concept.parquet",
        seed=71,
        first_id=700_000,
    ).monitor
    assert outcome.action == "retrain", outcome.reasons
    assert outcome.retrain_version is not None  # the failed email cancelled nothing
    assert outcome.email.startswith("failed"), outcome.email
    outbox = sorted(settings.outbox_dir.glob("*.eml"))
    assert len(outbox) == 1
    state = PolicyState.from_json((settings.state_dir / "policy_state.json").read_text())
    assert len(state.retrains) == 1
    alerts = load_alert_state(settings.state_dir / "alert_state.json")
    assert any(v.startswith("failed") for v in alerts.windows.values())
    # A re-run of the same window neither retrains again nor says 'blocked: cooldown'.
    policy = PolicyConfig(concept_persistence_k=1, concept_persistence_n=1, min_labeled_rows=50)
    rerun = monitor_flow(
        MonitorParams(start=start, end=start + timedelta(days=1), label_lag_hours=0, policy=policy)
    )
    assert rerun.retrain_version is None and not any("cooldown" in r for r in rerun.reasons)
    if outcome.retrain_promoted:  # judged anew for the new champion, on v1's labels: no drop
        assert not rerun.replayed and rerun.action != "retrain"
    else:
        assert rerun.replayed and rerun.action == "retrain"
    state = PolicyState.from_json((settings.state_dir / "policy_state.json").read_text())
    assert len(state.retrains) == 1
    # The next run, with the server back, delivers what the outbox kept.
    failed = [
        v
        for v in load_alert_state(settings.state_dir / "alert_state.json").windows.values()
        if v.startswith("failed")
    ]
    waiting = len(list(settings.outbox_dir.glob("*.eml")))
    assert waiting == len(failed) >= 1
    with Inbox() as inbox:
        os.environ["MMOPS_SMTP__PORT"] = str(inbox.port)
        monitor_flow(
            MonitorParams(
                start=start,
                end=start + timedelta(days=1),
                label_lag_hours=0,
                policy=policy,
                act=False,
            )
        )
    assert any(b"RETRAIN" in m for m in inbox.received), inbox.received
    # Issue 14: the retrain email is small, names the versions, links the run, says what next.
    import email as email_lib
    from email import policy as email_policy

    mail = email_lib.message_from_bytes(
        next(m for m in inbox.received if b"RETRAIN" in m), policy=email_policy.default
    )
    assert len(mail.as_bytes()) < 1_000_000
    assert mail["Subject"].startswith("[mmops] RETRAINED petfood v1 -> v2 ")
    body = mail.get_body(preferencelist=("plain",)).get_content()
    assert "Model: v1" in body and "What happens next / what to do" in body
    assert "mmops status" in body
    assert (
        "http://127.0.0.1:5000/#/experiments/" in body and "mlflow ui --backend-store-uri" in body
    )
    assert ("mmops rollback" in body) if outcome.retrain_promoted else ("--force" in body)
    assert not list(settings.outbox_dir.glob("*.eml"))
    assert len(list((settings.outbox_dir / "sent").glob("*.eml"))) == waiting
    json.loads((settings.state_dir / "policy_state.json").read_text())


def test_credentials_without_tls_keep_the_alert_in_the_outbox(pipeline, monkeypatch):
    from flows.monitor import MonitorParams, monitor_flow

    path, start = _day(pipeline, 3, "benign")
    from flows.ingest import IngestParams, ingest_flow
    from flows.score import ScoreParams, score_flow

    ingest_flow(IngestParams(start=start, end=start + timedelta(days=1), raw_path=str(path)))
    score_flow(ScoreParams(start=start, end=start + timedelta(days=1)))
    monkeypatch.setenv("MMOPS_SMTP__USER", "alerts")
    monkeypatch.setenv("MMOPS_SMTP__PASSWORD", "hunter2")
    monkeypatch.setenv("MMOPS_SMTP__PORT", str(_closed_port()))
    from flows.runtime import get_runtime

    settings = get_runtime().settings
    before = set(settings.outbox_dir.glob("*.eml"))
    params = MonitorParams(start=start, end=start + timedelta(days=1), act=False, renotify_hours=1)
    outcome = monitor_flow(params)
    assert outcome.action == "alert"
    assert outcome.email.startswith("failed: SMTP settings invalid"), outcome.email
    assert "hunter2" not in outcome.email
    assert len(set(settings.outbox_dir.glob("*.eml")) - before) == 1


def test_corrupt_state_files_are_moved_aside_and_rebuilt(pipeline):
    from flows.monitor import MonitorParams, monitor_flow
    from monitoring.policy import PolicyState

    settings = pipeline["runtime"].settings
    for name in ("policy_state.json", "alert_state.json", "drift_history.parquet"):
        path = settings.state_dir / name
        path.write_bytes(path.read_bytes()[:20])
    path, start = _day(pipeline, 4, "none")
    from flows.ingest import IngestParams, ingest_flow
    from flows.score import ScoreParams, score_flow

    ingest_flow(IngestParams(start=start, end=start + timedelta(days=1), raw_path=str(path)))
    score_flow(ScoreParams(start=start, end=start + timedelta(days=1)))
    outcome = monitor_flow(
        MonitorParams(start=start, end=start + timedelta(days=1), send_email=False, act=False)
    )
    assert outcome.n_rows == 300
    for name in ("policy_state.json", "alert_state.json", "drift_history.parquet"):
        assert list(settings.state_dir.glob(f"{name}.corrupt-*")), name
    state = PolicyState.from_json((settings.state_dir / "policy_state.json").read_text())
    # Rebuilt from the monitoring runs: the earlier windows are remembered, with the retrain.
    assert len({r.window_start for r in state.history}) >= 3
    assert state.retrains
    import pandas as pd

    history = pd.read_parquet(settings.state_dir / "drift_history.parquet")
    assert len(history) >= 4


def test_status_names_champion_challenger_and_the_latest_windows(pipeline):
    # The alert emails point the reader at `mmops status` for exactly these facts.
    import json

    from typer.testing import CliRunner

    from flows.cli import app

    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["champion"] is not None and "challenger" in out
    assert out["latest_windows"], out
    assert {"window_start", "model_version", "action"} <= set(out["latest_windows"][-1])
