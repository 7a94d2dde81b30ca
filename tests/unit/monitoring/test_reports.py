"""Window reports: Evidently HTML / JSON, drift history plot, MLflow logging (fake client)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.schema import DatasetConfig
from monitoring.assessment import ChampionInfo, WindowAssessment
from monitoring.drift import DriftConfig, DriftResult, compute_drift, fit_drift_reference
from monitoring.estimate import estimate_performance, realized_windows
from monitoring.policy import Decision, PolicyState
from monitoring.reports import (
    DRIFT_JSON,
    REPORT_HTML,
    REPORT_JSON,
    build_window_report,
    drift_history_row,
    history_frame,
    log_window_report,
    plot_drift_history,
    report_directory,
)

# 999 permutations: the smallest p-value (1/1000, times 3 tests) clears alpha / 6.
FAST = DriftConfig(permutations=999, mmd_max_reference=300)
START = datetime(2024, 3, 1, tzinfo=UTC)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny_config() -> DatasetConfig:
    """Two numeric columns (one monitor-only), one categorical, one text, one image."""
    return DatasetConfig.model_validate(
        {
            "name": "tiny",
            "entity_key": "id",
            "timestamp": "ts",
            "label": "y",
            "classes": ["a", "b"],
            "text": [{"name": "note"}],
            "images": [{"name": "pic"}],
            "numeric": [{"name": "amount"}, {"name": "load", "nullable": True}],
            "categorical": [{"name": "channel", "categories": ["web", "app", "store"]}],
            "monitor_only": ["load"],
        }
    )


@pytest.fixture(scope="module")
def config() -> DatasetConfig:
    return tiny_config()


def _unit(rng: np.random.Generator, n: int, dim: int, offset: float) -> list[np.ndarray]:
    raw = rng.normal(size=(n, dim)) + offset
    return list((raw / np.linalg.norm(raw, axis=1, keepdims=True)).astype(np.float32))


def tiny_frame(n: int, seed: int, text_offset: float = 0.0, amount_shift: float = 0.0):
    """Scored rows: two numeric, one categorical, random unit embeddings, probas."""
    rng = np.random.default_rng(seed)
    p_b = rng.beta(2, 2, size=n)
    present = (rng.random(n) < 0.9).astype(np.int8)
    return pd.DataFrame(
        {
            "id": np.arange(n),
            "ts": pd.date_range(START, periods=n, freq="min", tz="UTC"),
            "amount": rng.gamma(2.0, 10.0, size=n) + amount_shift,
            "load": rng.random(n),
            "channel": rng.choice(["web", "app", "store"], size=n),
            "note_emb": _unit(rng, n, 16, text_offset),
            "note_present": present,
            "pic_emb": _unit(rng, n, 8, 0.0),
            "pic_present": np.ones(n, dtype=np.int8),
            "proba_a": 1.0 - p_b,
            "proba_b": p_b,
            "prediction": np.where(p_b >= 0.5, "b", "a"),
            "y": np.where(rng.random(n) < p_b, "b", "a"),
        }
    )


@pytest.fixture(scope="module")
def reference_frame() -> pd.DataFrame:
    return tiny_frame(600, seed=1)


@pytest.fixture(scope="module")
def window(config) -> pd.DataFrame:
    # Text embeddings and 'amount' moved: text and tabular drift, the rest does not.
    return tiny_frame(300, seed=2, text_offset=0.5, amount_shift=15.0)


@pytest.fixture(scope="module")
def drift_reference(reference_frame, config):
    return fit_drift_reference(reference_frame, config, FAST, seed=0)


@pytest.fixture(scope="module")
def drift(drift_reference, window) -> DriftResult:
    return compute_drift(drift_reference, window, FAST, seed=0)


@pytest.fixture(scope="module")
def estimate(window, config):
    return estimate_performance(window[["proba_a", "proba_b"]].to_numpy(), config.classes)


@pytest.fixture(scope="module")
def decision(drift) -> Decision:
    return Decision(
        action="alert",
        reasons=["text drift in 1 window only"],
        fingerprint="+".join(drift.drifted_modalities),
        state=PolicyState(),
    )


def make_assessment(drift, estimate, decision, window=None, config=None, start=START):
    """An assessment of the window judged for v7; the labelled window is the day before."""
    realized = []
    if window is not None:
        realized = realized_windows(
            window.assign(model_version="7"),
            "y",
            config.classes,
            start - timedelta(days=1),
            start,
            {"7": 0.8},
        )
    return WindowAssessment(
        dataset="tiny",
        window_start=start,
        window_end=start + timedelta(days=1),
        champion=ChampionInfo(name="tiny-classifier", version="7", run_id="r1", performance=0.8),
        n_rows=drift.n_rows,
        metric="macro_f1",
        drift=drift,
        estimate=estimate,
        labelled_start=start - timedelta(days=1),
        labelled_end=start,
        realized=realized,
        decision=decision,
        decided_at=start + timedelta(days=1),
    )


@pytest.fixture(scope="module")
def assessment(drift, estimate, decision, window, config) -> WindowAssessment:
    return make_assessment(drift, estimate, decision, window, config)


@pytest.fixture(scope="module")
def report(tmp_path_factory, reference_frame, window, config, assessment, drift_reference):
    out = tmp_path_factory.mktemp("report")
    return build_window_report(
        reference_frame,
        window,
        config,
        assessment,
        out / "w1",
        drift_reference=drift_reference,
        max_reference_rows=400,
    )


def test_fixture_window_drifts_in_text_and_tabular_only(drift):
    # Guards the other tests: they rely on these verdicts.
    assert drift.drifted_modalities == ["tabular", "text"]


def test_report_writes_the_three_files(report):
    for path, name in (
        (report.html, REPORT_HTML),
        (report.json_path, REPORT_JSON),
        (report.drift_json, DRIFT_JSON),
    ):
        assert path.name == name
        assert path.parent == report.directory
        assert path.stat().st_size > 0
    assert report.seconds > 0


def test_html_names_the_tabular_columns_and_the_verdicts(report, config, drift):
    html = report.html.read_text(encoding="utf-8")
    for column in config.tabular_columns:
        assert f"Drift in column '{column}'" in html
    for modality in drift.modalities:
        assert f"Calibrated drift: {modality}" in html
    assert "DRIFTED" in html and "no drift" in html
    assert "Monitoring decision" in html and "alert" in html
    # The realized metric names the labelled window and the version it scored.
    assert "on the labels of 2024-02-29 00:00" in html and "v7" in html


def test_json_snapshot_parses_and_carries_our_verdicts(report, drift):
    snapshot = json.loads(report.json_path.read_text(encoding="utf-8"))
    verdicts = {
        m["config"]["modality"]: m
        for m in snapshot["metrics"]
        if m["config"]["type"].endswith("CalibratedModalityDrift")
    }
    assert set(verdicts) == set(drift.modalities)
    for name, result in drift.modalities.items():
        assert verdicts[name]["value"] == pytest.approx(result.p_value)
        assert verdicts[name]["config"]["drifted"] is result.drifted
    statuses = {t["name"]: t["status"] for t in snapshot["tests"]}
    assert statuses["Calibrated drift: text"] == "FAIL"
    assert statuses["Calibrated drift: image"] == "SUCCESS"


def test_evidently_column_thresholds_follow_the_calibration(report, drift):
    snapshot = json.loads(report.json_path.read_text(encoding="utf-8"))
    thresholds = {
        m["config"]["column"]: m["config"]["threshold"]
        for m in snapshot["metrics"]
        if m["config"]["type"].endswith("ValueDrift")
    }
    tabular = drift.modalities["tabular"]
    assert thresholds["amount"] == pytest.approx(tabular.threshold / tabular.n_tests)
    benign = drift.modalities["benign"]
    assert thresholds["load"] == pytest.approx(benign.threshold / benign.n_tests)
    statuses = {t["name"]: t["status"] for t in snapshot["tests"]}
    assert statuses["Column drift: amount"] == "FAIL"
    assert statuses["Column drift: channel"] == "SUCCESS"


def test_report_opens_with_an_overview_at_real_precision(report, drift):
    """Issue 14: drifted modalities were found only by scrolling, the Tests tab printed a
    0.001 threshold as 0.00, and 'drift score' was a p-value in Evidently's widgets."""
    snapshot = json.loads(report.json_path.read_text(encoding="utf-8"))
    first = snapshot["metrics"][0]
    assert first["config"]["type"].endswith("DriftOverview")
    assert first["value"] == len(drift.drifted_modalities) == 2
    tests = snapshot["tests"]
    assert not any(t["name"].startswith("Value Drift") for t in tests)  # the rounded ones
    assert not any("threshold is 0.00" in t["description"] for t in tests)
    tabular = drift.modalities["tabular"]
    amount = next(t for t in tests if t["name"] == "Column drift: amount")
    assert f"p-value threshold {tabular.threshold / tabular.n_tests:.4g}" in amount["description"]
    html = report.html.read_text(encoding="utf-8")
    assert "Overview: 2 of 6 modalities drifted" in html
    assert "modalities drifted" in html and "How to read these numbers" in html
    assert html.index("Overview: 2 of 6") < html.index("Monitoring decision")


