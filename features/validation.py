"""The data-quality gate: Great Expectations suites derived from a ``DatasetConfig``.

Two frames are validated: the RAW rows as users deliver them, and the FEATURE frame after
embedding. Both suites are built in code from the config alone, never from column names
of a particular dataset.

How a batch is checked:

1. A short structural pre-check in plain pandas (empty batch, missing columns, a whole
   column of the wrong dtype). Those conditions make GX expectations error out instead of
   fail, so they are reported here as the same typed ``ValidationFailure`` entries, and the
   expectations on the affected columns are left out of the suite for this batch.
2. Per-row facts that GX 1.x cannot express (image decodability, UTF-8 validity,
   embedding length, norm and finiteness; see great_expectations#2368) are computed once,
   vectorised where possible, into *derived columns* named ``<column>__<fact>``
   (``photo__decodable``, ``review_emb__dim``, ``review_emb__norm``, ...). Standard
   expectations (``expect_column_values_to_be_in_set``, ``..._to_be_between`` with a
   pandas ``row_condition`` for "where present") then run on them. Derived columns keep
   the suites serialisable, so a file context stores them and renders them in Data Docs,
   which custom expectation classes would need plugins for.
3. GX runs the suite (``build_raw_suite`` / ``build_feature_suite``) on a frame of the
   keys, tabular columns and derived columns; text and image values themselves stay out
   of it. Each expectation carries in its ``meta`` the dataset column and a phrase from
   which the failure message is written. Samples show entity keys with offending values.

``check_batch`` is the gate: on failure it quarantines the whole batch (Parquet, every
row kept) with the result as JSON and raises ``DataQualityError``.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from features.encoders import (
    IMAGE_DIM,
    TEXT_DIM,
    ImageDecodeError,
    ImagePathError,
    ImageTooLargeError,
    decode_image,
    image_dimensions,
    resolve_image_path,
)
from features.schema import DatasetConfig, ImageColumn
from features.validation_page import CheckOutcome, write_batch_page

NORM_BOUNDS = (0.9, 1.1)
"""Accepted L2 norm of a present embedding (encoders L2-normalise)."""
SAMPLE_SIZE = 5
_BAD_TEXT = re.compile("[\ud800-\udfff\ufffd]")
_CONTEXTS: dict[Path | None, Any] = {}
_GX_LOCK = threading.RLock()


class ValidationFailure(BaseModel):
    """One failed expectation."""

    model_config = ConfigDict(frozen=True)

    expectation: str = Field(description="GX expectation type, e.g. expect_column_to_exist.")
    column: str | None = Field(description="Column of the dataset the failure is about.")
    message: str = Field(description="Human sentence saying what is wrong.")
    unexpected_count: int = Field(description="Number of offending rows (or columns).")
    sample: list = Field(description="A few offending rows: entity key and value.")
    reason: str = Field(
        default="", description="Short per-row reason ('<column>: <problem>'), quarantine."
    )
    rows: list[int] = Field(
        default_factory=list,
        exclude=True,
        repr=False,
        description="Positions of every offending row; empty for a failure of the batch "
        "as a whole (a missing column, a wrong dtype, an empty batch).",
    )


class ValidationResult(BaseModel):
    """Outcome of validating one batch against one suite."""

    model_config = ConfigDict(frozen=True)

    suite: str = Field(description="Name of the expectation suite.")
    success: bool
    n_rows: int
    failures: list[ValidationFailure] = Field(default_factory=list)
    quarantine_path: str | None = Field(default=None, description="Folder of the kept batch.")
    data_docs_path: str | None = Field(default=None, description="Data Docs index.html.")
    batch: str | None = Field(
        default=None, description="The batch's name (dataset and window): the GX run name."
    )
    summary_page: str | None = Field(
        default=None,
        description="The batch's self-contained HTML page (renders offline, unlike Data Docs).",
    )
    result_json: str | None = Field(default=None, description="GX's validation result (JSON).")
    n_quarantined: int = Field(
        default=0, description="Rows set aside with their reasons (row-level quarantine)."
    )

    def reasons(self) -> dict[str, int]:
        """Offending rows per reason (a row may count under several)."""
        out: dict[str, int] = {}
        for failure in self.failures:
            key = failure.reason or failure.message
            out[key] = out.get(key, 0) + max(failure.unexpected_count, 1)
        return out

    def summary(self) -> str:
        """Multi-line text naming each failing expectation, its column and sample rows."""
        status = "passed" if self.success else "FAILED"
        lines = [
            f"data-quality suite {self.suite!r} {status} on {self.n_rows} rows"
            + (f": {len(self.failures)} failing expectation(s)" if self.failures else "")
        ]
        for failure in self.failures:
            where = f"[{failure.column}] " if failure.column else ""
            lines.append(f"  - {failure.expectation} {where}{failure.message}")
            if failure.sample:
                lines.append(f"      sample: {failure.sample}")
        if self.quarantine_path:
            lines.append(f"batch quarantined in {self.quarantine_path}")
        if self.summary_page:
            lines.append(f"summary page: {self.summary_page}")
        if self.data_docs_path:
            lines.append(f"data docs: {self.data_docs_path}")
        return "\n".join(lines)


class DataQualityError(Exception):
    """A batch failed the data-quality gate; ``result`` says why."""

    def __init__(self, result: ValidationResult) -> None:
        super().__init__(result.summary())
        self.result = result

    def __str__(self) -> str:
        return self.result.summary()


# Structural pre-check -----------------------------------------------------------------


def _structure_failure(column: str | None, expectation: str, message: str, sample=None):
    return ValidationFailure(
        expectation=expectation,
        column=column,
        message=message,
        unexpected_count=1,
        sample=list(sample or []),
    )


def _dtype_problem(series: pd.Series, role: str) -> str | None:
    """Why a whole column cannot hold ``role`` values, or None when its dtype fits."""
    dtype = series.dtype
    if role == "entity":
        if pd.api.types.is_integer_dtype(dtype):
            return None
        if pd.api.types.is_object_dtype(dtype):
            return None  # integers beside nulls or text: checked row by row (__is_int)
        return (
            f"has dtype {dtype}; with entity_type int64 the entity key needs integers "
            "(declare entity_type: string for text keys)"
        )
    if role == "entity_string":
        if pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype):
            return None
        if pd.api.types.is_integer_dtype(dtype):
            return None  # written as text by coerce_raw; accepted as they are
        return f"has dtype {dtype}; with entity_type string the entity key holds text"
    if role == "timestamp":
        if isinstance(dtype, pd.DatetimeTZDtype):
            if str(dtype.tz) == "UTC":
                return None
            return f"has time zone {dtype.tz}; convert it with .dt.tz_convert('UTC')"
        if pd.api.types.is_datetime64_dtype(dtype):
            return f"has dtype {dtype} (naive); timestamps must be timezone-aware UTC"
        return f"has dtype {dtype}; timestamps must be datetime64[ns, UTC]"
    all_null = bool(series.isna().all())
    if role == "embedding":
        if pd.api.types.is_object_dtype(dtype):
            return None
        return f"has dtype {dtype}; an embedding column holds one array per row"
    if role == "numeric":
        if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
            if all_null:
                return None
            return f"has dtype {dtype}; a numeric column needs an integer or float dtype"
        return None
    # label, categorical, text, image: values are checked row by row afterwards
    if pd.api.types.is_numeric_dtype(dtype) and not all_null and role != "label":
        return f"has dtype {dtype}; a {role} column holds strings" + (
            " or bytes" if role == "image" else ""
        )
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return f"has dtype {dtype}; a {role} column cannot hold timestamps"
    return None


def _is_int_key(value: Any) -> bool | None:
    """True for an integer key, False for anything else, None for a missing one."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _precheck(
    frame: pd.DataFrame, roles: dict[str, str], required: set[str]
) -> tuple[list[ValidationFailure], set[str]]:
    """Structural failures and the set of columns whose expectations must be skipped."""
    failures: list[ValidationFailure] = []
    skipped: set[str] = set()
    if len(frame) == 0:
        failures.append(
            ValidationFailure(
                expectation="expect_table_row_count_to_be_between",
                column=None,
                message="empty batch: it has 0 rows; a batch needs at least 1 row",
                unexpected_count=0,
                sample=[],
            )
        )
    if frame.columns.duplicated().any():
        duplicated = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        failures.append(
            _structure_failure(
                None,
                "expect_table_columns_to_match_set",
                f"columns appear more than once: {duplicated}",
                duplicated,
            )
        )
        skipped.update(duplicated)
    for column, role in roles.items():
        if column not in frame.columns:
            if column in required:
                failures.append(
                    _structure_failure(
                        column,
                        "expect_column_to_exist",
                        f"required {role} column {column!r} is missing",
                        [column],
                    )
                )
            skipped.add(column)
            continue
        if column in skipped:
            continue
        problem = _dtype_problem(frame[column], role)
        if problem:
            failures.append(
                _structure_failure(
                    column,
                    "expect_column_values_to_be_in_type_list",
                    f"column {column!r} {problem}",
                    [str(frame[column].dtype)],
                )
            )
            skipped.add(column)
    return failures, skipped


