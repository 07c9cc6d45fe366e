"""Batch scoring against a real PostgreSQL bootstrapped like the stack: feature_store read with
COPY as ds_user, batch_predictions written with COPY as mle_user, a day replaced in one
transaction, bad data refused naming the client, and the gate's verdict recorded per client."""

from __future__ import annotations

import io
import shutil
from datetime import date
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
import psycopg2
import pytest
from dagster import AssetKey, DagsterInstance, materialize
from psycopg2 import errors

from data_engineering.db import etl_transaction
from data_engineering.features import build_features
from data_engineering.load import load_customers
from data_science.train import train
from machine_learning_engineering import registry
from machine_learning_engineering.db import connect
from machine_learning_engineering.model import Labels, MLEModel, Probabilities, model_class
from machine_learning_engineering.schema import INT32_MAX, Feature, FeatureError, FeatureSchema
from orchestration.assets.scoring import CHUNK_ROWS, Outcome, ScoringError, score_partition
from orchestration.definitions import ASSETS
from testkit import localdb
from testkit.fixtures import TestDatabase

DAY, OTHER_DAY = date(2026, 3, 4), date(2026, 3, 5)
# 1,500 clients in chunks of 200: eight COPYs each way, the last one short.
CHUNK = 200
FEATURES = ["attr_a", "attr_b", "scd_a", "scd_b"]


def run_etl(db: TestDatabase, raw_dir: Path) -> None:
    with etl_transaction(db.settings("etl")) as cur:
        load_customers(cur, raw_dir)
        build_features(cur)