def test_embeddings_become_projected_columns_without_tsne(report):
    assert {"note_emb_pc1", "note_emb_pc2", "note_emb_residual"} <= set(report.columns)
    snapshot = report.json_path.read_text(encoding="utf-8")
    assert "EmbeddingsDrift" not in snapshot


def test_drift_json_round_trips(report, drift):
    assert DriftResult.model_validate_json(report.drift_json.read_text()) == drift


def test_reference_is_subsampled_for_the_report(report, window):
    assert report.n_reference == 400
    assert report.n_window == len(window)


def test_report_without_drift_reference_or_labels(
    tmp_path, reference_frame, window, config, drift, estimate, decision
):
    bare = make_assessment(drift, estimate, decision)
    result = build_window_report(
        reference_frame.iloc[:200], window.iloc[:100], config, bare, tmp_path
    )
    assert "pic_emb_pc1" in result.columns
    assert "no labels have arrived" in result.html.read_text(encoding="utf-8")


def test_empty_window_is_rejected(tmp_path, reference_frame, window, config, assessment):
    with pytest.raises(ValueError, match="rows"):
        build_window_report(reference_frame, window.iloc[:0], config, assessment, tmp_path)


def test_report_directory_is_portable():
    path = report_directory(Path("/data"), datetime(2024, 3, 1, 6, 30, tzinfo=UTC))
    assert path == Path("/data/reports/20240301T063000Z")
    assert report_directory("d", None).name == "unknown"