# Derived columns ----------------------------------------------------------------------


def _nullable_bool(values: list) -> pd.Series:
    return pd.Series(values, dtype=object)


def _around(text: str, position: int, width: int = 25) -> str:
    """The text around a bad character, with the character shown as its code point."""
    start, end = max(0, position - width), position + width
    bad = f"[U+{ord(text[position]):04X}]"
    return f"...{text[start:position]}{bad}{text[position + 1 : end]}..."


def _text_facts(series: pd.Series) -> dict[str, pd.Series]:
    """Per-row facts about a text column; None where the text is missing."""
    is_str, utf8, detail, nonblank, length = [], [], [], [], []
    for value in series.to_numpy(dtype=object):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            is_str.append(None)
            utf8.append(None)
            detail.append(None)
            nonblank.append(None)
            length.append(np.nan)
            continue
        if isinstance(value, (bytes, bytearray, memoryview)):
            try:
                bytes(value).decode("utf-8")
                utf8.append(True)
                detail.append(None)
            except UnicodeDecodeError as exc:
                utf8.append(False)
                detail.append(f"bytes: {exc}")
            is_str.append(False)
            nonblank.append(None)
            length.append(np.nan)
            continue
        if not isinstance(value, str):
            is_str.append(False)
            utf8.append(None)
            detail.append(None)
            nonblank.append(None)
            length.append(np.nan)
            continue
        is_str.append(True)
        bad = _BAD_TEXT.search(value)
        utf8.append(bad is None)
        detail.append(None if bad is None else _around(value, bad.start()))
        stripped = value.strip()
        nonblank.append(bool(stripped))
        # whitespace-only text is reported once, as blank, not also as too short
        length.append(float(len(stripped)) if stripped else np.nan)
    return {
        "is_str": _nullable_bool(is_str),
        "utf8": _nullable_bool(utf8),
        "utf8_detail": pd.Series(detail, dtype=object),
        "nonblank": _nullable_bool(nonblank),
        "len": pd.Series(length, dtype=float),
    }


