"""The report itself (monitoring.report, a pure function) and the thresholds (monitoring.alerts.
find_breaches), on generated data: no alarm between samples of one distribution, an alarm naming
the shifted features for a shifted sample."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from data_science.features import SCHEMA
from monitoring import MonitoringError
from monitoring.alerts import find_breaches
from monitoring.config import Thresholds
from monitoring.period import Period
from monitoring.report import SourceReport, build_report

from .conftest import shift

DEFAULTS = Thresholds()
WHEN = datetime(2026, 3, 4)

Pools = Callable[[int, int], pd.DataFrame]


@pytest.fixture(scope="module")
def reference(pools: Pools) -> pd.DataFrame:
    """10,000 training rows (as many as a version keeps), with labels."""
    return pools(10_000, 42)


def report(reference: pd.DataFrame, current: pd.DataFrame, thresholds: Thresholds = DEFAULTS) -> SourceReport:
    return build_report(reference, current, SCHEMA, thresholds, source="batch", timestamp=WHEN)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_two_samples_of_one_distribution_raise_no_alarm(reference: pd.DataFrame, pools: Pools, seed: int) -> None:
    current = pools(2_000, seed).sample(n=1_000, random_state=seed)
    found = report(reference, current)
    assert found.judged and found.rows == 1_000
    assert found.drifted == ()
    assert found.value("drift_share") == 0.0
    assert find_breaches({"batch": found}, DEFAULTS) == []
    # Every series the dashboard and the table need is there, and plausible.
    for feature in SCHEMA.names:
        assert 0.0 <= found.value("drift_score", feature) < 0.1
        assert found.value("missing_rate", feature) == found.value("missing_rate_reference", feature) == 0.0
    assert found.value("prediction_drift_score") < 0.1 and found.value("prediction_drifted") == 0.0
    assert abs(found.value("positive_rate") - found.value("positive_rate_reference")) < 0.05
    assert found.value("label_rows") == 1_000 and found.value("label_drifted") == 0.0


def test_a_shifted_sample_drifts_and_names_the_shifted_features(reference: pd.DataFrame, pools: Pools) -> None:
    found = report(reference, shift(pools(2_000, 7)))
    assert set(found.drifted) == {"scd_a", "attr_b"}
    assert found.value("drifted", "scd_a") == found.value("drifted", "attr_b") == 1.0
    assert found.value("drifted", "attr_a") == found.value("drifted", "scd_b") == 0.0
    assert found.value("drift_share") == 0.5
    [breach] = find_breaches({"batch": found}, DEFAULTS)
    assert breach.threshold == "drift_share" and breach.value == 0.5 and breach.limit == DEFAULTS.drift_share
    assert set(breach.sources["batch"]["features"]) == {"scd_a", "attr_b"}
    message = breach.message(Period.day(WHEN.date()))
    assert message.startswith("2026-03-04: share of drifted features 0.500") and "MONITOR_DRIFT_SHARE=0.5" in message
    # The HTML report is Evidently's page, about these features.
    assert found.html.lstrip().lower().startswith("<!doctype html") or "<html" in found.html[:500].lower()
    assert all(name in found.html for name in SCHEMA.names)


def test_one_shifted_feature_is_named_but_stays_below_the_default_share(reference: pd.DataFrame, pools: Pools) -> None:
    current = pools(2_000, 8)
    current["scd_a"] = (current["scd_a"] + 0.2).clip(upper=0.999)
    found = report(reference, current)
    assert found.drifted == ("scd_a",) and found.value("drift_share") == 0.25
    assert find_breaches({"batch": found}, DEFAULTS) == []
    assert [b.threshold for b in find_breaches({"batch": found}, Thresholds(drift_share=0.25))] == ["drift_share"]


def test_a_feature_missing_more_often_than_in_the_reference_alarms(reference: pd.DataFrame, pools: Pools) -> None:
    current = pools(2_000, 9)
    rng = np.random.default_rng(9)
    current["scd_b"] = current["scd_b"].where(rng.random(len(current)) >= 0.12)
    found = report(reference, current)
    assert 0.09 < found.value("missing_rate", "scd_b") < 0.15
    [breach] = find_breaches({"batch": found}, DEFAULTS)
    assert breach.threshold == "missing_rate" and breach.sources["batch"]["features"] == ["scd_b"]


def test_out_of_distribution_rows_above_the_limit_alarm(reference: pd.DataFrame, pools: Pools) -> None:
    reference = reference.assign(out_of_distribution=0.0)
    reference.loc[reference.index[:100], "out_of_distribution"] = 1.0  # the gate flags 1 % of training
    current = pools(2_000, 10).assign(out_of_distribution=0.0)
    fine = report(reference, current.assign(out_of_distribution=(np.arange(len(current)) % 50 == 0).astype(float)))
    assert fine.value("ood_rate") == pytest.approx(0.02) and fine.value("ood_rate_reference") == pytest.approx(0.01)
    assert find_breaches({"batch": fine}, DEFAULTS) == []
    flagged = current.assign(out_of_distribution=(np.arange(len(current)) % 10 == 0).astype(float))
    [breach] = find_breaches({"batch": report(reference, flagged)}, DEFAULTS)
    assert breach.threshold == "ood_rate" and breach.value == pytest.approx(0.1)


def test_too_few_rows_are_reported_but_not_judged(reference: pd.DataFrame, pools: Pools) -> None:
    found = report(reference, shift(pools(2_000, 11)).head(DEFAULTS.min_rows - 1))
    assert not found.judged and found.value("judged") == 0.0
    assert found.drifted  # what Evidently saw is kept ...
    assert find_breaches({"batch": found}, DEFAULTS) == []  # ... but too few rows to alarm


def test_a_feature_that_vanished_counts_as_drifted(reference: pd.DataFrame, pools: Pools) -> None:
    current = pools(2_000, 12).assign(scd_b=np.nan)
    found = report(reference, current)
    assert found.drifted == ("scd_b",) and found.value("drift_score", "scd_b") is None
    assert found.value("missing_rate", "scd_b") == 1.0
    assert {b.threshold for b in find_breaches({"batch": found}, DEFAULTS)} == {"missing_rate"}


def test_label_drift_waits_for_enough_labels(reference: pd.DataFrame, pools: Pools) -> None:
    current = pools(2_000, 13)
    current["label"] = current["label"].where(np.arange(len(current)) < DEFAULTS.min_rows - 1)
    found = report(reference, current)
    assert found.value("label_rows") == DEFAULTS.min_rows - 1 and found.value("label_drift_score") is None
    current["label"] = 1.0  # every scored client turned out positive
    found = report(reference, current)
    assert found.value("label_drifted") == 1.0 and found.value("label_positive_rate") == 1.0


def test_out_of_range_values_and_unseen_categories_are_counted(reference: pd.DataFrame, pools: Pools) -> None:
    current = pools(2_000, 14)
    current.loc[current.index[:200], "attr_a"] = 9.0
    current.loc[current.index[:100], "attr_b"] = "zz"
    found = report(reference, current)
    assert found.value("out_of_range_rate", "attr_a") == pytest.approx(0.1)
    assert found.value("out_of_range_rate", "attr_b") == pytest.approx(0.05)
    assert found.value("out_of_range_rate", "scd_b") == 0.0


def test_an_empty_period_is_refused(reference: pd.DataFrame) -> None:
    with pytest.raises(MonitoringError, match="no rows"):
        report(reference, reference.head(0))