# Drift history ---------------------------------------------------------------------------


def _history(drift, estimate, decision, n: int = 8) -> pd.DataFrame:
    rows = []
    for i in range(n):
        row = drift_history_row(make_assessment(drift, estimate, decision))
        row["window_start"] = START + timedelta(days=i)
        row["realized_accuracy"] = 0.7 if i % 3 == 0 else float("nan")
        rows.append(row)
    rows[-1]["action"] = "retrain"
    return history_frame(rows[::-1])


def test_history_row_has_one_p_value_per_modality(drift, estimate, decision, assessment):
    row = drift_history_row(assessment)
    assert {f"p_{m}" for m in drift.modalities} <= set(row)
    assert row["action"] == "alert" and row["model_version"] == "7"
    assert row["estimated_accuracy"] == pytest.approx(estimate.expected_accuracy)
    assert row["threshold"] == pytest.approx(drift.modalities["text"].threshold)
    # A window's own realized performance is unknown when it is monitored.
    assert "realized_accuracy" not in row


def test_history_frame_is_sorted(drift, estimate, decision):
    frame = _history(drift, estimate, decision)
    assert frame["window_start"].is_monotonic_increasing


def test_history_plot_is_a_png(tmp_path, drift, estimate, decision):
    path = plot_drift_history(
        _history(drift, estimate, decision),
        tmp_path / "plots" / "history.png",
        onset=START + timedelta(days=3),
        retrains=[START + timedelta(days=5)],
    )
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5_000


def test_history_plot_takes_minimal_records(tmp_path):
    records = pd.DataFrame(
        {
            "window_start": pd.date_range(START, periods=3, freq="D"),
            "p_text": [0.5, 0.0, 1e-4],
            "estimated_accuracy": [0.8, 0.7, 0.75],
            "realized_accuracy": [np.nan, np.nan, np.nan],
            "action": ["none", "alert", "none"],
        }
    )
    path = plot_drift_history(records, tmp_path / "h.png", threshold=0.01)
    assert path.read_bytes().startswith(PNG_MAGIC)


def test_history_plot_rejects_empty_records(tmp_path):
    with pytest.raises(ValueError):
        plot_drift_history(pd.DataFrame({"window_start": []}), tmp_path / "h.png")


# MLflow (fake client) --------------------------------------------------------------------


class FakeRun:
    def __init__(self, run_id: str) -> None:
        self.info = type("Info", (), {"run_id": run_id})()


