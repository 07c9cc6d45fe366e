from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_science.features import FeatureError, validate_features, validate_labels

ROW = {"attr_a": 1, "attr_b": "c", "scd_a": 0.55, "scd_b": 3}


def frame(**changes) -> pd.DataFrame:
    return pd.DataFrame([ROW, {**ROW, **changes}])


def test_clean_frame_comes_back_in_contract_order_and_dtypes() -> None:
    out = validate_features(
        pd.DataFrame([{"idx": 1, "scd_b": 3, "scd_a": 0.5, "attr_b": "a", "attr_a": 2, "label": 0}])
    )
    assert list(out.columns) == ["attr_a", "attr_b", "scd_a", "scd_b"]
    assert out.dtypes.astype(str).tolist() == ["float64", "object", "float64", "float64"]


def test_every_feature_may_be_missing() -> None:
    out = validate_features(frame(attr_a=None, attr_b=np.nan, scd_a=None, scd_b=np.nan))
    assert out.isna().to_numpy().tolist() == [[False] * 4, [True] * 4]


def test_errors_name_the_client_idx_when_the_frame_has_one() -> None:
    with pytest.raises(FeatureError, match="attr_a must be a number: 'abc' in client idx 1007"):
        validate_features(frame(attr_a="abc").assign(idx=[1003, 1007]))
    with pytest.raises(FeatureError, match="label must be 0 or 1: 2 in client idx 8"):
        validate_labels(pd.DataFrame({"idx": [5, 8], "label": [0, 2]}))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"attr_a": "abc"}, r"attr_a must be a number: 'abc' in row 1"),
        ({"attr_a": 2.5}, r"attr_a must be a whole number: 2.5 in row 1"),
        ({"attr_a": True}, r"attr_a must be a number, not a boolean"),
        ({"attr_b": 7}, r"attr_b must be text: 7 in row 1"),
        ({"scd_a": float("inf")}, r"scd_a must be finite: infinity in row 1"),
        ({"scd_a": "x"}, r"scd_a must be a number: 'x' in row 1"),
        ({"scd_b": 1.5}, r"scd_b must be a whole number"),
    ],
)
def test_bad_values_name_column_row_and_value(changes, message) -> None:
    with pytest.raises(FeatureError, match=message):
        validate_features(frame(**changes))


def test_missing_column_and_wrong_container() -> None:
    with pytest.raises(FeatureError, match=r"missing feature column.s.: scd_a, scd_b"):
        validate_features(pd.DataFrame([{"attr_a": 1, "attr_b": "a"}]))
    with pytest.raises(FeatureError, match="features must be a pandas DataFrame, not dict"):
        validate_features(ROW)  # type: ignore[arg-type]
    with pytest.raises(FeatureError, match="no rows to score"):
        validate_features(pd.DataFrame(columns=list(ROW)))


def test_labels_must_be_binary() -> None:
    assert validate_labels(pd.DataFrame({"label": [0, 1]})).tolist() == [0, 1]
    with pytest.raises(FeatureError, match="label must be 0 or 1: 2 in row 1"):
        validate_labels(pd.DataFrame({"label": [0, 2]}))
