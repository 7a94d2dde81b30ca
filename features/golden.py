"""The golden holdout: a fixed sample of entities (by hash) that no training window holds.

Membership is a salted hash of the entity key, so it never changes and needs no list.
A *version* freezes the labels of the member rows present at that time into a Parquet
file with a JSON manifest (``v<n>.parquet`` / ``v<n>.json``); later label deliveries,
overwrites included, do not reach a frozen version.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from features.schema import DatasetConfig
from features.state_io import atomic_write_frame, atomic_write_text, locked


class GoldenConfig(BaseModel):
    """Which entities form the golden holdout."""

    model_config = ConfigDict(frozen=True)

    enabled: bool = Field(default=True, description="Keep a golden holdout.")
    fraction: float = Field(
        default=0.1, gt=0.0, lt=0.5, description="Share of entities in the golden holdout."
    )
    salt: str = Field(default="golden", description="Salt of the entity hash.")
    min_rows: int = Field(
        default=200, ge=10, description="Freeze a version only with this many labelled rows."
    )


class GoldenManifest(BaseModel):
    """One frozen version of the golden holdout."""

    model_config = ConfigDict(frozen=True)

    version: int
    fraction: float
    salt: str
    n_rows: int
    created_at: datetime
    start: datetime
    end: datetime
    class_counts: dict[str, int]
    digest: str = Field(description="SHA-256 of the frozen (entity, timestamp, label) rows.")
    reason: str = Field(
        default="", description="Why this version was frozen (a confirmed concept change)."
    )

    @property
    def name(self) -> str:
        return f"golden-v{self.version}"


def golden_mask(entities: pd.Series, fraction: float, salt: str) -> np.ndarray:
    """Per row: whether its entity belongs to the golden holdout."""
    limit = int(fraction * 2**64)
    return np.asarray(
        [
            int.from_bytes(hashlib.sha256(f"{salt}:{e}".encode()).digest()[:8], "big") < limit
            for e in entities.astype(str)
        ],
        dtype=bool,
    )


def _digest(frame: pd.DataFrame) -> str:
    return hashlib.sha256(
        pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()
    ).hexdigest()


def latest_golden(golden_dir: Path) -> tuple[GoldenManifest, pd.DataFrame] | None:
    """The newest frozen version and its rows, or None."""
    manifests = sorted(
        Path(golden_dir).glob("v*.json"),
        key=lambda p: int(p.stem[1:]) if p.stem[1:].isdigit() else -1,
    )
    if not manifests:
        return None
    manifest = GoldenManifest.model_validate_json(manifests[-1].read_text(encoding="utf-8"))
    rows = pd.read_parquet(manifests[-1].with_suffix(".parquet"))
    if _digest(rows) != manifest.digest:
        raise ValueError(
            f"{manifests[-1].with_suffix('.parquet')} does not match its manifest's digest: "
            "the golden holdout was changed after it was frozen"
        )
    return manifest, rows


def freeze_golden(
    labels: pd.DataFrame,
    config: DatasetConfig,
    golden_dir: Path,
    golden: GoldenConfig,
    reason: str = "",
) -> GoldenManifest | None:
    """Freeze the member rows of ``labels`` as the next golden version.

    Returns:
        The new manifest, or None when fewer than ``golden.min_rows`` rows are members.
    """
    keys = [config.entity_key, config.timestamp, config.label]
    members = labels.loc[golden_mask(labels[config.entity_key], golden.fraction, golden.salt), keys]
    members = members.sort_values(keys[:2], kind="mergesort").reset_index(drop=True)
    if len(members) < golden.min_rows:
        return None
    golden_dir = Path(golden_dir)
    with locked(golden_dir / "versions"):
        existing = latest_golden(golden_dir)
        version = existing[0].version + 1 if existing else 1
        stamps = pd.to_datetime(members[config.timestamp], utc=True)
        manifest = GoldenManifest(
            version=version,
            fraction=golden.fraction,
            salt=golden.salt,
            n_rows=len(members),
            created_at=datetime.now(UTC),
            start=stamps.min().to_pydatetime(),
            end=stamps.max().to_pydatetime(),
            class_counts=members[config.label].astype(str).value_counts().to_dict(),
            digest=_digest(members),
            reason=reason,
        )
        atomic_write_frame(members, golden_dir / f"v{version}.parquet")
        atomic_write_text(golden_dir / f"v{version}.json", manifest.model_dump_json(indent=2))
    return manifest


def split_golden(
    labels: pd.DataFrame, config: DatasetConfig, fraction: float, salt: str
) -> tuple[pd.DataFrame, int]:
    """``labels`` without the golden entities, and how many rows were held out."""
    mask = golden_mask(labels[config.entity_key], fraction, salt)
    return labels[~mask].reset_index(drop=True), int(mask.sum())
