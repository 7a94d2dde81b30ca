from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from tests.unit.training.conftest import FAST
from tests.unit.training.synthetic import synthetic_config, synthetic_frame
from training.evaluate import evaluate_model
from training.train import (
    TrainConfig,
    TrainingDataError,
    ValidationGateError,
    split_by_time,
    train_model,
)


@dataclass(frozen=True)
class _Gate:
    success: bool


def test_two_runs_with_one_seed_give_identical_weights_and_metrics(synth_frame, synth_config):
    config = FAST.model_copy(update={"epochs": 3})
    first = train_model(synth_frame, synth_config, config)
    second = train_model(synth_frame, synth_config, config)
    a, b = first.model.network.state_dict(), second.model.network.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert first.history == second.history
    assert first.validation_metrics == second.validation_metrics
    other = train_model(synth_frame, synth_config, config.model_copy(update={"seed": 1}))
    assert not torch.equal(a["head.0.weight"], other.model.network.state_dict()["head.0.weight"])


def test_training_leaves_the_global_rng_alone(synth_frame, synth_config):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_model(synth_frame, synth_config, FAST.model_copy(update={"epochs": 1}))
    assert torch.equal(torch.rand(3), expected)


def test_fusion_beats_the_majority_baseline_and_learns_calibration(trained, synth_config):
    evaluation = evaluate_model(trained.model, trained.splits.test, synth_config.label)
    assert evaluation.overall.macro_f1 > evaluation.baseline.macro_f1 + 0.3
    assert evaluation.overall.accuracy > 0.8
    assert trained.model.temperature != 1.0
    assert 1 <= trained.best_epoch <= trained.epochs_run


def test_a_failed_validation_gate_stops_training_before_fitting(
    synth_frame, synth_config, monkeypatch
):
    import training.train as train_module

    def boom(*args, **kwargs):
        raise AssertionError("fitted despite a failed gate")

    monkeypatch.setattr(train_module, "_fit", boom)
    with pytest.raises(ValidationGateError, match="quality gate"):
        train_model(synth_frame, synth_config, FAST, validation=_Gate(success=False))


def test_a_passed_validation_gate_trains(synth_frame, synth_config):
    result = train_model(
        synth_frame, synth_config, FAST.model_copy(update={"epochs": 1}), validation=_Gate(True)
    )
    assert result.epochs_run == 1


def test_too_few_rows_is_a_clear_error(synth_config):
    with pytest.raises(TrainingDataError, match="too few rows"):
        train_model(synthetic_frame(50), synth_config, FAST)


def test_a_single_class_is_a_clear_error(synth_config):
    frame = synthetic_frame(300)
    frame["reorder"] = "yes"
    with pytest.raises(TrainingDataError, match="only one class"):
        train_model(frame, synth_config, FAST)


def test_unknown_labels_and_missing_columns_are_clear_errors(synth_config):
    frame = synthetic_frame(300)
    frame.loc[0, "reorder"] = "maybe"
    with pytest.raises(TrainingDataError, match="maybe"):
        train_model(frame, synth_config, FAST)
    with pytest.raises(TrainingDataError, match="price"):
        train_model(synthetic_frame(300).drop(columns=["price"]), synth_config, FAST)


def test_splits_are_by_time(synth_frame, synth_config):
    shuffled = synth_frame.sample(frac=1.0, random_state=0)
    splits = split_by_time(shuffled, synth_config, FAST)
    ts = synth_config.timestamp
    assert splits.train[ts].max() <= splits.validation[ts].min()
    assert splits.validation[ts].max() <= splits.test[ts].min()
    assert len(splits.train) + len(splits.validation) + len(splits.test) == len(synth_frame)
    assert len(splits.test) == round(0.15 * len(synth_frame))


def test_monitor_only_columns_are_not_model_inputs(trained):
    assert "warehouse_load" not in trained.model.spec.input_columns
    assert "warehouse_load" not in trained.manifest.input_columns
    assert trained.model.spec.modalities == ["review", "photo", "tabular"]


def test_manifest_records_window_rows_and_a_data_hash(trained, synth_frame, synth_config):
    manifest = trained.manifest
    assert manifest.feature_service_name == "synth_v1"
    assert manifest.train.n_rows + manifest.validation.n_rows + manifest.test.n_rows == 600
    assert manifest.train.end <= manifest.test.start
    changed = synth_frame.copy()
    changed.loc[5, "price"] += 1.0
    again = train_model(changed, synth_config, FAST.model_copy(update={"epochs": 1}))
    assert again.manifest.data_hash != manifest.data_hash


def test_single_modality_training_uses_only_that_modality(synth_frame, synth_config):
    result = train_model(
        synth_frame, synth_config, FAST.model_copy(update={"epochs": 1, "modalities": ["photo"]})
    )
    assert result.model.spec.modalities == ["photo"]
    assert result.model.spec.input_columns == ["photo_emb", "photo_present"]
    with pytest.raises(TrainingDataError, match="modalities"):
        train_model(synth_frame, synth_config, FAST.model_copy(update={"modalities": ["audio"]}))


def test_multiclass_labels_train(synth_config):
    classes = ("low", "mid", "high")
    config = synthetic_config(classes)
    result = train_model(synthetic_frame(400, classes=classes), config, FAST)
    proba = result.model.predict_proba(result.splits.test)
    assert proba.shape == (len(result.splits.test), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)


def test_train_config_is_frozen_and_validated():
    with pytest.raises(ValueError):
        TrainConfig(validation_fraction=0.45, test_fraction=0.45)
    with pytest.raises(ValueError):
        FAST.epochs = 3  # type: ignore[misc]


def test_size_adapted_defaults_give_small_data_enough_steps_and_patience():
    from training.train import resolve_train_config

    small = resolve_train_config(TrainConfig(), 280)
    assert small.batch_size <= 32 and small.patience >= 10
    assert small.epochs * -(-280 // small.batch_size) >= 1500
    large = resolve_train_config(TrainConfig(), 100_000)
    assert (large.batch_size, large.patience, large.epochs) == (256, 5, 30)
    explicit = resolve_train_config(TrainConfig(batch_size=7, patience=2, epochs=3), 280)
    assert (explicit.batch_size, explicit.patience, explicit.epochs) == (7, 2, 3)


@pytest.mark.slow
def test_a_few_hundred_rows_train_past_the_majority_baseline_on_defaults(synth_config):
    # issue 11: batch 256 and patience 5 left 400 rows at the class prior
    frame = synthetic_frame(400, seed=3, label_noise=0.6)
    result = train_model(frame, synth_config, TrainConfig(show_progress=False, hidden_size=32))
    evaluation = evaluate_model(result.model, result.splits.test, synth_config.label)
    assert result.train_config.batch_size == 16
    assert evaluation.overall.macro_f1 > evaluation.baseline.macro_f1 + 0.2
