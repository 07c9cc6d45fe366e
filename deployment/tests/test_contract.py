"""Fuzz the API from its own OpenAPI document: zero server errors, every answer as documented.

Hypothesis draws requests from schemathesis' strategies for each operation (valid ones and,
for the prediction endpoints, invalid ones too) and checks every response against the document.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from data_science.model import CustomerModel
from deployment.app import create_app
from deployment.config import ServeSettings
from deployment.model_holder import ModelHolder

OPERATIONS = [
    "POST /predict",
    "POST /predict/batch",
    "GET /health",
    "GET /ready",
    "GET /model",
    "GET /metrics",
    "GET /openapi.json",
]


@pytest.fixture
def api(model_dir, logger):
    config = ServeSettings(
        model_dir=model_dir,
        api_token=None,
        max_batch=20,
        max_columns=20,
        max_body_bytes=1 << 16,
        model_poll_seconds=60,
    )
    holder = ModelHolder(CustomerModel, model_dir, 60, logger)
    holder.refresh()
    return schemathesis.openapi.from_wsgi("/openapi.json", create_app(config, holder))


def test_the_document_covers_every_route(api) -> None:
    routes = {
        f"{method} {rule.rule}"
        for rule in api.app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    documented = {f"{method.upper()} {path}" for path, item in api.raw_schema["paths"].items() for method in item}
    assert routes == documented == {*OPERATIONS, "GET /"}


# Valid and invalid requests for the endpoints that take input; valid ones for the rest.
CASES = [(label, GenerationMode.POSITIVE) for label in OPERATIONS] + [
    (label, GenerationMode.NEGATIVE) for label in OPERATIONS if label.startswith("POST")
]


def one_length(case):
    """A valid columnar body has one value per client in every column, which JSON Schema cannot
    say: cut the generated columns to the shortest (each has at least one value)."""
    body = case.body
    if isinstance(body, dict) and body and all(isinstance(column, list) for column in body.values()):
        rows = min(len(column) for column in body.values())
        case.body = {name: column[:rows] for name, column in body.items()}
    return case


@pytest.mark.parametrize(("label", "mode"), CASES, ids=[f"{label}-{mode.value}" for label, mode in CASES])
def test_operation_matches_its_document(api, label, mode) -> None:
    operation = api.find_operation_by_label(label)
    strategy = operation.as_strategy(generation_mode=mode)
    if label == "POST /predict/batch" and mode == GenerationMode.POSITIVE:
        strategy = strategy.map(one_length)

    @given(data=st.data())
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def fuzz(data: st.DataObject) -> None:
        case = data.draw(strategy)
        case.call_and_validate()

    fuzz()