class FakeClient:
    """Records what log_window_report sends; holds one experiment."""

    def __init__(self) -> None:
        self.experiments: dict[str, str] = {}
        self.experiment_tags: dict[str, dict[str, str]] = {}
        self.runs: dict[str, dict] = {}
        self.deleted: list[str] = []

    def get_experiment_by_name(self, name):
        if name not in self.experiments:
            return None
        experiment_id = self.experiments[name]
        tags = dict(self.experiment_tags.get(experiment_id, {}))
        return type("Experiment", (), {"experiment_id": experiment_id, "tags": tags})()

    def create_experiment(self, name, artifact_location=None):
        self.experiments[name] = str(len(self.experiments) + 1)
        return self.experiments[name]

    def set_experiment_tag(self, experiment_id, key, value):
        self.experiment_tags.setdefault(experiment_id, {})[key] = value

    def search_runs(self, experiment_ids, filter_string):
        wanted = dict(re.findall(r"tags\.`([^`]+)` = '([^']*)'", filter_string))
        return [
            FakeRun(run_id)
            for run_id, run in self.runs.items()
            if all(run["tags"].get(k) == v for k, v in wanted.items())
            and run_id not in self.deleted
        ]

    def delete_run(self, run_id):
        self.deleted.append(run_id)

    def create_run(self, experiment_id, run_name, tags):
        run_id = f"run{len(self.runs)}"
        self.runs[run_id] = {
            "name": run_name,
            "tags": dict(tags),
            "metrics": {},
            "params": {},
            "artifacts": [],
            "status": "RUNNING",
        }
        return FakeRun(run_id)

    def log_batch(self, run_id, metrics, params):
        self.runs[run_id]["metrics"].update({m.key: m.value for m in metrics})
        self.runs[run_id]["params"].update({p.key: p.value for p in params})

    def log_artifact(self, run_id, local_path, artifact_path=None):
        self.runs[run_id]["artifacts"].append(f"{artifact_path}/{Path(local_path).name}")

    def set_terminated(self, run_id, status="FINISHED"):
        self.runs[run_id]["status"] = status


def test_log_window_report_sends_metrics_tags_and_artifacts(report, drift, estimate, assessment):
    client = FakeClient()
    logged = log_window_report(client, "monitoring", report, assessment, {"dataset": "tiny"})
    run = client.runs[logged.run_id]
    assert run["status"] == "FINISHED"
    for modality, result in drift.modalities.items():
        assert run["metrics"][f"drift.{modality}.p_value"] == pytest.approx(result.p_value)
        assert run["metrics"][f"drift.{modality}.drifted"] == float(result.drifted)
    assert run["metrics"]["drift.n_drifted"] == 2.0
    assert run["metrics"]["estimate.accuracy"] == pytest.approx(estimate.expected_accuracy)
    labelled = assessment.main_realized
    assert run["metrics"]["labelled.accuracy"] == pytest.approx(labelled.performance.accuracy)
    assert run["tags"]["labelled.window_start"] == labelled.window_start.isoformat()
    assert run["tags"]["labelled.model_version"] == "7"
    assert run["tags"]["decision.action"] == "alert"
    assert run["tags"]["decision.fingerprint"] == "tabular+text"
    assert run["tags"]["model_version"] == "7" and run["tags"]["dataset"] == "tiny"
    assert sorted(run["artifacts"]) == [
        "report/assessment.json",
        "report/drift.json",
        "report/report.html",
        "report/report.json",
    ]


def test_logging_a_window_again_replaces_its_run(report, assessment):
    client = FakeClient()
    first = log_window_report(client, "monitoring", report, assessment)
    second = log_window_report(client, "monitoring", report, assessment)
    assert first.run_id != second.run_id and client.deleted == [first.run_id]
    assert second.url("http://ui:5000/") == (
        f"http://ui:5000/#/experiments/{second.experiment_id}/runs/{second.run_id}"
    )
    assert second.experiment_id != "0"
    # The same window judged for another version is another decision: its run stays.
    other = assessment.model_copy(
        update={"champion": assessment.champion.model_copy(update={"version": "8"})}
    )
    third = log_window_report(client, "monitoring", report, other)
    assert client.deleted == [first.run_id] and third.run_id != second.run_id


def test_window_without_a_modality_still_reports(
    tmp_path, reference_frame, window, config, assessment
):
    no_text = window.iloc[:100].assign(note_present=0)
    result = build_window_report(reference_frame, no_text, config, assessment, tmp_path)
    assert not any(c.startswith("note_emb") for c in result.columns)
    assert "pic_emb_pc1" in result.columns


def test_import_loads_no_heavy_dependency():
    code = (
        "import sys, monitoring.reports; "
        "print(sorted(m for m in ('evidently', 'mlflow', 'matplotlib', 'prefect') "
        "if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert done.stdout.strip() == "[]"
