"""Dataset declaration: the one typed config that drives everything downstream.

A user points mmops at their own data by writing a ``DatasetConfig`` (in YAML or
Python); nothing downstream hard-codes column names.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""Identifiers (dataset, keys, column names): checked with ``fullmatch``, so a trailing
newline or a ``../`` never passes (``$`` matches before a final newline)."""
OTHER = "other"
"""The bucket that unknown categories go to with ``unknown_category: other``."""
_FORBID = ConfigDict(frozen=True, extra="forbid")


def _identifier(value: str, what: str = "name") -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} is not a valid identifier: letters, digits and _, "
            "not starting with a digit"
        )
    return value


def _as_label(value: Any) -> Any:
    """Numbers declared as classes or categories (``classes: [0, 1]``) are kept as their
    text ("0", "1"): values are compared as strings everywhere downstream."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    return value


def _unique(values: list[str], what: str) -> list[str]:
    duplicated = sorted({v for v in values if values.count(v) > 1})
    if duplicated:
        raise ValueError(f"{what} listed more than once: {duplicated}")
    return values


class _Column(BaseModel):
    model_config = _FORBID

    @field_validator("name", check_fields=False)
    @classmethod
    def _column_name(cls, value: str) -> str:
        return _identifier(value, "column name")


class NumericColumn(_Column):
    """A numeric tabular column with the range that the data-quality gate enforces."""

    name: str = Field(description="Column name in the raw data.")
    min_value: float | None = Field(default=None, description="Smallest valid value (inclusive).")
    max_value: float | None = Field(default=None, description="Largest valid value (inclusive).")
    nullable: bool = Field(default=False, description="Whether missing values are allowed.")
    description: str = Field(default="", description="Human description, copied into Feast.")

    @model_validator(mode="after")
    def _range(self) -> NumericColumn:
        if (
            self.min_value is not None
            and self.max_value is not None
            and self.min_value > self.max_value
        ):
            raise ValueError(
                f"{self.name}: min_value {self.min_value} is greater than max_value "
                f"{self.max_value}"
            )
        return self


class CategoricalColumn(_Column):
    """A categorical tabular column with its allowed values."""

    name: str = Field(description="Column name in the raw data.")
    categories: list[str] = Field(
        min_length=1,
        description="Allowed values, in a fixed order. Numbers are kept as their text "
        "(``[1, 2, 3]`` means the values 1, 2 and 3 of an integer-coded column).",
    )
    dtype: Literal["str", "int"] = Field(
        default="str",
        description="How raw values are read: str as they are; int for integer codes "
        "(1, 1.0 and '1' all become the category '1').",
    )
    unknown_category: Literal["quarantine", "other"] = Field(
        default="quarantine",
        description=f"A value outside the categories: quarantine its row, or map it to "
        f"the bucket {OTHER!r} (added to the categories, so the model learns it).",
    )
    description: str = Field(default="", description="Human description, copied into Feast.")

    @field_validator("categories", mode="before")
    @classmethod
    def _category_text(cls, value: Any) -> Any:
        return [_as_label(v) for v in value] if isinstance(value, list) else value

    @model_validator(mode="before")
    @classmethod
    def _other_bucket(cls, data: Any) -> Any:
        if (
            isinstance(data, dict)
            and data.get("unknown_category") == "other"
            and isinstance(data.get("categories"), list)
        ):
            categories = [_as_label(v) for v in data["categories"]]
            if OTHER not in categories:
                data = {**data, "categories": [*categories, OTHER]}
        return data

    @model_validator(mode="after")
    def _distinct(self) -> CategoricalColumn:
        _unique(self.categories, f"{self.name}: categories")
        return self


class TextColumn(_Column):
    """A free-text column, embedded with the text encoder."""

    name: str = Field(description="Column name in the raw data.")
    min_chars: int = Field(default=1, ge=0, description="Shortest accepted text (after strip).")
    max_chars: int = Field(default=20_000, gt=0, description="Longest accepted text.")
    optional: bool = Field(
        default=True,
        description="Rows may lack this modality (null); the model then masks it.",
    )
    description: str = Field(default="")

    @model_validator(mode="after")
    def _lengths(self) -> TextColumn:
        if self.min_chars > self.max_chars:
            raise ValueError(
                f"{self.name}: min_chars {self.min_chars} is greater than max_chars "
                f"{self.max_chars}"
            )
        return self


class ImageColumn(_Column):
    """An image column holding encoded image bytes or a path relative to ``image_root``."""

    name: str = Field(description="Column name in the raw data.")
    optional: bool = Field(
        default=True,
        description="Rows may lack this modality (null); the model then masks it.",
    )
    size: int = Field(
        default=32,
        ge=16,
        le=512,
        description="Side in pixels the image is resized to before encoding (larger: finer "
        "detail, slower: about 430 images/s at 32 px, 190 at 64 px on 2 cores).",
    )
    background: tuple[int, int, int] = Field(
        default=(255, 255, 255),
        description="RGB colour that transparent pixels are composited onto (icons and "
        "cut-outs on transparent backgrounds; dropping alpha would turn them black).",
    )
    max_pixels: int = Field(
        default=50_000_000,
        gt=0,
        description="Images with more pixels (width x height, read from the header before "
        "decoding) are quarantined: a 99-byte file can declare 20000x20000.",
    )
    description: str = Field(default="")


class VectorColumn(_Column):
    """A column of precomputed embeddings (float vectors from any encoder: audio, a
    domain model, ...). Validated (length, finite, non-zero), L2-normalised, stored,
    trained on and monitored like the text and image embeddings."""

    name: str = Field(description="Column name in the raw data (one float vector per row).")
    dim: int = Field(ge=1, le=8192, description="Length of every vector.")
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

    model_config = _FORBID

    name: str = Field(description="Dataset / project name; letters, digits and underscores.")
    entity_key: str = Field(description="Column identifying the entity a row describes.")
    entity_type: Literal["int64", "string"] = Field(
        default="int64", description="Type of the entity key values."
    )
    timestamp: str = Field(description="Event-timestamp column (timezone-aware UTC).")
    label: str = Field(
        description="Label column (class names as strings or ints). Rows may arrive "
        "without it (null or no column): they are stored and scored, and their labels "
        "are joined when they arrive (``mmops labels``)."
    )
    classes: list[str] = Field(
        min_length=2,
        description="Label values, in a fixed order; numbers are kept as their text "
        "(``[0, 1]``: labels 0 and 1, also when read as 0.0 and 1.0).",
    )
    text: list[TextColumn] = Field(default_factory=list)
    images: list[ImageColumn] = Field(default_factory=list)
    vectors: list[VectorColumn] = Field(
        default_factory=list, description="Precomputed embedding columns."
    )
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
    csv_encoding: str = Field(
        default="utf-8",
        description="Text encoding of a CSV raw file (latin-1, cp1252, utf-8-sig, ...).",
    )
    timezone: str = Field(
        default="UTC",
        description="IANA time zone of timestamps written without an offset; timestamps "
        "with an offset keep it. Everything is stored in UTC.",
    )
    max_bad_row_share: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="Rows failing the gate are quarantined with their reasons and the rest "
        "of the window proceeds, unless more than this share of the window is bad: then "
        "the whole batch is quarantined (0: any bad row stops the batch).",
    )

    @field_validator("name", "entity_key", "timestamp", "label")
    @classmethod
    def _key_name(cls, value: str) -> str:
        return _identifier(value)

    @field_validator("classes", mode="before")
    @classmethod
    def _class_text(cls, value: Any) -> Any:
        return [_as_label(v) for v in value] if isinstance(value, list) else value

    @field_validator("classes")
    @classmethod
    def _distinct_classes(cls, value: list[str]) -> list[str]:
        return _unique(value, "classes")

    @field_validator("csv_encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError as error:
            raise ValueError(f"unknown csv_encoding {value!r}") from error
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(
                f"unknown timezone {value!r} (an IANA name such as Europe/Paris)"
            ) from error
        return value

    @model_validator(mode="after")
    def _columns_unique(self) -> DatasetConfig:
        names = [self.entity_key, self.timestamp, self.label, *self.all_feature_columns]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"columns declared more than once: {duplicated}")
        tabular = set(self.tabular_columns)
        for column in self.monitor_only:
            _identifier(column, "monitor_only column")
        unknown = [c for c in self.monitor_only if c not in tabular]
        if unknown:
            raise ValueError(f"monitor_only names columns that are not tabular: {unknown}")
        if not (self.text or self.images or self.vectors or self.model_tabular_columns):
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
    def vector_columns(self) -> list[str]:
        return [c.name for c in self.vectors]

    @property
    def embedded_columns(self) -> list[str]:
        """Columns that become an embedding and a presence flag (text, image, vector)."""
        return self.text_columns + self.image_columns + self.vector_columns

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
        return self.embedded_columns + self.tabular_columns

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
