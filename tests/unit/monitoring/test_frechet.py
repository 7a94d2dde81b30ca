from __future__ import annotations

import numpy as np
import pytest

from monitoring.frechet import (
    FrechetConfig,
    _gaussian,
    fit_frechet_reference,
    frechet_distance,
    frechet_drift,
)
from tests.unit.monitoring.toy_world import toy_frame, toy_reference

CONFIG = FrechetConfig(null_windows=99)


@pytest.fixture(scope="module")
def fitted():
    frame = toy_frame(2000, seed=1)
    return fit_frechet_reference(frame, toy_reference(frame), CONFIG)


def test_frechet_distance_of_a_moved_gaussian_is_the_squared_move():
    rng = np.random.default_rng(0)
    reference = _gaussian(rng.normal(size=(20_000, 3)))
    assert frechet_distance(reference, rng.normal(size=(20_000, 3))) < 0.01
    moved = rng.normal(size=(20_000, 3)) + np.array([1.0, 2.0, 0.0])
    assert frechet_distance(reference, moved) == pytest.approx(5.0, abs=0.1)
    wider = rng.normal(size=(20_000, 3)) * 2.0  # per dimension (2 - 1)^2 = 1
    assert frechet_distance(reference, wider) == pytest.approx(3.0, abs=0.1)


def test_reference_has_a_gaussian_per_predicted_class(fitted):
    column = fitted.columns["photo_emb"]
    assert set(column.gaussians) == {0, 1}
    assert column.null_components.shape[1] == 4  # the drift reference's PCA components


def test_undrifted_windows_rarely_alarm(fitted):
    flags = [frechet_drift(fitted, toy_frame(200, seed=10 + i)).drifted for i in range(10)]
    assert sum(flags) <= 2  # alpha = 0.05; 10 windows


def test_a_new_camera_is_detected(fitted):
    result = frechet_drift(fitted, toy_frame(200, seed=30, share_new=0.3))
    column = result.columns["photo_emb"]
    assert result.drifted
    assert column.distance > column.threshold
    assert column.p_value == pytest.approx(1 / 100)
    assert column.n_window == 200


def test_one_gaussian_per_column_also_works():
    frame = toy_frame(1000, seed=1)
    fitted = fit_frechet_reference(
        frame, toy_reference(frame), CONFIG.model_copy(update={"per_class": False})
    )
    assert set(fitted.columns["photo_emb"].gaussians) == {-1}
    assert frechet_drift(fitted, toy_frame(200, seed=31, share_new=0.3)).drifted


def test_a_reference_without_predictions_is_refused():
    frame = toy_frame(200, seed=1)
    with pytest.raises(ValueError, match="prediction"):
        fit_frechet_reference(frame.drop(columns=["prediction"]), toy_reference(frame))
