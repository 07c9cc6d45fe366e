"""The out-of-distribution gate in the API: every answer row says whether it is in
distribution and why not; OOD_POLICY=reject refuses instead; every logged row carries it."""

from __future__ import annotations

import pytest

from data_science.features import EXAMPLE_REQUEST
from data_science.model import CustomerModel
from deployment.app import create_app
from deployment.config import ServeSettings
from deployment.model_holder import ModelHolder
from machine_learning_engineering import registry
from machine_learning_engineering.model import model_class
from testkit.bad_versions import version_before_gates
from testkit.toy_model import PlanModel, training_frame

FEATURES = EXAMPLE_REQUEST["features"]
OUT_OF_RANGE = {**FEATURES, "attr_a": 9}
UNSEEN = {**FEATURES, "attr_b": "zz"}


def logged(db) -> list[tuple]:
    return db.query("SELECT client_idx, in_distribution, ood_reasons FROM prediction_log ORDER BY client_idx")


def test_an_ordinary_request_is_in_distribution(client) -> None:
    answer = client.post("/predict", json=EXAMPLE_REQUEST).json
    assert answer["in_distribution"] is True and answer["ood_reasons"] == []


def test_flagged_answers_name_feature_value_and_range_and_are_logged(client, trained, companydata, logger) -> None:
    low, high = trained.ood_gate_.spec["ranges"]["scd_a"]
    far = client.post("/predict", json={"idx": 1, "features": {**OUT_OF_RANGE, "scd_a": 1e30}})
    assert far.status_code == 200 and far.json["label"] in (0, 1)
    assert far.json["in_distribution"] is False
    assert far.json["ood_reasons"][:2] == [
        "attr_a=9 outside [1, 5] seen in training",
        f"scd_a=1e+30 outside [{low!r}, {high!r}] seen in training",
    ]
    unseen = client.post("/predict", json={"idx": 2, "features": UNSEEN}).json
    assert unseen["in_distribution"] is False and unseen["ood_reasons"][0] == "attr_b='zz' not seen in training"
    assert unseen["warnings"] == ["attr_b: unknown category 'zz', scored as missing"]  # how it was scored
    missing = client.post("/predict", json={"idx": 3, "features": dict.fromkeys(FEATURES)}).json
    assert missing["in_distribution"] is True and missing["ood_reasons"] == []  # missing is no reason
    batch = client.post(
        "/predict/batch",
        json=[{"idx": 4, "features": FEATURES}, {"idx": 5, "features": OUT_OF_RANGE}, {"idx": 6, "features": UNSEEN}],
    )
    assert batch.status_code == 200
    rows = batch.json["predictions"]
    assert [(p["idx"], p["in_distribution"]) for p in rows] == [(4, True), (5, False), (6, False)]
    assert rows[1]["ood_reasons"][0] == "attr_a=9 outside [1, 5] seen in training"
    assert logger.flush()
    assert logged(companydata) == [
        (1, False, far.json["ood_reasons"]),
        (2, False, unseen["ood_reasons"]),
        (3, True, []),
        (4, True, []),
        (5, False, rows[1]["ood_reasons"]),
        (6, False, rows[2]["ood_reasons"]),
    ]


def test_reject_refuses_naming_rows_and_features_and_scores_nothing(make_app, companydata, logger) -> None:
    client = make_app(ood_policy="reject").test_client()
    single = client.post("/predict", json={"idx": 1, "features": OUT_OF_RANGE})
    assert single.status_code == 422
    assert single.json["error"] == "out of distribution (OOD_POLICY=reject)"
    assert single.json["details"][0] == {
        "field": "features.attr_a",
        "problem": "attr_a=9 outside [1, 5] seen in training",
    }
    records = [
        {"idx": 10, "features": FEATURES},
        {"idx": 11, "features": OUT_OF_RANGE},
        {"idx": 12, "features": FEATURES},
        {"idx": 13, "features": UNSEEN},
    ]
    batch = client.post("/predict/batch", json=records)
    assert batch.status_code == 422
    fields = [(d["field"], d["problem"]) for d in batch.json["details"]]
    assert ("[1].features.attr_a", "client idx 11: attr_a=9 outside [1, 5] seen in training") in fields
    assert ("[3].features.attr_b", "client idx 13: attr_b='zz' not seen in training") in fields
    assert not any(field.startswith(("[0]", "[2]")) for field, _ in fields)
    ordinary = client.post("/predict", json={"idx": 14, "features": FEATURES})
    assert ordinary.status_code == 200 and ordinary.json["in_distribution"] is True
    assert client.get("/model").json["serving"]["ood_policy"] == "reject"
    assert logger.flush()
    assert logged(companydata) == [(14, True, [])]  # a refused request is neither scored nor logged


