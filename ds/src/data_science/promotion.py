"""The promotion gate: when a trained candidate may replace the champion.

The policy of this model package (the registry itself, in machine_learning_engineering, only
versions, verifies and switches): a candidate must load and predict, show skill against the
no-skill baseline, and reach the champion's holdout ROC AUC (scored on the same rows) within
a tolerance. With no usable champion, the first version that loads and predicts becomes it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from data_science.features import LABEL
from machine_learning_engineering import registry
from machine_learning_engineering.model import MLEModel

log = logging.getLogger(__name__)

# A candidate may be this much worse than the champion (ROC AUC on the candidate's holdout).
DEFAULT_TOLERANCE = 0.005


@dataclass
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)
    champion: str | None = None


def _auc(y: np.ndarray[Any, Any], p: np.ndarray[Any, Any]) -> float:
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def assess(
    model_dir: Path,
    model: MLEModel,
    metadata: dict[str, Any],
    holdout: pd.DataFrame,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Decision:
    """Should this candidate become the champion?

    Signature and smoke prediction always; with a usable champion, also skill against the
    no-skill baseline and a holdout ROC AUC not below the champion's (scored on the same
    holdout rows) minus `tolerance`. With no usable champion, the first version that loads
    and predicts becomes it, skill or not (its metadata says which).
    """
    decision = Decision(promote=True)
    try:
        registry.check_signature(model, metadata)
        registry.smoke_predict(model, metadata)
        p = registry.smoke_predict(model, metadata, holdout)
    except registry.ModelVersionError as exc:
        return Decision(False, [str(exc)], {"signature_and_smoke": "failed"})
    decision.checks["signature_and_smoke"] = "passed"
    y = holdout[LABEL].to_numpy()
    auc = _auc(y, p)
    decision.checks.update(holdout_rows=len(holdout), roc_auc=auc, has_skill=registry.has_skill(metadata))
    current = registry.champion(model_dir) if (model_dir / registry.CHAMPION).exists() else None
    champion_auc = None
    if current is not None:
        try:
            champion_model, champion_metadata = registry.load_verified(model_dir, current, type(model))
            champion_auc = _auc(y, registry.smoke_predict(champion_model, champion_metadata, holdout))
        except registry.ModelVersionError as exc:
            log.error(
                "the champion %s is unusable (%s): judging %s as if there were none",
                current,
                exc,
                metadata.get("version"),
            )
    if champion_auc is None:
        decision.reasons.append(
            "no usable champion yet: the first version that loads and predicts becomes it"
            + ("" if registry.has_skill(metadata) else ", flagged NO SKILL")
        )
        return decision
    decision.champion = current
    if not registry.has_skill(metadata):
        decision.promote = False
        verdict = metadata.get("evaluation", {}).get("verdict", "not evaluated")
        decision.reasons.append(f"no skill against the no-skill baseline ({verdict})")
    decision.checks.update(champion=current, champion_roc_auc=champion_auc, tolerance=tolerance)
    if not math.isnan(champion_auc) and not auc >= champion_auc - tolerance:
        decision.promote = False
        decision.reasons.append(
            f"holdout ROC AUC {auc:.4f} is worse than the champion {current}'s {champion_auc:.4f} on the same "
            f"{len(holdout):,} rows by more than the tolerance {tolerance}"
        )
    if decision.promote:
        decision.reasons.append(
            f"skill, and holdout ROC AUC {auc:.4f} against the champion {current}'s {champion_auc:.4f} "
            f"(tolerance {tolerance})"
        )
    return decision
