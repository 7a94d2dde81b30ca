"""The data-quality gate on tiny frames: clean data passes, each defect is named and kept."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.demo_data import generate_rows
from features.encoders import IMAGE_DIM, TEXT_DIM
from features.validation import (
    DataQualityError,
    ValidationResult,
    check_batch,
    validate_features,
    validate_raw,
)

START = datetime(2026, 6, 1, tzinfo=UTC)
NOW = datetime(2026, 7, 1, tzinfo=UTC)


@pytest.fixture(scope="session")
def clean_raw(demo_sources, demo_config) -> pd.DataFrame:
    raw, _ = generate_rows(demo_sources, 50, START, START + timedelta(days=2), seed=3)
    # A few source reviews carry U+FFFD or exceed max_chars; keep this fixture about
    # the gate, not about those reviews.
    texts = raw["review"]
    spec = demo_config.text[0]
    bad = texts.notna() & (
        texts.str.contains("\ufffd", regex=False) | (texts.str.len() > spec.max_chars)
    )
    raw.loc[bad, "review"] = "A perfectly ordinary review."
    return raw


def _unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="session")
def clean_features(clean_raw, demo_config) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = clean_raw.drop(columns=demo_config.text_columns + demo_config.image_columns)
    for column, dim in [(c, TEXT_DIM) for c in demo_config.text_columns] + [
        (c, IMAGE_DIM) for c in demo_config.image_columns
    ]:
        present = clean_raw[column].notna().to_numpy()
        vectors = _unit_vectors(rng, len(frame), dim)
        vectors[~present] = 0.0
        frame[demo_config.embedding_column(column)] = list(vectors)
        frame[demo_config.presence_column(column)] = present.astype(np.int64)
    return frame


@pytest.fixture
def raw(clean_raw) -> pd.DataFrame:
    return clean_raw.copy()


@pytest.fixture
def features(clean_features) -> pd.DataFrame:
    frame = clean_features.copy()
    for column in frame.columns:
        if column.endswith("_emb"):
            frame[column] = [np.array(v, copy=True) for v in frame[column]]
    return frame


def _gate(frame, config, tmp_path: Path, kind: str = "raw") -> DataQualityError:
    """Run the gate expecting a failure; check the whole batch was quarantined."""
    with pytest.raises(DataQualityError) as caught:
        check_batch(
            frame, config, kind=kind, quarantine_dir=tmp_path / "q", now=NOW, batch_name="b"
        )
    error = caught.value
    folder = Path(error.result.quarantine_path)
    assert folder.parent == tmp_path / "q" and folder.name.startswith("b-")
    kept = pd.read_parquet(folder / "batch.parquet")
    assert len(kept) == len(frame)
    assert list(kept.columns) == [str(c) for c in frame.columns]
    saved = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    assert saved["success"] is False and saved["quarantine_path"] == str(folder)
    assert str(error) == error.result.summary()
    return error


def _assert_names(error: DataQualityError, expectation: str, column: str) -> None:
    found = [(f.expectation, f.column) for f in error.result.failures]
    assert (expectation, column) in found, found
    assert expectation in str(error)
    assert f"[{column}]" in str(error)


def _failure(error: DataQualityError, expectation: str, column: str):
    for failure in error.result.failures:
        if failure.expectation == expectation and failure.column == column:
            return failure
    raise AssertionError(f"no {expectation} on {column}: {error.result.failures}")


def test_clean_raw_passes(raw, demo_config, tmp_path):
    result = check_batch(
        raw, demo_config, kind="raw", quarantine_dir=tmp_path / "q", now=NOW, batch_name="b"
    )
    assert isinstance(result, ValidationResult)
    assert result.success, result.summary()
    assert result.n_rows == len(raw) and result.failures == []
    assert not (tmp_path / "q").exists()


def test_clean_features_pass_with_and_without_label(features, demo_config):
    assert validate_features(features, demo_config).success
    unlabeled = features.drop(columns=[demo_config.label])
    result = validate_features(unlabeled, demo_config)
    assert result.success, result.summary()


def test_data_docs_built_into_file_context(raw, demo_config, tmp_path):
    result = check_batch(
        raw,
        demo_config,
        kind="raw",
        quarantine_dir=tmp_path / "q",
        now=NOW,
        context_dir=tmp_path / "gx",
        batch_name="b",
    )
    assert result.data_docs_path and Path(result.data_docs_path).is_file()
    assert Path(result.data_docs_path).is_relative_to(tmp_path / "gx")


def test_validations_are_named_by_batch_and_summarised_offline(raw, demo_config, tmp_path):
    """Issue 14: every GX validation was named ``__none__``, and Data Docs pull their
    tables from CDN scripts, so their index is blank without internet."""
    batch = "petfood-20260601T0000-20260602T0000-raw"
    result = check_batch(
        raw,
        demo_config,
        kind="raw",
        quarantine_dir=tmp_path / "q",
        now=NOW,
        context_dir=tmp_path / "gx",
        batch_name=batch,
    )
    stored = json.loads(Path(result.result_json).read_text())
    assert stored["meta"]["run_id"]["run_name"] == batch
    assert stored["meta"]["active_batch_definition"]["data_asset_name"] == result.suite
    assert not list((tmp_path / "gx").rglob("__none__"))
    page = Path(result.summary_page).read_text()
    assert batch in page and "Passed: all" in page and "summary page:" in result.summary()
    with pytest.raises(DataQualityError) as error:
        check_batch(
            raw.assign(price=-1.0),
            demo_config,
            kind="raw",
            quarantine_dir=tmp_path / "q",
            now=NOW,
            context_dir=tmp_path / "gx",
            batch_name="petfood-bad-raw",
        )
    bad = Path(error.value.result.summary_page).read_text()
    assert "FAILED:" in bad and bad.index("FAIL</td>") < bad.index("pass</td>")
    index = (Path(result.summary_page).parent / "index.html").read_text()
    assert index.index("petfood-bad-raw") < index.index(batch)  # newest first
    for html_text in (page, bad, index):  # nothing fetched from the network
        assert "<script" not in html_text and "http" not in html_text


def test_missing_column(raw, demo_config, tmp_path):
    error = _gate(raw.drop(columns=["price"]), demo_config, tmp_path)
    _assert_names(error, "expect_column_to_exist", "price")
    assert "missing" in str(error)


def test_wrong_dtype(raw, demo_config, tmp_path):
    raw["price"] = raw["price"].astype(str)
    raw["event_timestamp"] = raw["event_timestamp"].dt.tz_localize(None)
    error = _gate(raw, demo_config, tmp_path)
    _assert_names(error, "expect_column_values_to_be_in_type_list", "price")
    _assert_names(error, "expect_column_values_to_be_in_type_list", "event_timestamp")
    assert "timezone-aware UTC" in str(error)


def test_nan_and_inf_in_numbers(raw, demo_config, tmp_path):
    raw.loc[3, "price"] = np.nan
    raw.loc[4, "discount_pct"] = np.inf
    error = _gate(raw, demo_config, tmp_path)
    _assert_names(error, "expect_column_values_to_not_be_null", "price")
    infinite = _failure(error, "expect_column_values_to_be_in_set", "discount_pct")
    assert infinite.unexpected_count == 1 and "infinite" in infinite.message
    assert infinite.sample == [{"order_id": int(raw.loc[4, "order_id"]), "discount_pct": "inf"}]


def test_out_of_range_number(raw, demo_config, tmp_path):
    raw.loc[5, "price"] = 1e6
    error = _gate(raw, demo_config, tmp_path)
    failure = _failure(error, "expect_column_values_to_be_between", "price")
    assert "[0.5, 500.0]" in failure.message and failure.sample[0]["price"] == 1e6


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_in_embeddings(features, demo_config, tmp_path, bad):
    row = int(np.flatnonzero(features["review_present"].to_numpy() == 1)[0])
    features.at[row, "review_emb"][7] = bad
    error = _gate(features, demo_config, tmp_path, kind="features")
    failure = _failure(error, "expect_column_values_to_be_in_set", "review_emb")
    assert failure.unexpected_count == 1 and "NaN, inf" in failure.message
    assert failure.sample[0]["order_id"] == int(features.loc[row, "order_id"])
    assert "review_emb" in str(error)


def test_nan_in_tabular_features(features, demo_config, tmp_path):
    features.loc[0, "basket_size"] = np.nan
    error = _gate(features, demo_config, tmp_path, kind="features")
    _assert_names(error, "expect_column_values_to_not_be_null", "basket_size")


def test_wrong_embedding_length(features, demo_config, tmp_path):
    features.at[2, "photo_emb"] = np.ones(IMAGE_DIM + 1, dtype=np.float32) / np.sqrt(IMAGE_DIM + 1)
    features.at[3, "photo_emb"] = None
    error = _gate(features, demo_config, tmp_path, kind="features")
    failure = _failure(error, "expect_column_values_to_be_in_set", "photo_emb")
    assert failure.unexpected_count == 2 and f"length {IMAGE_DIM}" in failure.message
    assert {s["photo_emb__dim"] for s in failure.sample} == {IMAGE_DIM + 1, -1}


def test_presence_flag_inconsistent_with_norm(features, demo_config, tmp_path):
    present = np.flatnonzero(features["review_present"].to_numpy() == 1)
    features.at[present[0], "review_emb"] = np.zeros(TEXT_DIM, dtype=np.float32)
    features.loc[present[1], "review_present"] = 0
    features.loc[present[2], "review_present"] = 2
    error = _gate(features, demo_config, tmp_path, kind="features")
    messages = [f.message for f in error.result.failures if f.column == "review_emb"]
    assert any("flagged present" in m for m in messages)
    assert any("flagged absent" in m for m in messages)
    _assert_names(error, "expect_column_values_to_be_in_set", "review_present")


def test_corrupt_image_bytes(raw, demo_config, tmp_path):
    corrupt = b"\x89PNG\r\n\x1a\nnot really a png"
    raw.at[1, "photo"] = corrupt
    error = _gate(raw, demo_config, tmp_path)
    failure = _failure(error, "expect_column_values_to_be_in_set", "photo")
    assert "cannot be decoded" in failure.message and failure.unexpected_count == 1
    assert failure.sample == [
        {"order_id": int(raw.loc[1, "order_id"]), "photo": f"<{len(corrupt)} bytes>"}
    ]


def test_missing_image_file(raw, demo_config, tmp_path):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    (images / "ok.png").write_bytes(buffer.getvalue())
    config = demo_config.model_copy(update={"image_root": str(images)})
    raw["photo"] = ["ok.png"] * (len(raw) - 1) + ["gone.png"]
    error = _gate(raw, config, tmp_path)
    failure = _failure(error, "expect_column_values_to_be_in_set", "photo")
    assert failure.unexpected_count == 1 and "does not exist" in failure.message
    assert "'gone.png'" in str(error)
    assert str(images) not in str(error)  # the resolved path is never echoed
    assert len(error.result.failures) == 1  # the files that exist decode


def test_empty_text(raw, demo_config, tmp_path):
    raw.at[0, "review"] = "   \n"
    raw.at[1, "review"] = None  # a missing modality, not a defect
    error = _gate(raw, demo_config, tmp_path)
    failure = _failure(error, "expect_column_values_to_be_in_set", "review")
    assert failure.unexpected_count == 1 and "whitespace-only" in failure.message
    assert len(error.result.failures) == 1


def test_non_utf8_text(raw, demo_config, tmp_path):
    raw.at[0, "review"] = b"caf\xe9 au lait"
    raw.at[1, "review"] = "broken \udce9 surrogate"
    raw.at[2, "review"] = "R\ufffdverie, decoded badly"
    error = _gate(raw, demo_config, tmp_path)
    utf8 = [f for f in error.result.failures if "UTF-8" in f.message]
    assert len(utf8) == 1 and utf8[0].column == "review" and utf8[0].unexpected_count == 3
    assert "U+FFFD" in str(error) and "U+DCE9" in str(error)
    _assert_names(error, "expect_column_values_to_be_in_set", "review")
    # Parquet cannot keep str and bytes apart in one column: the exact frame is kept too.
    folder = Path(error.result.quarantine_path)
    exact = pd.read_pickle(folder / "batch.pkl")
    assert exact["review"].tolist()[:3] == raw["review"].tolist()[:3]


def test_suites_follow_the_config_not_the_demo(tmp_path):
    from features.schema import DatasetConfig

    config = DatasetConfig(
        name="tiny",
        entity_key="uid",
        timestamp="ts",
        label="y",
        classes=["a", "b"],
        text=[{"name": "note", "optional": False}],
        numeric=[{"name": "x", "min_value": 0, "nullable": True}],
    )
    frame = pd.DataFrame(
        {
            "uid": np.arange(3, dtype=np.int64),
            "ts": pd.to_datetime(["2026-01-01"] * 3, utc=True),
            "y": ["a", "b", "a"],
            "note": ["fine", None, "also fine"],
            "x": [1.0, np.nan, -2.0],
        }
    )
    error = _gate(frame, config, tmp_path)
    assert {(f.expectation, f.column) for f in error.result.failures} == {
        ("expect_column_values_to_not_be_null", "note"),
        ("expect_column_values_to_be_between", "x"),
    }


def test_unknown_category_and_label(raw, demo_config, tmp_path):
    raw.at[0, "channel"] = "telepathy"
    raw.at[1, "reorder"] = "maybe"
    error = _gate(raw, demo_config, tmp_path)
    channel = _failure(error, "expect_column_values_to_be_in_set", "channel")
    assert channel.sample == [{"order_id": int(raw.loc[0, "order_id"]), "channel": "telepathy"}]
    _assert_names(error, "expect_column_values_to_be_in_set", "reorder")


def test_duplicate_entity_timestamp(raw, demo_config, tmp_path):
    duplicated = pd.concat([raw, raw.iloc[[5]]], ignore_index=True)
    error = _gate(duplicated, demo_config, tmp_path)
    failure = _failure(error, "expect_compound_columns_to_be_unique", "order_id,event_timestamp")
    assert failure.unexpected_count == 2
    assert {s["order_id"] for s in failure.sample} == {int(raw.loc[5, "order_id"])}


def test_future_timestamp(raw, demo_config, tmp_path):
    raw.loc[7, "event_timestamp"] = pd.Timestamp(NOW + timedelta(days=1))
    error = _gate(raw, demo_config, tmp_path)
    failure = _failure(error, "expect_column_values_to_be_between", "event_timestamp")
    assert "future" in failure.message and failure.unexpected_count == 1
    assert failure.sample[0]["event_timestamp"].startswith("2026-07-02")


def test_empty_batch(raw, demo_config, tmp_path):
    error = _gate(raw.iloc[:0], demo_config, tmp_path)
    assert [f.expectation for f in error.result.failures] == [
        "expect_table_row_count_to_be_between"
    ]
    assert "empty batch" in str(error)


def test_validate_does_not_raise(raw, demo_config):
    raw.at[0, "channel"] = "telepathy"
    result = validate_raw(raw, demo_config, now=NOW)
    assert not result.success and result.quarantine_path is None
    assert "telepathy" in result.summary()


def test_string_entity_keys_pass_both_gates(raw, features, demo_config):
    # issue 11: "the entity key needs an integer dtype" although entity_type: string
    config = demo_config.model_copy(update={"entity_type": "string"})
    raw["order_id"] = [f"order-{i}" for i in raw["order_id"]]
    features["order_id"] = raw["order_id"].to_numpy()
    assert validate_raw(raw, config, now=NOW).success
    assert validate_features(features, config).success
    # with entity_type int64 text keys remain a batch-level error that says what to do
    result = validate_raw(raw, demo_config, now=NOW)
    assert not result.success and "entity_type: string" in result.summary()


def test_rows_without_labels_pass_the_raw_gate(raw, demo_config):
    # issue 11: "label: 56 of 56 rows are null" stopped scoring before labels arrive
    raw["reorder"] = None
    assert validate_raw(raw, demo_config, now=NOW).success
    assert validate_raw(raw.drop(columns=["reorder"]), demo_config, now=NOW).success
