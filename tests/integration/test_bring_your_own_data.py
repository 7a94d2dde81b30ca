"""The README's worked example: a user's CSV plus an image folder, described by a config."""

from __future__ import annotations

import json
import struct
import zlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
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


def _day_store(tmp_path: Path, config):
    """Ingest paths and a Feast store under ``tmp_path``, and the day 2026-03-01 (UTC)."""
    paths = IngestPaths(
        feast_dir=tmp_path / "feast",
        labels_dir=tmp_path / "labels",
        quarantine_dir=tmp_path / "quarantine",
        embedding_cache_dir=tmp_path / "cache",
    )
    store = prepare_store(config, paths.feast_dir)
    return paths, store, datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)


def _ingest(tmp_path: Path):
    """Read the user's CSV with their config and ingest the day; returns what a test needs."""
    config = load_dataset_config(tmp_path / "dataset.yaml")
    raw = read_raw(tmp_path / "reviews.csv", config)
    paths, store, start, end = _day_store(tmp_path, config)
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


def test_a_missing_image_file_quarantines_its_row_and_the_rest_proceeds(tmp_path):
    _write_user_data(tmp_path)
    (tmp_path / "images" / "kettles" / "3.jpg").unlink()
    config, paths, store, ingest = _ingest(tmp_path)
    result = ingest()
    assert (result.n_rows, result.stored, result.quarantined) == (30, 29, 1)
    assert result.counts()["rows_in"] == result.stored + result.quarantined
    assert any("photo" in reason and "does not exist" in reason for reason in result.reasons)
    rows = pd.read_parquet(next((tmp_path / "quarantine").glob("*/rows.parquet")))
    assert rows["review_id"].tolist() == [3] and "photo" in rows["quarantine_reasons"][0]
    assert len(read_labels(config, paths.labels_dir)) == 29
    assert (
        3
        not in get_training_frame(store, config, read_labels(config, paths.labels_dir))[
            "review_id"
        ].tolist()
    )


def test_too_many_bad_rows_quarantine_the_whole_batch(tmp_path):
    _write_user_data(tmp_path)
    (tmp_path / "images" / "kettles" / "3.jpg").unlink()
    yaml_path = tmp_path / "dataset.yaml"
    yaml_path.write_text(yaml_path.read_text() + "max_bad_row_share: 0\n")
    config, paths, _, ingest = _ingest(tmp_path)
    with pytest.raises(DataQualityError, match="photo") as caught:
        ingest()
    assert "max_bad_row_share" in str(caught.value)
    quarantined = list((tmp_path / "quarantine").glob("*/batch.parquet"))
    assert len(quarantined) == 1
    assert not (tmp_path / "feast" / "offline").exists()
    assert len(read_labels(config, paths.labels_dir)) == 0


def _png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def test_paths_outside_image_root_and_decoder_bombs_are_quarantined_per_row(tmp_path):
    csv = _write_user_data(tmp_path)
    secret = tmp_path / "secret"
    secret.mkdir()
    Image.new("RGB", (8, 8), "red").save(secret / "outside.png")
    (tmp_path / "images" / "bomb.png").write_bytes(_png_header(20_000, 20_000))
    assert len(_png_header(20_000, 20_000)) < 100
    lines = csv.read_text().splitlines()
    swaps = {
        1: "../secret/outside.png",
        2: str(secret / "outside.png"),
        4: "bomb.png",
        6: "kettles/../../secret/outside.png",
    }
    for row, path in swaps.items():
        fields = lines[row + 1].split(",")
        fields[5] = path
        lines[row + 1] = ",".join(fields)
    csv.write_text("\n".join(lines) + "\n")
    yaml_path = tmp_path / "dataset.yaml"
    yaml_path.write_text(yaml_path.read_text() + "max_bad_row_share: 0.2\n")
    config, paths, store, ingest = _ingest(tmp_path)
    result = ingest()
    assert (result.stored, result.quarantined) == (26, 4)
    reasons = " ".join(result.reasons)
    assert "outside image_root" in reasons and "pixels" in reasons
    assert str(secret) not in json.dumps(result.model_dump(mode="json"))
    rows = pd.read_parquet(next((tmp_path / "quarantine").glob("*/rows.parquet")))
    assert sorted(rows["review_id"]) == [1, 2, 4, 6]


STRING_KEYS = """
name: notes
entity_key: note_id
entity_type: string
timestamp: written_at
timezone: Europe/Paris
csv_encoding: latin-1
label: urgent
classes: [0, 1]
text:
  - {name: body}
numeric:
  - {name: length, min_value: 0, max_value: 1000}
categorical:
  - {name: team, dtype: int, categories: [1, 2, 3], unknown_category: other}
"""


