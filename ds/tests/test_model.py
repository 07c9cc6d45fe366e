from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from data_science.features import FeatureError
from data_science.model import CustomerModel
from machine_learning_engineering.prediction_log import PredictionLogger


def test_fit_follows_the_estimator_contract(feature_frame) -> None:
    model = CustomerModel(max_iter=30)
    assert model.fit(feature_frame) is model
    for attribute in ("pipeline_", "threshold_", "feature_names_in_", "categories_", "training_"):
        assert hasattr(model, attribute)
    assert model.categories_ == {"attr_b": ["a", "b", "c", "d"]}
    assert 0 < model.threshold_ < 0.5  # imbalanced label: the cut-off sits well below 0.5


def test_predictions_carry_the_planted_signal(fitted, feature_frame) -> None:
    p = fitted.predict_proba(feature_frame)
    assert p.shape == (len(feature_frame), 2) and np.allclose(p.sum(axis=1), 1)
    assert roc_auc_score(feature_frame["label"], p[:, 1]) > 0.7
    labels = fitted.predict(feature_frame)
    assert labels.shape == (len(feature_frame),) and set(np.unique(labels)) == {0, 1}


def test_save_load_round_trip_gives_identical_predictions(fitted, feature_frame, model_dir) -> None:
    path = fitted.save(model_dir)
    loaded = CustomerModel.load(model_dir)
    assert loaded.version_ == path.name == fitted.version_
    np.testing.assert_array_equal(loaded.predict_proba(feature_frame), fitted.predict_proba(feature_frame))
    np.testing.assert_array_equal(loaded.predict(feature_frame), fitted.predict(feature_frame))
    assert loaded.metadata_["threshold"]["value"] == fitted.threshold_


def test_unknown_category_and_missing_activity_are_scored(fitted) -> None:
    frame = pd.DataFrame(
        [
            {"attr_a": 3, "attr_b": "z", "scd_a": 0.5, "scd_b": 2},  # never seen in training
            {"attr_a": 3, "attr_b": "a", "scd_a": None, "scd_b": None},  # client without activity
        ]
    )
    p = fitted.predict_proba(frame)[:, 1]
    assert np.isfinite(p).all() and fitted.predict(frame).tolist() in ([0, 0], [0, 1], [1, 0], [1, 1])


def test_bad_frames_are_refused_clearly(fitted) -> None:
    with pytest.raises(FeatureError, match=r"missing feature column.s.: scd_b"):
        fitted.predict(pd.DataFrame([{"attr_a": 1, "attr_b": "a", "scd_a": 0.1}]))
    with pytest.raises(FeatureError, match="attr_a must be a number: 'one'"):
        fitted.predict(pd.DataFrame([{"attr_a": "one", "attr_b": "a", "scd_a": 0.1, "scd_b": 1}]))
    with pytest.raises(FeatureError, match="scd_a must be finite: infinity in client idx 77"):
        fitted.predict(pd.DataFrame([{"idx": 77, "attr_a": 1, "attr_b": "a", "scd_a": np.inf, "scd_b": 1}]))


def test_one_class_cannot_be_fitted(feature_frame) -> None:
    with pytest.raises(ValueError, match="cannot learn from one class"):
        CustomerModel().fit(feature_frame.assign(label=0))


def test_predict_with_logging_records_label_probability_and_version(companydata, fitted, model_dir) -> None:
    fitted.save(model_dir)
    model = CustomerModel.load(model_dir)
    model.prediction_logger = PredictionLogger(companydata.settings("mle"))
    features = {"attr_a": 1, "attr_b": "c", "scd_a": 0.55, "scd_b": 3}
    label = model.predict_with_logging(150000, pd.DataFrame([features]))
    expected = model.predict_proba(pd.DataFrame([features]))[0, 1]
    assert model.prediction_logger.flush()
    assert companydata.query("SELECT client_idx, label, probability, model_version, features FROM predictions") == [
        (150000, label, pytest.approx(expected), model.version_, features)
    ]
    model.prediction_logger.close()


def test_prediction_survives_a_logging_outage(companydata, fitted) -> None:
    fitted.prediction_logger = PredictionLogger(companydata.settings("mle"), max_backoff=0.5)
    companydata.cluster.stop()
    try:
        label = fitted.predict_with_logging(1, pd.DataFrame([{"attr_a": 1, "attr_b": "a", "scd_a": 0.2, "scd_b": 1}]))
        assert label in (0, 1)
    finally:
        companydata.cluster.start(fast=True)
    assert fitted.prediction_logger.flush(timeout=30)
    assert companydata.query("SELECT count(*) FROM predictions") == [(1,)]
    fitted.prediction_logger.close()
    fitted.prediction_logger = None
