from __future__ import annotations

import copy
import json
import logging

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from data_science import compiled
from data_science.features import SCHEMA, FeatureError
from data_science.model import CustomerModel
from machine_learning_engineering import registry
from machine_learning_engineering.prediction_log import PredictionLogger
from machine_learning_engineering.registry import ModelVersionError


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
    assert companydata.query("SELECT client_idx, label, probability, model_version, features FROM prediction_log") == [
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
    assert companydata.query("SELECT count(*) FROM prediction_log") == [(1,)]
    fitted.prediction_logger.close()
    fitted.prediction_logger = None


# --- compiled scoring ----------------------------------------------------------------------


def odd_frame() -> pd.DataFrame:
    """Inputs a compiled scorer could get wrong: NaN everywhere, unseen and missing categories,
    ±0, huge and negative numbers."""
    return pd.DataFrame(
        [
            {"attr_a": None, "attr_b": None, "scd_a": None, "scd_b": None},
            {"attr_a": 3, "attr_b": "never-seen", "scd_a": 0.5, "scd_b": 2},
            {"attr_a": 0, "attr_b": "a", "scd_a": -0.0, "scd_b": 0},
            {"attr_a": -7, "attr_b": "b", "scd_a": 1e300, "scd_b": -3},
            {"attr_a": 2_000_000_000, "attr_b": "", "scd_a": -1e300, "scd_b": 2_000_000_000},
            {"attr_a": 5, "attr_b": "d", "scd_a": None, "scd_b": 1},
        ]
    )


def test_both_paths_score_the_same_odd_inputs(compiled_model) -> None:
    frame = compiled_model.feature_schema.validate(odd_frame())
    served = compiled_model.predict_labels_and_probabilities(frame)
    expected = compiled_model.pipeline_.predict_proba(frame)[:, 1]
    assert np.array_equal(served[1], expected)
    assert np.array_equal(served[0], (expected >= compiled_model.threshold_).astype(np.int64))
    # The columnar path (None for a missing category), as the API and batch scoring call it.
    columns = compiled_model.feature_schema.columns(odd_frame().replace({np.nan: None}).to_dict("records"))
    labels, p = compiled_model.score_columns(columns)
    assert np.array_equal(p, expected) and np.array_equal(labels, served[0])
    # Without the compiled scorer (as a version saved before it): the very same answers.
    plain = copy.deepcopy(compiled_model)
    assert plain.engine_ is None and plain.scoring()["path"] == "scikit-learn"
    for got in (plain.predict_labels_and_probabilities(frame), plain.score_columns(columns)):
        assert np.array_equal(got[1], expected) and np.array_equal(got[0], served[0])


def test_one_row_at_a_time_scores_as_the_batch(compiled_model) -> None:
    """A request's row (`score_columns` on one row: the table read in plain Python) gets the
    batch's label and probability, as int64 and float64 arrays, with or without the compiled
    scorer, and at the decision threshold itself."""
    rows = odd_frame().replace({np.nan: None}).to_dict("records")
    schema = compiled_model.feature_schema
    labels, p = compiled_model.score_columns(schema.columns(rows))
    plain = copy.deepcopy(compiled_model)
    for i, row in enumerate(rows):
        for model in (compiled_model, plain):
            one_labels, one_p = model.score_columns(schema.columns([row]))
            assert one_labels.dtype == np.int64 and one_p.dtype == np.float64
            assert one_labels.tolist() == [labels[i]] and one_p.tolist() == [p[i]]
    at = copy.copy(compiled_model)
    at.threshold_ = float(p[1])  # a probability equal to the threshold is labelled 1
    assert at.score_columns(schema.columns([rows[1]]))[0].tolist() == [1]
    assert at.score_columns(schema.columns(rows))[0][1] == 1


def test_both_paths_score_every_split_threshold_and_its_neighbours_alike(compiled_model) -> None:
    """`score` and `score_columns` take validated values; the thresholds of the integer features
    (1.5, ...) never pass validation, but the paths must agree on them all the same."""
    engine = compiled_model.engine_
    rows = []
    for name, thresholds in zip(engine.features, engine.thresholds, strict=True):
        if name in engine.encoder.categories:
            continue
        for t in thresholds:
            rows += [{**SCHEMA.example, name: v} for v in (t, np.nextafter(t, np.inf), np.nextafter(t, -np.inf))]
    frame = SCHEMA.validate(pd.DataFrame(rows).assign(attr_a=1, scd_b=1)).assign(
        attr_a=[r["attr_a"] for r in rows], scd_b=[r["scd_b"] for r in rows]
    )
    expected = compiled_model.pipeline_.predict_proba(frame)[:, 1]
    plain = copy.deepcopy(compiled_model)
    columns = {name: frame[name].to_numpy() for name in SCHEMA.names}
    for model in (compiled_model, plain):
        for labels, p in (model.score(frame), model.score_columns(columns)):
            assert np.array_equal(p, expected)
            assert np.array_equal(labels, (expected >= model.threshold_).astype(np.int64))


def test_a_saved_version_carries_its_compiled_scorer_and_its_hash(compiled_model, feature_frame, model_dir) -> None:
    path = compiled_model.save(model_dir)
    metadata = registry.read_metadata(model_dir, path.name)
    assert metadata["files"]["scoring.npz"] == registry.sha256(path / "scoring.npz")
    scoring = metadata["scoring"]
    assert scoring["file"] == "scoring.npz" and scoring["engine"] == "lookup table"
    for check in scoring["verified"].values():
        assert check["passed"] and check["bit_identical"] and check["label_flips"] == 0
    assert scoring["verified"]["holdout"]["rows"] == 1000
    loaded = CustomerModel.load(model_dir)
    served = loaded.scoring()
    assert served["path"] == "compiled" and served["engine"] == "lookup table"
    assert served["verified"]["at_load"]["passed"] and served["verified"]["at_save"] == scoring["verified"]
    p = loaded.predict_proba(feature_frame)[:, 1]
    assert np.array_equal(loaded.predict_labels_and_probabilities(feature_frame)[1], p)


def test_a_tampered_scorer_refuses_to_load_naming_the_version(compiled_model, model_dir) -> None:
    path = compiled_model.save(model_dir)
    with (path / "scoring.npz").open("r+b") as f:
        f.seek(200)
        f.write(b"\x00tampered\x00")
    with pytest.raises(ModelVersionError, match=f"model version {path.name}: scoring.npz does not match its sha256"):
        CustomerModel.load(model_dir, path.name)


def test_a_version_without_the_scorer_serves_through_scikit_learn_and_says_so(fitted, model_dir) -> None:
    path = fitted.save(model_dir)  # never compiled
    metadata = registry.read_metadata(model_dir, path.name)
    assert "scoring.npz" not in metadata.get("files", {})
    loaded = CustomerModel.load(model_dir, path.name)
    assert loaded.engine_ is None
    assert loaded.scoring() == {
        "path": "scikit-learn",
        "engine": "Pipeline.predict_proba",
        "reason": "not compiled: compile_scoring was not called before save",
    }
    # A version saved before compiled scoring existed: no file, no `scoring` in its metadata.
    raw = json.loads((path / "metadata.json").read_text())
    del raw["scoring"]
    (path / "metadata.json").write_text(json.dumps(raw))
    old = CustomerModel.load(model_dir, path.name)
    assert old.scoring()["path"] == "scikit-learn"
    assert old.scoring()["reason"] == "this version was saved without a compiled scorer"
    frame = odd_frame()
    assert np.array_equal(old.predict_labels_and_probabilities(frame)[1], old.predict_proba(frame)[:, 1])


def test_a_failing_verification_saves_no_scorer_and_says_why(
    fitted, feature_frame, model_dir, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = copy.deepcopy(fitted)
    good = compiled.Engine.build(model.pipeline_)
    assert isinstance(good.method, compiled.Table)
    corrupt = compiled.Engine(
        good.encoder, compiled.Table(good.method.thresholds, good.method.table * 0.5), good.thresholds, good.trees
    )
    monkeypatch.setattr(compiled.Engine, "build", classmethod(lambda cls, pipeline, max_cells=None: corrupt))
    scoring = model.compile_scoring(feature_frame.iloc[:500])
    assert model.engine_ is None
    assert scoring["reason"].startswith("verification failed: differs from scikit-learn on the holdout (500 rows)")
    assert model.scoring() == {"path": "scikit-learn", "engine": "Pipeline.predict_proba", "reason": scoring["reason"]}
    path = model.save(model_dir)
    metadata = registry.read_metadata(model_dir, path.name)
    assert "scoring.npz" not in metadata.get("files", {}) and not (path / "scoring.npz").exists()
    assert metadata["scoring"]["file"] is None and metadata["scoring"]["reason"] == scoring["reason"]
    assert metadata["scoring"]["verified"]["holdout"]["label_flips"] > 0
    assert CustomerModel.load(model_dir, path.name).scoring()["reason"] == scoring["reason"]

    def broken(cls: type, pipeline: object, max_cells: int | None = None) -> compiled.Engine:
        raise compiled.CompileError("binary classifiers only: this one has 3 classes")

    monkeypatch.setattr(compiled.Engine, "build", classmethod(broken))
    scoring = model.compile_scoring(feature_frame.iloc[:500])
    assert scoring == {
        "file": None,
        "engine": None,
        "reason": "cannot be compiled: binary classifiers only: this one has 3 classes",
    }


def test_a_scorer_that_differs_at_load_is_not_used(compiled_model, fitted, model_dir, caplog) -> None:
    """Hash intact, but the file scores another pipeline (as after a library change would)."""
    path = compiled_model.save(model_dir)
    compiled.Engine.build(fitted.pipeline_).save(path / "scoring.npz")  # another model's trees
    raw = json.loads((path / "metadata.json").read_text())
    raw["files"]["scoring.npz"] = registry.sha256(path / "scoring.npz")
    (path / "metadata.json").write_text(json.dumps(raw))
    with caplog.at_level(logging.WARNING):
        loaded = CustomerModel.load(model_dir, path.name)
    served = loaded.scoring()
    assert loaded.engine_ is None and served["path"] == "scikit-learn"
    assert served["reason"].startswith(
        "scoring.npz not used: differs from scikit-learn on the reference and probe rows"
    )
    assert f"model version {path.name}: scoring.npz not used" in caplog.text


def test_the_walk_serves_when_the_grid_is_too_large(
    fitted, feature_frame, model_dir, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = copy.deepcopy(fitted)
    monkeypatch.setattr(compiled, "MAX_CELLS", 0)
    assert model.compile_scoring(feature_frame.iloc[:500])["engine"] == "numba tree walk"
    loaded = CustomerModel.load(model_dir, model.save(model_dir).name)
    served = loaded.scoring()
    assert served["path"] == "compiled" and served["engine"] == "numba tree walk", served
    assert served["verified"]["at_load"]["bit_identical"] and served["compile_seconds"] >= 0
    frame = loaded.feature_schema.validate(odd_frame())
    assert np.array_equal(loaded.score(frame)[1], loaded.pipeline_.predict_proba(frame)[:, 1])
