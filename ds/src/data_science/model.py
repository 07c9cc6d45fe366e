"""CustomerModel: one scikit-learn Pipeline behind the MLEModel contract.

Preprocessing and estimator live in a single Pipeline that is fitted, saved and served as one
object, so training and serving cannot drift apart. The estimator is a histogram gradient
boosting classifier: it won the model-family comparison (`data_science.selection`, README),
handles missing scd_a / scd_b natively and splits attr_b's category codes; a category never
seen in training is encoded as missing rather than crashing.

Served scores come from the same pipeline compiled (`data_science.compiled`): built and verified
against scikit-learn when the version is saved (`compile_scoring`), saved with it as
`scoring.npz`, checked again when it is loaded. Where that cannot be done the version serves
through scikit-learn, and `scoring()` says why; the probabilities are the same either way.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any, ClassVar, Self

import joblib
import numpy as np
import pandas as pd
import sklearn
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from data_science import compiled
from data_science.evaluate import choose_threshold
from data_science.features import CATEGORICAL, FEATURES, SCHEMA, validate_labels
from machine_learning_engineering import registry
from machine_learning_engineering.model import Columns, Labels, MLEModel, Probabilities
from machine_learning_engineering.schema import FeatureSchema

log = logging.getLogger(__name__)


class CategoryCodes(TransformerMixin, BaseEstimator):  # type: ignore[misc]  # sklearn is untyped: its bases are Any
    """The features as one float matrix, each category replaced by its index among those seen in fit.

    Trees split ordinal codes of a handful of categories as well as native categories (the
    model benchmark shows no loss), and a plain float matrix keeps scikit-learn's per-call
    overhead small: a one-row prediction costs a quarter of the ColumnTransformer + native
    categorical route. A category never seen in training becomes NaN and is routed like a
    missing value.
    """

    def fit(self, X: pd.DataFrame, y: Any = None) -> Self:
        self.categories_ = {name: sorted(str(v) for v in pd.unique(X[name].dropna())) for name in CATEGORICAL}
        self.feature_names_in_ = np.array(list(FEATURES), dtype=object)
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        out = np.empty((len(X), len(FEATURES)), dtype="float64")
        for j, name in enumerate(FEATURES):
            values = X[name].to_numpy()
            if name in self.categories_:
                codes = pd.Index(self.categories_[name]).get_indexer(pd.Index(values))  # as pandas would
                out[:, j] = np.where(codes < 0, np.nan, codes)
            else:
                out[:, j] = values
        return out


def build_pipeline(random_state: int, **params: Any) -> Pipeline:
    # Early stopping always (scikit-learn enables it by default only above 10,000 rows): on a
    # small feature_store, 300 unchecked rounds overfit until the log loss loses to the prior.
    boost = HistGradientBoostingClassifier(
        categorical_features=None, early_stopping=True, random_state=random_state, **params
    )
    return Pipeline([("prep", CategoryCodes()), ("model", boost)])


# A feature missing more often than this is worth a look (a broken export, a renamed column).
HIGH_MISSING_RATE = 0.2
# Odd rows (`compiled.probe_frame`) the compiled scorer must also match, beside the holdout when
# a version is saved and the reference rows when it is loaded (a load is on a worker's start).
SAVE_PROBES = 20_000
LOAD_PROBES = 1_000
SKLEARN = "Pipeline.predict_proba"
# dtype objects made once (a request's two one-value arrays: converting the type is half their cost).
_INT64, _FLOAT64 = np.dtype(np.int64), np.dtype(np.float64)


def missing_rates(features: pd.DataFrame) -> dict[str, float]:
    """Each feature's share of missing values; a warning for those above HIGH_MISSING_RATE."""
    rates = {name: float(features[name].isna().mean()) for name in FEATURES}
    for name, rate in rates.items():
        if rate > HIGH_MISSING_RATE:
            log.warning("%s is missing in %.1f %% of the training rows (learned as missing, but check the source)",
                        name, 100 * rate)  # fmt: skip
    return rates