def test_a_version_saved_before_gates_still_serves_under_either_policy(tmp_path, trained, logger, companydata) -> None:
    model_dir = tmp_path / "models"
    version = version_before_gates(trained, model_dir)
    registry.promote(model_dir, version, "an old champion")
    for idx, policy in ((1, "flag"), (2, "reject")):
        settings = ServeSettings(model_dir=model_dir, model_poll_seconds=60.0, ood_policy=policy)
        holder = ModelHolder(CustomerModel, model_dir, 60.0, logger)
        holder.refresh()
        client = create_app(settings, holder).test_client()
        answer = client.post("/predict", json={"idx": idx, "features": OUT_OF_RANGE})
        assert answer.status_code == 200, answer.json
        assert answer.json["in_distribution"] is None and answer.json["ood_reasons"] == ["no gate in this version"]
        served = client.get("/model").json
        assert served["version"] == version and served["serving"]["ood_gate"] is False and "ood" not in served
    assert logger.flush()
    assert logged(companydata) == [(1, None, ["no gate in this version"]), (2, None, ["no gate in this version"])]


def test_model_reports_the_gate_and_openapi_documents_the_verdict(client, trained) -> None:
    served = client.get("/model").json
    assert served["serving"]["ood_gate"] is True and served["serving"]["ood_policy"] == "flag"
    summary = served["ood"]
    assert summary["features"] == trained.feature_schema.kinds and summary["ranges"]["attr_a"] == [1.0, 5.0]
    assert summary["detector"]["threshold"] == trained.ood_gate_.threshold
    assert 0 < summary["detector"]["training_flag_rate"] <= 0.0101
    assert served["reference"]["rows"] == 6000 and {"ood.npz", "reference.csv"} <= served["files"].keys()
    schemas = client.get("/openapi.json").json["components"]["schemas"]
    for name in ("PredictResponse", "Prediction"):
        properties = schemas[name]["properties"]
        assert {"type": "boolean"} in properties["in_distribution"]["anyOf"]
        assert properties["ood_reasons"]["items"] == {"type": "string"}
        assert "in_distribution" in schemas[name]["required"]


def test_metrics_count_the_verdicts(client) -> None:
    client.post("/predict", json={"idx": 1, "features": OUT_OF_RANGE})
    client.post("/predict", json=EXAMPLE_REQUEST)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'api_ood_rows_total{verdict="out"}' in text and 'api_ood_rows_total{verdict="in"}' in text


@pytest.fixture
def gated_plans(tmp_path):
    frame = training_frame()
    model = PlanModel().fit(frame).fit_reference(frame)
    registry.promote(tmp_path / "plans", model.save(tmp_path / "plans").name, "the toy model, gated")
    return tmp_path / "plans"


def test_the_toy_model_is_gated_the_same_way(gated_plans, logger, companydata) -> None:
    settings = ServeSettings.from_env({"MODEL_DIR": str(gated_plans), "MODEL_CLASS": "testkit.toy_model:PlanModel"})
    holder = ModelHolder(model_class(settings.model_class), gated_plans, 60, logger)
    holder.refresh()
    client = create_app(settings, holder).test_client()
    ordinary = client.post("/predict", json={"idx": 1, "features": {"age": 5, "plan": "gold"}}).json
    assert ordinary["in_distribution"] is True
    old = client.post("/predict", json={"idx": 2, "features": {"age": 100, "plan": "platinum"}}).json
    assert old["in_distribution"] is False
    assert old["ood_reasons"][:2] == [
        "age=100 outside [0, 19] seen in training",
        "plan='platinum' not seen in training",
    ]
    assert client.get("/model").json["serving"]["ood_gate"] is True
    assert logger.flush()
    assert logged(companydata)[1][:2] == (2, False)
