"""A flow for test_worker_runtime, deployed and run by a real process worker: it starts
the way every mmops flow does (``get_runtime``) and then talks to the MLflow server."""

from __future__ import annotations

import json
import os
from pathlib import Path

from prefect import flow


@flow(name="mmops-worker-probe")
def worker_probe(out: str, experiment: str, model: str) -> None:
    from flows.runtime import get_runtime
    from training.registry import RetryConfig, connect, current_champion, ensure_experiment

    runtime = get_runtime()
    client = connect(runtime.settings.tracking_uri, RetryConfig(attempts=1))
    experiment_id = ensure_experiment(client, experiment)
    client.create_registered_model(model)  # the registry, through the same credentials
    champion = current_champion(client, model)
    Path(out).write_text(
        json.dumps(
            {
                "experiment_id": experiment_id,
                "user": os.environ.get("MLFLOW_TRACKING_USERNAME"),
                "http_retries": os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES"),
                "profile": runtime.settings.profile,
                "champion": champion,
            }
        )
    )
