"""Honest evaluation: every metric beside a no-skill baseline, and a verdict on skill.

Pure functions of labels and probabilities. The holdout is never resampled or reweighted;
the decision threshold is chosen on data the holdout never sees.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)

# "Clearly better than chance": the lower end of the 95 % bootstrap interval of the holdout
# ROC AUC must clear 0.5 by this margin, and the log loss must beat the class prior's.
MIN_AUC_LIFT = 0.02
BOOTSTRAP_ROUNDS = 200


def choose_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The probability cut-off that maximises F1: with 9 % positives, 0.5 would call almost
    every client negative, and accuracy would reward that."""
    precision, recall, thresholds = precision_recall_curve(y, p)
    f1 = np.divide(
        2 * precision * recall, precision + recall, out=np.zeros_like(precision), where=precision + recall > 0
    )
    return float(thresholds[int(np.argmax(f1[:-1]))]) if len(thresholds) else 0.5


def metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    labels = (p >= threshold).astype(int)
    return {
        "roc_auc": float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan"),
        "accuracy": float(accuracy_score(y, labels)),
        "f1": float(f1_score(y, labels, zero_division=0)),
        "precision": float(precision_score(y, labels, zero_division=0)),
        "recall": float(recall_score(y, labels, zero_division=0)),
        "log_loss": float(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1])),
    }


def baselines(y_train: np.ndarray, y_test: np.ndarray, seed: int) -> dict[str, dict[str, float]]:
    """No-skill models fitted on the same training labels: always the majority class (with
    the class prior as its probability), and random draws at the class rate."""
    out = {}
    for strategy in ("prior", "stratified"):
        dummy = DummyClassifier(strategy=strategy, random_state=seed).fit(np.zeros((len(y_train), 1)), y_train)
        p = dummy.predict_proba(np.zeros((len(y_test), 1)))[:, 1]
        name = "majority" if strategy == "prior" else "stratified"
        out[name] = metrics(y_test, p, threshold=0.5 if strategy == "stratified" else float(np.mean(y_train)) + 1e-9)
    return out


def auc_interval(y: np.ndarray, p: np.ndarray, seed: int, rounds: int = BOOTSTRAP_ROUNDS) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(rounds):
        sample = rng.integers(0, len(y), len(y))
        if len(np.unique(y[sample])) == 2:
            scores.append(roc_auc_score(y[sample], p[sample]))
    low, high = np.percentile(scores, [2.5, 97.5])
    return float(low), float(high)


def evaluate(
    y_train: np.ndarray, y_test: np.ndarray, p_test: np.ndarray, threshold: float, seed: int
) -> dict[str, Any]:
    """The holdout report that goes into the model's metadata."""
    model = metrics(y_test, p_test, threshold)
    base = baselines(y_train, y_test, seed)
    low, high = auc_interval(y_test, p_test, seed)
    ranks = low > 0.5 + MIN_AUC_LIFT
    calibrated = model["log_loss"] < base["majority"]["log_loss"]
    auc = f"holdout ROC AUC {model['roc_auc']:.3f} (95 % CI {low:.3f}-{high:.3f})"
    if ranks and calibrated:
        verdict = f"skill: {auc} against 0.5 for no skill"
    elif not ranks:
        verdict = (
            f"NO SKILL: {auc} is not clearly above 0.5 + {MIN_AUC_LIFT}: the predictions carry no usable "
            "information about the label"
        )
    else:
        verdict = (
            f"NO SKILL: {auc} ranks clients, but its log loss {model['log_loss']:.4f} is worse than the class prior's "
            f"{base['majority']['log_loss']:.4f}: its probabilities mislead (overfitted or too little data)"
        )
    has_skill = ranks and calibrated
    return {
        "holdout_rows": len(y_test),
        "holdout_positive_rate": float(np.mean(y_test)),
        "metrics": model,
        "roc_auc_95ci": [low, high],
        "baselines": base,
        "has_skill": bool(has_skill),
        "verdict": verdict,
    }
