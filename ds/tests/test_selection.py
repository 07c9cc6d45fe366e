from __future__ import annotations

from data_science.selection import compare_models


def test_three_families_are_compared_on_the_same_folds(feature_frame) -> None:
    table = compare_models(feature_frame, folds=3, sample=3_000)
    assert set(table["model"]) == {"logistic regression", "random forest", "histogram gradient boosting"}
    assert (table["roc_auc"] > 0.6).all()
    assert table["roc_auc"].is_monotonic_decreasing
