"""FeatureSchema.columns: a request's row takes its own short path; it must give what the
many-row path gives, type for type and value for value."""

from __future__ import annotations

import math

import numpy as np

from machine_learning_engineering.schema import Feature, FeatureSchema

SCHEMA = FeatureSchema(
    (
        Feature("count", "integer", "a count", 1),
        Feature("kind", "category", "a category", "c"),
        Feature("score", "number", "a score", 0.5),
    )
)
ROWS = [
    {"count": 3, "kind": "c", "score": 0.25},
    {"count": None, "kind": None, "score": -0.0},
    {"count": 2**40, "kind": "", "score": float("nan")},
    {"count": -1, "kind": "a" * 300, "score": 1e300},
]


def test_one_row_gives_the_columns_the_many_row_path_gives() -> None:
    together = SCHEMA.columns(ROWS)
    for i, row in enumerate(ROWS):
        alone = SCHEMA.columns([row])
        assert list(alone) == SCHEMA.names == list(together)
        for name, column in alone.items():
            assert column.dtype == together[name].dtype and column.shape == (1,)
            a, b = column[0], together[name][i]
            if isinstance(b, float) and math.isnan(b):
                assert math.isnan(a)
            else:
                assert a == b and type(a) is type(b)
                if name == "score":
                    assert np.signbit(a) == np.signbit(b)  # -0.0 stays -0.0
    assert SCHEMA.columns([ROWS[1]])["kind"][0] is None  # missing stays None, not NaN or "None"
    assert SCHEMA.columns([{"count": 1, "kind": ("x", "y"), "score": 0.0}])["kind"].shape == (1,)  # one object


def test_no_rows_give_empty_columns() -> None:
    columns = SCHEMA.columns([])
    assert {name: (c.dtype.kind, len(c)) for name, c in columns.items()} == {
        "count": ("f", 0),
        "kind": ("O", 0),
        "score": ("f", 0),
    }
