import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from features.demo_data import build_demo_dataset


@pytest.fixture(scope="module")
def history(demo_sources):
    return build_demo_dataset(demo_sources, n_rows=20_000, days=90, seed=0)


def test_history_size_span_and_columns(history, demo_config):
    raw, _ = history
    assert len(raw) == 20_000
    span = raw[demo_config.timestamp].max() - raw[demo_config.timestamp].min()
    assert span.days >= 60
    assert list(raw.columns) == demo_config.raw_columns
    assert raw[demo_config.timestamp].is_monotonic_increasing
    assert raw[demo_config.entity_key].is_unique


def test_generation_is_deterministic(demo_sources):
    a, _ = build_demo_dataset(demo_sources, n_rows=300, days=5, seed=3)
    b, _ = build_demo_dataset(demo_sources, n_rows=300, days=5, seed=3)
    assert a.drop(columns=["photo"]).equals(b.drop(columns=["photo"]))
    assert a["photo"].tolist() == b["photo"].tolist()


def test_label_needs_all_three_modalities(history):
    """A model on the latent text, image and tabular signals together beats each alone."""
    raw, latent = history
    y = (raw["reorder"] == "yes").to_numpy()
    text = latent[["review_great"]].astype(float).to_numpy()
    image = np.isin(latent["animal_class"], (0, 2, 4, 6, 8)).astype(float)[:, None]
    tab = np.column_stack(
        [
            np.log(raw["price"]),
            raw["delivery_days"],
            raw["support_contacts"],
            np.log1p(raw["past_orders"]),
            (raw["channel"] == "partner"),
            (raw["channel"] == "app"),
        ]
    ).astype(float)

    def acc(x):
        model = LogisticRegression(max_iter=500).fit(x[:15000], y[:15000])
        return model.score(x[15000:], y[15000:])

    single = {"text": acc(text), "image": acc(image), "tabular": acc(tab)}
    fused = acc(np.column_stack([text, image, tab]))
    assert all(fused > score + 0.05 for score in single.values()), (fused, single)


def test_missing_modalities_occur(history, demo_config):
    raw, _ = history
    assert 0.01 < raw["review"].isna().mean() < 0.1
    assert 0.01 < raw["photo"].isna().mean() < 0.1
