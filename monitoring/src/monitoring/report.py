"""The drift report of one source in one period: Evidently, from the reference and current frames
to metrics, an HTML page and a snapshot. A pure function: no database, no files.

What Evidently computes (its `Report`, run on the reference sample and the period's rows):

- data drift per feature and overall: `DataDriftPreset` over the model's features, each judged by
  Evidently's default test for its type and size (with a reference over 1,000 rows: the normed
  Wasserstein distance for numbers, the Jensen-Shannon distance for categories and numbers with
  at most five values, drifted at 0.1), its share of drifted features judged against
  MONITOR_DRIFT_SHARE;
- prediction drift: `ValueDrift` of the predicted probability; the positive rate (`MeanValue`
  of the predicted label);
- missing and out-of-range rates per feature (`MissingValueCount`; `OutRangeValueCount` outside
  the reference's [min, max] for numbers, `OutListValueCount` outside its categories);
- the out-of-distribution rate (`MeanValue` of the gate's verdicts), where a gate judged rows;
- label drift (`ValueDrift` of the true label) once at least MONITOR_MIN_ROWS scored clients
  have a label;
- volume (`RowCount`).

A feature with no value at all on one side cannot be compared by Evidently: it is left out of
the preset, and counts as drifted when the reference has values and the period has none (a
feature that vanished). The reference's own rates (missing, positive, OOD, labels) come from the
reference frame, for comparison.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.core.report import Snapshot
from evidently.metrics import (
    MeanValue,
    MissingValueCount,
    OutListValueCount,
    OutRangeValueCount,
    RowCount,
    ValueDrift,
)
from evidently.presets import DataDriftPreset

from machine_learning_engineering.schema import FeatureSchema
from monitoring import MonitoringError
from monitoring.config import Thresholds
from monitoring.data import LABEL, OOD, PREDICTION, PROBABILITY
from monitoring.evidently_compat import quiet

MetricKey = tuple[str, str]  # (metric, feature); feature "" for the whole source


@dataclass(frozen=True)
class SourceReport:
    """What the report of one source found: its metrics (metric, feature) -> value (None: not
    computable), the features Evidently found drifted, whether the period had enough rows to be
    judged, the Evidently snapshot and its HTML page."""

    source: str
    rows: int
    judged: bool
    metrics: dict[MetricKey, float | None]
    drifted: tuple[str, ...]
    snapshot: Snapshot = field(repr=False)
    html: str = field(repr=False)

    def value(self, metric: str, feature: str = "") -> float | None:
        return self.metrics.get((metric, feature))


def _number(value: Any) -> float | None:
    """A finite float, else None (Evidently reports NaN where a rate has no denominator)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _rate(series: pd.Series) -> float | None:
    present = series.dropna()
    return float(present.mean()) if len(present) else None


def _status_failed(status: Any) -> bool:
    return str(getattr(status, "value", status)).upper() == "FAIL"