def _image_facts(series: pd.Series, image_root: str | None, spec: ImageColumn) -> dict:
    """Per-row facts about an image column; None where the image is missing (or where an
    earlier fact already failed). Paths must stay inside ``image_root``; the header's
    pixel count is checked before decoding; every decoder error is a False, not a crash."""
    facts = {name: [] for name in ("type_ok", "path_ok", "file_found", "size_ok", "decodable")}
    seen: dict[Any, dict[str, Any]] = {}

    def judge(value: Any) -> dict[str, Any]:
        out: dict[str, Any] = dict.fromkeys(facts)
        if not isinstance(value, (bytes, bytearray, memoryview, str, Path)):
            out["type_ok"] = False
            return out
        out["type_ok"] = True
        source: Any = bytes(value) if not isinstance(value, (str, Path)) else str(value)
        if isinstance(source, str):
            try:
                resolve_image_path(source, image_root)
            except ImagePathError:
                out["path_ok"] = False
                return out
            except ImageDecodeError:
                out["path_ok"], out["file_found"] = True, False
                return out
            out["path_ok"], out["file_found"] = True, True
        try:
            width, height = image_dimensions(source, image_root)
        except ImageTooLargeError:
            out["size_ok"] = False
            return out
        except ImageDecodeError:
            out["decodable"] = False
            return out
        out["size_ok"] = width * height <= spec.max_pixels
        if not out["size_ok"]:
            return out
        try:
            decode_image(source, image_root, max_pixels=spec.max_pixels, size=spec.size)
            out["decodable"] = True
        except ImageDecodeError:
            out["decodable"] = False
        return out

    for value in series.to_numpy(dtype=object):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            verdict: dict[str, Any] = dict.fromkeys(facts)
        else:
            # Identical images (common: a catalogue photo reused) are judged once.
            key = bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else value
            try:
                verdict = seen[key]
            except (KeyError, TypeError):
                verdict = judge(value)
                try:
                    seen[key] = verdict
                except TypeError:
                    pass
        for name in facts:
            facts[name].append(verdict[name])
    return {name: _nullable_bool(values) for name, values in facts.items()}


def _finite_flags(series: pd.Series) -> pd.Series:
    """True where finite, False where +-inf, None where missing."""
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
    flags = np.where(np.isnan(values), None, np.isfinite(values))
    return pd.Series(flags, dtype=object)


def _embedding_facts(series: pd.Series) -> dict[str, pd.Series]:
    """Length, finiteness and L2 norm of each embedding (-1 / None / NaN when unusable)."""
    values = series.to_numpy(dtype=object)
    n = len(values)
    dims = np.full(n, -1, dtype=np.int64)
    for i, value in enumerate(values):
        if isinstance(value, (list, tuple, np.ndarray)) and np.ndim(value) == 1:
            dims[i] = len(value)
    finite = np.full(n, None, dtype=object)
    norms = np.full(n, np.nan)

    def per_row(rows: np.ndarray) -> None:
        for i in rows:
            try:
                vector = np.asarray(values[i], dtype=np.float64)
            except (TypeError, ValueError):
                finite[i] = False
                continue
            ok = bool(np.isfinite(vector).all())
            finite[i] = ok
            if ok:
                norms[i] = float(np.linalg.norm(vector))

    for dim in np.unique(dims[dims >= 0]):
        rows = np.flatnonzero(dims == dim)
        try:
            matrix = np.asarray(np.stack(values[rows]), dtype=np.float64)
        except (TypeError, ValueError):
            per_row(rows)
            continue
        ok = np.isfinite(matrix).all(axis=1)
        finite[rows] = ok
        norms[rows] = np.where(
            ok, np.linalg.norm(np.where(ok[:, None], matrix, 0.0), axis=1), np.nan
        )
    return {
        "dim": pd.Series(dims),
        "finite": pd.Series(finite, dtype=object),
        "norm": pd.Series(norms, dtype=float),
    }


# Suites -------------------------------------------------------------------------------


def _add(checks: list, expectation, column: str | None, problem: str, show=None) -> None:
    """Append ``expectation`` with, in its meta, what its failure message needs: the
    dataset column, a phrase completing "N of M rows ...", and the column to sample."""
    expectation.meta = {
        "order": len(checks),
        "column": column,
        "problem": problem,
        "show": show or column,
    }
    checks.append(expectation)


def _require_facts(checks: list, column: str, facts: list[tuple[str, str, str]]) -> None:
    """One check per ``(fact, problem, show)``: the per-row column ``<column>__<fact>``
    must be True; a failure reads "N of M rows <problem>", sampling column ``show``."""
    import great_expectations as gx

    for fact, problem, show in facts:
        _add(
            checks,
            gx.expectations.ExpectColumnValuesToBeInSet(
                column=f"{column}__{fact}", value_set=[True]
            ),
            column,
            problem,
            show=show,
        )


def _keys_checks(checks: list, config: DatasetConfig, skipped: set[str]) -> None:
    import great_expectations as gx

    key, ts = config.entity_key, config.timestamp
    if config.entity_type == "int64" and key not in skipped:
        _add(
            checks,
            gx.expectations.ExpectColumnValuesToBeInSet(column=f"{key}__is_int", value_set=[True]),
            key,
            "are not integers (declare entity_type: string for text keys)",
            show=key,
        )
    for column in (key, ts):
        if column not in skipped:
            _add(
                checks,
                gx.expectations.ExpectColumnValuesToNotBeNull(column=column),
                column,
                "are null",
            )
    if key not in skipped and ts not in skipped:
        _add(
            checks,
            gx.expectations.ExpectCompoundColumnsToBeUnique(column_list=[key, ts]),
            f"{key},{ts}",
            f"share their ({key}, {ts}) pair with another row (duplicates)",
        )


