"""A second MLEModel, with other features, served through the unchanged API.

The API, its request validation, OpenAPI document, page, registry checks and prediction log
take whatever model MODEL_CLASS names; nothing in deployment mentions the customer model.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

import pytest

from deployment.app import create_app
from deployment.config import ServeSettings
from deployment.model_holder import ModelHolder
from machine_learning_engineering import registry
from machine_learning_engineering.model import model_class
from testkit.fixtures import wait_until
from testkit.localdb import free_port
from testkit.process import gunicorn
from testkit.toy_model import PlanModel, training_frame

SPEC = "testkit.toy_model:PlanModel"


@pytest.fixture
def plan_models(tmp_path):
    model = PlanModel().fit(training_frame())
    version = model.save(tmp_path / "models").name
    registry.promote(tmp_path / "models", version, "the toy model")
    return tmp_path / "models"


@pytest.fixture
def toy_client(plan_models, logger):
    settings = ServeSettings.from_env({"MODEL_DIR": str(plan_models), "MODEL_CLASS": SPEC})
    holder = ModelHolder(model_class(settings.model_class), settings.model_dir, 60, logger)
    holder.refresh()
    return create_app(settings, holder).test_client()


def test_the_api_serves_a_second_model_with_its_own_features(toy_client, logger, companydata) -> None:
    gold = toy_client.post("/predict", json={"idx": 1, "features": {"age": 40, "plan": "gold"}})
    assert gold.status_code == 200, gold.json
    assert gold.json["label"] == 1 and gold.json["probability"] == pytest.approx(0.84)
    assert gold.json["threshold"] == 0.5 and gold.json["warnings"] == []
    new_plan = toy_client.post("/predict", json={"idx": 2, "features": {"age": 0, "plan": "platinum"}})
    assert new_plan.json["warnings"] == ["plan: unknown category 'platinum', scored as missing"]
    batch = toy_client.post("/predict/batch", json=[{"idx": 3, "features": {"age": 1, "plan": "basic"}}])
    assert batch.status_code == 200 and batch.json["predictions"][0]["label"] == 0
    assert logger.flush()
    assert companydata.query("SELECT client_idx, features FROM prediction_log ORDER BY client_idx") == [
        (1, {"age": 40, "plan": "gold"}),
        (2, {"age": 0, "plan": "platinum"}),
        (3, {"age": 1, "plan": "basic"}),
    ]


def test_its_declaration_drives_validation_openapi_and_page(toy_client) -> None:
    customer = toy_client.post("/predict", json={"idx": 1, "features": {"attr_a": 1, "attr_b": "c"}})
    assert customer.status_code == 422
    fields = {d["field"] for d in customer.json["details"]}
    assert {"features.age", "features.plan", "features.attr_a"} <= fields
    required = toy_client.post("/predict", json={"idx": 1, "features": {"age": None, "plan": None}})
    assert [d["field"] for d in required.json["details"]] == ["features.age"]  # declared not nullable
    spec = toy_client.get("/openapi.json").json
    features = spec["components"]["schemas"]["Features"]
    assert sorted(features["properties"]) == ["age", "plan"]
    assert "Known to the served model: basic, gold." in features["properties"]["plan"]["description"]
    page = toy_client.get("/").get_data(as_text=True)
    assert 'id="age"' in page and 'id="plan"' in page and "attr_a" not in page
    assert toy_client.get("/model").json["model_class"] == SPEC


def test_nothing_in_deployment_names_the_customer_model() -> None:
    import deployment.app  # noqa: F401  (the whole production wiring)

    loaded = [name for name in sys.modules if name.startswith("deployment")]
    assert loaded
    for name in loaded:
        source = getattr(sys.modules[name], "__file__", None)
        if source and "/tests/" not in source:
            text = Path(source).read_text()
            assert "data_science" not in text and "CustomerModel" not in text, name


def test_a_wrong_model_class_is_refused_by_name() -> None:
    with pytest.raises(LookupError, match="MODEL_CLASS='nope' is no installed model"):
        model_class("nope")
    with pytest.raises(LookupError, match="not an MLEModel subclass"):
        model_class("json:dumps")
    assert model_class("customer").__name__ == "CustomerModel"
    assert json.dumps(sorted(model_class(SPEC).feature_schema.names)) == '["age", "plan"]'


def test_the_production_wiring_serves_it_by_configuration(companydata, plan_models) -> None:
    """gunicorn + create_app() with nothing but the environment: MODEL_CLASS picks the model."""
    env = companydata.env(MODEL_DIR=str(plan_models), MODEL_CLASS=SPEC, GUNICORN_WORKERS="1")
    with gunicorn(env, free_port()) as url:
        request = urllib.request.Request(
            url + "/predict",
            json.dumps({"idx": 7, "features": {"age": 10, "plan": "gold"}}).encode(),
            {"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
    assert answer["label"] == 1 and answer["model_version"] == registry.champion(plan_models)
    wait_until(
        lambda: companydata.query("SELECT features FROM prediction_log WHERE client_idx = 7") != [],
        what="the prediction to be logged",
    )
    assert companydata.query("SELECT features FROM prediction_log WHERE client_idx = 7") == [
        ({"age": 10, "plan": "gold"},)
    ]
