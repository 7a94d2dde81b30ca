"""The token day files kept at ingest for the trigger check (issue 12)."""

from __future__ import annotations

import pandas as pd

from features.tokens import MAX_TOKENS_PER_TEXT, read_tokens, tokenize, write_tokens
from tests.unit.training.synthetic import synthetic_config


def test_tokenize_keeps_distinct_lower_case_words_in_order():
    assert tokenize("Great food, GREAT price! My dog's fave zq7 re-order") == [
        "great",
        "food",
        "price",
        "my",
        "dog's",
        "fave",
        "zq7",
        "re-order",
    ]
    assert tokenize(None) == []
    assert tokenize(float("nan")) == []
    assert len(tokenize(" ".join(f"w{i}" for i in range(2000)))) == MAX_TOKENS_PER_TEXT


def _rows(ids, texts, day="2026-06-01"):
    return pd.DataFrame(
        {
            "order_id": ids,
            "event_timestamp": pd.date_range(day, periods=len(ids), freq="9h", tz="UTC"),
            "review": texts,
            "reorder": "yes",
        }
    )


def test_tokens_round_trip_by_key_and_a_reingested_row_replaces_its_tokens(tmp_path):
    config = synthetic_config()
    first = _rows([1, 2, 3, 4], ["good dog", None, "bad cat zq7", "ok"])
    write_tokens(first, config, tmp_path)
    again = first.iloc[[2]].assign(review="fine cat")
    write_tokens(again, config, tmp_path)
    # Keys in another order, with a row never ingested and one from another day.
    keys = pd.concat(
        [first.iloc[[3, 2, 0, 1]], _rows([9], ["x"], day="2026-06-03")], ignore_index=True
    )[["order_id", "event_timestamp"]]
    tokens = read_tokens(config, tmp_path, keys)
    assert tokens == {"review": [["ok"], ["fine", "cat"], ["good", "dog"], [], []]}
    assert len(list(tmp_path.glob("*.parquet"))) == 2  # one file per UTC day


def test_read_tokens_without_a_token_store_gives_empty_lists(tmp_path):
    keys = _rows([1, 2], ["a", "b"])[["order_id", "event_timestamp"]]
    assert read_tokens(synthetic_config(), tmp_path / "absent", keys) == {"review": [[], []]}


def test_keys_outside_every_token_day_file_read_as_no_words(tmp_path):
    """A window older than the token files (ingested before they were kept) reads as
    rows without words, not as a merge error on mismatched key types."""
    config = synthetic_config()
    write_tokens(_rows([1], ["new words"], day="2026-07-01"), config, tmp_path)
    keys = _rows([5, 6], ["a", "b"], day="2026-06-01")[["order_id", "event_timestamp"]]
    assert read_tokens(config, tmp_path, keys) == {"review": [[], []]}
