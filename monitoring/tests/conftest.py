"""Fixtures of the drift monitor's tests: generated data, a champion trained on it, the database
loaded by the real ETL, the period's rows as the API and the batch scoring write them, and a
local HTTP receiver for the alerts' webhook."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from psycopg2.extras import execute_values

from data_engineering.db import etl_transaction
from data_engineering.features import build_features
from data_engineering.generate import GeneratorConfig, generate, true_probability
from data_engineering.load import available_months, load_customers, load_sales
from data_science.config import TrainSettings
from data_science.train import train_and_register
from machine_learning_engineering import registry
from machine_learning_engineering.db import connect
from machine_learning_engineering.model import MLEModel, model_class
from testkit.fixtures import TestDatabase, generated_dataset, wait_until

# Enough clients for a judged batch (>= MONITOR_MIN_ROWS) and a model with skill.
SMALL = GeneratorConfig(customers=3_000, months=1, seed=21)
DAY = date(2026, 3, 4)
COLUMNS = ["attr_a", "attr_b", "scd_a", "scd_b"]


def raw_features(raw: Path) -> pd.DataFrame:
    """feature_store's rows of a generated dataset, from its files (as feature_store.sql builds them)."""
    profiles = pd.read_csv(raw / "customer_profiles.csv")
    activity = pd.read_csv(raw / "customer_activity.csv")
    latest = activity[activity["valid_to"].isna()][["idx", "scd_a", "scd_b"]]
    frame = profiles.merge(latest, on="idx", how="left").merge(pd.read_csv(raw / "labels.csv"), on="idx")
    frame = frame[["idx", *COLUMNS, "label"]].copy()
    frame["attr_b"] = pd.Series([v if isinstance(v, str) else np.nan for v in frame["attr_b"]], dtype=object)
    for column in ("attr_a", "scd_a", "scd_b"):
        frame[column] = frame[column].astype("float64")
    return frame


def scored(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with the generator's true probability as the `probability`, its label at 0.15 as
    the `prediction`, and no gate verdicts: what build_report compares, without a model."""
    frame = frame.copy()
    p = true_probability(
        frame["attr_a"].to_numpy(), frame["attr_b"].to_numpy(), frame["scd_a"].to_numpy(), frame["scd_b"].to_numpy()
    )
    frame["probability"] = p
    frame["prediction"] = (p > 0.15).astype("float64")
    frame["out_of_distribution"] = np.nan
    return frame


def shift(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Two features moved: scd_a up by 0.2 (kept below 1) and 40 % of attr_b set to 'd'."""
    rng = np.random.default_rng(seed)
    frame = frame.copy()
    frame["scd_a"] = (frame["scd_a"] + 0.2).clip(upper=0.999)
    frame.loc[rng.random(len(frame)) < 0.4, "attr_b"] = "d"
    return frame


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generated_dataset(tmp_path_factory, SMALL)


@pytest.fixture(scope="session")
def pools(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int, int], pd.DataFrame]:
    """Generated clients, scored by the true probability: pools(customers, seed), made once each."""
    made: dict[tuple[int, int], pd.DataFrame] = {}

    def pool(customers: int, seed: int) -> pd.DataFrame:
        if (customers, seed) not in made:
            raw = tmp_path_factory.mktemp(f"pool-{customers}-{seed}") / "raw"
            generate(raw, GeneratorConfig(customers=customers, months=1, seed=seed))
            made[customers, seed] = scored(raw_features(raw).drop(columns="idx"))
        return made[customers, seed].copy()

    return pool


@pytest.fixture(scope="session")
def champion_dir(tmp_path_factory: pytest.TempPathFactory, small_dataset: Path) -> Path:
    """A model directory whose champion (data_science's CustomerModel, with its gate and reference
    sample) was trained on the small dataset, as `companydata-train` trains it."""
    model_dir = tmp_path_factory.mktemp("champion") / "models"
    frame = raw_features(small_dataset)
    frame["attr_a"] = frame["attr_a"].astype("int64")
    frame["scd_b"] = frame["scd_b"].astype("int64")
    outcome = train_and_register(frame, TrainSettings(model_dir=model_dir, seed=5))
    assert outcome.promoted, outcome.decision
    return model_dir