def _tabular_checks(checks: list, config: DatasetConfig, skipped: set[str]) -> None:
    import great_expectations as gx

    E = gx.expectations
    for spec in config.numeric:
        c = spec.name
        if c in skipped:
            continue
        if not spec.nullable:
            _add(checks, E.ExpectColumnValuesToNotBeNull(column=c), c, "are null (NaN)")
        _add(
            checks,
            E.ExpectColumnValuesToBeInSet(column=f"{c}__finite", value_set=[True]),
            c,
            "are infinite",
            show=c,
        )
        if spec.min_value is not None or spec.max_value is not None:
            _add(
                checks,
                E.ExpectColumnValuesToBeBetween(
                    column=c, min_value=spec.min_value, max_value=spec.max_value
                ),
                c,
                f"are outside [{spec.min_value}, {spec.max_value}]",
            )
    for spec in config.categorical:
        c = spec.name
        if c in skipped:
            continue
        _add(checks, E.ExpectColumnValuesToNotBeNull(column=c), c, "are null")
        _add(
            checks,
            E.ExpectColumnValuesToBeInSet(column=c, value_set=list(spec.categories)),
            c,
            f"have a category outside {list(spec.categories)}",
        )


def _label_checks(checks: list, config: DatasetConfig, skipped: set[str], required: bool) -> None:
    import great_expectations as gx

    c = config.label
    if c in skipped:
        return
    if required:
        _add(checks, gx.expectations.ExpectColumnValuesToNotBeNull(column=c), c, "are null")
    _add(
        checks,
        gx.expectations.ExpectColumnValuesToBeInSet(column=c, value_set=list(config.classes)),
        c,
        f"have a label outside the classes {list(config.classes)}",
    )


def build_raw_suite(config: DatasetConfig, *, now: datetime, skipped: set[str] = frozenset()):
    """The raw-row suite (a ``gx.ExpectationSuite``), derived from ``config`` only.

    It runs on the frame that ``validate_raw`` derives (``<column>__<fact>`` columns).

    Args:
        config: the dataset declaration.
        now: timestamps after it fail.
        skipped: columns that get no expectations (missing or of the wrong dtype).
    """
    import great_expectations as gx

    E = gx.expectations
    checks: list = []
    _keys_checks(checks, config, skipped)
    ts = config.timestamp
    if ts not in skipped:
        _add(
            checks,
            E.ExpectColumnValuesToBeBetween(column=f"{ts}__epoch_s", max_value=now.timestamp()),
            ts,
            f"are in the future (after {now.isoformat()})",
            show=ts,
        )
    # labels may arrive later: a row without one is stored and scored
    _label_checks(checks, config, skipped, required=False)
    _tabular_checks(checks, config, skipped)
    for spec in config.text:
        c = spec.name
        if c in skipped:
            continue
        if not spec.optional:
            _add(
                checks,
                E.ExpectColumnValuesToNotBeNull(column=f"{c}__is_str"),
                c,
                "have no text (null)",
            )
        _require_facts(
            checks,
            c,
            [
                ("is_str", "are not str (text must be str or None)", c),
                (
                    "utf8",
                    "are not valid UTF-8 (undecodable bytes, lone surrogates or U+FFFD)",
                    f"{c}__utf8_detail",
                ),
                ("nonblank", "are empty or whitespace-only (use None for a missing text)", c),
            ],
        )
        _add(
            checks,
            E.ExpectColumnValuesToBeBetween(
                column=f"{c}__len", min_value=spec.min_chars, max_value=spec.max_chars
            ),
            c,
            f"have a stripped length outside [{spec.min_chars}, {spec.max_chars}] characters",
            show=f"{c}__len",
        )
    for spec in config.images:
        c = spec.name
        if c in skipped:
            continue
        if not spec.optional:
            _add(
                checks,
                E.ExpectColumnValuesToNotBeNull(column=f"{c}__type_ok"),
                c,
                "have no image (null)",
            )
        _require_facts(
            checks,
            c,
            [
                ("type_ok", "are neither image bytes nor a path", c),
                ("path_ok", "name a path outside image_root (absolute, or escaping it with ..)", c),
                ("file_found", "name an image file that does not exist under image_root", c),
                (
                    "size_ok",
                    f"declare more than {spec.max_pixels} pixels (checked before decoding)",
                    c,
                ),
                ("decodable", "cannot be decoded as an image", c),
            ],
        )
    for spec in config.vectors:
        c = spec.name
        if c in skipped:
            continue
        if not spec.optional:
            _add(
                checks,
                E.ExpectColumnValuesToNotBeNull(column=f"{c}__dim_ok"),
                c,
                "have no vector (null)",
            )
        _require_facts(
            checks,
            c,
            [
                ("dim_ok", f"do not hold a 1-d vector of length {spec.dim}", f"{c}__dim"),
                ("finite", "hold NaN, inf or non-numeric values", c),
                ("nonzero", "are all zeros (no direction to normalise)", c),
            ],
        )
    return gx.ExpectationSuite(name=f"{config.name}_raw", expectations=checks)


def _vector_facts(series: pd.Series, dim: int) -> dict[str, pd.Series]:
    """Per-row facts about a precomputed-embedding column; None where the row has none
    (or where an earlier fact already failed)."""
    missing = series.map(lambda v: v is None or (isinstance(v, float) and math.isnan(v))).to_numpy(
        dtype=bool
    )
    facts = _embedding_facts(series)
    dims = facts["dim"].to_numpy()
    dim_ok = np.where(missing, None, dims == dim)
    finite = np.where(missing | (dims != dim), None, facts["finite"].to_numpy(dtype=object))
    norms = facts["norm"].to_numpy()
    usable = ~missing & (dims == dim) & (finite == True)  # noqa: E712 (object array)
    nonzero = np.where(usable, norms > 1e-12, None)
    return {
        "dim": pd.Series(np.where(missing, None, dims), dtype=object),
        "dim_ok": pd.Series(dim_ok, dtype=object),
        "finite": pd.Series(finite, dtype=object),
        "nonzero": pd.Series(nonzero, dtype=object),
    }


def _modalities(config: DatasetConfig) -> list[tuple[str, int]]:
    return (
        [(c, TEXT_DIM) for c in config.text_columns]
        + [(c, IMAGE_DIM) for c in config.image_columns]
        + [(c.name, c.dim) for c in config.vectors]
    )


