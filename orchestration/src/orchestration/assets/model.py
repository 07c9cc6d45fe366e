"""`model`: a training run, as `companydata-train` does it (data_science.train), with the
registry's promotion rules (data_science.promotion): a candidate is saved, and promoted to
champion only if it passes the gate. Its checks say whether a champion serves afterwards
(blocking: batch scoring needs one) and whether this candidate became it (a warning: a
rejected candidate leaves the previous champion serving)."""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

import math
from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    MaterializeResult,
    MetadataValue,
    asset,
)

from orchestration.resources import DB_RETRY, TrainingResource, transient_only

MODEL = AssetKey("model")
CHAMPION_SERVES = "champion_serves"
CANDIDATE_PROMOTED = "candidate_promoted"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not math.isnan(value) else None


@asset(
    key=MODEL,
    deps=[AssetKey("feature_store")],
    group_name="model",
    retry_policy=DB_RETRY,
    check_specs=[
        AssetCheckSpec(
            CHAMPION_SERVES,
            asset=MODEL,
            blocking=True,
            description="After the run a champion serves (this candidate, or the previous champion).",
        ),
        AssetCheckSpec(
            CANDIDATE_PROMOTED,
            asset=MODEL,
            description="The candidate passed the promotion gate and is the champion (warning only).",
        ),
    ],
    description="A training run: candidate saved to MODEL_DIR, promoted to champion if it passes the gate.",
)
def model(context: AssetExecutionContext, training: TrainingResource) -> Iterator[MaterializeResult[None]]:
    settings = training.settings()
    with transient_only():
        # Imported here: scikit-learn costs every process that loads these definitions 1.4 s, and
        # only this step trains (bench-orchestration: each run and each step loads them).
        from data_science.train import run as train

        outcome = train(settings)
    checks = outcome.decision.checks
    reasons = "; ".join(outcome.decision.reasons)
    metadata: dict[str, Any] = {
        "version": outcome.path.name,
        "roc_auc": _number(checks.get("roc_auc")),
        "champion_roc_auc": _number(checks.get("champion_roc_auc")),
        "promoted": outcome.promoted,
        "champion": outcome.champion or "",
        "decision": reasons,
        "path": MetadataValue.path(str(outcome.path)),
    }
    context.log.info(
        "model %s: promoted=%s, champion %s: %s", outcome.path.name, outcome.promoted, outcome.champion, reasons
    )
    yield MaterializeResult(
        metadata={k: v for k, v in metadata.items() if v is not None},
        check_results=[
            AssetCheckResult(
                check_name=CHAMPION_SERVES,
                passed=outcome.champion is not None,
                severity=AssetCheckSeverity.ERROR,
                metadata={"champion": outcome.champion or "none"},
            ),
            AssetCheckResult(
                check_name=CANDIDATE_PROMOTED,
                passed=outcome.promoted,
                severity=AssetCheckSeverity.WARN,
                metadata={"version": outcome.path.name, "decision": reasons},
            ),
        ],
    )
