"""Under a real Prefect engine: a task failing with a permanent error runs once, not once
per retry (an empty window cannot fill itself in five seconds)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from features.errors import EmptyWindowError

pytestmark = pytest.mark.integration


def test_a_task_failing_for_good_is_not_retried(tmp_path, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.testing.utilities import prefect_test_harness

    from flows.score import ScoreParams, score_flow

    monkeypatch.setenv("MMOPS_DATA_DIR", str(tmp_path))
    with prefect_test_harness(server_startup_timeout=120):
        params = ScoreParams(
            start=datetime(2026, 6, 1, tzinfo=UTC), end=datetime(2026, 6, 2, tzinfo=UTC)
        )
        state = score_flow(params, return_state=True)
        assert state.is_failed()
        with pytest.raises(EmptyWindowError, match="ingest them first"):
            state.result()
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(
                    id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
                )
            )
    (load,) = [r for r in runs if r.name.startswith("load_window_features")]
    assert load.state.is_failed()
    assert load.run_count == 1  # the task allows 2 retries; none was spent
