"""Dataset declaration: the one typed config that drives everything downstream.

A user points mmops at their own data by writing a ``DatasetConfig`` (in YAML or
Python); nothing downstream hard-codes column names.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from features.errors import InvalidConfigError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class NumericColumn(BaseModel):
    """A numeric tabular column with the range that the data-quality gate enforces."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Column name in the raw data.")
    min_value: float | None = Field(default=None, description="Smallest valid value (inclusive).")
    max_value: float | None = Field(default=None, description="Largest valid value (inclusive).")
    nullable: bool = Field(default=False, description="Whether missing values are allowed.")
    description: str = Field(default="", description="Human description, copied into Feast.")


class CategoricalColumn(BaseModel):
    """A categorical tabular column with its allowed values."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Column name in the raw data.")
    categories: list[str] = Field(min_length=1, description="Allowed values, in a fixed order.")
    description: str = Field(default="", description="Human description, copied into Feast.")


class TextColumn(BaseModel):
    """A free-text column, embedded with the text encoder."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Column name in the raw data.")
    min_chars: int = Field(default=1, ge=0, description="Shortest accepted text (after strip).")
    max_chars: int = Field(default=20_000, gt=0, description="Longest accepted text.")
    optional: bool = Field(
        default=True,
        description="Rows may lack this modality (null); the model then masks it.",
    )
    description: str = Field(default="")


class ImageColumn(BaseModel):
    """An image column holding encoded image bytes or a path relative to ``image_root``."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Column name in the raw data.")
    optional: bool = Field(
        default=True,
        description="Rows may lack this modality (null); the model then masks it.",
    )
    description: str = Field(default="")


class DatasetConfig(BaseModel):
    """Declares a multimodal dataset.

    Everything downstream (Feast definitions, validation suites, the model's inputs,
    monitoring) is derived from this object.
    """

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Dataset / project name; letters, digits and underscores.")
    entity_key: str = Field(description="Column identifying the entity a row describes.")
    entity_type: Literal["int64", "string"] = Field(
        default="int64", description="Type of the entity key values."
    )
    timestamp: str = Field(description="Event-timestamp column (timezone-aware UTC).")
    label: str = Field(description="Label column (class names as strings or ints).")
    classes: list[str] = Field(min_length=2, description="Label values, in a fixed order.")
    text: list[TextColumn] = Field(default_factory=list)
    images: list[ImageColumn] = Field(default_factory=list)
    numeric: list[NumericColumn] = Field(default_factory=list)
    categorical: list[CategoricalColumn] = Field(default_factory=list)
    monitor_only: list[str] = Field(
        default_factory=list,
        description="Tabular columns stored and monitored but not fed to the model "
        "(drift in them is benign: it alerts at most, never retrains).",
    )
    image_root: str | None = Field(
        default=None,
        description="Folder that relative image paths are resolved against.",
    )
    feature_service_version: int = Field(default=1, ge=1)

    @field_validator("name", "entity_key", "timestamp", "label")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r} is not a valid identifier (letters, digits, _)")
        return value

    @model_validator(mode="after")
    def _columns_unique(self) -> DatasetConfig:
        names = [self.entity_key, self.timestamp, self.label, *self.all_feature_columns]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"columns declared more than once: {duplicated}")
        tabular = set(self.tabular_columns)
        unknown = [c for c in self.monitor_only if c not in tabular]
        if unknown:
            raise ValueError(f"monitor_only names columns that are not tabular: {unknown}")
        if not (self.text or self.images or self.model_tabular_columns):
            raise ValueError("a dataset needs at least one model input column")
        return self

    # Derived views -----------------------------------------------------------------
    @property
    def text_columns(self) -> list[str]:
        return [c.name for c in self.text]

    @property
    def image_columns(self) -> list[str]:
        return [c.name for c in self.images]

    @property
    def numeric_columns(self) -> list[str]:
        return [c.name for c in self.numeric]

    @property
    def categorical_columns(self) -> list[str]:
        return [c.name for c in self.categorical]

    @property
    def tabular_columns(self) -> list[str]:
        return self.numeric_columns + self.categorical_columns

    @property
    def model_tabular_columns(self) -> list[str]:
        return [c for c in self.tabular_columns if c not in self.monitor_only]

    @property
    def all_feature_columns(self) -> list[str]:
        return self.text_columns + self.image_columns + self.tabular_columns

    @property
    def raw_columns(self) -> list[str]:
        return [self.entity_key, self.timestamp, self.label, *self.all_feature_columns]

    @property
    def feature_service_name(self) -> str:
        return f"{self.name}_v{self.feature_service_version}"

    def embedding_column(self, column: str) -> str:
        """Name of the embedding feature derived from a text or image column."""
        return f"{column}_emb"

    def presence_column(self, column: str) -> str:
        """Name of the 0/1 feature saying whether a row has this modality."""
        return f"{column}_present"

    def model_view(self) -> DatasetConfig:
        """The same dataset restricted to the model's inputs (what the feature service
        serves): ``monitor_only`` columns left out. Validates training sets."""
        if not self.monitor_only:
            return self
        skip = set(self.monitor_only)
        return self.model_copy(
            update={
                "numeric": [c for c in self.numeric if c.name not in skip],
                "categorical": [c for c in self.categorical if c.name not in skip],
                "monitor_only": [],
            }
        )

    def categorical_column(self, name: str) -> CategoricalColumn:
        for column in self.categorical:
            if column.name == name:
                return column
        raise KeyError(name)


def load_dataset_config(path: str | Path) -> DatasetConfig:
    """Read a ``DatasetConfig`` from a YAML file.

    Raises:
        FileNotFoundError: the file does not exist.
        InvalidConfigError: the file does not describe a valid dataset (a ``ValueError``;
            the pydantic ``ValidationError`` is its cause and its text is in the message).
    """
    path = Path(path)
    with path.open(encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    if not isinstance(raw, dict):
        raise InvalidConfigError(
            f"{path}: expected a mapping at the top level, got {type(raw).__name__}"
        )
    try:
        return DatasetConfig.model_validate(raw)
    except ValidationError as error:
        raise InvalidConfigError(f"{path}: not a valid dataset config: {error}") from error
