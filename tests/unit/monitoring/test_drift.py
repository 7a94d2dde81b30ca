from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from features.demo_data import GenerationShift, demo_dataset_config
from monitoring.drift import (
    DriftConfig,
    DriftReference,
    _chi2,
    _ks,
    _mmd_permutation,
    compute_drift,
    fit_drift_reference,
)
from tests.unit.monitoring.synthetic import scored_frame

# Fewer permutations keep the tests fast; still fine-grained enough for alpha / 6.
FAST = DriftConfig(permutations=399, mmd_max_reference=600)


@pytest.fixture(scope="module")
def config():
    return demo_dataset_config()


@pytest.fixture(scope="module")
def reference(config):
    return fit_drift_reference(scored_frame(config, 4000, seed=1), config, FAST, seed=0)


def test_reference_holds_every_modality(reference, config):
    assert set(reference.numeric) == set(config.numeric_columns)
    assert set(reference.categorical) == set(config.categorical_columns)
    assert set(reference.embeddings) == {"review", "photo"}
    assert list(reference.outputs) == ["proba_yes"]  # two classes: one column says it all
    assert reference.label_counts is not None and sum(reference.label_counts.values()) == 4000
    text = reference.embeddings["review"]
    assert text.components.shape == (FAST.text_components, 384)
    # Reducers are fitted on one half; the other half is the reference sample.
    assert text.n_rows == 2000 and len(text.sample) == text.n_present < 2000


def test_undrifted_window_is_quiet(reference, config):
    result = compute_drift(reference, scored_frame(config, 300, seed=7), FAST, seed=0)
    assert not result.any_drift
    assert result.drifted_modalities == []
    assert result.n_rows == 300
    assert set(result.modalities) == {"tabular", "benign", "text", "image", "output", "label"}
    for drift in result.modalities.values():
        assert drift.threshold == pytest.approx(0.05 / 6)


@pytest.mark.parametrize(
    ("knobs", "expected"),
    [
        ({"shift": GenerationShift(price_factor=1.3)}, {"tabular"}),  # price moves outputs too
        ({"shift": GenerationShift(other_domain_text_share=0.3)}, {"text"}),
        ({"image_shift_share": 0.3}, {"image"}),
        ({"shift": GenerationShift(warehouse_load_shift=0.1)}, {"benign"}),
        ({"proba_temperature": 2.0}, {"output"}),
    ],
    ids=["price", "text-domain", "image-camera", "benign", "output"],
)
def test_moderate_shift_flags_its_modality(reference, config, knobs, expected):
    window = scored_frame(config, 300, seed=11, **knobs)
    drifted = set(compute_drift(reference, window, FAST, seed=0).drifted_modalities)
    assert expected <= drifted
    # Only the shifted modality, plus the model's outputs when the shift reaches them.
    assert drifted <= expected | {"output"}


def test_top_names_the_drifted_column(reference, config):
    window = scored_frame(config, 300, seed=11, shift=GenerationShift(price_factor=1.3))
    tabular = compute_drift(reference, window, FAST, seed=0).modalities["tabular"]
    assert tabular.top[0].name == "price"
    assert tabular.top[0].test == "ks"


def test_label_prior_shift_is_seen_with_labels_only(reference, config):
    window = scored_frame(config, 400, seed=3, shift=GenerationShift(positive_rate=0.85))
    with_labels = compute_drift(reference, window, FAST, seed=0)
    assert "label" in with_labels.drifted_modalities
    assert with_labels.realized is not None and with_labels.n_labeled == 400
    unlabelled = window.assign(reorder=None)
    without = compute_drift(reference, unlabelled, FAST, seed=0)
    assert "label" not in without.modalities and without.realized is None
    # Five modalities tested: the Bonferroni split follows.
    assert without.modalities["tabular"].threshold == pytest.approx(0.05 / 5)


def test_presence_drop_is_flagged(reference, config):
    window = scored_frame(config, 300, seed=5, shift=GenerationShift(missing_image_share=0.3))
    result = compute_drift(reference, window, FAST, seed=0)
    assert "image" in result.drifted_modalities
    assert result.modalities["image"].top[0].name == "photo:presence"


def test_unknown_categories_count_as_drift(reference, config):
    window = scored_frame(config, 300, seed=5)
    window.loc[:100, "payment_method"] = "crypto"
    result = compute_drift(reference, window, FAST, seed=0)
    assert result.modalities["tabular"].top[0].name == "payment_method"
    assert result.modalities["tabular"].drifted


