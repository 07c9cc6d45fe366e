"""The MLEModel contract, exercised with a small rule-based model that implements it for real."""

from __future__ import annotations

from typing import Self

import numpy as np
import pandas as pd
import pytest

from machine_learning_engineering import ood, registry
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


def test_batch_call_returns_labels_and_logs_the_request_as_one_batch_row(companydata, model, logger) -> None:
    frame = pd.DataFrame([{**ROW, "attr_a": 1, "scd_a": float("nan")}, ROW])
    labels = model.predict_with_logging([7, 8], frame)
    assert labels.tolist() == [0, 1]
    assert logger.flush()
    assert companydata.query(
        "SELECT source, batch_row, client_idx, label, features->'scd_a' FROM prediction_log ORDER BY client_idx"
    ) == [
        ("batch", 1, 7, 0, None),  # NaN is stored as JSON null
        ("batch", 2, 8, 1, 0.55),
    ]
    assert companydata.query("SELECT count(*) FROM predictions") == [(0,)]
    assert companydata.query("SELECT rows, client_idx FROM prediction_batches") == [(2, [7, 8])]


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
    assert companydata.query("SELECT count(*), sum(probability) FROM prediction_log") == [(3, 3.0)]


@pytest.fixture
def gated(feature_frame, logger) -> RuleModel:
    """A model with its out-of-distribution gate and reference sample, as training makes them."""
    model = RuleModel().fit(feature_frame).fit_reference(feature_frame, seed=3, sample_rows=2000)
    model.version_ = "rule-gated"
    model.prediction_logger = logger
    return model


def test_a_version_keeps_its_gate_and_reference_sample_in_its_manifest(gated, feature_frame, tmp_path) -> None:
    path = gated.save(tmp_path)
    assert sorted(p.name for p in path.iterdir()) == [
        "events.jsonl",
        "metadata.json",
        "model.joblib",
        ood.GATE_FILE,
        ood.REFERENCE_FILE,
    ]
    metadata = registry.read_metadata(tmp_path, path.name)
    assert sorted(metadata["files"]) == [ood.GATE_FILE, ood.REFERENCE_FILE]
    assert metadata["files"][ood.GATE_FILE] == registry.sha256(path / ood.GATE_FILE)
    summary = metadata["ood"]
    assert summary["features"] == SCHEMA.kinds and summary["ranges"]["attr_a"] == [1.0, 5.0]
    assert 0 < summary["detector"]["training_flag_rate"] <= 0.0101 and summary["detector"]["threshold"] > 0
    assert metadata["reference"]["rows"] == 2000
    # The artifact holds neither: they are files of their own.
    assert b"OODGate" not in (path / "model.joblib").read_bytes()
    loaded = RuleModel.load(tmp_path, path.name)
    rows = [ROW, {**ROW, "attr_a": 50}, {**ROW, "attr_b": "zz"}]
    assert loaded.check_distribution(rows) == gated.check_distribution(rows)
    assert [v.in_distribution for v in loaded.check_distribution(rows)] == [True, False, False]
    registry.smoke_check_distribution(loaded, loaded.metadata_)  # what serving checks before it swaps a version in
    reference = RuleModel.load_reference(tmp_path, path.name)
    assert list(reference.columns) == [*SCHEMA.names, "label", "prediction", "probability"]
    assert len(reference) == 2000 and reference["label"].dtype == "int64"
    pd.testing.assert_frame_equal(reference.reset_index(drop=True), gated.reference_.reset_index(drop=True))
    assert set(reference["attr_b"].dropna()) <= set(feature_frame["attr_b"])
    assert (reference["prediction"] == (reference["attr_a"] > gated.cut_)).all()


