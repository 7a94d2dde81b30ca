"""Training and gate knobs from the settings (MMOPS_ variables) and the CLI."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from flows.cli import _knobs, app
from flows.settings import get_settings


def test_every_training_and_gate_knob_is_reachable_by_environment(monkeypatch):
    monkeypatch.setenv("MMOPS_TRAIN__BATCH_SIZE", "48")
    monkeypatch.setenv("MMOPS_TRAIN__LEARNING_RATE", "0.0003")
    monkeypatch.setenv("MMOPS_GATE__MAX_ECE", "0.2")
    monkeypatch.setenv("MMOPS_GATE__MIN_IMPROVEMENT_OVER_BASELINE", "0.01")
    settings = get_settings()
    assert settings.train.batch_size == 48 and settings.train.learning_rate == 3e-4
    assert settings.train.patience is None  # still adapted to the data size
    assert settings.gate.max_ece == 0.2 and settings.gate.min_improvement_over_baseline == 0.01


def test_cli_values_override_the_settings_and_any_knob_can_be_set(monkeypatch):
    monkeypatch.setenv("MMOPS_TRAIN__BATCH_SIZE", "48")
    monkeypatch.setenv("MMOPS_INTEGRITY__MAX_DUPLICATE_SHARE", "0.05")
    train, gate, integrity = _knobs(
        get_settings(),
        {"train.patience": 9, "train.epochs": None},
        [
            "gate.slice_tolerance=0.1",
            "weight_decay=0",
            "train.modalities=[tabular]",
            "integrity.block_on_trigger=false",
            "integrity.flip_z=null",
        ],
    )
    assert (train.batch_size, train.patience, train.epochs) == (48, 9, None)
    assert train.weight_decay == 0 and train.modalities == ["tabular"]
    assert gate.slice_tolerance == 0.1
    assert integrity.block_on_trigger is False and integrity.max_duplicate_share == 0.05
    assert integrity.flip_z is None  # the random-flip check reports only


@pytest.mark.parametrize(
    ("item", "named"),
    [
        ("train.batchsize=3", "train.batchsize"),
        ("max_eec=1", "max_eec"),
        ("gate.max_ece=-1", "max_ece"),
        ("integrity.trigger_purity=2", "trigger_purity"),
        ("seed=3", "train.seed or integrity.seed"),
    ],
)
def test_an_unknown_or_bad_knob_is_an_error_naming_it(item, named):
    with pytest.raises(typer.BadParameter, match=named):
        _knobs(get_settings(), {}, [item])


def test_cli_train_rejects_a_typo_before_training(monkeypatch, tmp_path):
    monkeypatch.setenv("MMOPS_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["train", "--set", "paitence=3"])
    assert result.exit_code != 0 and "paitence" in result.output


def test_cli_force_needs_a_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("MMOPS_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["promote", "3", "--force"])
    assert result.exit_code != 0 and "--reason" in result.output


def test_a_retrain_request_id_cannot_smuggle_a_filter_clause():
    """The request id is matched in an MLflow search filter: only key characters pass."""
    from pydantic import ValidationError

    from flows.train import TrainParams

    assert TrainParams(request_id="petfood-retrain-2026-06-05T00.00").request_id
    with pytest.raises(ValidationError, match="request_id"):
        TrainParams(request_id="x' or tags.a = 'b")
