"""A /predict/batch body, records or columns, to validated columns: checked once, column by column.

The request models (`deployment.schemas`) are the contract: what they accept is served, what
they refuse is refused with their messages, naming the field and the row. Run over a thousand
records they cost more than everything else a batch does (about 3 µs a record, a Python call
per integer), so a body first meets `fast_values`: one pass per column over the parsed JSON
(the JSON type of every value, each column's smallest and largest value against the declared
bounds, each distinct category once) that accepts only bodies the request models accept too,
with the same values. Anything else, odd or wrong, goes to the request models, which refuse it
naming field and row, or accept it (a whole number written 2.0, say): then their values are
used. A test holds the two to each other on generated bodies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np

from deployment.schemas import BIGINT_MAX, RequestModels
from machine_learning_engineering.schema import Feature, FeatureSchema

NONE = type(None)
# The largest finite double: a number beyond it is no float (the request models refuse it).
FLOAT_MAX = 1.7976931348623157e308
# As the request models' `Category`: at most this long, no NUL.
CATEGORY_MAX_LENGTH = 200


class BodyError(ValueError):
    """A body refused before its values are looked at: its shape, its size."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


@dataclass(frozen=True)
class Batch:
    """A validated batch: the clients' idx and, per feature, its values (None for missing),
    in the order of the body; `columnar` says which body it came in (and how to answer)."""

    idx: list[int]
    values: dict[str, list[Any]]
    columnar: bool

    @property
    def rows(self) -> int:
        return len(self.idx)

    def field(self, row: int, name: str) -> str:
        """Where row `row`'s feature `name` ("": the row as a whole) sat in the body."""
        if self.columnar:
            return f"{name}[{row}]" if name else f"[{row}]"
        return f"[{row}].features.{name}" if name else f"[{row}].features"


def read_batch(body: Any, models: RequestModels, schema: FeatureSchema, max_records: int, max_rows: int) -> Batch:
    """The batch in a parsed body; BodyError for a wrong shape or size, pydantic's
    ValidationError (naming field and row) for a value the request models refuse."""
    if isinstance(body, list):
        if not 1 <= len(body) <= max_records:
            raise BodyError("body", f"send 1 to {max_records} records, not {len(body)}")
        fast = fast_records(body, schema)
        if fast is not None:
            return Batch(*fast, columnar=False)
        records = models.records.model_validate(body).model_dump()
        features = [record["features"] for record in records]
        values = {name: [row[name] for row in features] for name in schema.names}
        return Batch([record["idx"] for record in records], values, columnar=False)
    if isinstance(body, dict):
        if all(isinstance(column, list) for column in body.values()):
            lengths = {name: len(column) for name, column in body.items()}
            if len(set(lengths.values())) > 1:
                shown = ", ".join(f"{name}={n}" for name, n in lengths.items())
                raise BodyError("body", f"every column needs one value per client; the columns have {shown} values")
            rows = next(iter(lengths.values()), 0)
            if not 1 <= rows <= max_rows:
                raise BodyError("body", f"send 1 to {max_rows} rows in columns, not {rows}")
        fast = fast_columns(body, schema)
        if fast is not None:
            return Batch(*fast, columnar=True)
        columns = models.columns.model_validate(body).model_dump()
        return Batch(columns["idx"], {name: columns[name] for name in schema.names}, columnar=True)
    raise BodyError("body", "send a JSON array of records or a JSON object of columns")


def fast_records(body: list[Any], schema: FeatureSchema) -> tuple[list[int], dict[str, list[Any]]] | None:
    """(idx, values per feature) of records the request models accept as they are; None when
    anything is unusual (then they decide)."""
    # Every pass runs in C (map, itemgetter): a record costs a few hundred nanoseconds.
    top = _fields(body, ("idx", "features"))
    if top is None:
        return None
    idx, features = top
    columns = _fields(features, schema.names)
    if columns is None:
        return None
    return fast_values(idx, dict(zip(schema.names, columns, strict=True)), schema)


def _fields(objects: list[Any], keys: Sequence[str]) -> list[list[Any]] | None:
    """Per key, its value in every object, when every object is a dict (not a subclass) with
    exactly `keys` (as many keys, each of them there); else None."""
    if set(map(type, objects)) != {dict} or set(map(len, objects)) != {len(keys)}:
        return None
    try:
        return [list(map(itemgetter(key), objects)) for key in keys]
    except KeyError:
        return None


def fast_columns(body: Mapping[str, Any], schema: FeatureSchema) -> tuple[list[int], dict[str, list[Any]]] | None:
    """`fast_records` for a columnar body (its lengths already checked)."""
    if body.keys() != {"idx", *schema.names}:
        return None
    return fast_values(body["idx"], {f.name: body[f.name] for f in schema}, schema)


def fast_values(
    idx: Any, values: dict[str, Any], schema: FeatureSchema
) -> tuple[list[int], dict[str, list[Any]]] | None:
    """The columns when every value is one the request models take unchanged, else None."""
    if type(idx) is not list or not idx or set(map(type, idx)) != {int} or min(idx) < 0 or max(idx) > BIGINT_MAX:
        return None
    for feature in schema:
        column = values[feature.name]
        if type(column) is not list or not _plain(column, feature):
            return None
    return idx, values


def _plain(column: list[Any], feature: Feature) -> bool:
    kinds = set(map(type, column))
    missing = NONE in kinds
    if missing and not feature.nullable:
        return False
    kinds.discard(NONE)
    if feature.kind == "category":
        if not kinds <= {str}:
            return False
        distinct = set(column)
        distinct.discard(None)
        return all(len(value) <= CATEGORY_MAX_LENGTH and "\x00" not in value for value in distinct)
    if not kinds <= ({int} if feature.kind == "integer" else {int, float}):  # bool is a type of its own
        return False
    present = [value for value in column if value is not None] if missing else column
    if not present:
        return True
    low, high = min(present), max(present)
    # JSON has no NaN (the parser refuses the token), but 1e400 parses as infinity and 1 followed
    # by 400 zeros as an integer no double holds: beyond the largest double either way (Python
    # compares an int with a float exactly, where math.isinf(int) would raise OverflowError).
    if feature.kind == "number" and (low < -FLOAT_MAX or high > FLOAT_MAX):
        return False
    return not (
        (feature.minimum is not None and low < feature.minimum)
        or (feature.maximum is not None and high > feature.maximum)
    )


def to_columns(schema: FeatureSchema, values: Mapping[str, list[Any]]) -> dict[str, np.ndarray[Any, Any]]:
    """Validated values per feature as `model.Columns`: numbers float64 with NaN for None,
    categories object arrays of str with None. Nothing is checked again."""
    out: dict[str, np.ndarray[Any, Any]] = {}
    for feature in schema:
        column = values[feature.name]
        if feature.kind == "category":
            out[feature.name] = np.empty(len(column), dtype=object)
            out[feature.name][:] = column
        elif None in column:
            out[feature.name] = np.array([np.nan if v is None else v for v in column], dtype=np.float64)
        else:
            out[feature.name] = np.array(column, dtype=np.float64)
    return out
