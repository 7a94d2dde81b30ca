"""The review pages as a reviewer sees them: MLflow's UI (``mlflow server`` on loopback)
and the Evidently report, loaded in headless Chromium. Each page must show what the
review needs (aliases, descriptions, the model in the Models views, the report's
overview) and log no console error; each is saved as a screenshot (into
``MMOPS_REVIEW_SCREENSHOTS`` when set: ``make review-screenshots`` writes docs/review/)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.browser import Browser, PageError, find_chromium
from tests.integration.review_state import REGISTERED_MODEL, ReviewState, build_review_state

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def state(tmp_path_factory) -> ReviewState:
    return build_review_state(tmp_path_factory.mktemp("review"))


@pytest.fixture(scope="module")
def mlflow_ui(state, tmp_path_factory):
    """``mlflow server`` on a free loopback port over the state's SQLite store."""
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "mlflow.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                state.tracking_uri,
                "--default-artifact-root",
                state.artifact_root,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def browser():
    binary = find_chromium()
    if binary is None:
        pytest.fail("no Chromium found: run `make browser-deps` (installs Debian's chromium)")
    chromium = Browser(binary)
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    explicit = os.environ.get("MMOPS_REVIEW_SCREENSHOTS")
    return Path(explicit) if explicit else tmp_path_factory.mktemp("screenshots")


# MLflow's UI asks for the signed-in user on every page; without the basic-auth app the
# server answers 404 and Chromium logs it. Nothing else is tolerated.
KNOWN_UI_NOISE = ("/ajax-api/2.0/mlflow/users/current",)
ASSISTANT_CLOSE = '[data-component-id="mlflow.assistant.chat_panel.close"]'


def _ml(url: str) -> str:
    """An MLflow UI page in its model-training views (the UI opens its GenAI views by
    default; the choice is the ``workflowType`` query, else remembered per browser)."""
    return f"{url}?workflowType=machine_learning"


def _check(
    browser: Browser, url: str, shot: Path, *needles: str, full_page_height: int | None = None
) -> str:
    browser.open(url)
    try:
        browser.wait_for_text(*needles)
        # MLflow opens its (beta) assistant panel over a third of the page on first load;
        # closing it re-renders the page, so wait for the content again
        browser.evaluate(f"document.querySelector('{ASSISTANT_CLOSE}')?.click()")
        browser.drain(1.0)
        text = browser.wait_for_text(*needles)
    finally:
        browser.screenshot(
            shot, full_page=full_page_height is not None, max_height=full_page_height or 0
        )
    errors = [e for e in browser.errors if not any(n in e for n in KNOWN_UI_NOISE)]
    if errors:
        raise PageError(f"{url} logged errors:\n" + "\n".join(errors))
    return text


def test_experiment_page_shows_its_description_and_runs(state, mlflow_ui, browser, shots):
    _check(
        browser,
        _ml(f"{mlflow_ui}/#/experiments/{state.training_experiment_id}/runs"),
        shots / "01-training-experiment.png",
        "Training runs of the",
        "2 matching runs",
    )


def test_models_tab_lists_the_logged_models(state, mlflow_ui, browser, shots):
    _check(
        browser,
        _ml(f"{mlflow_ui}/#/experiments/{state.training_experiment_id}/models"),
        shots / "02-training-models-tab.png",
        "Ready",
        f"{REGISTERED_MODEL}\nv{state.champion_version}",
    )


def test_run_page_shows_description_and_logged_model(state, mlflow_ui, browser, shots):
    _check(
        browser,
        _ml(
            f"{mlflow_ui}/#/experiments/{state.training_experiment_id}/runs/{state.champion_run_id}"
        ),
        shots / "03-training-run.png",
        "Scheduled training",
        "majority baseline",
        "Logged models",
    )


def test_registered_model_page_shows_aliases_and_history(state, mlflow_ui, browser, shots):
    _check(
        browser,
        _ml(f"{mlflow_ui}/#/models/{REGISTERED_MODEL}"),
        shots / "04-registered-model.png",
        "champion",
        "challenger",
        "Alias history",
    )


def test_version_page_shows_alias_and_model_card(state, mlflow_ui, browser, shots):
    _check(
        browser,
        _ml(f"{mlflow_ui}/#/models/{REGISTERED_MODEL}/versions/{state.champion_version}"),
        shots / "05-champion-version.png",
        "champion",
        "Gate verdict",
        "Model card",
        "mmops.gate.decision",
    )


def test_rejected_challenger_keeps_its_alias_and_the_gate_verdict(state, mlflow_ui, browser, shots):
    _check(
        browser,
        _ml(f"{mlflow_ui}/#/models/{REGISTERED_MODEL}/versions/{state.challenger_version}"),
        shots / "06-challenger-version.png",
        "challenger",
        "mmops.gate.decision",
        "reject",
    )


def test_monitoring_run_shows_action_and_report(state, mlflow_ui, browser, shots):
    _check(
        browser,
        _ml(
            f"{mlflow_ui}/#/experiments/{state.monitoring_experiment_id}/runs/"
            f"{state.monitoring_run_id}"
        ),
        shots / "07-monitoring-run.png",
        "ALERT",
        "alert v7",
    )


def test_evidently_report_opens_with_its_overview(state, browser, shots):
    _check(
        browser,
        state.report_html.resolve().as_uri(),
        shots / "08-evidently-report.png",
        f"Overview: {state.n_drifted} of {state.n_modalities} modalities drifted",
        "modalities drifted",
        "How to read these numbers",
        full_page_height=2400,
    )


def test_alias_history_is_a_table_artifact(state, mlflow_ui, browser, shots):
    """Issue 14: the alias history was only a raw JSON tag."""
    _check(
        browser,
        _ml(
            f"{mlflow_ui}/#/experiments/{state.training_experiment_id}/runs/"
            f"{state.champion_run_id}/artifacts/registry/alias_history.csv"
        ),
        shots / "09-alias-history-artifact.png",
        "alias_history.csv",
        "when_utc",
        "promote",
    )