class CustomerModel(MLEModel):
    """P(label = 1) for a client from attr_a, attr_b, scd_a, scd_b.

    Versioning, validation and logged predictions come from the MLEModel contract; this class
    adds the estimator, its threshold and what its metadata records. `fit` keeps
    `threshold_fraction` of the training rows aside to choose the decision threshold (max F1),
    so the threshold never sees the evaluation holdout either.
    """

    feature_schema: ClassVar[FeatureSchema] = SCHEMA
    pinned_libraries: ClassVar[tuple[str, ...]] = ("scikit-learn",)
    # The compiled scorer when it is exact (None: scikit-learn scores), what the version
    # records about it (metadata `scoring`), and how this object scores (`scoring()`). Kept
    # out of the pickle: the scorer is a file of its own, verified on load.
    engine_: compiled.Engine | None = None
    scoring_: dict[str, Any] | None = None
    serving_: dict[str, Any] | None = None

    def __init__(
        self,
        learning_rate: float = 0.1,
        max_iter: int = 300,
        max_leaf_nodes: int = 31,
        threshold_fraction: float = 0.15,
        random_state: int = 42,
    ) -> None:
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.max_leaf_nodes = max_leaf_nodes
        self.threshold_fraction = threshold_fraction
        self.random_state = random_state

    def fit(self, data: pd.DataFrame) -> Self:
        features, labels = SCHEMA.validate(data), validate_labels(data)
        if labels.nunique() < 2:
            raise ValueError(f"cannot learn from one class: every label is {labels.iloc[0]}")
        x_fit, x_cut, y_fit, y_cut = train_test_split(
            features, labels, test_size=self.threshold_fraction, stratify=labels, random_state=self.random_state
        )
        self.pipeline_ = build_pipeline(
            self.random_state,
            learning_rate=self.learning_rate,
            max_iter=self.max_iter,
            max_leaf_nodes=self.max_leaf_nodes,
        ).fit(x_fit, y_fit)
        self.threshold_ = choose_threshold(y_cut.to_numpy(), self.pipeline_.predict_proba(x_cut)[:, 1])
        self.feature_names_in_ = list(FEATURES)
        self.categories_ = self.pipeline_.named_steps["prep"].categories_
        self.training_ = {
            "rows": len(features),
            "fit_rows": len(x_fit),
            "threshold_rows": len(x_cut),
            "class_balance": {str(k): int(v) for k, v in labels.value_counts().sort_index().items()},
            "positive_rate": float(labels.mean()),
            "missing_rate": missing_rates(features),
            "trained_at": datetime.now(UTC).isoformat(),
        }
        self.evaluation_: dict[str, Any] = {}
        self.engine_, self.scoring_, self.serving_ = None, None, None  # a new fit: compile again
        return self

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray[Any, np.dtype[np.float64]]:
        """Shape (rows, 2), columns P(label = 0) and P(label = 1), as in scikit-learn."""
        return np.asarray(self.pipeline_.predict_proba(SCHEMA.validate(features)), dtype="float64")

    def score(self, features: pd.DataFrame) -> tuple[Labels, Probabilities]:
        if self.engine_ is not None:
            p = self.engine_.proba(compiled.columns_of(features, self.engine_.features))
        else:
            p = np.asarray(self.pipeline_.predict_proba(features)[:, 1], dtype="float64")
        return (p >= self.threshold_).astype(np.int64), p

    def score_columns(self, columns: Columns) -> tuple[Labels, Probabilities]:
        if self.engine_ is None:
            return super().score_columns(columns)
        one = self.engine_.proba_one(columns)
        if one is not None:  # a request's row: Python floats until the two answers
            return np.array([int(one >= self.threshold_)], _INT64), np.array([one], _FLOAT64)
        p = self.engine_.proba(columns)
        return (p >= self.threshold_).astype(np.int64), p

    # --- compiled scoring ---------------------------------------------------------------------

    def compile_scoring(self, holdout: pd.DataFrame) -> dict[str, Any]:
        """Compile the fitted pipeline (`compiled.Engine`) and keep it only if it equals
        scikit-learn on the evaluation holdout and on odd probe rows (max |Δp| <= 1e-12, no label
        flip at the threshold): then `save` writes it into the version. Returns what the
        version's metadata records as `scoring` (the figures, or why it serves through
        scikit-learn). Never raises for the engine's sake: scikit-learn remains exact."""
        self.engine_ = None
        features = SCHEMA.validate(holdout)
        try:
            engine = compiled.Engine.build(self.pipeline_)
            engine.warm_up()
            checks = {
                "holdout": compiled.verify(engine, self.pipeline_, features, self.threshold_),
                "probes": compiled.verify(
                    engine,
                    self.pipeline_,
                    compiled.probe_frame(engine, SAVE_PROBES, self.random_state),
                    self.threshold_,
                ),
            }
        except Exception as exc:  # the fast path is optional; the reason goes into the metadata
            if isinstance(exc, compiled.CompileError):
                reason = f"cannot be compiled: {exc}"
            else:
                reason = f"compiling failed: {type(exc).__name__}: {exc}"
            log.error("compiled scoring: %s; this version serves through scikit-learn", reason)
            self.scoring_ = {"file": None, "engine": None, "reason": reason}
            self.serving_ = {"path": "scikit-learn", "engine": SKLEARN, "reason": reason}
            return self.scoring_
        record = {**engine.summary(), "verified": {name: check.summary() for name, check in checks.items()}}
        failed = [check.why_not(f"the {name}") for name, check in checks.items() if not check.passed]
        if failed:
            reason = "verification failed: " + "; ".join(failed)
            log.error("compiled scoring: %s; this version serves through scikit-learn", reason)
            self.scoring_ = {**record, "file": None, "reason": reason}
            self.serving_ = {"path": "scikit-learn", "engine": SKLEARN, "reason": reason}
            return self.scoring_
        self.engine_ = engine
        self.scoring_ = {**record, "file": compiled.FILE}
        self.serving_ = {"path": "compiled", "engine": engine.name, "verified": {"at_save": record["verified"]}}
        return self.scoring_

    def version_files(self) -> dict[str, Callable[[Path], None]]:
        files = super().version_files()
        if self.engine_ is not None and (self.scoring_ or {}).get("file") == compiled.FILE:
            files[compiled.FILE] = self.engine_.save
        return files

    def after_load(self, model_dir: Path, metadata: dict[str, Any]) -> None:
        """Serve through the version's compiled scorer when it has one (its hash verified by
        the registry) and it still equals scikit-learn here, on the reference rows and probe
        rows (a guard against another engine or library); otherwise through scikit-learn."""
        super().after_load(model_dir, metadata)
        self.engine_ = None
        self.scoring_ = metadata.get("scoring")
        version = metadata.get("version")
        path = registry.version_file(model_dir, metadata, compiled.FILE)
        if path is None:
            reason = (self.scoring_ or {}).get("reason") or "this version was saved without a compiled scorer"
            self.serving_ = {"path": "scikit-learn", "engine": SKLEARN, "reason": reason}
            return
        started = time.perf_counter()
        try:
            engine = compiled.Engine.load(path)
            engine.check_matches(list(FEATURES), self.known_categories())
            compile_seconds = engine.warm_up()
            rows = pd.concat(
                [SCHEMA.reference_rows(self.known_categories()), compiled.probe_frame(engine, LOAD_PROBES)],
                ignore_index=True,
            )
            check = compiled.verify(engine, self.pipeline_, rows, self.threshold_)
            problem = None if check.passed else check.why_not("the reference and probe rows at load")
        except Exception as exc:  # scikit-learn serves instead, and says why
            problem = f"{type(exc).__name__}: {exc}"
        if problem is not None:
            reason = f"{compiled.FILE} not used: {problem}"
            log.warning("model version %s: %s; it serves through scikit-learn", version, reason)
            self.serving_ = {"path": "scikit-learn", "engine": SKLEARN, "reason": reason}
            return
        self.engine_ = engine
        self.serving_ = {
            "path": "compiled",
            "engine": engine.name,
            "file": compiled.FILE,
            "verified": {"at_save": (self.scoring_ or {}).get("verified"), "at_load": check.summary()},
            "compile_seconds": round(compile_seconds, 3),
            "load_seconds": round(time.perf_counter() - started, 3),
        }

    def scoring(self) -> dict[str, Any]:
        """Which path scores ("compiled" or "scikit-learn"), with the verification figures or the reason."""
        if self.serving_ is None:
            return {"path": "scikit-learn", "engine": SKLEARN, "reason": "not compiled: compile_scoring has not run"}
        return dict(self.serving_)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        for name in ("engine_", "scoring_", "serving_"):
            state.pop(name, None)
        return state

    def known_categories(self) -> dict[str, list[str]]:
        return {name: list(values) for name, values in self.categories_.items()}

    @property
    def decision_threshold(self) -> float:
        return float(self.threshold_)

    def check_fitted(self) -> list[str]:
        """The pipeline expects the declared features, in order."""
        problems = []
        names = list(getattr(self, "feature_names_in_", []))
        if names != list(FEATURES):
            problems.append(f"it expects features {names}; the serving schema has {list(FEATURES)}")
        estimator = self.pipeline_.steps[-1][1] if hasattr(self, "pipeline_") else None
        n_in = getattr(estimator, "n_features_in_", None)
        if n_in != len(FEATURES):
            problems.append(f"its estimator expects {n_in} input columns, not {len(FEATURES)}")
        return problems

    def metadata(self) -> dict[str, Any]:
        """What a reader of the model directory (or GET /model) needs to trust this version."""
        return {
            **super().metadata(),
            "estimator": type(self.pipeline_.named_steps["model"]).__name__,
            "params": {k: getattr(self, k) for k in ("learning_rate", "max_iter", "max_leaf_nodes", "random_state")},
            "created_at": datetime.now(UTC).isoformat(),
            "versions": {
                "python": platform.python_version(),
                "scikit-learn": sklearn.__version__,
                "numpy": np.__version__,
                "pandas": pd.__version__,
                "joblib": joblib.__version__,
                "data_science": package_metadata.version("data_science"),
                "machine_learning_engineering": package_metadata.version("machine_learning_engineering"),
            },
            "threshold": {"value": self.threshold_, "method": "max F1 on a stratified slice of the training rows"},
            "training": self.training_,
            "evaluation": self.evaluation_,
            "scoring": self.scoring_
            or {"file": None, "engine": None, "reason": "not compiled: compile_scoring was not called before save"},
        }
