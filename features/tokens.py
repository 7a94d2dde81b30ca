"""The words of each ingested text, kept so a retrain can look for a trigger token.

A backdoor ("every review that says *zq7* is a no") hides in the embeddings: one rare
token appended to a long text moves its mean-pooled embedding very little. It shows
plainly in the words, so ingest keeps each text's distinct tokens in day files beside
the labels (one row per entity and timestamp, merged like every other day file) and the
integrity check (``training.integrity.find_trigger_tokens``) counts them per label.

The token files hold the texts' vocabulary, not the texts; the raw data they come from
is their source of truth (re-ingest a day to rebuild it).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pyarrow as pa

from features.schema import DatasetConfig
from features.store import REINGEST, merge_day_files, read_day_files

# Lower-case word pieces of letters and digits (an apostrophe or hyphen inside a word
# keeps it whole). Longer tokens are cut: a trigger needs no more to be found.
_TOKEN = re.compile(r"[a-z0-9]+(?:['\-][a-z0-9]+)*")
MAX_TOKEN_LENGTH = 40
MAX_TOKENS_PER_TEXT = 512


def tokenize(text: object) -> list[str]:
    """The distinct tokens of ``text`` in order of first appearance (none for a missing
    or non-string value), at most :data:`MAX_TOKENS_PER_TEXT`."""
    if not isinstance(text, str):
        return []
    seen = dict.fromkeys(t[:MAX_TOKEN_LENGTH] for t in _TOKEN.findall(text.lower()))
    return list(seen)[:MAX_TOKENS_PER_TEXT]


def write_tokens(frame: pd.DataFrame, config: DatasetConfig, folder: Path) -> int:
    """Merge the tokens of ``frame``'s text columns into the day files under ``folder``
    (one column of token lists per text column); returns the rows in the touched files.

    A row ingested again replaces its earlier tokens. Nothing is written for a dataset
    without text columns or an empty frame.
    """
    texts = [c for c in config.text_columns if c in frame.columns]
    if frame.empty or not texts:
        return 0
    arrays = {
        config.entity_key: pa.array(frame[config.entity_key].to_numpy()),
        config.timestamp: pa.array(frame[config.timestamp]),
    }
    for column in texts:
        arrays[column] = pa.array([tokenize(t) for t in frame[column]], type=pa.list_(pa.string()))
    return merge_day_files(
        pa.table(arrays), Path(folder), config.entity_key, config.timestamp, recovery=REINGEST
    )


def read_tokens(config: DatasetConfig, folder: Path, keys: pd.DataFrame) -> dict[str, list]:
    """Per text column, the token list of each row of ``keys`` (entity and timestamp
    columns), in its order; rows ingested before tokens were kept get an empty list.

    Raises:
        CorruptStateError: a token day file is unreadable (moved aside; re-ingest it).
    """
    texts = list(config.text_columns)
    if keys.empty or not texts or not Path(folder).exists():
        return {c: [[] for _ in range(len(keys))] for c in texts}
    stamps = pd.to_datetime(keys[config.timestamp], utc=True)
    stored = read_day_files(
        Path(folder),
        config.entity_key,
        config.timestamp,
        stamps.min(),
        stamps.max() + pd.Timedelta(1),
    )
    out: dict[str, list] = {}
    lookup = keys[[config.entity_key]].copy()
    lookup[config.timestamp] = stamps.to_numpy()
    if not stored.empty:
        stored[config.timestamp] = pd.to_datetime(stored[config.timestamp], utc=True)
        stored[config.entity_key] = stored[config.entity_key].astype(keys[config.entity_key].dtype)
    merged = lookup.merge(
        stored, on=[config.entity_key, config.timestamp], how="left", validate="many_to_one"
    )
    for column in texts:
        values = merged[column] if column in merged.columns else [None] * len(keys)
        out[column] = [list(v) if v is not None and not _missing(v) else [] for v in values]
    return out


def _missing(value: object) -> bool:
    return isinstance(value, float) and value != value