@pytest.fixture(scope="module")
def trained(companydata_cluster: TestDatabase, small_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory whose champion was trained (with its gate and, when exact, its compiled
    scorer) on the small dataset's feature_store."""
    db = companydata_cluster
    if not db.cluster.running():
        db.cluster.start(fast=True)
    db.reset()
    run_etl(db, small_dataset)
    frame = pd.DataFrame(
        db.query("SELECT idx, attr_a, attr_b, scd_a, scd_b, label FROM feature_store ORDER BY idx"),
        columns=["idx", *FEATURES, "label"],
    )
    model, _ = train(frame, test_size=0.2, seed=42)
    assert model.ood_gate_ is not None
    models = tmp_path_factory.mktemp("scoring") / "models"
    version = model.save(models).name
    registry.promote(models, version, "the tests' champion")
    return models


@pytest.fixture
def loaded(stack: TestDatabase, small_dataset: Path) -> TestDatabase:
    run_etl(stack, small_dataset)
    return stack


@pytest.fixture
def model(trained: Path) -> MLEModel:
    return model_class("customer").load(trained)


def score(db: TestDatabase, model: MLEModel, day: date = DAY, **options: Any) -> Outcome:
    return score_partition(db.settings("ds"), db.settings("mle"), model, day, chunk_rows=CHUNK, **options)


def features(db: TestDatabase) -> pd.DataFrame:
    """feature_store as the old path read it: rows through the cursor, into a frame."""
    frame = pd.DataFrame(
        db.query(f"SELECT idx, {', '.join(FEATURES)} FROM feature_store ORDER BY idx"), columns=["idx", *FEATURES]
    )
    frame["attr_b"] = frame["attr_b"].astype(object)
    return frame


def day_rows(db: TestDatabase, day: date = DAY) -> pd.DataFrame:
    return pd.DataFrame(
        db.query(
            "SELECT client_idx, label, probability, model_version, in_distribution FROM batch_predictions"
            " WHERE partition_date = %s ORDER BY client_idx",
            (day,),
            role="ds",
        ),
        columns=["client_idx", "label", "probability", "model_version", "in_distribution"],
    )


def digest(db: TestDatabase, day: date = DAY) -> str:
    rows = db.query(
        "SELECT count(*), md5(coalesce(string_agg(b::text, '|' ORDER BY client_idx), ''))"
        " FROM batch_predictions AS b WHERE partition_date = %s",
        (day,),
    )
    return f"{rows[0][0]}:{rows[0][1]}"


def test_every_client_is_scored_once_exactly_as_the_model_scores_a_frame(loaded: TestDatabase, model: MLEModel) -> None:
    outcome = score(loaded, model)

    frame = features(loaded)
    assert outcome.published and outcome.passed and outcome.problems == []
    assert outcome.clients == outcome.scored == outcome.written == len(frame) == 1_500
    assert outcome.replaced == 0
    rows = day_rows(loaded)
    assert rows["client_idx"].tolist() == frame["idx"].tolist()  # one row per client, no other
    labels, probabilities = model.score(model.feature_schema.validate(frame[FEATURES]))
    np.testing.assert_array_equal(rows["label"].to_numpy(), labels)
    np.testing.assert_array_equal(rows["probability"].to_numpy(), probabilities)  # bit for bit
    assert set(rows["model_version"]) == {model.version_}
    # The gate's verdict per client, as the API's per-row check gives it.
    verdicts = [v.in_distribution for v in model.check_distribution(model.feature_schema.validate(frame[FEATURES]))]
    assert rows["in_distribution"].tolist() == verdicts
    assert outcome.out_of_distribution == verdicts.count(False)
    assert outcome.positives == int(labels.sum())
    # Every stage was timed.
    assert {"copy out", "decode", "validate", "gate", "score", "encode", "copy in", "commit"} <= set(
        outcome.stages.seconds
    )


def test_overlapped_and_sequential_runs_and_any_chunk_size_write_the_same_rows(
    loaded: TestDatabase, model: MLEModel
) -> None:
    score(loaded, model)
    expected = day_rows(loaded)
    variants: list[dict[str, Any]] = [{"overlap": False}, {"scorers": 1}, {"scorers": 3}]
    variants += [{"chunk_rows": 1}, {"chunk_rows": 1_499}, {"chunk_rows": CHUNK_ROWS}]
    for options in variants:
        outcome = score_partition(
            loaded.settings("ds"), loaded.settings("mle"), model, DAY, **{"chunk_rows": CHUNK, **options}
        )
        assert outcome.published and outcome.replaced == 1_500, options
        pd.testing.assert_frame_equal(day_rows(loaded), expected)


def test_a_rerun_replaces_its_day_only(loaded: TestDatabase, model: MLEModel) -> None:
    score(loaded, model)
    score(loaded, model, OTHER_DAY)
    first, other = day_rows(loaded), digest(loaded, OTHER_DAY)

    again = score(loaded, model)

    assert again.published and again.replaced == again.written == 1_500
    pd.testing.assert_frame_equal(day_rows(loaded), first)
    assert digest(loaded, OTHER_DAY) == other
    assert loaded.query("SELECT count(*) FROM batch_predictions") == [(3_000,)]


class Strict(MLEModel):
    """A model without a gate whose attr_a may not be missing: P = attr_a / 10."""

    feature_schema: ClassVar[FeatureSchema] = FeatureSchema(
        (
            Feature("attr_a", "integer", "required here", 1, 0, INT32_MAX, nullable=False),
            Feature("attr_b", "category", "", "a"),
        )
    )

    def fit(self, data: pd.DataFrame) -> Self:
        return self

    def score(self, features: pd.DataFrame) -> tuple[Labels, Probabilities]:
        p = np.clip(features["attr_a"].to_numpy(dtype=np.float64) / 10, 0.0, 1.0)
        return (p >= 0.5).astype(np.int64), p


@pytest.mark.parametrize(
    ("column", "value", "message", "model_kind"),
    [
        ("scd_a", "'Infinity'", "scd_a must be finite: infinity in client idx {idx}", "customer"),
        ("attr_a", "NULL", "attr_a is required but missing (null or NaN) in client idx {idx}", "strict"),
    ],
)
def test_bad_data_fails_naming_the_client_and_the_day_keeps_what_it_held(
    loaded: TestDatabase, model: MLEModel, column: str, value: str, message: str, model_kind: str
) -> None:
    scorer = model if model_kind == "customer" else Strict()
    assert score(loaded, scorer).published
    before = digest(loaded)
    # A client in the seventh chunk: six chunks are already in the transaction when it fails.
    bad_idx = int(features(loaded)["idx"].iloc[1_234])
    loaded.query(f"UPDATE feature_store SET {column} = {value} WHERE idx = %s", (bad_idx,))

    with pytest.raises(FeatureError) as raised:
        score(loaded, scorer)

    assert str(raised.value) == message.format(idx=bad_idx)
    assert digest(loaded) == before


def test_a_version_without_a_gate_records_no_verdict_and_an_unseen_value_is_out_of_distribution(
    loaded: TestDatabase, model: MLEModel
) -> None:
    odd = int(features(loaded)["idx"].iloc[700])
    loaded.query("UPDATE feature_store SET attr_a = 99, attr_b = 'never-seen' WHERE idx = %s", (odd,))
    score(loaded, model)
    rows = day_rows(loaded).set_index("client_idx")
    assert rows.loc[[odd], "in_distribution"].tolist() == [False]
    assert rows["in_distribution"].notna().all()

    model.ood_gate_ = None
    outcome = score(loaded, model, OTHER_DAY)
    assert outcome.published and outcome.out_of_distribution is None
    assert day_rows(loaded, OTHER_DAY)["in_distribution"].isna().all()
    no_gate = Strict()
    assert score(loaded, no_gate, date(2026, 3, 6)).published
    assert day_rows(loaded, date(2026, 3, 6))["in_distribution"].isna().all()


class Broken(Strict):
    """Scores one client out of [0, 1]."""

    def score(self, features: pd.DataFrame) -> tuple[Labels, Probabilities]:
        labels, p = super().score(features)
        p = p.copy()
        p[len(p) // 2] = 1.5
        return labels, p


def test_scores_that_fail_the_check_are_not_published(loaded: TestDatabase) -> None:
    assert score(loaded, Strict()).published
    before = digest(loaded)

    outcome = score(loaded, Broken())

    assert not outcome.published and not outcome.passed
    assert len(outcome.problems) == 1 and "probability 1.5 (not in [0, 1]) for client idx" in outcome.problems[0]
    assert digest(loaded) == before


def test_mle_user_cannot_read_feature_store_nor_ds_user_write_the_scores(loaded: TestDatabase, model: MLEModel) -> None:
    score(loaded, model)
    before = digest(loaded)

    with pytest.raises(errors.InsufficientPrivilege, match="permission denied for table feature_store"):
        score_partition(loaded.settings("mle"), loaded.settings("mle"), model, DAY)
    conn = connect(loaded.settings("mle"))
    try:
        with conn.cursor() as cur, pytest.raises(errors.InsufficientPrivilege):
            cur.copy_expert("COPY (SELECT * FROM feature_store) TO STDOUT (FORMAT binary)", io.BytesIO())
    finally:
        conn.close()
    # The data scientist's login reads feature_store but may not write scores (its sessions are
    # read-only by default; lifted, as anyone can, the missing privilege still refuses).
    conn = connect(loaded.settings("ds"))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SET default_transaction_read_only = off")
            with pytest.raises(errors.InsufficientPrivilege, match="permission denied for table batch_predictions"):
                cur.execute("DELETE FROM batch_predictions WHERE partition_date = %s", (DAY,))
    finally:
        conn.close()
    assert digest(loaded) == before


def test_a_database_made_before_the_verdict_column_says_which_bootstrap_file_to_apply(
    loaded: TestDatabase, model: MLEModel
) -> None:
    score(loaded, model)
    loaded.query("ALTER TABLE batch_predictions DROP COLUMN in_distribution")
    migration = (localdb.INIT_DIR / "90-batch-ood.sql").read_text()
    try:
        before = digest(loaded)
        with pytest.raises(ScoringError, match=r"column \"in_distribution\" .* before bootstrap/90-batch-ood.sql"):
            score(loaded, model)
        assert digest(loaded) == before
    finally:
        loaded.query(migration)
    loaded.query(migration)  # a re-run changes nothing
    assert score(loaded, model).published
    assert day_rows(loaded)["in_distribution"].notna().all()


def test_the_asset_fails_at_once_on_bad_data_and_keeps_the_day(
    loaded: TestDatabase, trained: Path, model_dir: Path, resources: dict[str, object]
) -> None:
    shutil.copytree(trained, model_dir)
    instance = DagsterInstance.ephemeral()
    ok = materialize(ASSETS, selection=[AssetKey("batch_predictions")], resources=resources, instance=instance,
                     partition_key=DAY.isoformat())  # fmt: skip
    assert ok.success
    event = instance.get_latest_materialization_event(AssetKey("batch_predictions"))
    assert event is not None and event.asset_materialization is not None
    meta = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    assert meta["rows"] == 1_500 and meta["published"] is True and 0 <= meta["out_of_distribution_share"] < 0.2
    before = digest(loaded)
    bad_idx = int(features(loaded)["idx"].iloc[3])
    loaded.query("UPDATE feature_store SET scd_a = '-Infinity' WHERE idx = %s", (bad_idx,))

    result = materialize(ASSETS, selection=[AssetKey("batch_predictions")], resources=resources, instance=instance,
                         partition_key=DAY.isoformat(), raise_on_error=False)  # fmt: skip

    assert not result.success
    assert "STEP_UP_FOR_RETRY" not in [e.event_type_value for e in result.all_events]
    [failure] = [e for e in result.all_events if e.is_step_failure]
    description = failure.step_failure_data.user_failure_data.description
    assert f"scd_a must be finite: infinity in client idx {bad_idx}" in description
    assert digest(loaded) == before


def test_a_connection_lost_mid_run_leaves_the_day_as_it_was(
    loaded: TestDatabase, model: MLEModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestration.assets import scoring

    score(loaded, model)
    before = digest(loaded)
    real = scoring.PartitionWriter.write
    calls: list[int] = []

    def flaky(self: scoring.PartitionWriter, scores: scoring.Scores) -> int:
        calls.append(1)
        if len(calls) == 3:
            raise psycopg2.OperationalError("server closed the connection unexpectedly")
        return real(self, scores)

    monkeypatch.setattr(scoring.PartitionWriter, "write", flaky)
    with pytest.raises(psycopg2.OperationalError):
        score(loaded, model)
    assert digest(loaded) == before


def test_the_drift_monitor_reads_the_recorded_verdicts(loaded: TestDatabase, model: MLEModel) -> None:
    """monitoring/sql/batch.sql: the batch scores' out-of-distribution share is the one recorded."""
    from monitoring.data import OOD, read_current
    from monitoring.period import Period

    odd = int(features(loaded)["idx"].iloc[10])
    loaded.query("UPDATE feature_store SET attr_a = 99 WHERE idx = %s", (odd,))
    score(loaded, model)
    model.ood_gate_ = None
    score(loaded, model, OTHER_DAY)
    recorded = day_rows(loaded).set_index("client_idx")["in_distribution"]

    batch = read_current(loaded.settings("monitor"), Period.day(DAY), model.feature_schema)["batch"].frame
    assert batch.index.tolist() == recorded.index.tolist()
    assert batch[OOD].tolist() == [0.0 if v else 1.0 for v in recorded]
    assert batch.loc[odd, OOD] == 1.0
    no_gate = read_current(loaded.settings("monitor"), Period.day(OTHER_DAY), model.feature_schema)["batch"].frame
    assert len(no_gate) == 1_500 and no_gate[OOD].isna().all()
