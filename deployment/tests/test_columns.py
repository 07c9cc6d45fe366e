"""/predict/batch's two bodies, records and columns: read once, column by column, answered in
their own shape, logged as answered; the fast column checks held to the request models; odd
and hostile bodies refused naming field and row."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from data_science.features import EXAMPLE_REQUEST, SCHEMA
from deployment.columns import BodyError, fast_columns, fast_records, read_batch, to_columns
from deployment.schemas import BIGINT_MAX, request_models

FEATURES = EXAMPLE_REQUEST["features"]
MODELS = request_models(SCHEMA, max_batch=50, max_columns=50)


def columns_of(records: list[dict]) -> dict[str, list]:
    return {"idx": [r["idx"] for r in records], **{n: [r["features"][n] for r in records] for n in SCHEMA.names}}


def odd_records() -> list[dict]:
    """Every kind of value a feature may hold: missing ones, unknown categories, the bounds."""
    return [
        {"idx": 1, "features": FEATURES},
        {"idx": 2, "features": dict.fromkeys(FEATURES)},
        {"idx": 3, "features": {**FEATURES, "attr_b": "never-seen"}},
        {"idx": 4, "features": {**FEATURES, "attr_a": 9, "scd_a": 1e30}},  # out of distribution
        {"idx": 5, "features": {**FEATURES, "scd_a": 3, "scd_b": -(2**31)}},  # an int for a number
        {"idx": 2**63 - 1, "features": {**FEATURES, "attr_a": 2**31 - 1, "attr_b": "d"}},
        {"idx": 0, "features": {**FEATURES, "scd_a": -0.0, "scd_b": None}},
    ]


def as_floats(features: dict) -> dict:
    """jsonb keeps a number's decimal text (1e+30 comes back as the integer 10**30): compare as doubles."""
    return {k: float(v) if isinstance(v, int | float) else v for k, v in features.items()}


def logged(db) -> list[tuple]:
    rows = db.query(
        "SELECT client_idx, label, probability, features, in_distribution, ood_reasons FROM prediction_log"
        " ORDER BY prediction_id"
    )
    return [(*row[:3], as_floats(row[3]), *row[4:]) for row in rows]


def test_columns_are_answered_in_columns_exactly_as_records_are_and_logged_as_answered(
    client, trained, companydata, logger
) -> None:
    records = odd_records()
    as_records = client.post("/predict/batch", json=records)
    as_columns = client.post("/predict/batch", json=columns_of(records))
    assert as_records.status_code == as_columns.status_code == 200, (as_records.json, as_columns.json)
    rows, columns = as_records.json["predictions"], as_columns.json
    assert set(columns) == {
        "idx",
        "label",
        "probability",
        "warnings",
        "in_distribution",
        "ood_reasons",
        "model_version",
        "threshold",
    }
    for field in ("idx", "label", "probability", "warnings", "in_distribution", "ood_reasons"):
        assert columns[field] == [row[field] for row in rows], field
    assert columns["model_version"] == as_records.json["model_version"] == trained.version_
    # The same probabilities as the model scoring a validated frame, and each as /predict answers it.
    frame = SCHEMA.validate(pd.DataFrame([r["features"] for r in records]))
    labels, probabilities = trained.score(frame)
    assert columns["probability"] == probabilities.tolist() and columns["label"] == labels.tolist()
    assert [client.post("/predict", json=r).json["probability"] for r in records] == columns["probability"]
    assert columns["in_distribution"][:4] == [True, True, False, False]
    assert columns["warnings"][2] == ["attr_b: unknown category 'never-seen', scored as missing"]
    # Every row logged once per request, with the features as sent and the verdict as answered.
    assert logger.flush()
    answered = [
        (i, label, p, as_floats(r["features"]), flag, why)
        for r, i, label, p, flag, why in zip(
            records,
            columns["idx"],
            columns["label"],
            columns["probability"],
            columns["in_distribution"],
            columns["ood_reasons"],
            strict=True,
        )
    ]
    got = logged(companydata)
    assert len(got) == 3 * len(records)
    assert sorted(got, key=repr) == sorted(answered * 3, key=repr)


