from __future__ import annotations

import pytest

from tests.unit.training.synthetic import synthetic_config, synthetic_frame
from training.train import TrainConfig, train_model

FAST = TrainConfig(
    epochs=12,
    batch_size=32,
    hidden_size=32,
    fusion_hidden_size=32,
    patience=4,
    show_progress=False,
)


@pytest.fixture(scope="session")
def synth_config():
    return synthetic_config()


@pytest.fixture(scope="session")
def synth_frame():
    return synthetic_frame(600, seed=0)


@pytest.fixture(scope="session")
def trained(synth_frame, synth_config):
    return train_model(synth_frame, synth_config, FAST)