@pytest.mark.parametrize("damage", ["corrupt gate", "no gate", "no reference"])
def test_a_damaged_gate_or_reference_refuses_the_version(gated, tmp_path, damage) -> None:
    path = gated.save(tmp_path)
    if damage == "corrupt gate":
        data = bytearray((path / ood.GATE_FILE).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (path / ood.GATE_FILE).write_bytes(bytes(data))
        expected = f"{ood.GATE_FILE} does not match its sha256: corrupted"
    else:
        name = ood.GATE_FILE if damage == "no gate" else ood.REFERENCE_FILE
        (path / name).unlink()
        expected = f"is incomplete: no {name}"
    with pytest.raises(registry.ModelVersionError, match=expected):
        RuleModel.load(tmp_path, path.name)


def test_a_version_saved_without_a_gate_loads_serves_and_says_so(model, tmp_path) -> None:
    path = model.save(tmp_path)  # never given fit_reference: as versions were before gates
    metadata = registry.read_metadata(tmp_path, path.name)
    assert "files" not in metadata and "ood" not in metadata
    loaded = RuleModel.load(tmp_path, path.name)
    assert loaded.ood_gate_ is None and RuleModel.load_reference(tmp_path, path.name) is None
    registry.smoke_check_distribution(loaded, loaded.metadata_)
    assert loaded.check_distribution([ROW]) == [ood.NO_GATE]
    assert ood.NO_GATE.in_distribution is None and ood.NO_GATE.reasons == ["no gate in this version"]


def test_each_logged_prediction_carries_its_verdict(companydata, gated, model, logger) -> None:
    frame = pd.DataFrame([ROW, {**ROW, "attr_a": 50}, {**ROW, "attr_b": "zz", "scd_a": None}])
    assert gated.predict_with_logging([1, 2, 3], frame).tolist() == [1, 1, 1]
    model.predict_with_logging(4, pd.DataFrame([ROW]))  # a model without a gate
    assert logger.flush()
    rows = companydata.query("SELECT client_idx, in_distribution, ood_reasons FROM prediction_log ORDER BY client_idx")
    assert rows == [
        (1, True, []),
        (2, False, ["attr_a=50 outside [1, 5] seen in training"]),
        (3, False, ["attr_b='zz' not seen in training"]),
        (4, None, ["no gate in this version"]),
    ]


def test_verdicts_given_by_the_caller_are_logged_as_given(companydata, gated, logger) -> None:
    frame = SCHEMA.frame([ROW, ROW])
    verdicts = gated.check_distribution([ROW, {**ROW, "attr_a": 50}])  # e.g. the API asked first
    gated.predict_with_logging([5, 6], frame, validated=True, verdicts=verdicts)
    with pytest.raises(ValueError, match="1 verdicts for 2 feature rows"):
        gated.predict_with_logging([7, 8], frame, validated=True, verdicts=verdicts[:1])
    assert logger.flush()
    assert companydata.query("SELECT client_idx, in_distribution FROM prediction_log ORDER BY client_idx") == [
        (5, True),
        (6, False),
    ]


def test_validated_columns_take_the_same_logged_path_without_a_frame(companydata, gated, logger) -> None:
    rows = [ROW, {**ROW, "attr_a": 50, "scd_a": None}, {**ROW, "attr_b": "zz"}]
    columns = SCHEMA.columns(rows)
    labels, probabilities = gated.predict_with_logging(
        [1, 2, 3], columns, with_probability=True, api_key="k", validated=True
    )
    frame_labels, frame_probabilities = gated.score(SCHEMA.validate(pd.DataFrame(rows)))
    assert labels.tolist() == frame_labels.tolist() and probabilities.tolist() == frame_probabilities.tolist()
    assert gated.check_distribution(columns) == gated.check_distribution(pd.DataFrame(rows).astype({"attr_b": object}))
    assert gated.predict_with_logging(4, SCHEMA.columns([ROW]), validated=True) == 1  # one row: its label
    assert logger.flush()
    assert companydata.query(
        "SELECT client_idx, label, features, api_key, in_distribution FROM prediction_log ORDER BY client_idx"
    ) == [
        (1, 1, ROW, "k", True),
        (2, 1, {**ROW, "attr_a": 50, "scd_a": None}, "k", False),
        (3, 1, {**ROW, "attr_b": "zz"}, "k", False),
        (4, 1, ROW, None, True),
    ]


def test_columns_not_yet_validated_are_validated_naming_the_client(gated) -> None:
    columns = {name: [ROW[name], ROW[name]] for name in SCHEMA.names}
    with pytest.raises(FeatureError, match="attr_a must be a number: 'five' in client idx 8"):
        gated.predict_with_logging([7, 8], {**columns, "attr_a": [1, "five"]})
    with pytest.raises(ValueError, match="1 client idx for 2 feature rows"):
        gated.predict_with_logging([7], SCHEMA.columns([ROW, ROW]), validated=True)
    assert gated.predict_with_logging([7, 8], columns).tolist() == [1, 1]


def test_a_version_without_a_gate_judges_columns_as_no_gate(model) -> None:
    assert model.check_distribution(SCHEMA.columns([ROW, ROW])) == [ood.NO_GATE, ood.NO_GATE]