def test_missing_columns_are_skipped(reference, config):
    window = scored_frame(config, 200, seed=5)[["order_id", "event_timestamp", "price", "channel"]]
    result = compute_drift(reference, window, FAST, seed=0)
    assert set(result.modalities) == {"tabular"}
    assert result.modalities["tabular"].n_tests == 2
    assert result.modalities["tabular"].threshold == pytest.approx(0.05)
    assert result.window_start is not None and result.window_start <= result.window_end


def test_results_repeat_with_a_seed_and_survive_save_load(reference, config, tmp_path):
    window = scored_frame(config, 200, seed=9, image_shift_share=0.1)
    first = compute_drift(reference, window, FAST, seed=3)
    loaded = DriftReference.load(reference.save(tmp_path / "ref.npz"))
    assert compute_drift(loaded, window, FAST, seed=3) == first
    assert compute_drift(reference, window, FAST, seed=3) == first
    assert first.model_dump(mode="json")["drifted_modalities"] == first.drifted_modalities


def test_embeddings_as_lists_are_accepted(reference, config):
    window = scored_frame(config, 100, seed=4)
    as_lists = window.assign(review_emb=window["review_emb"].map(lambda v: v.tolist()))
    assert compute_drift(reference, as_lists, FAST, seed=0) == compute_drift(
        reference, window, FAST, seed=0
    )


def test_empty_window_and_missing_presence_raise(reference, config):
    with pytest.raises(ValueError, match="empty"):
        compute_drift(reference, scored_frame(config, 10, seed=0).iloc[:0], FAST)
    frame = scored_frame(config, 50, seed=0).drop(columns=["photo_present"])
    with pytest.raises(ValueError, match="photo_present"):
        fit_drift_reference(frame, config, FAST)


# Calibration of the building blocks under the null -----------------------------------


def test_mmd_permutation_p_values_are_uniform_under_the_null():
    rng = np.random.default_rng(0)
    p_values = [
        _mmd_permutation(rng.normal(size=(60, 8)), rng.normal(size=(30, 8)), 99, rng)[1]
        for _ in range(300)
    ]
    for level in (0.05, 0.2, 0.5):
        assert np.mean(np.array(p_values) <= level) == pytest.approx(level, abs=0.06)


def test_mmd_permutation_detects_a_mean_shift():
    rng = np.random.default_rng(0)
    _, p_value = _mmd_permutation(rng.normal(size=(200, 8)), rng.normal(0.5, 1, (50, 8)), 199, rng)
    assert p_value <= 0.01


@pytest.mark.parametrize("window_rows", [50, 200])
def test_pooled_chi_square_keeps_its_level_on_sparse_categories(window_rows):
    rng = np.random.default_rng(1)
    probs = np.array([0.45, 0.35, 0.12, 0.05, 0.02, 0.01])
    reference_counts = rng.multinomial(10_000, probs)
    p_values = np.array(
        [
            _chi2(reference_counts, rng.multinomial(window_rows, probs), "c", 5.0).p_value
            for _ in range(1000)
        ]
    )
    assert np.mean(p_values <= 0.05) <= 0.07
    assert np.mean(p_values <= 0.01) <= 0.02


def test_asymptotic_ks_is_conservative_on_tied_counts():
    rng = np.random.default_rng(2)
    reference = np.sort(rng.poisson(3.0, 10_000).astype(float))
    p_values = np.array(
        [_ks(reference, rng.poisson(3.0, 50).astype(float), "x").p_value for _ in range(300)]
    )
    assert np.mean(p_values <= 0.05) <= 0.06
    # ... and close to its level on continuous data.
    continuous = np.sort(rng.normal(size=10_000))
    p_values = np.array([_ks(continuous, rng.normal(size=200), "x").p_value for _ in range(500)])
    assert np.mean(p_values <= 0.05) == pytest.approx(0.05, abs=0.03)


def test_fisher_presence_test_is_exact_on_rare_missingness():
    rng = np.random.default_rng(3)
    n_ref, rate = 10_000, 0.03
    ref_present = rng.binomial(n_ref, 1 - rate)
    rejections = 0
    for _ in range(500):
        present = rng.binomial(50, 1 - rate)
        table = [[ref_present, n_ref - ref_present], [present, 50 - present]]
        rejections += stats.fisher_exact(table).pvalue <= 0.05
    assert rejections / 500 <= 0.07


def test_window_index_does_not_matter(reference, config):
    window = scored_frame(config, 120, seed=8)
    shuffled_index = window.set_axis(pd.RangeIndex(1000, 1120))
    assert compute_drift(reference, shuffled_index, FAST, seed=1) == compute_drift(
        reference, window, FAST, seed=1
    )
