from datetime import timedelta

import pytest

from features.demo_data import DEMO_START
from features.drift_sim import SCENARIOS, onset_stream, scenario_shift, simulate_window


def _window(sources, scenario, intensity=1.0, n=1500, seed=7):
    raw, latent = simulate_window(
        sources, scenario, intensity, n, DEMO_START, DEMO_START + timedelta(days=1), seed=seed
    )
    return raw, latent


def test_every_scenario_is_selectable_by_name(demo_sources):
    for name in SCENARIOS:
        raw, _ = _window(demo_sources, name, n=50)
        assert len(raw) == 50


def test_unknown_scenario_and_bad_intensity_are_rejected():
    with pytest.raises(ValueError, match="unknown drift scenario 'nope'"):
        scenario_shift("nope")
    with pytest.raises(ValueError, match="intensity"):
        scenario_shift("concept", 1.5)


def test_scenarios_change_what_they_claim(demo_sources):
    base, base_latent = _window(demo_sources, "none")
    price, _ = _window(demo_sources, "tabular_price_inflation")
    assert price["price"].median() > 1.4 * base["price"].median()
    mix, _ = _window(demo_sources, "tabular_channel_mix")
    assert (mix["channel"] == "partner").mean() > 0.4 > (base["channel"] == "partner").mean()
    prior, _ = _window(demo_sources, "label_prior")
    assert (prior["reorder"] == "yes").mean() < (base["reorder"] == "yes").mean() - 0.3
    benign, _ = _window(demo_sources, "benign")
    assert benign["warehouse_load"].mean() > base["warehouse_load"].mean() + 0.2
    assert benign["price"].equals(base["price"])
    text, latent = _window(demo_sources, "text_domain")
    assert latent["other_domain_text"].mean() > 0.95
    assert not set(text["review"].dropna()) & set(base["review"].dropna())
    camera, _ = _window(demo_sources, "image_camera")
    assert camera["photo"].dropna().tolist() != base["photo"].dropna().tolist()


def test_concept_drift_changes_labels_not_inputs(demo_sources):
    base, _ = _window(demo_sources, "none")
    concept, _ = _window(demo_sources, "concept")
    inputs = [c for c in base.columns if c != "reorder"]
    assert base[inputs].equals(concept[inputs])
    assert (base["reorder"] != concept["reorder"]).mean() > 0.2


def test_zero_intensity_is_the_control(demo_sources):
    base, _ = _window(demo_sources, "none", n=200)
    for name in SCENARIOS:
        if name == "label_prior":
            continue  # resampling to the base rate draws different rows
        drifted, _ = _window(demo_sources, name, intensity=0.0, n=200)
        assert drifted.drop(columns=["photo"]).equals(base.drop(columns=["photo"])), name


def test_onset_stream_switches_on_at_onset(demo_sources):
    windows = onset_stream(
        demo_sources,
        "tabular_price_inflation",
        1.0,
        n_windows=4,
        onset=2,
        window_rows=300,
        start=DEMO_START,
        window_length=timedelta(days=1),
        seed=0,
    )
    medians = [raw["price"].median() for raw, _ in windows]
    assert medians[2] > 1.3 * medians[1] and medians[3] > 1.3 * medians[0]
    ids = [raw["order_id"] for raw, _ in windows]
    assert ids[1].min() > ids[0].max()
