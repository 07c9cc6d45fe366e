from __future__ import annotations

import json
import logging
import threading

import pytest

from data_science.model import CustomerModel
from machine_learning_engineering import registry
from machine_learning_engineering.registry import ModelVersionError
from testkit.bad_versions import version_before_gates


def test_latest_complete_version_wins_and_half_written_ones_are_skipped(fitted, model_dir, caplog) -> None:
    first = fitted.save(model_dir).name
    second = fitted.save(model_dir).name
    assert registry.versions(model_dir) == [first, second]
    (model_dir / ".incoming-abc").mkdir()  # a save in progress: not a version at all
    (model_dir / "99990101T000000.000000Z").mkdir()  # a newer directory without metadata
    with caplog.at_level(logging.WARNING):
        assert CustomerModel.load(model_dir).version_ == second
    assert "is incomplete: no metadata.json" in caplog.text


def test_a_corrupted_artifact_is_skipped_for_latest_and_refused_by_name(fitted, model_dir, caplog) -> None:
    good = fitted.save(model_dir).name
    bad = fitted.save(model_dir)
    with (bad / "model.joblib").open("r+b") as f:
        f.seek(100)
        f.write(b"\x00corrupt\x00")
    with caplog.at_level(logging.WARNING):
        assert CustomerModel.load(model_dir).version_ == good
    assert "does not match its sha256: corrupted" in caplog.text
    with pytest.raises(ModelVersionError, match=f"model version {bad.name}: model.joblib does not match its sha256"):
        CustomerModel.load(model_dir, bad.name)


def test_a_scikit_learn_mismatch_is_refused_with_both_versions(fitted, model_dir) -> None:
    path = fitted.save(model_dir)
    metadata = json.loads((path / "metadata.json").read_text())
    metadata["versions"]["scikit-learn"] = "0.24.2"
    (path / "metadata.json").write_text(json.dumps(metadata))  # sha256 covers the artifact only
    with pytest.raises(ModelVersionError, match=r"trained with scikit-learn 0\.24\.2; this environment has 1\."):
        CustomerModel.load(model_dir)


def test_no_version_says_so(model_dir) -> None:
    with pytest.raises(ModelVersionError, match=r"no complete model version in .*; has the training job run"):
        CustomerModel.load(model_dir)
    with pytest.raises(ModelVersionError, match="no model version 'nope'"):
        CustomerModel.load(model_dir, "nope")


def test_a_reader_never_sees_a_partial_version(fitted, model_dir) -> None:
    fitted.save(model_dir)
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                CustomerModel.load(model_dir)
            except BaseException as exc:
                errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(5):
            fitted.save(model_dir)
    finally:
        stop.set()
        reader.join()
    assert not errors
    assert len(registry.versions(model_dir)) == 6


def test_metadata_records_what_a_reader_needs(fitted, model_dir) -> None:
    path = fitted.save(model_dir)
    metadata = json.loads((path / "metadata.json").read_text())
    assert metadata["version"] == path.name and len(metadata["sha256"]) == 64
    assert metadata["features"] == {"attr_a": "integer", "attr_b": "category", "scd_a": "number", "scd_b": "integer"}
    assert metadata["training"]["class_balance"] and metadata["training"]["rows"] == 6000
    assert {"scikit-learn", "data_science", "machine_learning_engineering"} <= set(metadata["versions"])
    assert metadata["threshold"]["value"] == fitted.threshold_


def test_a_version_saved_before_gates_existed_still_loads_and_serves(fitted, model_dir) -> None:
    version = version_before_gates(fitted, model_dir)
    metadata = registry.read_metadata(model_dir, version)
    assert "files" not in metadata and "ood" not in metadata
    model, _ = registry.load_verified(model_dir, version, CustomerModel)
    assert model.ood_gate_ is None
    assert [v.reasons for v in model.check_distribution([{"attr_a": 1, "attr_b": "c", "scd_a": 0.5, "scd_b": 3}])] == [
        ["no gate in this version"]
    ]