def _columns(schema: FeatureSchema, frame: pd.DataFrame) -> pd.DataFrame:
    """The features with the types Evidently reads (categories as text objects, the rest float64)."""
    out: dict[str, Any] = {}
    for feature in schema:
        values = frame[feature.name]
        if feature.kind == "category":
            out[feature.name] = pd.Series(
                [v if isinstance(v, str) else np.nan for v in values.to_numpy()], dtype=object, index=frame.index
            )
        else:
            out[feature.name] = pd.to_numeric(values, errors="coerce").astype("float64")
    for column in (PREDICTION, PROBABILITY, LABEL, OOD):
        out[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64") if column in frame else np.nan
    return pd.DataFrame(out, index=frame.index).reset_index(drop=True)


def build_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    schema: FeatureSchema,
    thresholds: Thresholds,
    *,
    source: str,
    timestamp: datetime,
    metadata: Mapping[str, str] | None = None,
    champion: str | None = None,
) -> SourceReport:
    """Compare `current` (the period's rows of `source`) with `reference` (the champion's sample).

    Both frames hold the schema's features and `prediction`, `probability`; `label` and
    `out_of_distribution` where known (NaN elsewhere). `current` may hold `model_version`: the
    share scored by `champion` is reported. The snapshot carries `timestamp` (the period's
    start: Evidently's UI plots the runs by it), the source as its tag and `metadata`.
    """
    if current.empty:
        raise MonitoringError(f"{source}: no rows to report on")
    names = schema.names
    if OOD in names:
        raise MonitoringError(f"a feature is named {OOD!r}, which the report uses for the gate's verdicts")
    ref, cur = _columns(schema, reference), _columns(schema, current)
    rows, min_rows = len(cur), thresholds.min_rows
    judged = rows >= min_rows

    # Features Evidently can compare: some value on both sides. A feature the reference has
    # and the period lacks entirely has vanished: drifted, with no score.
    comparable = [n for n in names if ref[n].notna().any() and cur[n].notna().any()]
    vanished = [n for n in names if ref[n].notna().any() and not cur[n].notna().any()]
    label_rows = int(cur[LABEL].notna().sum())
    with_labels = ref[LABEL].notna().any() and label_rows >= min_rows
    with_ood = ref[OOD].notna().any() and cur[OOD].notna().any()
    with_probability = ref[PROBABILITY].notna().any() and cur[PROBABILITY].notna().any()

    items: list[Any] = [RowCount(tests=[])]
    if comparable:
        items.append(DataDriftPreset(columns=comparable, drift_share=thresholds.drift_share))
    if with_probability:
        items.append(ValueDrift(column=PROBABILITY))
    if with_labels:
        items += [ValueDrift(column=LABEL), MeanValue(column=LABEL, tests=[])]
    items.append(MeanValue(column=PREDICTION, tests=[]))
    if with_ood:
        items.append(MeanValue(column=OOD, tests=[]))
    for feature in schema:
        items.append(MissingValueCount(column=feature.name, tests=[]))
        known = ref[feature.name].dropna()
        if known.empty:
            continue
        if feature.kind == "category":
            items.append(OutListValueCount(column=feature.name, values=sorted(known.unique()), tests=[]))
        else:
            items.append(OutRangeValueCount(column=feature.name, left=known.min(), right=known.max(), tests=[]))

    definition = DataDefinition(
        numerical_columns=[*schema.numeric, PREDICTION, PROBABILITY, LABEL, OOD],
        categorical_columns=schema.categorical,
    )
    with quiet():
        snapshot = Report(items, include_tests=True).run(
            Dataset.from_pandas(cur, data_definition=definition),
            Dataset.from_pandas(ref, data_definition=definition),
            timestamp=timestamp,
            tags=[source],
            metadata=dict(metadata or {}),
            name=f"{source} {(metadata or {}).get('period', '')}".strip(),
        )
        result = snapshot.dict()
        html = snapshot.get_html_str(as_iframe=False)

    found: dict[MetricKey, float | None] = {}
    for item in result["metrics"]:
        config = item["config"]
        kind, column, value = str(config["type"]).rsplit(":", 1)[-1], config.get("column"), item["value"]
        if kind == "RowCount":
            found[("rows", "")] = _number(value)
        elif kind == "DriftedColumnsCount":
            found[("drifted_features", "")] = _number(value["count"])
        elif kind == "ValueDrift" and column == PROBABILITY:
            found[("prediction_drift_score", "")] = _number(value)
        elif kind == "ValueDrift" and column == LABEL:
            found[("label_drift_score", "")] = _number(value)
        elif kind == "ValueDrift":
            found[("drift_score", column)] = _number(value)
        elif kind == "MeanValue" and column == PREDICTION:
            found[("positive_rate", "")] = _number(value)
        elif kind == "MeanValue" and column == LABEL:
            found[("label_positive_rate", "")] = _number(value)
        elif kind == "MeanValue" and column == OOD:
            found[("ood_rate", "")] = _number(value)
        elif kind == "MissingValueCount":
            found[("missing_rate", column)] = _number(value["share"])
        elif kind in ("OutRangeValueCount", "OutListValueCount"):
            found[("out_of_range_rate", column)] = _number(value["share"])
    failed = {
        str(t["metric_config"]["params"].get("column")): _status_failed(t["status"])
        for t in result.get("tests", [])
        if str(t["metric_config"]["params"].get("type", "")).endswith(":ValueDrift")
    }
    drifted = tuple(n for n in names if failed.get(n) or n in vanished)
    for name in names:
        if name in comparable or name in vanished:
            found[("drifted", name)] = float(name in drifted)
        found[("missing_rate_reference", name)] = float(ref[name].isna().mean())
    for name in vanished:
        found[("drift_score", name)] = None
    considered = len(comparable) + len(vanished)
    found[("drifted_features", "")] = float(len(drifted))
    found[("drift_share", "")] = len(drifted) / considered if considered else None
    if with_probability:
        found[("prediction_drifted", "")] = float(failed.get(PROBABILITY, False))
    found[("positive_rate_reference", "")] = _rate(ref[PREDICTION])
    found[("ood_rows", "")] = float(cur[OOD].notna().sum())
    if with_ood:
        found[("ood_rate_reference", "")] = _rate(ref[OOD])
    found[("label_rows", "")] = float(label_rows)
    if with_labels:
        found[("label_drifted", "")] = float(failed.get(LABEL, False))
        found[("label_positive_rate_reference", "")] = _rate(ref[LABEL])
    found[("rows_reference", "")] = float(len(ref))
    found[("judged", "")] = float(judged)
    if champion is not None and "model_version" in current:
        found[("champion_share", "")] = float((current["model_version"] == champion).mean())
    return SourceReport(source, rows, judged, found, drifted, snapshot, html)
