"""Model versions that must never serve, built from a fitted scikit-learn model of the stack
(an MLEModel with `pipeline_`, `threshold_`, `evaluation_`): the registry's and the API's tests
check that each is refused with its reason, and that something else serves instead. And one
old version that must still serve: saved as before out-of-distribution gates existed."""

from __future__ import annotations

import copy
import sys
import types
from pathlib import Path
from typing import Any

import pandas as pd

from machine_learning_engineering import registry
from machine_learning_engineering.model import MLEModel


def no_skill_version(fitted: MLEModel, model_dir: Path) -> str:
    """Flagged no skill, and every label it gives is 1."""
    model: Any = copy.deepcopy(fitted)
    model.threshold_ = 0.0
    model.evaluation_ = {"has_skill": False, "verdict": "NO SKILL: made so", "metrics": {"roc_auc": 0.5}}
    return str(model.save(model_dir).name)


def five_feature_version(fitted: MLEModel, model_dir: Path, frame: pd.DataFrame) -> str:
    """Trained on a fifth column the serving schema does not have: every request would fail."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline

    model: Any = copy.deepcopy(fitted)
    kinds = model.feature_schema.kinds
    codes = {c: i for i, c in enumerate(sorted(frame["attr_b"].dropna().unique()))}
    five = frame[list(kinds)].assign(attr_b=frame["attr_b"].map(codes), attr_c=1.0)
    model.pipeline_ = Pipeline([("model", HistGradientBoostingClassifier(max_iter=5))]).fit(five, frame["label"])
    model.feature_names_in_ = list(five.columns)
    metadata = {**model.metadata(), "features": {**kinds, "attr_c": "number"}}
    return registry.save_version(model_dir, model, metadata).name


def unimportable_version(fitted: MLEModel, model_dir: Path) -> str:
    """A pickle that references a module no process here has (a plugin since removed)."""
    module = types.ModuleType("vanished_plugin")
    exec("class Encoder:\n    pass\n", module.__dict__)
    sys.modules["vanished_plugin"] = module
    try:
        model: Any = copy.deepcopy(fitted)
        model.extra_step_ = module.Encoder()
        return registry.save_version(model_dir, model, model.metadata()).name
    finally:
        del sys.modules["vanished_plugin"]


def bad_versions(fitted: MLEModel, model_dir: Path, frame: pd.DataFrame) -> list[str]:
    """One of each, in this order: no skill, five features, unimportable."""
    return [
        no_skill_version(fitted, model_dir),
        five_feature_version(fitted, model_dir, frame),
        unimportable_version(fitted, model_dir),
    ]


def version_before_gates(fitted: MLEModel, model_dir: Path) -> str:
    """Saved as versions were before out-of-distribution gates: the artifact and metadata.json
    alone (no ood.npz, no reference.csv, no manifest, no `ood` in the metadata)."""
    model: Any = copy.deepcopy(fitted)  # a copy holds neither gate nor reference (they are no part of the pickle)
    metadata = {k: v for k, v in model.metadata().items() if k not in ("ood", "reference")}
    return registry.save_version(model_dir, model, metadata).name