@pytest.fixture
def model_dir(champion_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the champion's model directory."""
    return Path(shutil.copytree(champion_dir, tmp_path / "models"))


@pytest.fixture
def champion(model_dir: Path) -> MLEModel:
    version = registry.champion(model_dir)
    assert version is not None
    return model_class("customer").load(model_dir, version)


@pytest.fixture
def loaded(companydata: TestDatabase, small_dataset: Path) -> TestDatabase:
    """The bootstrapped database with the small dataset loaded by the real ETL."""
    with etl_transaction(companydata.settings("etl")) as cur:
        load_customers(cur, small_dataset)
        load_sales(cur, small_dataset, available_months(small_dataset))
        build_features(cur)
    return companydata


@pytest.fixture
def env(loaded: TestDatabase, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment the monitor reads (as in Compose), pointed at the test database; returned
    for subprocesses too."""
    import os

    for name in list(os.environ):
        if name.endswith("_DB_PASSWORD") or name.startswith(("MONITOR_", "ALERT_")):
            monkeypatch.delenv(name)
    values = {
        **{k: v for k, v in loaded.env().items() if k.startswith("DB_")},
        "MODEL_DIR": str(model_dir),
        "MODEL_CLASS": "customer",
        "REPORTS_DIR": str(tmp_path / "reports" / "html"),
        "MONITORING_WORKSPACE": str(tmp_path / "reports" / "workspace"),
        "ALERT_BACKOFF_SECONDS": "0.05",
        "ALERT_TIMEOUT_SECONDS": "2",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def feature_store(db: TestDatabase) -> pd.DataFrame:
    rows = db.query(f"SELECT idx, {', '.join(COLUMNS)} FROM feature_store ORDER BY idx")
    frame = pd.DataFrame(rows, columns=["idx", *COLUMNS])
    frame["attr_b"] = frame["attr_b"].astype(object)
    return frame


@pytest.fixture
def score_batch(loaded: TestDatabase) -> Callable[[MLEModel, date], int]:
    """Every client of feature_store scored by `model` into batch_predictions for `day`, as the
    `batch_predictions` asset does (as mle_user)."""

    def score(model: MLEModel, day: date) -> int:
        frame = feature_store(loaded)
        labels, probabilities = model.predict_labels_and_probabilities(frame[COLUMNS])
        verdicts = model.check_distribution(model.feature_schema.validate(frame[COLUMNS]))
        rows = [
            (day, int(i), int(label), float(p), model.version_, v.in_distribution)
            for i, label, p, v in zip(frame["idx"], labels, probabilities, verdicts, strict=True)
        ]
        conn = connect(loaded.settings("mle"))
        try:
            with conn, conn.cursor() as cur:
                cur.execute("DELETE FROM batch_predictions WHERE partition_date = %s", (day,))
                execute_values(
                    cur,
                    "INSERT INTO batch_predictions"
                    " (partition_date, client_idx, label, probability, model_version, in_distribution) VALUES %s",
                    rows,
                )
        finally:
            conn.close()
        return len(rows)

    return score


@pytest.fixture
def log_requests(loaded: TestDatabase) -> Callable[..., pd.DataFrame]:
    """Rows logged in `predictions` as the API logs them (as mle_user): `features` (a frame of the
    four features, `idx` the clients) scored and judged by `model`, spread over `day`."""

    def log(model: MLEModel, features: pd.DataFrame, day: date) -> pd.DataFrame:
        clean = model.feature_schema.validate(features[COLUMNS])
        labels, probabilities = model.score(clean)
        verdicts = model.check_distribution(clean)
        start = datetime.combine(day, time(), UTC)
        step = timedelta(seconds=86_399 / max(len(clean), 1))
        documents = clean.to_json(orient="records", lines=True).splitlines()
        rows = [
            (
                f"{day.isoformat()}-{i}",
                int(idx),
                int(labels[i]),
                float(probabilities[i]),
                model.version_,
                documents[i],
                "test-client",
                start + i * step,
                verdicts[i].in_distribution,
                json.dumps(verdicts[i].reasons),
            )
            for i, idx in enumerate(features["idx"])
        ]
        conn = connect(loaded.settings("mle"))
        try:
            with conn, conn.cursor() as cur:
                execute_values(
                    cur,
                    "INSERT INTO predictions (prediction_id, client_idx, label, probability, model_version, features,"
                    " api_key, predicted_at, in_distribution, ood_reasons)"
                    " VALUES %s",
                    rows,
                    template="(md5(%s)::uuid, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                )
        finally:
            conn.close()
        return clean

    return log


class Receiver:
    """A local HTTP endpoint that records every POST (its JSON body) and answers with the next of
    `statuses` (200 once they run out); `delay` seconds before answering."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.delay = 0.0
        self.attempts = 0
        self._lock = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.attempts += 1
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    delay = receiver.delay
                if delay:
                    threading.Event().wait(delay)  # holds this request only; the test waits on events
                if status == 200:
                    with receiver._lock:
                        receiver.bodies.append(json.loads(body))
                        receiver._lock.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/drift?token=s3cret"

    def received(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        wait_until(lambda: len(self.bodies) >= count, timeout, f"{count} alert(s) at the receiver")
        return list(self.bodies)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()
