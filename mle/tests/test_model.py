"""The MLEModel contract, exercised with a small rule-based model that implements it for real."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Self

import numpy as np
import pandas as pd
import pytest

from machine_learning_engineering.model import MLEModel
from machine_learning_engineering.prediction_log import PredictionLogger


class RuleModel(MLEModel):
    """label = attr_a above the training median; probability = attr_a / 5."""

    def fit(self, data: pd.DataFrame) -> Self:
        self.cut_ = float(data["attr_a"].median())
        return self

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        return (features["attr_a"].to_numpy() > self.cut_).astype(int)

    def predict_labels_and_probabilities(self, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        return self.predict(features), features["attr_a"].to_numpy() / 5

    def save(self, model_dir: Path) -> Path:
        (model_dir / "rule.pkl").write_bytes(pickle.dumps(self))
        self.version_ = "rule-1"
        return model_dir

    @classmethod
    def load(cls, model_dir: Path, version: str | None = None) -> Self:
        model = pickle.loads((model_dir / "rule.pkl").read_bytes())
        model.version_ = "rule-1"
        return model


@pytest.fixture
def logger(companydata):
    logger = PredictionLogger(companydata.settings("mle"))
    yield logger
    logger.close()


@pytest.fixture
def model(logger) -> RuleModel:
    model = RuleModel().fit(pd.DataFrame({"attr_a": [1, 2, 3, 4, 5]}))
    model.version_ = "rule-1"
    model.prediction_logger = logger
    return model


ROW = {"attr_a": 5, "attr_b": "c", "scd_a": 0.55, "scd_b": 3}


def test_challenge_call_returns_the_label_and_logs_one_row(companydata, model, logger) -> None:
    label = model.predict_with_logging(150000, pd.DataFrame([ROW]))
    assert label == 1 and isinstance(label, int)
    assert logger.flush()
    rows = companydata.query("SELECT client_idx, label, probability, model_version, features FROM predictions")
    assert rows == [(150000, 1, 1.0, "rule-1", ROW)]


def test_each_call_logs_exactly_one_row(companydata, model, logger) -> None:
    for i in range(25):
        model.predict_with_logging(i, pd.DataFrame([{**ROW, "attr_a": i % 5 + 1}]))
    assert logger.flush()
    assert companydata.query(
        "SELECT count(*), count(DISTINCT client_idx), count(DISTINCT prediction_id) FROM predictions"
    ) == [(25, 25, 25)]


def test_batch_call_returns_labels_and_logs_each_row(companydata, model, logger) -> None:
    frame = pd.DataFrame([{**ROW, "attr_a": 1, "scd_a": float("nan")}, ROW])
    labels = model.predict_with_logging([7, 8], frame)
    assert labels.tolist() == [0, 1]
    assert logger.flush()
    assert companydata.query("SELECT client_idx, label, features->'scd_a' FROM predictions ORDER BY client_idx") == [
        (7, 0, None),  # NaN is stored as JSON null
        (8, 1, 0.55),
    ]


def test_idx_and_rows_must_match(model) -> None:
    with pytest.raises(ValueError, match="2 client idx for 1 feature rows"):
        model.predict_with_logging([1, 2], pd.DataFrame([ROW]))


def test_the_logger_is_not_part_of_the_saved_model(model, tmp_path) -> None:
    model.save(tmp_path)
    loaded = RuleModel.load(tmp_path)
    assert loaded.prediction_logger is None and loaded.cut_ == model.cut_


def test_default_logger_writes_as_mle_user_from_the_environment(companydata, monkeypatch) -> None:
    for key, value in companydata.env().items():
        if key.startswith("DB_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setattr(PredictionLogger, "_default", None)
    model = RuleModel().fit(pd.DataFrame({"attr_a": [1, 5]}))
    model.predict_with_logging(1, pd.DataFrame([ROW]))
    default = PredictionLogger.default()
    assert default.settings.user == "mle_user" and default.flush()
    default.close()
    assert companydata.query("SELECT model_version FROM predictions") == [("unversioned",)]


def test_with_probability_returns_what_was_logged(companydata, model, logger) -> None:
    assert model.predict_with_logging(3, pd.DataFrame([ROW]), with_probability=True) == (1, 1.0)
    labels, probabilities = model.predict_with_logging([4, 5], pd.DataFrame([ROW, ROW]), with_probability=True)
    assert labels.tolist() == [1, 1] and probabilities.tolist() == [1.0, 1.0]
    assert logger.flush()
    assert companydata.query("SELECT count(*), sum(probability) FROM predictions") == [(3, 3.0)]