def test_the_logged_features_keep_integers_and_exact_numbers(client, companydata, logger) -> None:
    body = {"idx": [7, 8], "attr_a": [2, None], "attr_b": ["c", 'x\\y\t"z'], "scd_a": [0.1 + 0.2, 5], "scd_b": [3, 4]}
    assert client.post("/predict/batch", json=body).status_code == 200
    assert logger.flush()
    text = companydata.query("SELECT features::text FROM prediction_log ORDER BY client_idx")
    assert json.loads(text[0][0]) == {"attr_a": 2, "attr_b": "c", "scd_a": 0.30000000000000004, "scd_b": 3}
    assert '"attr_a": 2,' in text[0][0] and '"scd_a": 5.0' in text[1][0]  # kinds kept; the number exact
    assert json.loads(text[1][0])["attr_b"] == 'x\\y\t"z'


@pytest.mark.parametrize(
    ("body", "field", "problem"),
    [
        ({**columns_of(odd_records()[:2]), "idx": [1]}, "body", "one value per client; the columns have attr_a=2"),
        ({**columns_of(odd_records()[:2]), "idx": [1, 1.5]}, "idx[1]", "valid integer"),
        ({**columns_of(odd_records()[:2]), "idx": ["1", 2]}, "idx[0]", "valid integer"),
        ({**columns_of(odd_records()[:2]), "idx": [True, 2]}, "idx[0]", "valid integer"),
        ({**columns_of(odd_records()[:2]), "idx": [None, 2]}, "idx[0]", "valid integer"),
        ({**columns_of(odd_records()[:2]), "idx": [-1, 2]}, "idx[0]", "greater than or equal to 0"),
        ({**columns_of(odd_records()[:2]), "idx": [2**63, 2]}, "idx[0]", "less than or equal to"),
        ({**columns_of(odd_records()[:2]), "idx": 5}, "idx", "valid list"),
        ({**columns_of(odd_records()[:2]), "attr_a": [1, "2"]}, "attr_a[1]", "valid integer"),
        ({**columns_of(odd_records()[:2]), "attr_a": [1, 2.5]}, "attr_a[1]", "valid integer"),
        ({**columns_of(odd_records()[:2]), "attr_a": [1, 2**31]}, "attr_a[1]", "less than or equal to"),
        ({**columns_of(odd_records()[:2]), "attr_b": ["a", 3]}, "attr_b[1]", "valid string"),
        ({**columns_of(odd_records()[:2]), "attr_b": ["a", "b\u0000"]}, "attr_b[1]", "should match pattern"),
        ({**columns_of(odd_records()[:2]), "attr_b": ["a", "z" * 201]}, "attr_b[1]", "at most 200 characters"),
        ({**columns_of(odd_records()[:2]), "scd_a": [0.5, {"x": 1}]}, "scd_a[1]", "valid number"),
        ({**columns_of(odd_records()[:2]), "scd_a": [0.5, [0.5]]}, "scd_a[1]", "valid number"),
        ({**columns_of(odd_records()[:2]), "scd_a": [0.5, True]}, "scd_a[1]", "valid number"),
        ({**columns_of(odd_records()[:2]), "scd_b": [1, 10**400]}, "scd_b[1]", "less than or equal to"),
        ({**columns_of(odd_records()[:2]), "colour": ["red", "blue"]}, "colour", "Extra inputs"),
        ({k: v for k, v in columns_of(odd_records()[:2]).items() if k != "scd_b"}, "scd_b", "Field required"),
        ({"idx": [], **{n: [] for n in SCHEMA.names}}, "body", "send 1 to 50 rows in columns, not 0"),
        ({"idx": list(range(51)), **{n: [None] * 51 for n in SCHEMA.names}}, "body", "not 51"),
        ("columns", "body", "a JSON array of records or a JSON object of columns"),
        (7, "body", "a JSON array of records or a JSON object of columns"),
    ],
)
def test_a_bad_columnar_body_is_a_422_naming_field_and_row(make_app, companydata, logger, body, field, problem) -> None:
    response = make_app(max_columns=50).test_client().post("/predict/batch", json=body)
    assert response.status_code == 422, response.json
    assert response.json["error"] == "invalid request"
    assert any(d["field"] == field and problem in d["problem"] for d in response.json["details"]), response.json
    assert logger.flush() and companydata.query("SELECT count(*) FROM prediction_log") == [(0,)]


