"""The training job as it runs in its container: a real process against a real database."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_science.features import EXAMPLE_REQUEST
from data_science.model import CustomerModel
from data_science.train import UnusableData, check_training_data, train
from machine_learning_engineering import registry
from testkit.fixtures import wait_until


def start_training(db, model_dir: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "data_science.train", "--model-dir", str(model_dir), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=db.env(),
    )


def publish_feature_store(db, frame: pd.DataFrame) -> None:
    """Create feature_store the way the ETL does (as etl_user); the job reads it as ds_user."""
    db.query(
        "CREATE TABLE feature_store (idx int PRIMARY KEY, attr_a int, attr_b text, scd_a double precision, "
        "scd_b int, label smallint)",
        role="etl",
    )
    rows = ",".join(f"({r.idx},{r.attr_a},'{r.attr_b}',{r.scd_a},{r.scd_b},{r.label})" for r in frame.itertuples())
    db.query(f"INSERT INTO feature_store VALUES {rows}", role="etl")


class Output:
    """A job's output, read line by line as it comes, so a test can wait for a line."""

    def __init__(self, job: subprocess.Popen[str]) -> None:
        self.job, self.lines = job, []
        self.reader = threading.Thread(target=lambda: self.lines.extend(job.stdout), daemon=True)
        self.reader.start()

    def wait_for(self, text: str, timeout: float) -> None:
        wait_until(lambda: any(text in line for line in list(self.lines)) or self.job.poll() is not None, timeout, text)
        assert any(text in line for line in self.lines), "".join(self.lines)

    def finish(self, timeout: float) -> str:
        self.job.wait(timeout=timeout)
        self.reader.join(timeout=timeout)
        return "".join(self.lines)


def test_training_started_before_the_etl_waits_then_trains(companydata, feature_frame, model_dir) -> None:
    job = start_training(companydata, model_dir, "--wait-timeout", "120")
    output = Output(job)
    output.wait_for("waiting: table feature_store does not exist yet (check 1)", timeout=60)
    assert job.poll() is None  # still waiting, not crashed
    publish_feature_store(companydata, feature_frame)
    text = output.finish(timeout=300)
    assert job.returncode == 0, text
    assert "table feature_store is ready" in text
    versions = registry.versions(model_dir)
    assert len(versions) == 1
    assert registry.champion(model_dir) == versions[0]  # the first version that predicts becomes champion
    summary = next(line for line in text.splitlines() if f"model {versions[0]}: trained on" in line)
    assert f"model {versions[0]}: trained on 4,774 rows" in summary  # the clients whose idx hash is not held out
    assert "(majority 0.500, stratified" in summary and "| skill |" in summary
    assert f"PROMOTED {versions[0]} to champion" in text
    metadata = json.loads((model_dir / versions[0] / "metadata.json").read_text())
    assert metadata["evaluation"]["has_skill"] is True
    assert set(metadata["evaluation"]["baselines"]) == {"majority", "stratified"}
    assert set(metadata["evaluation"]["metrics"]) >= {"roc_auc", "accuracy", "f1", "log_loss"}
    # The out-of-distribution gate, the reference sample and the compiled scorer, saved with the version.
    assert sorted(metadata["files"]) == ["ood.npz", "reference.csv", "scoring.npz"]
    holdout = metadata["scoring"]["verified"]["holdout"]
    assert holdout["rows"] == 1226 and holdout["bit_identical"] and holdout["label_flips"] == 0
    assert "| scoring: lookup table, equal to scikit-learn on 1,226 holdout rows |" in summary
    assert metadata["ood"]["detector"]["training_rows"] == 4774 and metadata["reference"]["rows"] == 4774
    assert metadata["evaluation"]["ood"]["holdout_rows"] == 1226
    assert metadata["evaluation"]["ood"]["holdout_flag_rate"] < 0.03
    assert "OOD gate flags" in summary


