"""A training job run as its own process by test_killed_training: train on a synthetic
frame, log, register, promote. ``--hang-at`` makes it signal a marker file and hang at a
chosen point, so the test can kill it there with SIGKILL."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tests.unit.training.synthetic import FAST_TRAIN as FAST
from tests.unit.training.synthetic import TEST_GATE, synthetic_config, synthetic_frame
from training.evaluate import evaluate_model
from training.registry import (
    connect,
    ensure_experiment,
    log_training_run,
    promote_if_better,
    register_version,
)
from training.train import train_model


def _hang(marker: Path) -> None:
    marker.write_text("hanging")
    while True:
        time.sleep(60)


class _HangWhenRegistered:
    """Hangs where a crash is worst: the version holds ``challenger`` but is not yet
    marked registered."""

    def __init__(self, client, marker: Path):
        self._client, self._marker = client, marker

    def __getattr__(self, name):
        return getattr(self._client, name)

    def set_model_version_tag(self, name, version, key, value):
        if key == "mmops.state" and value == "registered":
            _hang(self._marker)
        return self._client.set_model_version_tag(name, version, key, value)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--hang-at", choices=["none", "fit", "registration"], default="none")
    parser.add_argument("--marker", type=Path, required=True)
    args = parser.parse_args()

    config = synthetic_config()
    client = connect(args.tracking_uri)
    experiment = ensure_experiment(client, args.experiment)
    if args.hang_at == "fit":
        args.marker.write_text("training")  # killed while the model trains
    result = train_model(synthetic_frame(600, seed=0), config, FAST)
    evaluation = evaluate_model(result.model, result.splits.test, config.label)
    record = log_training_run(client, experiment, result, evaluation, config)
    if args.hang_at == "registration":
        client = _HangWhenRegistered(client, args.marker)
    version = register_version(client, args.name, record)
    decision = promote_if_better(
        client,
        args.name,
        version,
        synthetic_frame(400, seed=7),
        config.label,
        TEST_GATE,
    )
    print(f"version={version} promoted={decision.promote}")


if __name__ == "__main__":
    main()