def build_feature_suite(config: DatasetConfig, *, skipped: set[str] = frozenset()):
    """The feature-frame suite (a ``gx.ExpectationSuite``), derived from ``config`` only.

    Embeddings are checked through derived columns: ``{c}_emb__dim`` (-1 when the value
    is not a 1-d array), ``{c}_emb__finite`` and ``{c}_emb__norm`` (NaN when not finite),
    the norm bounds conditioned on the presence flag with a pandas ``row_condition``.
    """
    import great_expectations as gx

    E = gx.expectations
    checks: list = []
    _keys_checks(checks, config, skipped)
    _label_checks(checks, config, skipped, required=False)
    _tabular_checks(checks, config, skipped)
    low, high = NORM_BOUNDS
    for c, dim in _modalities(config):
        emb, present = config.embedding_column(c), config.presence_column(c)
        if present not in skipped:
            _add(checks, E.ExpectColumnValuesToNotBeNull(column=present), present, "are null")
            _add(
                checks,
                E.ExpectColumnValuesToBeInSet(column=present, value_set=[0, 1]),
                present,
                "are not 0 or 1",
            )
        if emb in skipped:
            continue
        _add(
            checks,
            E.ExpectColumnValuesToBeInSet(column=f"{emb}__dim", value_set=[dim]),
            emb,
            f"do not hold a 1-d embedding of length {dim}",
            show=f"{emb}__dim",
        )
        _add(
            checks,
            E.ExpectColumnValuesToBeInSet(column=f"{emb}__finite", value_set=[True]),
            emb,
            "hold NaN, inf or non-numeric values",
        )
        if present in skipped:
            continue
        _add(
            checks,
            E.ExpectColumnValuesToBeBetween(
                column=f"{emb}__norm",
                min_value=low,
                max_value=high,
                row_condition=f"{present}==1",
                condition_parser="pandas",
            ),
            emb,
            f"are flagged present ({present}=1) but have an L2 norm outside [{low}, {high}]",
            show=f"{emb}__norm",
        )
        _add(
            checks,
            E.ExpectColumnValuesToBeBetween(
                column=f"{emb}__norm",
                min_value=0.0,
                max_value=0.0,
                row_condition=f"{present}==0",
                condition_parser="pandas",
            ),
            emb,
            f"are flagged absent ({present}=0) but the embedding is not all zeros",
            show=f"{emb}__norm",
        )
    return gx.ExpectationSuite(name=f"{config.name}_features", expectations=checks)


# Check frames -------------------------------------------------------------------------


def _base_frame(frame: pd.DataFrame, config: DatasetConfig, skipped: set[str]) -> dict:
    data: dict[str, pd.Series] = {}
    for column in (config.entity_key, config.timestamp, *config.tabular_columns):
        if column not in skipped and column in frame.columns:
            data[column] = frame[column].reset_index(drop=True)
    key = config.entity_key
    if key in data and config.entity_type == "int64":
        flags = data[key].map(_is_int_key) if data[key].dtype == object else None
        data[f"{key}__is_int"] = (
            pd.Series([True] * len(data[key]), dtype=object)
            if flags is None
            else flags.astype(object)
        )
    for spec in config.numeric:
        if spec.name in data:
            data[f"{spec.name}__finite"] = _finite_flags(data[spec.name])
    label = config.label
    if label not in skipped and label in frame.columns:
        values = frame[label].reset_index(drop=True)
        data[label] = values.where(values.isna(), values.astype(str)).astype(object)
    for column in (label, *config.categorical_columns):
        if column in data:
            data[column] = data[column].map(_escape_surrogates)
    return data


def _escape_surrogates(value: Any) -> Any:
    """Strings GX can hash: lone surrogates become backslash escapes."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _raw_check_frame(frame: pd.DataFrame, config: DatasetConfig, skipped: set[str]):
    data = _base_frame(frame, config, skipped)
    ts = config.timestamp
    if ts in data:
        stamps = data[ts]
        epoch = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
        data[f"{ts}__epoch_s"] = epoch
    # Text and image values stay out of the GX frame: GX hashes the whole frame, which
    # fails on lone surrogates and costs time on image bytes. Samples read the source.
    for c in config.text_columns:
        if c not in skipped:
            for fact, values in _text_facts(frame[c]).items():
                data[f"{c}__{fact}"] = values
    for spec in config.images:
        if spec.name not in skipped:
            for fact, values in _image_facts(frame[spec.name], config.image_root, spec).items():
                data[f"{spec.name}__{fact}"] = values
    for spec in config.vectors:
        if spec.name not in skipped:
            for fact, values in _vector_facts(frame[spec.name], spec.dim).items():
                data[f"{spec.name}__{fact}"] = values
    return pd.DataFrame(data)


def _feature_check_frame(frame: pd.DataFrame, config: DatasetConfig, skipped: set[str]):
    data = _base_frame(frame, config, skipped)
    for c, _ in _modalities(config):
        emb, present = config.embedding_column(c), config.presence_column(c)
        if present not in skipped:
            data[present] = frame[present].reset_index(drop=True)
        if emb not in skipped:
            for fact, values in _embedding_facts(frame[emb]).items():
                data[f"{emb}__{fact}"] = values
    return pd.DataFrame(data)


# Running ------------------------------------------------------------------------------


def _context(context_dir: Path | None):
    """A GX context, created on first use and reused in this process: one ephemeral
    context, or one file context per folder. Callers hold ``_GX_LOCK``."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    root = None if context_dir is None else Path(context_dir).resolve()
    if root in _CONTEXTS:
        return _CONTEXTS[root]
    if root is None:
        context = gx.get_context(mode="ephemeral")
    else:
        root.mkdir(parents=True, exist_ok=True)
        context = gx.get_context(mode="file", project_root_dir=root)
    # Saving a variable rewrites the project config: do it once per context.
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    _CONTEXTS[root] = context
    return context


