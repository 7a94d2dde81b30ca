"""Feast declarations derived from a ``DatasetConfig``.

One entity, three feature views (tabular, text embeddings, image embeddings) over
Parquet sources under the offline directory, and the model's versioned feature service
``<name>_v<version>``. The Feast repository (``features/repo/definitions.py``) and the
programmatic store both build their objects here, so they can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Array, Float32, Float64, Int64, String

from features.encoders import IMAGE_DIM, IMAGE_ENCODER_ID, TEXT_DIM, TEXT_ENCODER_ID
from features.schema import DatasetConfig

VIEW_KINDS = ("tabular", "text", "image", "vector")


@dataclass(frozen=True)
class FeastDefinitions:
    entity: Entity
    sources: dict[str, FileSource]
    views: dict[str, FeatureView]
    service: FeatureService

    @property
    def objects(self) -> list:
        return [self.entity, *self.sources.values(), *self.views.values(), self.service]


def view_name(config: DatasetConfig, kind: str) -> str:
    return f"{config.name}_{kind}"


def view_columns(config: DatasetConfig, kind: str) -> list[str]:
    """The feature columns a view holds (in the offline Parquet files too)."""
    if kind == "tabular":
        return config.tabular_columns
    modality = {
        "text": config.text_columns,
        "image": config.image_columns,
        "vector": config.vector_columns,
    }[kind]
    columns: list[str] = []
    for column in modality:
        columns += [config.embedding_column(column), config.presence_column(column)]
    return columns


def active_view_kinds(config: DatasetConfig) -> list[str]:
    return [kind for kind in VIEW_KINDS if view_columns(config, kind)]


def source_glob(offline_dir: Path, config: DatasetConfig, kind: str) -> str:
    return str(Path(offline_dir) / view_name(config, kind) / "*.parquet")


def build_definitions(config: DatasetConfig, offline_dir: Path) -> FeastDefinitions:
    """Feast objects for ``config``, with sources under ``offline_dir``."""
    value_type = ValueType.INT64 if config.entity_type == "int64" else ValueType.STRING
    entity = Entity(
        name=config.entity_key,
        join_keys=[config.entity_key],
        value_type=value_type,
        description=f"Entity of the {config.name} dataset.",
    )
    sources: dict[str, FileSource] = {}
    views: dict[str, FeatureView] = {}
    for kind in active_view_kinds(config):
        name = view_name(config, kind)
        sources[kind] = FileSource(
            name=f"{name}_source",
            path=source_glob(offline_dir, config, kind),
            file_format=ParquetFormat(),
            timestamp_field=config.timestamp,
            description=f"{kind} features of {config.name}, one Parquet file per day.",
        )
        views[kind] = FeatureView(
            name=name,
            entities=[entity],
            ttl=timedelta(0),
            schema=_fields(config, kind),
            source=sources[kind],
            online=True,
            description=_view_description(kind),
            tags={"dataset": config.name, "kind": kind},
        )
    projections = []
    for kind, view in views.items():
        if kind == "tabular":
            projections.append(view[config.model_tabular_columns])
        else:
            projections.append(view)
    service = FeatureService(
        name=config.feature_service_name,
        features=projections,
        description=f"Model inputs of {config.name}, version {config.feature_service_version}.",
        tags={"dataset": config.name, "version": str(config.feature_service_version)},
    )
    return FeastDefinitions(entity=entity, sources=sources, views=views, service=service)


def _view_description(kind: str) -> str:
    if kind == "text":
        return f"Text embeddings ({TEXT_ENCODER_ID}, {TEXT_DIM}-d, zeros when absent)."
    if kind == "image":
        return f"Image embeddings ({IMAGE_ENCODER_ID}, {IMAGE_DIM}-d, zeros when absent)."
    if kind == "vector":
        return "Precomputed embeddings, L2-normalised (zeros when absent)."
    return "Tabular features."


def _fields(config: DatasetConfig, kind: str) -> list[Field]:
    if kind == "tabular":
        fields = [
            Field(name=c.name, dtype=Float64, description=c.description) for c in config.numeric
        ]
        fields += [
            Field(name=c.name, dtype=String, description=c.description) for c in config.categorical
        ]
        return fields
    columns = {"text": config.text, "image": config.images, "vector": config.vectors}[kind]
    fields = []
    for column in columns:
        dim = {"text": TEXT_DIM, "image": IMAGE_DIM}.get(kind) or column.dim
        fields.append(
            Field(
                name=config.embedding_column(column.name),
                dtype=Array(Float32),
                description=f"{dim}-d embedding of {column.name}.",
            )
        )
        fields.append(
            Field(
                name=config.presence_column(column.name),
                dtype=Int64,
                description=f"1 if the row has {column.name}, else 0.",
            )
        )
    return fields