def test_string_keys_late_labels_int_categoricals_and_a_latin1_csv(tmp_path):
    from features.ingest import ingest_labels

    (tmp_path / "dataset.yaml").write_text(STRING_KEYS)
    lines = ["note_id,written_at,urgent,body,length,team"]
    for i in range(12):
        stamp = f"2026-03-01T{8 + i:02d}:00:00" + ("Z" if i % 2 else "")  # naive ones: Paris
        body = "" if i == 5 else f"Caf\u00e9 {i} d\u00e9j\u00e0 vu"
        lines.append(f"N-{i:03d},{stamp},,{body},{i * 10},{[1, 2, 3, 7][i % 4]}")
    (tmp_path / "notes.csv").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    config = load_dataset_config(tmp_path / "dataset.yaml")
    raw = read_raw(tmp_path / "notes.csv", config)
    assert raw["note_id"].iloc[0] == "N-000" and raw["team"].iloc[3] == "other"
    assert raw["written_at"].iloc[0] == pd.Timestamp("2026-03-01T07:00:00Z")  # 08:00 Paris
    paths, store, start, end = _day_store(tmp_path, config)
    result = ingest_window(raw, config, store, Encoders.load(config), paths, start, end)
    assert (result.n_rows, result.stored, result.quarantined, result.n_labels) == (12, 12, 0, 0)
    late = pd.DataFrame(
        {
            "note_id": [f"N-{i:03d}" for i in range(12)] + ["N-999"],
            "urgent": [str(i % 2) for i in range(12)] + ["1"],
        }
    )
    labels = ingest_labels(late, config, paths.labels_dir, paths.feast_dir)
    assert (labels.stored, labels.rejected) == (12, 1)
    training = get_training_frame(store, config, read_labels(config, paths.labels_dir))
    assert len(training) == 12 and training["note_id"].iloc[0] == "N-000"
    assert set(training["urgent"]) == {"0", "1"} and "other" in set(training["team"])
    assert training["body_present"].sum() == 11


VECTORS = """
name: calls
entity_key: call_id
timestamp: at
label: churn
classes: ["no", "yes"]
vectors:
  - {name: voice, dim: 8, description: audio embedding from an external encoder}
numeric:
  - {name: minutes, min_value: 0}
max_bad_row_share: 0.05
"""


def test_precomputed_embeddings_are_validated_stored_trained_on_and_monitored(tmp_path):
    from features.store import read_labels
    from monitoring.drift import compute_drift, fit_drift_reference
    from training.train import TrainConfig, train_model

    (tmp_path / "dataset.yaml").write_text(VECTORS)
    config = load_dataset_config(tmp_path / "dataset.yaml")
    rng = np.random.default_rng(0)
    n = 300
    direction = rng.normal(size=8)
    churn = rng.random(n) < 0.4
    vectors = rng.normal(size=(n, 8)) * 0.8 + np.where(churn, 1.0, -1.0)[:, None] * direction
    voice = [list(v * rng.uniform(0.5, 3.0)) for v in vectors]  # any scale: normalised
    voice[10], voice[11] = None, None  # rows without the modality
    voice[20] = [1.0, 2.0]  # wrong length
    voice[21] = [float("nan")] * 8
    voice[22] = [0.0] * 8
    raw = pd.DataFrame(
        {
            "call_id": np.arange(n),
            "at": pd.Timestamp("2026-03-01T00:00Z") + pd.to_timedelta(np.arange(n), unit="min"),
            "churn": np.where(churn, "yes", "no"),
            "voice": voice,
            "minutes": rng.uniform(0, 60, n),
        }
    )
    raw.to_parquet(tmp_path / "calls.parquet")
    paths, store, start, end = _day_store(tmp_path, config)
    frame = read_raw(tmp_path / "calls.parquet", config, start, end)
    result = ingest_window(frame, config, store, Encoders.load(config), paths, start, end)
    assert (result.stored, result.quarantined) == (n - 3, 3)
    assert {
        "voice: do not hold a 1-d vector of length 8",
        "voice: are all zeros (no direction to normalise)",
    } <= set(result.reasons)

    training = get_training_frame(store, config, read_labels(config, paths.labels_dir))
    norms = np.linalg.norm(np.stack(training["voice_emb"]), axis=1)
    assert training["voice_present"].sum() == n - 5
    np.testing.assert_allclose(norms[training["voice_present"] == 1], 1.0, atol=1e-5)
    trained = train_model(
        training,
        config,
        TrainConfig(hidden_size=16, fusion_hidden_size=16, epochs=30, show_progress=False),
    )
    assert trained.manifest.modalities == ["voice", "tabular"]
    test = trained.splits.test
    accuracy = (trained.model.predict_proba(test).argmax(1) == (test["churn"] == "yes")).mean()
    assert accuracy > 0.8

    scored = training.assign(prediction="no", proba_no=0.5, proba_yes=0.5)
    reference = fit_drift_reference(scored.iloc[:150], config)
    shifted = scored.iloc[150:].copy()
    shifted["voice_emb"] = [
        (v + 2 * direction / np.linalg.norm(direction))
        / np.linalg.norm(v + 2 * direction / np.linalg.norm(direction))
        if p
        else v
        for v, p in zip(shifted["voice_emb"], shifted["voice_present"], strict=True)
    ]
    drift = compute_drift(reference, shifted)
    assert "vector" in drift.modalities and drift.modalities["vector"].drifted
