"""The demo's claims at small scale: drift onset detected, retraining triggered, champion
replaced only when better, accuracy after retraining above accuracy under drift."""

from __future__ import annotations

import email
import socket

import pytest

pytestmark = pytest.mark.integration


def test_demo_detects_drift_retrains_and_recovers(tmp_path, monkeypatch):
    from prefect.testing.utilities import prefect_test_harness

    from flows.demo import DemoParams, demo_flow
    from flows.runtime import get_runtime
    from flows.train import registered_model_name
    from training.registry import alias_history, connect, current_champion

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MMOPS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MMOPS_SMTP__PORT", str(port))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    params = DemoParams(
        rows=2400,
        days=16,
        review_pool=300,
        image_pool=600,
        production_days=7,
        rows_per_day=300,
        scenario="concept",
        onset_day=1,
        epochs=6,
    )
    with prefect_test_harness(server_startup_timeout=120):
        table = demo_flow(params)

    drifted = table[table["drift on"]]
    # Detected within a few windows of onset (concept drift shows in the lagged labels).
    alarms = drifted[drifted["action"] != "none"]
    assert len(alarms) and alarms["day"].min() <= params.onset_day + 3, table
    retrains = table[table["retrain"] != "-"]
    assert len(retrains) >= 1, table
    first_retrain = int(retrains["day"].min())
    # Replaced only when the gate said better: every promotion in the alias history is a
    # retrain the table marks promoted, and the champion is the last promoted version.
    runtime = get_runtime()
    client = connect(runtime.settings.tracking_uri)
    name = registered_model_name(runtime)
    promoted = [e.version for e in alias_history(client, name) if e.action == "promote"]
    marked = [r.split()[0][1:] for r in retrains["retrain"] if r.endswith("promoted")]
    assert promoted == ["1", *marked]
    assert current_champion(client, name) == promoted[-1]
    assert marked, f"no retrained version passed the gate: {retrains['retrain'].tolist()}"
    # Accuracy after the promoted retrain beats accuracy under drift before it.
    under_drift = drifted[drifted["day"] <= first_retrain]["real. acc"].mean()
    after = table[table["day"] > first_retrain]["real. acc"].mean()
    assert after > under_drift + 0.02, table
    # Alerts reached the local SMTP server the demo started.
    mailbox = sorted((tmp_path / "mailbox").glob("*.eml"))
    assert mailbox
    subject = email.message_from_bytes(mailbox[0].read_bytes())["Subject"]
    assert "petfood" in subject
    assert (tmp_path / "reports" / "demo_drift_and_accuracy.png").stat().st_size > 10_000