def test_training_fits_the_gate_and_reference_sample_on_the_training_rows(feature_frame, model_dir) -> None:
    model, holdout = train(feature_frame, 0.2, 42)
    gate = model.ood_gate_
    assert gate is not None and gate.spec["detector"]["training_rows"] == len(feature_frame) - len(holdout)
    assert set(model.reference_["attr_b"].dropna()) <= set(gate.spec["categories"]["attr_b"])
    assert {"label", "prediction", "probability"} <= set(model.reference_.columns)
    report = model.evaluation_["ood"]
    assert report["holdout_rows"] == len(holdout) and report["holdout_flag_rate"] < 0.03
    assert 0.005 <= report["training_flag_rate"] <= 0.0101
    loaded, metadata = registry.load_verified(model_dir, model.save(model_dir).name, CustomerModel)
    assert loaded.check_distribution([EXAMPLE_REQUEST["features"]])[0].in_distribution is True
    (odd,) = loaded.check_distribution([{**EXAMPLE_REQUEST["features"], "attr_a": 9, "attr_b": "e"}])
    assert odd.reasons[:2] == ["attr_a=9 outside [1, 5] seen in training", "attr_b='e' not seen in training"]
    assert metadata["ood"]["ranges"]["attr_a"] == [1.0, 5.0]
    # The version serves through its compiled scorer, equal to scikit-learn's on the evaluated holdout.
    assert loaded.scoring()["path"] == "compiled" and metadata["scoring"]["file"] == "scoring.npz"
    evaluated = model.predict_proba(holdout)[:, 1]
    assert np.array_equal(loaded.predict_labels_and_probabilities(holdout)[1], evaluated)


def test_timeout_is_a_clear_failure(companydata, model_dir) -> None:
    job = start_training(companydata, model_dir, "--wait-timeout", "2")
    output, _ = job.communicate(timeout=60)
    assert job.returncode == 1
    assert "training failed: table feature_store does not exist yet after waiting 2 s; has the ETL run?" in output
    assert not model_dir.exists() or not any(model_dir.iterdir())


def test_one_class_only_is_unusable(companydata, feature_frame, model_dir) -> None:
    publish_feature_store(companydata, feature_frame.head(200).assign(label=0))
    job = start_training(companydata, model_dir, "--wait-timeout", "5")
    output, _ = job.communicate(timeout=60)
    assert job.returncode == 1 and "feature_store has one class only (every label is 0)" in output


def test_missing_column_is_unusable(companydata, model_dir) -> None:
    companydata.query(
        "CREATE TABLE feature_store AS SELECT 1 AS idx, 1 AS attr_a, 'a' AS attr_b, 0.5 AS scd_a, 1 AS label",
        role="etl",
    )
    job = start_training(companydata, model_dir, "--wait-timeout", "5")
    output, _ = job.communicate(timeout=60)
    assert job.returncode == 1 and 'cannot read feature_store: column "scd_b" does not exist' in output
    with pytest.raises(UnusableData, match=r"feature_store lacks column\(s\) scd_b"):
        check_training_data(pd.DataFrame({"idx": [1], "attr_a": [1], "attr_b": ["a"], "scd_a": [0.5], "label": [1]}))


def test_labels_independent_of_the_features_are_reported_as_no_skill(feature_frame, caplog) -> None:
    """As on the real challenge data: a flattering number would be a lie."""
    shuffled = feature_frame.assign(label=feature_frame["label"].sample(frac=1, random_state=1).to_numpy())
    model, holdout = train(shuffled, test_size=0.3, seed=1)
    evaluation = model.evaluation_
    assert evaluation["has_skill"] is False
    assert evaluation["verdict"].startswith("NO SKILL: holdout ROC AUC 0.")
    assert abs(evaluation["metrics"]["roc_auc"] - 0.5) < 0.06
    assert len(holdout) == evaluation["holdout_rows"]


def test_a_rejected_candidate_is_loud_but_does_not_fail_the_start(companydata, feature_frame, model_dir) -> None:
    """Compose starts the API after this job exits 0: a champion that serves must not be blocked."""
    champion = train(feature_frame, test_size=0.2, seed=42, params={"max_iter": 60})[0]
    registry.promote(model_dir, champion.save(model_dir).name, "the good one")
    publish_feature_store(companydata, feature_frame.head(1500))  # a truncated labels.csv
    job = start_training(companydata, model_dir, "--wait-timeout", "5", "--max-iter", "60")
    output, _ = job.communicate(timeout=120)
    assert job.returncode == 0, output
    assert f"ERROR data_science.train: NOT PROMOTED: the champion {champion.version_} keeps serving" in output
    assert registry.champion(model_dir) == champion.version_
    strict = start_training(companydata, model_dir, "--wait-timeout", "5", "--max-iter", "60", "--strict")
    output, _ = strict.communicate(timeout=120)
    assert strict.returncode == 3 and "NOT PROMOTED" in output, output
    assert registry.champion(model_dir) == champion.version_ and len(registry.versions(model_dir)) == 3
