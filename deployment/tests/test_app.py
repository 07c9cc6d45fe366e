"""Every endpoint and every bad-input case, through the Flask app with a real model and database."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from data_science.features import EXAMPLE_REQUEST as CHALLENGE_REQUEST
from data_science.model import CustomerModel
from deployment.app import create_app
from deployment.config import ServeSettings
from deployment.model_holder import ModelHolder
from deployment.routes import predict as predict_route
from deployment.schemas import PredictResponse
from machine_learning_engineering.prediction_log import PredictionLogger
from testkit.fixtures import wait_until

FEATURES = CHALLENGE_REQUEST["features"]


def test_health_ready_model_and_openapi(client, trained) -> None:
    assert client.get("/health").json == {"status": "ok"}
    assert client.get("/ready").json == {
        "status": "ready",
        "model_version": trained.version_,
        "model_role": "fallback",  # the fixture's model_dir has a version but no champion pointer
        "champion_version": None,
        "no_skill": False,
        "fallback_reason": "no champion yet: serving the best version that loads",
        "prediction_log": {"state": "ok", "outage_seconds": None, "buffered": 0, "last_error": None},
    }
    metadata = client.get("/model").json
    assert metadata["version"] == trained.version_ and metadata["threshold"]["value"] == trained.threshold_
    spec = client.get("/openapi.json").json
    assert spec["openapi"] == "3.1.0" and {"/predict", "/predict/batch", "/health", "/ready", "/model"} <= set(
        spec["paths"]
    )
    attr_b = spec["components"]["schemas"]["Features"]["properties"]["attr_b"]
    assert "Known to the served model: a, b, c, d." in attr_b["description"] and "enum" not in json.dumps(attr_b)


def test_challenge_request_is_answered_and_logged_once(client, companydata, logger, trained) -> None:
    response = client.post("/predict", json=CHALLENGE_REQUEST)
    assert response.status_code == 200
    answer = response.json
    assert answer["label"] in (0, 1) and 0 <= answer["probability"] <= 1
    assert answer["label"] == int(answer["probability"] >= answer["threshold"])
    assert answer["model_version"] == trained.version_ and answer["idx"] == 150000
    assert logger.flush()
    assert companydata.query("SELECT client_idx, label, model_version, features FROM prediction_log") == [
        (150000, answer["label"], trained.version_, FEATURES)
    ]


def test_batch_is_one_call_with_one_logged_row_per_record(client, companydata, logger) -> None:
    records = [
        {"idx": i, "features": {**FEATURES, "attr_a": i % 5 + 1, "scd_a": None, "scd_b": None}} for i in range(50)
    ]
    response = client.post("/predict/batch", json=records)
    assert response.status_code == 200
    predictions = response.json["predictions"]
    assert [p["idx"] for p in predictions] == list(range(50))
    single = client.post("/predict", json=records[7]).json
    assert predictions[7]["probability"] == pytest.approx(single["probability"])
    assert logger.flush()
    assert companydata.query("SELECT count(*) FROM prediction_log") == [(51,)]


def bad(field: str, value) -> dict:
    body = json.loads(json.dumps(CHALLENGE_REQUEST))
    target = body if field == "idx" else body["features"]
    key = field.split(".")[-1]
    if value is KeyError:
        del target[key]
    else:
        target[key] = value
    return body


@pytest.mark.parametrize(
    ("body", "field", "problem"),
    [
        (bad("idx", KeyError), "idx", "Field required"),
        (bad("features.scd_b", KeyError), "features.scd_b", "Field required"),
        ({**CHALLENGE_REQUEST, "extra": 1}, "extra", "Extra inputs are not permitted"),
        (bad("features.colour", "red"), "features.colour", "Extra inputs are not permitted"),
        (bad("features.attr_a", "1"), "features.attr_a", "valid integer"),
        (bad("features.attr_a", True), "features.attr_a", "valid integer"),
        (bad("features.scd_a", True), "features.scd_a", "valid number"),
        (bad("features.attr_a", 1.5), "features.attr_a", "valid integer"),
        (bad("features.scd_b", 2.5), "features.scd_b", "valid integer"),
        (bad("features.attr_b", 3), "features.attr_b", "valid string"),
        (bad("features.attr_b", "a\u0000b"), "features.attr_b", "should match pattern"),
        (bad("features.attr_b", "z" * 201), "features.attr_b", "at most 200 characters"),
        (bad("idx", -1), "idx", "greater than or equal to 0"),
        (bad("idx", 1.5), "idx", "valid integer"),
        (bad("idx", "150000"), "idx", "valid integer"),
        ([CHALLENGE_REQUEST], "body", "Input should be a valid dictionary"),
    ],
)
def test_contract_violations_are_422_naming_field_and_problem(client, body, field, problem) -> None:
    response = client.post("/predict", json=body)
    assert response.status_code == 422, response.json
    assert response.json["error"] == "invalid request"
    assert any(d["field"] == field and problem in d["problem"] for d in response.json["details"]), response.json


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(client, token) -> None:
    raw = json.dumps(CHALLENGE_REQUEST).replace("0.55", token)
    response = client.post("/predict", data=raw, content_type="application/json")
    assert response.status_code in (400, 422)
    assert any(d["field"] in ("features.scd_a", "body") for d in response.json["details"])


def test_not_json_wrong_content_type_and_oversize_body(make_app) -> None:
    client = make_app(max_body_bytes=2048).test_client()
    not_json = client.post("/predict", data="{idx: 1", content_type="application/json")
    assert not_json.status_code == 400 and not_json.json["error"] == "body is not valid JSON"
    assert not_json.json["details"][0]["problem"].startswith("Invalid JSON: Expecting property name")
    form = client.post("/predict", data={"idx": "1"})
    assert form.status_code == 415 and "Content-Type must be application/json" in form.json["error"]
    huge = client.post("/predict", data="[" + "1," * 5000 + "1]", content_type="application/json")
    assert huge.status_code == 413 and huge.json["error"] == "request entity too large"


def test_batch_bounds(make_app) -> None:
    client = make_app(max_batch=5).test_client()
    assert client.post("/predict/batch", json=[]).json["details"] == [
        {"field": "body", "problem": "send 1 to 5 records, not 0"}
    ]
    too_many = client.post("/predict/batch", json=[CHALLENGE_REQUEST] * 6)
    assert too_many.status_code == 422 and "not 6" in too_many.json["details"][0]["problem"]
    one_bad = [CHALLENGE_REQUEST, bad("features.attr_b", 7)]
    response = client.post("/predict/batch", json=one_bad)
    assert response.status_code == 422 and response.json["details"][0]["field"] == "[1].features.attr_b"
    typed = client.post("/predict/batch", json=[CHALLENGE_REQUEST, bad("idx", -4)])
    assert typed.json["details"] == [{"field": "[1].idx", "problem": "Input should be greater than or equal to 0"}]


def test_no_model_yet_is_503_with_a_clear_message(make_app, tmp_path) -> None:
    client = make_app(model_dir=tmp_path / "empty").test_client()
    assert client.get("/health").status_code == 200
    for response in (client.get("/ready"), client.get("/model"), client.post("/predict", json=CHALLENGE_REQUEST)):
        assert response.status_code == 503
        assert response.json["error"] == "no model loaded yet"
        assert "has the training job run?" in response.json["details"][0]["problem"]


def test_token_protects_prediction_endpoints_only(make_app) -> None:
    client = make_app(api_token="s3cret").test_client()
    missing = client.post("/predict", json=CHALLENGE_REQUEST)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    wrong = client.post("/predict/batch", json=[CHALLENGE_REQUEST], headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    right = client.post("/predict", json=CHALLENGE_REQUEST, headers={"Authorization": "Bearer s3cret"})
    assert right.status_code == 200
    assert client.get("/ready").status_code == 200
    assert client.get("/openapi.json").json["paths"]["/predict"]["post"]["security"] == [{"bearer": []}]


def test_unknown_paths_and_methods_are_json(client) -> None:
    assert client.get("/nope").json["error"] == "not found"
    assert client.get("/predict").status_code == 405 and client.get("/predict").json["error"] == "method not allowed"


def test_page_is_self_contained(client, trained) -> None:
    html = client.get("/").get_data(as_text=True)
    assert '<form id="form">' in html and trained.version_ in html
    assert "http://" not in html and "https://" not in html  # no external assets


def test_integral_numbers_written_with_a_decimal_point_are_integers(client) -> None:
    body = {"idx": 7.0, "features": {**FEATURES, "attr_a": 2.0, "scd_b": 3.0}}
    assert client.post("/predict", json=body).status_code == 200


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ('{"idx": 1, "idx": 2, "features": %s}', "idx"),
        ('{"idx": 1, "features": %s, "features": %s}', "features"),
        ('{"idx": 1, "features": {"attr_a": 1, "attr_a": 5, "attr_b": "c", "scd_a": 0.5, "scd_b": 3}}', "attr_a"),
        ('[{"idx": 1, "features": %s}, {"idx": 2, "idx": 3, "features": %s}]', "idx"),
    ],
)
def test_a_key_given_twice_is_a_422_naming_it_not_last_one_wins(client, companydata, logger, raw, key) -> None:
    features = json.dumps(FEATURES)
    body = raw.replace("%s", features)
    path = "/predict/batch" if body.startswith("[") else "/predict"
    response = client.post(path, data=body, content_type="application/json")
    assert response.status_code == 422
    assert response.json["details"] == [
        {"field": key, "problem": f"duplicate key {key!r}: each key may appear once per object"}
    ]
    assert logger.flush() and companydata.query("SELECT count(*) FROM prediction_log") == [(0,)]


def test_colons_inside_strings_do_not_make_a_valid_body_a_duplicate(client) -> None:
    body = {"idx": 3, "features": {**FEATURES, "attr_b": "c"}}
    raw = json.dumps(body, indent=1).replace('"idx":', '"idx"  :')  # whitespace before colons is still JSON
    assert client.post("/predict", data=raw, content_type="application/json").status_code == 200
    colons = client.post("/predict", data=raw.replace('"c"', '"c:d:e"'), content_type="application/json")
    assert colons.status_code == 200  # the colon-rich value is an (unknown) category, not a duplicate
    assert colons.json["warnings"] == ["attr_b: unknown category 'c:d:e', scored as missing"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("idx", 10**30), ("idx", 2**63), ("features.attr_a", 2**31), ("features.scd_b", -(2**31) - 1)],
)
def test_values_the_predictions_table_cannot_hold_are_refused(client, companydata, logger, field, value) -> None:
    response = client.post("/predict", json=bad(field, value))
    assert response.status_code == 422 and response.json["details"][0]["field"] == field
    assert logger.flush() and companydata.query("SELECT count(*) FROM prediction_log") == [(0,)]


def test_the_largest_idx_the_table_holds_is_answered_and_logged(client, companydata, logger) -> None:
    assert client.post("/predict", json=bad("idx", 2**63 - 1)).status_code == 200
    assert logger.flush()
    assert companydata.query("SELECT client_idx, api_key FROM prediction_log") == [(2**63 - 1, None)]
    assert logger.stats()["dead_lettered"] == 0


def test_metrics_count_requests_predictions_and_the_log(client, logger, trained) -> None:
    client.post("/predict", json=CHALLENGE_REQUEST)
    client.post("/predict/batch", json=[CHALLENGE_REQUEST] * 3)
    client.post("/predict", json=bad("idx", -1))
    assert logger.flush()
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    for line in (
        'api_requests_total{endpoint="/predict",status="200"}',
        'api_requests_total{endpoint="/predict",status="422"}',
        'api_request_duration_seconds_bucket{endpoint="/predict/batch",le="+Inf"}',
        f'api_model_info{{version="{trained.version_}"}} 1.0',
        "prediction_log_written_total",
        "prediction_log_spooled_total",
        "prediction_log_dead_lettered_total",
        "prediction_log_dropped_total",
        "prediction_log_buffered",
    ):
        assert line in text, line


def test_ready_reports_a_degraded_then_failing_log_and_recovers(model_dir, companydata) -> None:
    logger = PredictionLogger(companydata.settings("mle"), max_backoff=0.1, unready_after=1.0)
    holder = ModelHolder(CustomerModel, model_dir, 60, logger)
    holder.refresh()
    client = create_app(ServeSettings(model_dir=model_dir, model_poll_seconds=60.0), holder).test_client()
    assert client.get("/ready").json["prediction_log"]["state"] == "ok"
    companydata.cluster.stop()
    try:
        assert client.post("/predict", json=CHALLENGE_REQUEST).status_code == 200  # acknowledged, buffered
        wait_until(lambda: client.get("/ready").json["prediction_log"]["state"] == "degraded")
        assert client.get("/ready").status_code == 200 and client.get("/ready").json["status"] == "degraded"
        wait_until(lambda: client.get("/ready").status_code == 503)
        answer = client.get("/ready").json
        assert answer["status"] == "unready" and answer["prediction_log"]["buffered"] == 1
        assert "Connection refused" in answer["prediction_log"]["last_error"]
    finally:
        companydata.cluster.start(fast=True)
    wait_until(lambda: client.get("/ready").status_code == 200, timeout=60)
    assert logger.flush() and companydata.query("SELECT count(*) FROM prediction_log") == [(1,)]
    logger.close()


def test_every_feature_may_be_null_and_is_logged_as_null(client, companydata, logger, trained) -> None:
    nothing = {"idx": 9, "features": {name: None for name in FEATURES}}
    response = client.post("/predict", json=nothing)
    assert response.status_code == 200 and response.json["warnings"] == []
    expected = trained.predict_proba(pd.DataFrame([nothing["features"]]))[0, 1]
    assert response.json["probability"] == pytest.approx(expected)
    assert logger.flush()
    assert companydata.query("SELECT features FROM prediction_log WHERE client_idx = 9") == [(nothing["features"],)]


def test_an_unknown_category_is_scored_as_missing_and_flagged_not_refused(client, trained) -> None:
    new_store = client.post("/predict", json=bad("features.attr_b", "new-store"))
    missing = client.post("/predict", json=bad("features.attr_b", None))
    assert new_store.status_code == 200 and missing.status_code == 200
    assert new_store.json["warnings"] == ["attr_b: unknown category 'new-store', scored as missing"]
    assert new_store.json["probability"] == pytest.approx(missing.json["probability"])
    batch = client.post("/predict/batch", json=[CHALLENGE_REQUEST, bad("features.attr_b", "z")]).json["predictions"]
    assert [p["warnings"] for p in batch] == [[], ["attr_b: unknown category 'z', scored as missing"]]
    spec = client.get("/openapi.json").json["components"]["schemas"]["Features"]
    assert all({"type": "null"} in spec["properties"][name]["anyOf"] for name in FEATURES)


@pytest.mark.parametrize(
    "features",
    [
        FEATURES,
        dict.fromkeys(FEATURES),
        {**FEATURES, "attr_b": "never-seen", "scd_a": None},
        {**FEATURES, "attr_a": 9, "scd_a": 1e30, "scd_b": -5},
        {**FEATURES, "attr_a": 5, "scd_a": 3},
    ],
)
def test_predict_answers_what_the_model_scores_on_a_frame_with_every_documented_field(
    client, trained, features, companydata, logger
) -> None:
    answer = client.post("/predict", json={"idx": 42, "features": features}).json
    assert set(answer) == set(PredictResponse.model_fields)
    labels, probabilities = trained.score(trained.feature_schema.validate(pd.DataFrame([features])))
    assert (answer["label"], answer["probability"]) == (int(labels[0]), float(probabilities[0]))  # exactly
    assert answer["threshold"] == trained.threshold_ and answer["model_version"] == trained.version_
    (verdict,) = trained.check_distribution(pd.DataFrame([features]).astype({"attr_b": object}))
    assert (answer["in_distribution"], answer["ood_reasons"]) == (verdict.in_distribution, verdict.reasons)
    assert logger.flush()
    ((label, probability, logged, flag, reasons),) = companydata.query(
        "SELECT label, probability, features, in_distribution, ood_reasons FROM prediction_log"
    )
    assert (label, probability, flag, reasons) == (
        answer["label"],
        answer["probability"],
        answer["in_distribution"],
        answer["ood_reasons"],
    )
    assert {k: None if v is None else float(v) if k != "attr_b" else v for k, v in logged.items()} == {
        k: None if v is None else float(v) if k != "attr_b" else v for k, v in features.items()
    }


def test_model_says_which_path_scores(client, model_dir) -> None:
    scoring = client.get("/model").json["serving"]["scoring"]
    expected = CustomerModel.load(model_dir).scoring()
    timings = {"load_seconds", "compile_seconds"}  # this process's, not the version's
    assert {k: v for k, v in scoring.items() if k not in timings} == {
        k: v for k, v in expected.items() if k not in timings
    }
    assert scoring["path"] == "compiled" and scoring["verified"]["at_load"]["bit_identical"]


@pytest.mark.parametrize(
    ("raw", "status", "field", "problem"),
    [
        ("[" * 100_000 + "]" * 100_000, 400, "body", "Invalid JSON: nested too deeply"),
        ("[" * 1_025 + "]" * 1_025, 400, "body", "Invalid JSON: nested too deeply"),  # past orjson's limit
        ('{"idx": 1, "features": {"scd_a": NaN}}', 400, "body", "Invalid JSON: NaN is not JSON"),
        ('{"idx": 1, "features": {}} {}', 400, "body", "Invalid JSON: Extra data: line 1 column 28 (char 27)"),
        (f'{{"idx": 1{"0" * 400}, "features": {json.dumps(FEATURES)}}}', 422, "idx", "less than or equal"),
        (json.dumps(json.dumps(CHALLENGE_REQUEST)), 422, "body", "valid dictionary"),  # JSON text in a string
    ],
)
def test_hostile_single_bodies_are_refused_naming_where(
    client, companydata, logger, raw, status, field, problem
) -> None:
    response = client.post("/predict", data=raw, content_type="application/json")
    assert response.status_code == status, response.json
    assert response.json["details"][0]["field"] == field and problem in response.json["details"][0]["problem"]
    assert logger.flush() and companydata.query("SELECT count(*) FROM prediction_log") == [(0,)]


def test_the_bearer_check_comes_before_anything_is_read_of_the_body(make_app) -> None:
    client = make_app(api_token="s3cret", max_body_bytes=2048).test_client()
    for raw in ("{idx: 1", "[" * 100_000, "[" + "1," * 5000 + "1]", json.dumps(CHALLENGE_REQUEST)):
        for path in ("/predict", "/predict/batch"):
            response = client.post(path, data=raw, content_type="application/json")
            assert response.status_code == 401 and response.json["details"][0]["field"] == "Authorization"
    huge = client.post("/predict", data="[" + "1," * 5000 + "1]", content_type="application/json",
                       headers={"Authorization": "Bearer s3cret"})  # fmt: skip
    assert huge.status_code == 413


def test_answers_keep_their_documented_key_order_and_values(client) -> None:
    """The records answer is written row by row from column texts: odd values (reasons and
    warnings holding commas and quotes, the largest idx) come out as the columns answer has them."""
    records = [
        {"idx": 2**63 - 1, "features": CHALLENGE_REQUEST["features"]},
        {"idx": 0, "features": {**FEATURES, "attr_a": 9, "attr_b": 'a, "b"', "scd_a": None}},
        {"idx": 5, "features": dict.fromkeys(FEATURES)},
    ]
    single = client.post("/predict", json=records[1])
    assert list(json.loads(single.data)) == [
        "idx", "in_distribution", "label", "model_version", "ood_reasons", "probability", "threshold", "warnings"
    ]  # fmt: skip
    answer = client.post("/predict/batch", json=records)
    columns = client.post(
        "/predict/batch",
        json={"idx": [r["idx"] for r in records], **{n: [r["features"][n] for r in records] for n in FEATURES}},
    )
    assert answer.data.endswith(b"}\n") and list(json.loads(answer.data)) == [
        "model_version",
        "predictions",
        "threshold",
    ]
    rows = json.loads(answer.data)["predictions"]
    assert [list(row) for row in rows] == [
        ["idx", "in_distribution", "label", "ood_reasons", "probability", "warnings"]
    ] * 3
    by_column = json.loads(columns.data)
    assert list(by_column) == [
        "idx", "in_distribution", "label", "model_version", "ood_reasons", "probability", "threshold", "warnings"
    ]  # fmt: skip
    for field in rows[0]:
        assert [row[field] for row in rows] == by_column[field], field
    assert rows[1]["warnings"] == ["attr_b: unknown category 'a, \"b\"', scored as missing"]
    assert rows[1]["in_distribution"] is False and rows[1]["ood_reasons"] and rows[0]["idx"] == 2**63 - 1
    assert rows[1] == {k: v for k, v in single.json.items() if k not in ("model_version", "threshold")}


@pytest.mark.parametrize(
    "values",
    [
        np.array([0, 1, 1], dtype=np.int64),
        np.array([0.1, 1e-05, 0.30000000000000004]),
        np.array([0.1, 1e-07, 0.5], dtype=np.float32),  # float32: written as tolist() has it
        np.array([True, False, True]),
        np.array([[0.25, 0.5, 0.75]])[0, ::-1],  # not contiguous
        [1, None, 2.5],
    ],
)
def test_a_column_of_an_answer_is_written_as_its_values_tolist(values) -> None:
    expected = values.tolist() if isinstance(values, np.ndarray) else values
    assert [json.loads(text) for text in predict_route._values(predict_route._contiguous(values))] == expected