@pytest.mark.parametrize(
    ("raw", "status", "field"),
    [
        ('{"idx": [1], "idx": [2], "attr_a": [1], "attr_b": ["c"], "scd_a": [0.5], "scd_b": [3]}', 422, "idx"),
        ('{"idx": [1], "attr_a": [1], "attr_b": ["c"], "attr_b": ["d"], "scd_a": [0.5], "scd_b": [3]}', 422, "attr_b"),
        ('{"idx": [1], "attr_a": [1], "attr_b": ["c"], "scd_a": [NaN], "scd_b": [3]}', 400, "body"),
        ('{"idx": [1], "attr_a": [1], "attr_b": ["c"], "scd_a": [Infinity], "scd_b": [3]}', 400, "body"),
        ('{"idx": [1], "attr_a": [1], "attr_b": ["c"], "scd_a": [-Infinity], "scd_b": [3]}', 400, "body"),
        ('{"idx": [1], "attr_a": [1], "attr_b": ["c"], "scd_a": [1e400], "scd_b": [3]}', 422, "scd_a[0]"),
        (  # an integer wider than any double beside a float: once a 500 (OverflowError)
            '{"idx": [1, 2], "attr_a": [1, 1], "attr_b": ["c", "c"], "scd_a": [1%s, 0.5], "scd_b": [3, 3]}'
            % ("0" * 400),
            422,
            "scd_a[0]",
        ),
        ("[" * 100_000 + "]" * 100_000, 400, "body"),  # deeper than the parser goes: no 500
        ('{"idx": [1], "attr_a": [1], "attr_b": ["c"], "scd_a": [0.5], "scd_b": [3]', 400, "body"),
    ],
)
def test_hostile_columnar_bodies_are_refused_not_crashed_on(client, companydata, logger, raw, status, field) -> None:
    response = client.post("/predict/batch", data=raw, content_type="application/json")
    assert response.status_code == status, response.json
    assert response.json["details"][0]["field"] == field
    assert logger.flush() and companydata.query("SELECT count(*) FROM prediction_log") == [(0,)]


def test_a_huge_body_is_refused_by_size_and_a_long_one_by_rows(make_app) -> None:
    client = make_app(max_columns=100, max_body_bytes=1 << 16).test_client()
    huge = json.dumps({"idx": list(range(20_000)), **{n: [1] * 20_000 for n in SCHEMA.names}})
    assert client.post("/predict/batch", data=huge, content_type="application/json").status_code == 413
    long = {"idx": list(range(101)), **{n: [None] * 101 for n in SCHEMA.names}}
    response = client.post("/predict/batch", json=long)
    assert response.status_code == 422 and response.json["details"] == [
        {"field": "body", "problem": "send 1 to 100 rows in columns, not 101"}
    ]
    assert (
        client.post(
            "/predict/batch", json={**long, "idx": long["idx"][:100], **{n: [None] * 100 for n in SCHEMA.names}}
        ).status_code
        == 200
    )


def test_reject_names_the_columnar_rows_and_features(make_app, companydata, logger) -> None:
    client = make_app(ood_policy="reject").test_client()
    records = [{"idx": 10, "features": FEATURES}, {"idx": 11, "features": {**FEATURES, "attr_a": 9}}]
    response = client.post("/predict/batch", json=columns_of(records))
    assert response.status_code == 422
    assert {
        "field": "attr_a[1]",
        "problem": "client idx 11: attr_a=9 outside [1, 5] seen in training",
    } in response.json["details"]
    assert logger.flush() and companydata.query("SELECT count(*) FROM prediction_log") == [(0,)]


def test_the_openapi_document_describes_both_bodies_and_both_answers(client) -> None:
    spec = client.get("/openapi.json").json
    operation, schemas = spec["paths"]["/predict/batch"]["post"], spec["components"]["schemas"]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/BatchRequest"
    }
    records, columns = schemas["BatchRequest"]["anyOf"]
    assert records["items"] == {"$ref": "#/components/schemas/PredictRequest"} and records["maxItems"] == 1000
    assert columns == {"$ref": "#/components/schemas/ColumnarBatch"}
    columnar = schemas["ColumnarBatch"]
    assert set(columnar["required"]) == {"idx", *SCHEMA.names} and columnar["additionalProperties"] is False
    assert columnar["properties"]["idx"]["items"] == {"maximum": BIGINT_MAX, "minimum": 0, "type": "integer"}
    assert columnar["properties"]["attr_a"]["maxItems"] == 10_000 and columnar["properties"]["attr_a"]["minItems"] == 1
    assert "one value per client" in columnar["properties"]["attr_a"]["description"].lower()
    assert "all of the same length" in columnar["description"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/BatchAnswer"
    }
    assert schemas["BatchAnswer"]["anyOf"] == [
        {"$ref": "#/components/schemas/BatchResponse"},
        {"$ref": "#/components/schemas/ColumnarBatchResponse"},
    ]


# --- the fast column checks against the request models -------------------------------------


