"""Raw rows -> feature frame: text and image embeddings plus presence flags.

The feature frame is what Feast stores and what the model and monitoring read:
entity key, timestamp, the tabular columns as given, and for every text or image column
``c`` an embedding ``{c}_emb`` (float32 vector; zeros when the row lacks the modality) and
``{c}_present`` (1 or 0).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from features.encoders import (
    EmbeddingCache,
    ImageEncoder,
    TextEncoder,
    content_key,
    decode_image,
    embed_with_cache,
    image_encoder_id,
    read_image_bytes,
    text_encoder_id,
)
from features.errors import InvalidConfigError
from features.schema import DatasetConfig


@dataclass
class Encoders:
    """The encoders an ingestion run uses (built once, passed down)."""

    text: TextEncoder | None
    image: ImageEncoder | None

    @classmethod
    def load(
        cls, config: DatasetConfig, text_variant: str = "fp32", artifact_dir: Path | None = None
    ) -> Encoders:
        """Load the encoders the dataset needs (only those).

        Args:
            text_variant: the text encoder variant (``features.encoders.TEXT_VARIANTS``).
            artifact_dir: where ONNX variants keep their exported model.
        """
        text_encoder_id(text_variant)  # an unknown variant fails before any model loads
        return cls(
            text=TextEncoder(variant=text_variant, artifact_dir=artifact_dir)
            if config.text
            else None,
            image=ImageEncoder() if config.images else None,
        )


def encoder_ids(config: DatasetConfig, text_variant: str = "fp32") -> dict[str, str]:
    """The encoder behind every embedded column (text and image), without loading any."""
    ids = {column: text_encoder_id(text_variant) for column in config.text_columns}
    ids.update({spec.name: image_encoder_id(spec.size) for spec in config.images})
    return ids


class EncoderMismatchError(InvalidConfigError):
    """Embeddings from one encoder variant would be mixed with another's."""


ENCODERS_FILE = "encoders.json"


def check_encoders(recorded: dict[str, str] | None, current: dict[str, str], where: str) -> None:
    """Refuse to mix embeddings: ``recorded`` (what made the stored vectors, None when
    nothing was recorded) must match ``current`` for every column both name.

    Raises:
        EncoderMismatchError: a column was embedded by another encoder; the message
            names both and ``where``.
    """
    if not recorded:
        return
    changed = {
        c: (recorded[c], v) for c, v in current.items() if c in recorded and recorded[c] != v
    }
    if changed:
        detail = "; ".join(f"{c}: {old} there, {new} now" for c, (old, new) in changed.items())
        raise EncoderMismatchError(
            f"{where} holds embeddings from other encoders ({detail}). Vectors of different "
            "encoder variants must not be mixed: set the variant back (MMOPS_TEXT_ENCODER), "
            "or re-ingest the history into a new data directory and retrain there."
        )


def read_encoder_record(directory: Path) -> dict[str, str] | None:
    """The encoders recorded for a store folder (None: nothing recorded yet)."""
    path = Path(directory) / ENCODERS_FILE
    return json.loads(path.read_text()) if path.exists() else None


def record_encoders(directory: Path, ids: dict[str, str]) -> None:
    """Record (atomically) which encoders made the vectors written under ``directory``,
    keeping columns recorded earlier."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    merged = {**(read_encoder_record(directory) or {}), **ids}
    tmp = directory / f".{ENCODERS_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(merged, indent=1, sort_keys=True))
    os.replace(tmp, directory / ENCODERS_FILE)


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _variant(spec) -> bytes:
    """What besides the bytes changes an image's embedding (the alpha background)."""
    if tuple(spec.background) == (255, 255, 255):
        return b""  # the default: keys stay those of earlier releases
    return "bg={},{},{}".format(*spec.background).encode()


class _LazyImages:
    """A sequence that decodes images only when a batch asks for them, so at most one
    encoder batch of (downscaled) images is in memory at a time."""

    def __init__(self, values: list, decode) -> None:
        self._values, self._decode = values, decode

    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._decode(v) for v in self._values[index]]
        return self._decode(self._values[index])


def embed_frame(
    raw: pd.DataFrame,
    config: DatasetConfig,
    encoders: Encoders,
    cache_dir: Path | None = None,
    include_label: bool = True,
    show_progress: bool = False,
) -> pd.DataFrame:
    """Turn validated raw rows into a feature frame.

    Each distinct text or image is encoded once; with ``cache_dir`` the embeddings are
    also kept across runs, so re-ingesting a window encodes nothing new.

    Args:
        raw: rows with the ``DatasetConfig`` columns (already through the gate).
        config: the dataset declaration.
        encoders: loaded text and image encoders.
        cache_dir: folder of the content-addressed embedding cache (None: no cache).
        include_label: keep the label column (absent when scoring unlabeled rows).
        show_progress: show a progress bar per encoder (long backfills).
    """
    columns = [config.entity_key, config.timestamp]
    if include_label and config.label in raw.columns:
        columns.append(config.label)
    frame = raw[columns + config.tabular_columns].copy()
    for column in config.text_columns:
        texts = raw[column].tolist()
        keys = [None if _is_missing(t) else content_key(t) for t in texts]
        cache = EmbeddingCache(cache_dir, encoders.text.encoder_id) if cache_dir else None
        vectors = embed_with_cache(
            keys,
            lambda rows, t=texts: [t[r] for r in rows],
            partial(encoders.text.encode, show_progress=show_progress),
            cache,
            encoders.text.dim,
        )
        if cache is not None:
            cache.save()
        frame[config.embedding_column(column)] = list(vectors)
        frame[config.presence_column(column)] = np.array([k is not None for k in keys], np.int64)
    for spec in config.images:
        column = spec.name
        encoder = encoders.image.with_size(spec.size)
        values = raw[column].tolist()
        keys = [
            None
            if _is_missing(v)
            else content_key(read_image_bytes(v, config.image_root) + _variant(spec))
            for v in values
        ]
        cache = EmbeddingCache(cache_dir, encoder.encoder_id) if cache_dir else None
        decode = partial(
            decode_image,
            image_root=config.image_root,
            max_pixels=spec.max_pixels,
            size=spec.size,
            background=spec.background,
        )
        vectors = embed_with_cache(
            keys,
            lambda rows, v=values, d=decode: _LazyImages([v[r] for r in rows], d),
            partial(encoder.encode, show_progress=show_progress),
            cache,
            encoder.dim,
        )
        if cache is not None:
            cache.save()
        frame[config.embedding_column(column)] = list(vectors)
        frame[config.presence_column(column)] = np.array([k is not None for k in keys], np.int64)
    for spec in config.vectors:
        vectors, present = vector_block(raw[spec.name], spec.dim)
        frame[config.embedding_column(spec.name)] = list(vectors)
        frame[config.presence_column(spec.name)] = present
    return frame.reset_index(drop=True)


def vector_block(values: pd.Series, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Precomputed embeddings as L2-normalised float32 rows (zeros where missing) and the
    0/1 presence flags. Rows are expected to have passed the gate (length ``dim``,
    finite, non-zero)."""
    out = np.zeros((len(values), dim), dtype=np.float32)
    present = np.zeros(len(values), dtype=np.int64)
    for i, value in enumerate(values.to_numpy(dtype=object)):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            continue
        vector = np.asarray(value, dtype=np.float64)
        out[i] = vector / np.linalg.norm(vector)
        present[i] = 1
    return out, present
