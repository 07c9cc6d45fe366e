"""The MLEModel contract, exercised with a small rule-based model that implements it for real."""

from __future__ import annotations

from typing import Self

import numpy as np
import pandas as pd
import pytest

from machine_learning_engineering.model import MLEModel
from machine_learning_engineering.prediction_log import PredictionLogger
from machine_learning_engineering.schema import Feature, FeatureError, FeatureSchema

SCHEMA = FeatureSchema(
    (
        Feature("attr_a", "integer", "a count", 1),
        Feature("attr_b", "category", "a category", "c"),
        Feature("scd_a", "number", "a score", 0.5),
        Feature("scd_b", "integer", "a level", 3),
    )
)


class RuleModel(MLEModel):
    """label = attr_a above the training median; probability = attr_a / 5."""

    feature_schema = SCHEMA

    def fit(self, data: pd.DataFrame) -> Self:
        self.cut_ = float(data["attr_a"].median())
        return self

    def score(self, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        attr_a = features["attr_a"].to_numpy()
        return (attr_a > self.cut_).astype(np.int64), attr_a / 5


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
    path = model.save(tmp_path)
    loaded = RuleModel.load(tmp_path)
    assert loaded.prediction_logger is None and loaded.cut_ == model.cut_
    assert loaded.version_ == path.name == model.version_
    assert loaded.metadata_["model_class"].endswith(":RuleModel") and loaded.metadata_["features"] == SCHEMA.kinds


def test_input_is_validated_once_by_the_contract_not_by_the_model(model) -> None:
    with pytest.raises(FeatureError, match="attr_a must be a number: 'five' in row 0"):
        model.predict_with_logging(1, pd.DataFrame([{**ROW, "attr_a": "five"}]))
    # A frame the caller built from validated values (the API's) is scored as it is.
    frame = SCHEMA.frame([ROW])
    assert frame.dtypes.tolist() == ["float64", object, "float64", "float64"]
    assert model.predict_with_logging(1, frame, validated=True) == 1


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
