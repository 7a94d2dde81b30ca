"""The README's worked example: a user's CSV plus an image folder, described by a config."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from features.embedding import Encoders
from features.ingest import IngestPaths, ingest_window, read_raw
from features.schema import load_dataset_config
from features.store import get_training_frame, prepare_store, read_labels
from features.validation import DataQualityError

pytestmark = pytest.mark.integration

CONFIG = """
name: shop
entity_key: review_id
entity_type: int64
timestamp: created_at
label: returned
classes: ["no", "yes"]
text:
  - {{name: title, max_chars: 200}}
  - {{name: body, min_chars: 3, max_chars: 5000}}
images:
  - {{name: photo}}
numeric:
  - {{name: price, min_value: 0, max_value: 10000}}
categorical:
  - {{name: category, categories: [kitchen, garden, toys]}}
image_root: {root}
"""


def _write_user_data(folder: Path, n: int = 30) -> Path:
    images = folder / "images" / "kettles"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = ["review_id,created_at,returned,title,body,photo,price,category"]
    for i in range(n):
        photo = ""
        if i % 5:
            pixels = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(images / f"{i}.jpg")
            photo = f"kettles/{i}.jpg"
        returned = "yes" if i % 3 == 0 else "no"
        lines.append(
            f"{i},2026-03-01T10:{i:02d}:00Z,{returned},Kettle {i},"
            f"Boils fast and quiet number {i},{photo},{10 + i}.5,{['kitchen', 'garden'][i % 2]}"
        )
    csv = folder / "reviews.csv"
    csv.write_text("\n".join(lines) + "\n")
    (folder / "dataset.yaml").write_text(CONFIG.format(root=folder / "images"))
    return csv


def _ingest(tmp_path: Path):
    """Read the user's CSV with their config and ingest the day; returns what a test needs."""
    config = load_dataset_config(tmp_path / "dataset.yaml")
    raw = read_raw(tmp_path / "reviews.csv", config)
    paths = IngestPaths(
        feast_dir=tmp_path / "feast",
        labels_dir=tmp_path / "labels",
        quarantine_dir=tmp_path / "quarantine",
        embedding_cache_dir=tmp_path / "cache",
    )
    store = prepare_store(config, paths.feast_dir)
    start, end = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)
    ingest = lambda: ingest_window(raw, config, store, Encoders.load(config), paths, start, end)  # noqa: E731
    return config, paths, store, ingest


def test_a_users_csv_and_image_folder_flow_through_ingestion(tmp_path):
    _write_user_data(tmp_path)
    config, paths, store, ingest = _ingest(tmp_path)
    assert ingest().n_rows == 30

    training = get_training_frame(store, config, read_labels(config, paths.labels_dir))
    assert len(training) == 30
    assert {"title_emb", "body_emb", "photo_emb", "photo_present", "price", "category"} <= set(
        training.columns
    )
    assert training["photo_present"].sum() == 24  # every fifth row has no photo
    assert training["body_emb"].map(len).eq(384).all()


def test_a_missing_image_file_in_the_users_data_is_quarantined(tmp_path):
    _write_user_data(tmp_path)
    (tmp_path / "images" / "kettles" / "3.jpg").unlink()
    config, paths, _, ingest = _ingest(tmp_path)
    with pytest.raises(DataQualityError, match="photo"):
        ingest()
    quarantined = list((tmp_path / "quarantine").glob("*/batch.parquet"))
    assert len(quarantined) == 1
    assert not (tmp_path / "feast" / "offline").exists()
    assert len(read_labels(config, paths.labels_dir)) == 0