def decided_by_the_models(body: object) -> tuple[list[int], dict[str, list]] | str:
    """What the request models make of a body: its values, or the error."""
    try:
        if isinstance(body, list):
            records = MODELS.records.model_validate(body).model_dump()
            return [r["idx"] for r in records], {n: [r["features"][n] for r in records] for n in SCHEMA.names}
        columns = MODELS.columns.model_validate(body).model_dump()
        return columns["idx"], {n: columns[n] for n in SCHEMA.names}
    except ValidationError as exc:
        return str(exc.errors(include_url=False)[0]["type"])


def same_values(fast: dict[str, list], models: dict[str, list]) -> bool:
    """Equal as the model sees them (to_columns): an int for a number is the same float."""
    a, b = to_columns(SCHEMA, fast), to_columns(SCHEMA, models)
    for name in SCHEMA.names:
        if a[name].dtype == object:
            if a[name].tolist() != b[name].tolist():
                return False
        elif not np.array_equal(a[name], b[name], equal_nan=True):
            return False
    return True


ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 5, -1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63 - 1, 2**63, 10**400]),
    st.floats(allow_nan=False),
    st.sampled_from([0.0, -0.0, 2.0, 2.5, 1e308, float("inf"), -float("inf"), 1e-320]),
    st.text(max_size=5),
    st.sampled_from(["a", "b", "c", "d", "zz", "\x00", "x" * 200, "x" * 201]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)
VALID = {
    "idx": st.integers(min_value=0, max_value=BIGINT_MAX),
    "attr_a": st.one_of(st.integers(min_value=-(2**31), max_value=2**31 - 1), st.none()),
    "attr_b": st.one_of(st.sampled_from(["a", "b", "c", "d", "zz", "", "x" * 200]), st.none()),
    "scd_a": st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**60), 2**60), st.none()),
    "scd_b": st.one_of(st.integers(min_value=-(2**31), max_value=2**31 - 1), st.none()),
}


@st.composite
def bodies(draw: st.DrawFn) -> object:
    """Valid columns, half of them with one or two cells made odd; as records or as columns."""
    rows = draw(st.integers(min_value=1, max_value=6))
    columns = {name: draw(st.lists(VALID[name], min_size=rows, max_size=rows)) for name in VALID}
    if draw(st.booleans()):
        for _ in range(draw(st.integers(min_value=1, max_value=2))):
            name = draw(st.sampled_from(list(VALID)))
            columns[name][draw(st.integers(min_value=0, max_value=rows - 1))] = draw(ODD)
    if draw(st.booleans()):
        return columns
    return [{"idx": columns["idx"][i], "features": {n: columns[n][i] for n in SCHEMA.names}} for i in range(rows)]


@given(body=bodies())
@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_the_fast_checks_accept_only_what_the_request_models_accept_with_the_same_values(body: object) -> None:
    fast = fast_records(body, SCHEMA) if isinstance(body, list) else fast_columns(body, SCHEMA)  # type: ignore[arg-type]
    models = decided_by_the_models(body)
    event("fast" if fast is not None else "request models: " + ("refused" if isinstance(models, str) else "accepted"))
    if fast is not None:
        assert not isinstance(models, str), (body, models)
        assert fast[0] == models[0] and same_values(fast[1], models[1]), body
    # and read_batch always answers as the request models do
    try:
        batch = read_batch(body, MODELS, SCHEMA, 50, 50)
    except ValidationError as exc:
        assert isinstance(models, str) and exc.errors(include_url=False)[0]["type"] == models
    except BodyError:
        raise AssertionError(f"a well-sized body was refused by shape: {body}") from None
    else:
        assert not isinstance(models, str) and batch.idx == models[0] and same_values(batch.values, models[1])


def test_plain_bodies_take_the_fast_path_and_odd_ones_the_request_models() -> None:
    records = odd_records()
    assert fast_records(records, SCHEMA) is not None and fast_columns(columns_of(records), SCHEMA) is not None
    whole_float = [{"idx": 1, "features": {**FEATURES, "attr_a": 2.0}}]  # valid, but the models decide
    assert fast_records(whole_float, SCHEMA) is None
    batch = read_batch(whole_float, MODELS, SCHEMA, 50, 50)
    assert batch.values["attr_a"] == [2] and type(batch.values["attr_a"][0]) is int and not batch.columnar
    columns = to_columns(SCHEMA, {n: columns_of(records)[n] for n in SCHEMA.names})
    assert columns["attr_a"].dtype == np.float64 and math.isnan(columns["attr_a"][1])
    assert columns["attr_b"].dtype == object and columns["attr_b"][1] is None
