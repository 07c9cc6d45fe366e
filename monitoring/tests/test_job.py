"""The whole job for a period against a real database loaded by the ETL and a champion trained on
it: the API's predictions and the batch scores of the day compared with the champion's reference,
metrics replaced idempotently, HTML reports, workspace runs, one alert per crossed threshold."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest

from data_science.model import CustomerModel
from machine_learning_engineering import registry
from machine_learning_engineering.model import MLEModel
from machine_learning_engineering.prediction_log import PredictionLogger
from monitoring import NoChampion
from monitoring.config import MonitorSettings
from monitoring.job import run_report
from monitoring.metrics import read_period
from monitoring.period import Period
from testkit.fixtures import TestDatabase

from .conftest import COLUMNS, DAY, Receiver, feature_store, shift

PERIOD = Period.day(DAY)
REQUESTS = 700  # above MONITOR_MIN_ROWS (500): judged


@pytest.fixture
def day_of_traffic(
    loaded: TestDatabase, champion: MLEModel, score_batch: Callable[..., int], log_requests: Callable[..., pd.DataFrame]
) -> Callable[[bool], None]:
    """The day's rows: every client batch-scored, and REQUESTS API predictions of clients drawn
    from feature_store, their features shifted or not."""

    def make(shifted: bool = False, day: date = DAY) -> None:
        score_batch(champion, day)
        asked = feature_store(loaded).sample(n=REQUESTS, random_state=day.day)
        log_requests(champion, shift(asked) if shifted else asked, day)

    return make


def metrics(db: TestDatabase) -> list[tuple]:
    return db.query(
        "SELECT period_start, period_end, model_version, source, metric, feature, value FROM monitoring_metrics"
        " ORDER BY source, metric, feature"
    )


def test_a_day_like_the_training_data_is_within_thresholds_and_a_rerun_changes_nothing(
    env: dict[str, str], loaded: TestDatabase, champion: MLEModel, day_of_traffic: Callable[..., None]
) -> None:
    day_of_traffic()
    result = run_report(MonitorSettings.from_env(), PERIOD)
    assert result.model_version == champion.version_ and not result.reference_missing
    assert result.rows == {"requests": REQUESTS, "batch": 3_000}
    assert result.breaches == [] and result.alerts == []
    for source in ("requests", "batch"):
        report = result.reports[source]
        assert report.judged and report.drifted == () and report.value("drift_share") == 0.0
        assert report.value("champion_share") == 1.0
        assert report.value("label_rows") == result.rows[source]  # every client here has a label
        assert report.value("ood_rate") < 0.05 and report.value("ood_rows") == result.rows[source]
        assert result.html[source] == Path(env["REPORTS_DIR"]) / "2026-03-04" / f"{source}.html"
        assert "<html" in result.html[source].read_text()[:1000].lower()

    first = metrics(loaded)
    assert {r[:3] for r in first} == {(DAY, DAY, champion.version_)}
    written = {(r[3], r[4], r[5]) for r in first}
    for source in ("requests", "batch"):
        assert {(source, "rows", ""), (source, "drift_share", ""), (source, "positive_rate", "")} <= written
        assert {(source, "drift_score", f) for f in champion.feature_schema.names} <= written
        assert {(source, m, "") for m in ("prediction_drift_score", "ood_rate", "label_drift_score")} <= written
    assert ("batch", "rows_without_features", "") in written
    assert read_period(MonitorSettings.from_env().database, PERIOD) == [r[2:] for r in first]

    again = run_report(MonitorSettings.from_env(), PERIOD)
    assert metrics(loaded) == first  # the period's rows replaced by the same rows, none added
    assert again.runs.keys() == result.runs.keys() and again.runs != result.runs
    assert sorted(p.name for p in (Path(env["REPORTS_DIR"]) / "2026-03-04").iterdir()) == [
        "batch.html",
        "requests.html",
    ]


def test_a_shifted_day_alarms_once_per_crossed_threshold_even_when_rerun(
    env: dict[str, str],
    loaded: TestDatabase,
    day_of_traffic: Callable[..., None],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("ALERT_WEBHOOK_URL", receiver.url)
    day_of_traffic(shifted=True)
    with caplog.at_level(logging.INFO, logger="monitoring"):
        result = run_report(MonitorSettings.from_env(), PERIOD)
    requests = result.reports["requests"]
    assert set(requests.drifted) == {"scd_a", "attr_b"} and requests.value("drift_share") == 0.5
    assert result.reports["batch"].drifted == ()  # the batch scores did not move
    crossed = {b.threshold for b in result.breaches}
    assert "drift_share" in crossed
    assert {(o.threshold, o.state) for o in result.alerts} == {(t, "sent") for t in crossed}
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(m.startswith("drift alert: 2026-03-04: share of drifted features 0.500") for m in errors)

    bodies = receiver.received(len(crossed))
    assert sorted(b["threshold"] for b in bodies) == sorted(crossed)
    [drift] = [b for b in bodies if b["threshold"] == "drift_share"]
    assert set(drift["sources"]["requests"]["features"]) == {"scd_a", "attr_b"}
    assert drift["period"] == {"since": "2026-03-04", "until": "2026-03-04"}
    assert drift["reports"]["requests"].endswith("2026-03-04/requests.html")

    run_report(MonitorSettings.from_env(), PERIOD)
    run_report(MonitorSettings.from_env(), PERIOD)
    assert receiver.attempts == len(crossed) and len(receiver.bodies) == len(crossed)
    assert loaded.query("SELECT count(*) FROM monitoring_alerts")[0][0] == len(crossed)


def test_the_webhook_being_down_never_fails_the_job(
    env: dict[str, str], day_of_traffic: Callable[..., None], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALERT_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("ALERT_RETRIES", "1")
    receiver.statuses = [502] * 100
    day_of_traffic(shifted=True)
    result = run_report(MonitorSettings.from_env(), PERIOD)
    assert result.breaches and {o.state for o in result.alerts} == {"failed"}
    assert receiver.bodies == []
    receiver.statuses = []  # the receiver is back: the next run of the period delivers, once
    result = run_report(MonitorSettings.from_env(), PERIOD)
    assert {o.state for o in result.alerts} == {"sent"}
    assert len(receiver.received(len(result.breaches))) == len(result.breaches)


def test_labels_are_compared_only_for_clients_that_have_one(
    env: dict[str, str],
    loaded: TestDatabase,
    champion: MLEModel,
    log_requests: Callable[..., pd.DataFrame],
) -> None:
    # New clients (no label yet) asking the API: their drift is judged, their labels are not.
    asked = feature_store(loaded).sample(n=REQUESTS, random_state=3)
    asked["idx"] = asked["idx"] + 1_000_000
    log_requests(champion, asked, DAY)
    result = run_report(MonitorSettings.from_env(), PERIOD)
    report = result.reports["requests"]
    assert report.value("label_rows") == 0.0 and report.value("label_drift_score") is None
    assert "batch" not in result.reports and result.rows["batch"] == 0
    assert ("batch", "rows", "", 0.0) in [r[3:] for r in metrics(loaded)]


def test_a_champion_without_a_reference_sample_is_skipped_with_a_warning(
    env: dict[str, str],
    loaded: TestDatabase,
    model_dir: Path,
    small_dataset: Path,
    day_of_traffic: Callable[..., None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    day_of_traffic()
    # A version saved as versions were before they carried a reference sample (and a gate).
    from .conftest import raw_features

    frame = raw_features(small_dataset)
    old = CustomerModel(random_state=1).fit(frame.drop(columns="idx"))
    version = old.save(model_dir).name
    registry.promote(model_dir, version, "a version from before reference samples")
    with caplog.at_level(logging.WARNING, logger="monitoring"):
        result = run_report(MonitorSettings.from_env(), PERIOD)
    assert result.reference_missing and result.model_version == version and result.reports == {}
    assert any("has no reference sample" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    written = {(r[3], r[4]): r[6] for r in metrics(loaded)}
    assert written[("requests", "reference_missing")] == written[("batch", "reference_missing")] == 1.0
    assert written[("requests", "rows")] == REQUESTS and written[("batch", "rows")] == 3_000


def test_without_a_champion_the_job_says_so(env: dict[str, str], model_dir: Path) -> None:
    shutil.rmtree(model_dir)
    with pytest.raises(NoChampion, match=r"no champion in .*: train and promote a model first"):
        run_report(MonitorSettings.from_env(), PERIOD)


def test_the_batch_ood_rate_is_the_recorded_verdicts_and_the_gate_judges_only_rows_without_one(
    env: dict[str, str], loaded: TestDatabase, day_of_traffic: Callable[..., None]
) -> None:
    """batch_predictions.in_distribution (recorded when the day was scored) is what the report
    counts; rows scored without one (days before the column) are judged by the champion's gate."""
    day_of_traffic()
    loaded.query(
        "UPDATE batch_predictions SET in_distribution = (client_idx %% 4 <> 0) WHERE partition_date = %s", (DAY,)
    )
    recorded = run_report(MonitorSettings.from_env(), PERIOD).reports["batch"].value("ood_rate")
    assert recorded == pytest.approx(0.25, abs=0.02)  # the recorded quarter, not the gate's ~1 %

    loaded.query("UPDATE batch_predictions SET in_distribution = NULL WHERE partition_date = %s", (DAY,))
    judged = run_report(MonitorSettings.from_env(), PERIOD).reports["batch"]
    assert judged.value("ood_rows") == 3_000 and judged.value("ood_rate") < 0.05


def test_a_request_logged_as_one_batch_row_is_read_as_its_predictions(
    env: dict[str, str], loaded: TestDatabase, champion: MLEModel
) -> None:
    """/predict/batch logs a request of many rows as one row of prediction_batches: the report
    reads it through prediction_log, one row per prediction, with each client's label."""
    asked = feature_store(loaded).sample(n=REQUESTS, random_state=5)
    logger = PredictionLogger(loaded.settings("mle"))
    champion.prediction_logger = logger
    try:
        champion.predict_with_logging(asked["idx"].to_numpy(), asked[COLUMNS], api_key="batch-client")
        assert logger.flush()
    finally:
        champion.prediction_logger = None
        logger.close()
    assert loaded.query("SELECT count(*), sum(rows) FROM prediction_batches") == [(1, REQUESTS)]
    result = run_report(MonitorSettings.from_env(), Period.day(datetime.now(UTC).date()))
    assert result.rows["requests"] == REQUESTS
    assert result.reports["requests"].value("label_rows") == REQUESTS  # monitoring.request_labels saw the batch