def _batch_definition(context, datasource_name: str, asset_name: str):
    datasource = context.data_sources.add_or_update_pandas(datasource_name)
    try:
        asset = datasource.get_asset(asset_name)
    except LookupError:
        asset = datasource.add_dataframe_asset(asset_name)
    try:
        return asset.get_batch_definition("whole")
    except (KeyError, LookupError):
        return asset.add_batch_definition_whole_dataframe("whole")


def _json_value(value: Any) -> Any:
    """A short JSON-safe rendering of one offending value."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, (np.ndarray, list, tuple)):
        return f"<array of length {len(value)}>"
    if isinstance(value, (pd.Timestamp, datetime)):
        return value.isoformat()
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else str(value)
    # Lone surrogates cannot be written as UTF-8: show them escaped.
    text = str(value).encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= 80 else text[:77] + "..."


def _sample(
    check_frame: pd.DataFrame,
    source: pd.DataFrame,
    rows: list[int],
    key: str,
    column: str | None,
) -> list[dict]:
    """Offending rows: the entity key (or row number) and the value at fault."""

    def value(name: str, row: int) -> Any:
        if name in check_frame.columns:
            return _json_value(check_frame[name].iat[row])
        return _json_value(source[name].iat[row])

    names = [] if column is None else column.split(",")
    names = [n for n in names if n != key and (n in check_frame.columns or n in source.columns)]
    sample = []
    for row in rows[:SAMPLE_SIZE]:
        entry: dict[str, Any] = {}
        if key in check_frame.columns:
            entry[key] = value(key, row)
        else:
            entry["row"] = int(row)
        entry.update({name: value(name, row) for name in names})
        sample.append(entry)
    return sample


def _exception_message(info: Any) -> str | None:
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for nested in info.values():
        if isinstance(nested, dict) and nested.get("raised_exception"):
            return str(nested.get("exception_message"))
    return None


def _run(
    *,
    suite_name: str,
    config: DatasetConfig,
    frame: pd.DataFrame,
    roles: dict[str, str],
    required: set[str],
    build_suite: Callable[[set[str]], Any],
    build_frame: Callable[[set[str]], pd.DataFrame],
    context_dir: Path | None,
    batch_name: str | None = None,
) -> ValidationResult:
    failures, skipped = _precheck(frame, roles, required)
    files: dict[str, str | None] = {}
    if len(frame) > 0:
        suite = build_suite(skipped)
        check_frame = build_frame(skipped)
        gx_failures, files = _run_gx(
            suite, config, check_frame, frame.reset_index(drop=True), context_dir, batch_name
        )
        failures.extend(gx_failures)
    return ValidationResult(
        suite=suite_name,
        success=not failures,
        n_rows=len(frame),
        failures=failures,
        batch=batch_name,
        **files,
    )


def _run_gx(
    suite,
    config: DatasetConfig,
    check_frame: pd.DataFrame,
    source: pd.DataFrame,
    context_dir: Path | None,
    batch_name: str | None = None,
) -> tuple[list[ValidationFailure], dict[str, str | None]]:
    """Run ``suite``; with ``context_dir``, keep the result under the run name
    ``batch_name`` (not GX's ``__none__``), rebuild Data Docs and write the batch's
    offline page. Returns the failures and the paths of what was written."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    suite_name = suite.name
    # COMPLETE: every offending row's position, for row-level quarantine
    result_format = {"result_format": "COMPLETE", "partial_unexpected_count": SAMPLE_SIZE}
    files: dict[str, str | None] = {}
    run_time = datetime.now(UTC)
    with _GX_LOCK:
        context = _context(context_dir)
        batch_definition = _batch_definition(context, f"mmops_{config.name}", suite_name)
        if context_dir is None:
            # Nothing to keep: validate the batch directly, skipping the stores.
            batch = batch_definition.get_batch(batch_parameters={"dataframe": check_frame})
            outcome = batch.validate(suite, result_format=result_format)
        else:
            # Stored suite, definition and result, so that Data Docs can render them.
            suite = context.suites.add_or_update(suite)
            definition = context.validation_definitions.add_or_update(
                gx.ValidationDefinition(name=suite_name, data=batch_definition, suite=suite)
            )
            outcome = definition.run(
                batch_parameters={"dataframe": check_frame},
                result_format=result_format,
                run_id=RunIdentifier(run_name=batch_name or suite_name, run_time=run_time),
            )
            context.build_data_docs()
            urls = context.get_docs_sites_urls()
            if urls and urls[0].get("site_url"):
                files["data_docs_path"] = str(urls[0]["site_url"]).removeprefix("file://")
            stored = sorted(
                Path(context.root_directory).glob(
                    f"uncommitted/validations/{suite_name}/"
                    f"{_run_dir(batch_name or suite_name)}/*/*.json"
                )
            )
            files["result_json"] = str(stored[-1]) if stored else None
            checks = [
                CheckOutcome(
                    expectation=r.expectation_config.type,
                    column=r.expectation_config.meta["column"],
                    problem=r.expectation_config.meta["problem"],
                    success=bool(r.success),
                    unexpected_count=int((r.result or {}).get("unexpected_count") or 0),
                )
                for r in sorted(outcome.results, key=lambda r: r.expectation_config.meta["order"])
            ]
            files["summary_page"] = str(
                write_batch_page(
                    Path(context_dir),
                    batch_name or suite_name,
                    suite_name,
                    run_time.isoformat(timespec="seconds"),
                    len(check_frame),
                    checks,
                )
            )
    failures: list[ValidationFailure] = []
    n = len(check_frame)
    key = config.entity_key
    for result in sorted(outcome.results, key=lambda r: r.expectation_config.meta["order"]):
        if result.success:
            continue
        kind = result.expectation_config.type
        meta = result.expectation_config.meta
        column = meta["column"]
        error = _exception_message(result.exception_info)
        if error is not None:
            failures.append(
                ValidationFailure(
                    expectation=kind,
                    column=column,
                    message=f"{column}: the check could not run: {error}",
                    unexpected_count=0,
                    sample=[],
                )
            )
            continue
        details = result.result or {}
        count = int(details.get("unexpected_count") or 0)
        rows = [int(i) for i in details.get("unexpected_index_list") or []]
        failures.append(
            ValidationFailure(
                expectation=kind,
                column=column,
                message=f"{column}: {count} of {n} rows {meta['problem']}",
                unexpected_count=count,
                sample=_sample(check_frame, source, rows, key, meta["show"]),
                reason=f"{column}: {meta['problem']}",
                rows=rows,
            )
        )
    return failures, files


def _run_dir(run_name: str) -> str:
    """The folder GX's file store gives a run name (its key escapes path characters)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "*" for ch in run_name)


def _entity_role(config: DatasetConfig) -> str:
    return "entity" if config.entity_type == "int64" else "entity_string"


def _raw_roles(config: DatasetConfig) -> dict[str, str]:
    roles = {
        config.entity_key: _entity_role(config),
        config.timestamp: "timestamp",
        config.label: "label",
    }
    roles.update({c: "text" for c in config.text_columns})
    roles.update({c: "image" for c in config.image_columns})
    roles.update({c: "embedding" for c in config.vector_columns})
    roles.update({c: "numeric" for c in config.numeric_columns})
    roles.update({c: "categorical" for c in config.categorical_columns})
    return roles


def validate_raw(
    frame: pd.DataFrame,
    config: DatasetConfig,
    *,
    now: datetime | None = None,
    context_dir: Path | None = None,
    batch_name: str | None = None,
) -> ValidationResult:
    """Validate raw rows against the raw suite derived from ``config``.

    Args:
        frame: raw rows with the ``config.raw_columns``.
        config: the dataset declaration.
        now: timestamps after it are failures (default: the current UTC time).
        context_dir: a folder for a GX file context (suite, results and Data Docs are
            kept there, with an offline page per batch under ``summaries/``); None runs
            on an ephemeral context.
        batch_name: the batch's name (dataset and window): the validation's run name.

    Returns:
        The typed result; it never raises for bad data (see ``check_batch``).
    """
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    roles = _raw_roles(config)
    return _run(
        suite_name=f"{config.name}_raw",
        config=config,
        frame=frame,
        roles=roles,
        required=set(roles) - {config.label},
        build_suite=lambda skipped: build_raw_suite(config, now=now, skipped=skipped),
        build_frame=lambda skipped: _raw_check_frame(frame, config, skipped),
        context_dir=context_dir,
        batch_name=batch_name,
    )


def validate_features(
    frame: pd.DataFrame,
    config: DatasetConfig,
    *,
    context_dir: Path | None = None,
    batch_name: str | None = None,
) -> ValidationResult:
    """Validate an embedded feature frame against the feature suite derived from ``config``.

    The label column is optional (unlabeled scoring frames); when present its values
    must be among ``config.classes`` (nulls allowed).

    Returns:
        The typed result; it never raises for bad data (see ``check_batch``).
    """
    roles = {
        config.entity_key: _entity_role(config),
        config.timestamp: "timestamp",
        config.label: "label",
    }
    roles.update({c: "numeric" for c in config.numeric_columns})
    roles.update({c: "categorical" for c in config.categorical_columns})
    for c, _ in _modalities(config):
        roles[config.embedding_column(c)] = "embedding"
        roles[config.presence_column(c)] = "numeric"
    required = set(roles) - {config.label}
    return _run(
        suite_name=f"{config.name}_features",
        config=config,
        frame=frame,
        roles=roles,
        required=required,
        build_suite=lambda skipped: build_feature_suite(config, skipped=skipped),
        build_frame=lambda skipped: _feature_check_frame(frame, config, skipped),
        context_dir=context_dir,
        batch_name=batch_name,
    )


# The gate -----------------------------------------------------------------------------


def _value_kind(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (list, tuple, np.ndarray)):
        return "sequence"
    return type(value).__name__


def _write_quarantine(
    frame: pd.DataFrame, directory: Path, filename: str = "batch.parquet"
) -> list[str]:
    """Write every row to ``batch.parquet``.

    Parquet holds one type per column: a column mixing value types (say str and bytes)
    is stored as Arrow can (or as repr strings) and the exact frame also goes to
    ``batch.pkl``. Returns the names of such columns.
    """
    import pyarrow as pa

    directory.mkdir(parents=True, exist_ok=True)
    inexact = []
    for position, column in enumerate(frame.columns):
        values = frame.iloc[:, position]
        if pd.api.types.is_object_dtype(values.dtype):
            kinds = {_value_kind(v) for v in values.to_numpy(dtype=object)} - {None}
            if len(kinds) > 1:
                inexact.append(str(column))
    path = directory / filename
    try:
        frame.to_parquet(path)
    except (pa.ArrowException, ValueError, TypeError):
        safe = frame.copy()
        safe.columns = [str(c) for c in safe.columns]
        for position, column in enumerate(safe.columns):
            values = safe.iloc[:, position]
            try:
                pa.array(values, from_pandas=True)
            except (pa.ArrowException, ValueError, TypeError):
                safe.isetitem(position, values.map(lambda v: None if v is None else repr(v)))
                inexact.append(column)
        safe.to_parquet(path)
        inexact = sorted(set(inexact)) or ["<column names>"]
    if inexact:
        frame.to_pickle(directory / Path(filename).with_suffix(".pkl"))
    return inexact


def check_batch(
    frame: pd.DataFrame,
    config: DatasetConfig,
    *,
    kind: Literal["raw", "features"],
    quarantine_dir: Path,
    now: datetime | None = None,
    context_dir: Path | None = None,
    batch_name: str,
) -> ValidationResult:
    """The data-quality gate: validate a batch and stop it when it fails.

    On failure the whole batch goes to ``quarantine_dir/<batch_name>-<UTC stamp>/`` as
    ``batch.parquet`` (every row) with ``result.json`` (plus ``batch.pkl`` when a column
    mixes value types that Parquet cannot keep apart), and ``DataQualityError`` is raised.

    Returns:
        The passing result (with ``data_docs_path`` when ``context_dir`` is given).

    Raises:
        DataQualityError: the batch failed; ``.result`` holds the failures.
    """
    if kind == "raw":
        result = validate_raw(
            frame, config, now=now, context_dir=context_dir, batch_name=batch_name
        )
    elif kind == "features":
        result = validate_features(frame, config, context_dir=context_dir, batch_name=batch_name)
    else:
        raise ValueError(f"kind must be 'raw' or 'features', got {kind!r}")
    if result.success:
        return result
    _quarantine_batch(frame, result, Path(quarantine_dir), batch_name)


def _quarantine_batch(frame, result: ValidationResult, quarantine_dir: Path, batch_name: str):
    """Keep every row of a failed batch with the result as JSON; raise DataQualityError."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    directory = Path(quarantine_dir) / f"{batch_name}-{stamp}"
    inexact = _write_quarantine(frame, directory)
    result = result.model_copy(
        update={"quarantine_path": str(directory), "n_quarantined": result.n_rows}
    )
    payload = result.model_dump(mode="json")
    if inexact:
        payload["inexact_parquet_columns"] = inexact  # exact values are in batch.pkl
    (directory / "result.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
    raise DataQualityError(result)


class RowGateOutcome(BaseModel):
    """What the row-level gate let through and what it set aside."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    passed: Any = Field(description="The rows that passed (a DataFrame), index reset.")
    result: ValidationResult
    n_quarantined: int
    reasons: dict[str, int] = Field(description="Quarantined rows per reason.")
    bad_rows: list[int] = Field(default_factory=list, description="Positions set aside.")


def gate_rows(
    frame: pd.DataFrame,
    config: DatasetConfig,
    *,
    kind: Literal["raw", "features"],
    quarantine_dir: Path,
    batch_name: str,
    max_bad_share: float | None = None,
    now: datetime | None = None,
    context_dir: Path | None = None,
) -> RowGateOutcome:
    """The row-level data-quality gate: bad rows go to quarantine with their reasons and
    the rest of the batch proceeds.

    Rows failing an expectation are written to ``quarantine_dir/<batch_name>-<stamp>/
    rows.parquet`` with a ``quarantine_reasons`` column (plus ``result.json``). The whole
    batch is quarantined instead (and ``DataQualityError`` raised) when a failure concerns
    the batch as a whole (a missing column, a column of the wrong dtype, an empty batch)
    or when more than ``max_bad_share`` of its rows are bad (default:
    ``config.max_bad_row_share``).

    Raises:
        DataQualityError: the whole batch was quarantined; ``.result`` says why.
    """
    bound = config.max_bad_row_share if max_bad_share is None else max_bad_share
    if kind == "raw":
        result = validate_raw(
            frame, config, now=now, context_dir=context_dir, batch_name=batch_name
        )
    elif kind == "features":
        result = validate_features(frame, config, context_dir=context_dir, batch_name=batch_name)
    else:
        raise ValueError(f"kind must be 'raw' or 'features', got {kind!r}")
    frame = frame.reset_index(drop=True)
    if result.success:
        return RowGateOutcome(passed=frame, result=result, n_quarantined=0, reasons={})
    whole = [f for f in result.failures if not f.rows]
    per_row: dict[int, list[str]] = {}
    for failure in result.failures:
        for row in failure.rows:
            per_row.setdefault(row, []).append(failure.reason or failure.message)
    share = len(per_row) / max(len(frame), 1)
    if whole or share > bound:
        if not whole:
            result = result.model_copy(
                update={
                    "failures": [
                        *result.failures,
                        ValidationFailure(
                            expectation="max_bad_row_share",
                            column=None,
                            message=f"{len(per_row)} of {len(frame)} rows are bad "
                            f"({share:.0%}), more than max_bad_row_share={bound:.0%}: "
                            "the whole batch is quarantined",
                            unexpected_count=len(frame),
                            sample=[],
                            reason="batch: too many bad rows",
                        ),
                    ]
                }
            )
        _quarantine_batch(frame, result, Path(quarantine_dir), batch_name)
    bad = np.zeros(len(frame), dtype=bool)
    bad[sorted(per_row)] = True
    rejected = frame[bad].copy()
    rejected["quarantine_reasons"] = ["; ".join(per_row[i]) for i in np.flatnonzero(bad)]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    directory = Path(quarantine_dir) / f"{batch_name}-{stamp}"
    _write_quarantine(rejected.reset_index(drop=True), directory, "rows.parquet")
    result = result.model_copy(
        update={"quarantine_path": str(directory), "n_quarantined": int(bad.sum())}
    )
    (directory / "result.json").write_text(
        json.dumps(result.model_dump(mode="json"), indent=2), encoding="utf-8"
    )
    reasons: dict[str, int] = {}
    for values in per_row.values():
        for reason in values:
            reasons[reason] = reasons.get(reason, 0) + 1
    return RowGateOutcome(
        passed=frame[~bad].reset_index(drop=True),
        result=result,
        n_quarantined=int(bad.sum()),
        reasons=reasons,
        bad_rows=[int(i) for i in np.flatnonzero(bad)],
    )
