"""A second, deliberately tiny MLEModel, with features of its own: proof that whatever runs
models (the registry, the API, its page and OpenAPI document) knows them only through the
contract. Served with `MODEL_CLASS=testkit.toy_model:PlanModel`; never shipped in an image.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from machine_learning_engineering.model import Labels, MLEModel, Probabilities
from machine_learning_engineering.schema import Feature, FeatureSchema

SCHEMA = FeatureSchema(
    (
        Feature("age", "integer", "Years since the client signed up.", 3, 0, 150, nullable=False),
        Feature("plan", "category", "The client's plan.", "basic"),
    )
)


class PlanModel(MLEModel):
    """P(label = 1) is the training rate of the client's plan (the overall rate for a plan
    never seen or missing), nudged up with age; the label is P >= 0.5."""

    feature_schema: ClassVar[FeatureSchema] = SCHEMA

    def fit(self, data: pd.DataFrame) -> Self:
        clean, labels = SCHEMA.validate(data), data["label"].astype(int).to_numpy()
        self.overall_ = float(labels.mean())
        self.rates_ = {str(k): float(v) for k, v in pd.Series(labels).groupby(clean["plan"].to_numpy()).mean().items()}
        return self

    def score(self, features: pd.DataFrame) -> tuple[Labels, Probabilities]:
        base = np.array([self.rates_.get(p, self.overall_) for p in features["plan"]], dtype="float64")
        p = np.clip(base + features["age"].to_numpy(dtype="float64") / 1000, 0.0, 1.0)
        return (p >= 0.5).astype(np.int64), p

    def known_categories(self) -> dict[str, list[str]]:
        return {"plan": sorted(self.rates_)}

    @property
    def decision_threshold(self) -> float:
        return 0.5

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "evaluation": {"has_skill": True, "verdict": "a toy"}}


def training_frame() -> pd.DataFrame:
    """Plans with clearly different label rates."""
    rows = [("gold", 1)] * 8 + [("gold", 0)] * 2 + [("basic", 0)] * 9 + [("basic", 1)] * 1
    return pd.DataFrame({"age": list(range(len(rows))), "plan": [p for p, _ in rows], "label": [y for _, y in rows]})
