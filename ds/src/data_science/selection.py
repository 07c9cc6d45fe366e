"""The evidence behind the estimator: model families compared by cross-validation.

Used by the model benchmark and the EDA notebook, so the README's table and the notebook's
come from the same code.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from data_science.features import CATEGORICAL, NUMERIC, validate_features, validate_labels
from data_science.model import build_pipeline


def candidates(seed: int) -> dict[str, Pipeline]:
    numeric = make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler())
    one_hot = ColumnTransformer(
        [("category", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL), ("number", numeric, NUMERIC)]
    )
    return {
        "logistic regression": Pipeline([("prep", one_hot), ("model", LogisticRegression(max_iter=1000))]),
        "random forest": Pipeline(
            [
                ("prep", one_hot),
                ("model", RandomForestClassifier(200, min_samples_leaf=20, n_jobs=-1, random_state=seed)),
            ]
        ),
        "histogram gradient boosting": build_pipeline(seed),
    }


def compare_models(frame: pd.DataFrame, folds: int = 5, sample: int | None = 50_000, seed: int = 42) -> pd.DataFrame:
    """Cross-validated ROC AUC, log loss, accuracy, F1 (at 0.5) and fit time per family."""
    if sample is not None and len(frame) > sample:
        frame = frame.sample(sample, random_state=seed)
    x, y = validate_features(frame), validate_labels(frame)
    scoring = {"roc_auc": "roc_auc", "log_loss": "neg_log_loss", "accuracy": "accuracy", "f1": "f1"}
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    rows = []
    for name, pipeline in candidates(seed).items():
        started = time.perf_counter()
        scores = cross_validate(pipeline, x, y, cv=split, scoring=scoring)
        rows.append(
            {
                "model": name,
                "roc_auc": np.mean(scores["test_roc_auc"]),
                "roc_auc_std": np.std(scores["test_roc_auc"]),
                "log_loss": -np.mean(scores["test_log_loss"]),
                "accuracy": np.mean(scores["test_accuracy"]),
                "f1_at_half": np.mean(scores["test_f1"]),
                "fit_seconds": np.mean(scores["fit_time"]),
                "total_seconds": time.perf_counter() - started,
            }
        )
    return pd.DataFrame(rows).sort_values("roc_auc", ascending=False).reset_index(drop=True)
