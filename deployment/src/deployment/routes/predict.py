"""POST /predict and /predict/batch: validated once, scored through MLEModel, every row logged.

Each request passes, in order: the bearer check (401/503), the media type (415), JSON
parsing (400; NaN and Infinity are not JSON), the duplicate-key check (422), then the
request model generated from the served model's feature declaration (422, by flask-openapi3
through `errors.validation_error`). The validated values become a typed frame
(`feature_schema.frame`) that the model scores without checking it again.
"""

# No `from __future__ import annotations`: flask-openapi3 reads the views' annotations, which
# name request models built at run time.

import json
from typing import Any

from flask import Response, g, jsonify, request
from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag
from flask_openapi3.types import ResponseDict
from werkzeug.exceptions import BadRequest

from deployment import metrics
from deployment.errors import ApiError
from deployment.routes.context import services
from deployment.schemas import BatchResponse, ErrorResponse, PredictResponse, RequestModels
from machine_learning_engineering.model import MLEModel

REFUSALS: ResponseDict = {
    400: ErrorResponse,
    401: ErrorResponse,
    413: ErrorResponse,
    415: ErrorResponse,
    422: ErrorResponse,
    503: ErrorResponse,
}
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))  # type: ignore[func-returns-value]
    return obj


def duplicate_key(raw: bytes, records: int, keys_per_record: int) -> str | None:
    """The first key that appears twice in one JSON object of the body, or None.

    JSON parsers keep the last of duplicated keys, so `{"idx": 1, "idx": 2}` would be scored
    as client 2 and logged as if the caller meant it. The exact check re-parses the body,
    which costs as much as parsing it; it runs only when it can find something. Every key is
    followed by a colon, and a valid body has every field exactly once unless one repeats, so
    a body with no more colons than fields has no duplicate.
    """
    if raw.count(b":") <= records * keys_per_record:
        return None
    try:
        json.loads(raw, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        return exc.key
    except ValueError:
        return None
    return None


def unknown_categories(model: MLEModel, features: list[dict[str, Any]]) -> list[list[str]]:
    """Per record, a warning for each category the model never saw: it is scored as missing.

    Refusing it would let one new store category take the API down; scoring it silently
    would hide it. The logged features keep the value as sent, for monitoring.
    """
    warnings: list[list[str]] = [[] for _ in features]
    for name, known_list in model.known_categories().items():
        known = set(known_list)
        for i, values in enumerate(features):
            value = values.get(name)
            if value is not None and value not in known:
                warnings[i].append(f"{name}: unknown category {value!r}, scored as missing")
    return warnings


def blueprint(models: RequestModels) -> APIBlueprint:
    """The prediction endpoints for one feature declaration."""
    bp = APIBlueprint("predict", __name__, abp_tags=[Tag(name="predict")], abp_security=SECURITY)
    keys_per_record = len(models.predict.model_fields) + len(models.features.model_fields)
    Predict, Batch = models.predict, models.batch

    @bp.before_request
    def admit() -> None:
        """Who asks, and a JSON body with each key once, before the request model runs."""
        g.api_key = services().guard.caller()
        if request.mimetype != "application/json":
            raise ApiError(415, f"Content-Type must be application/json, not {request.mimetype or 'missing'}")
        try:
            parsed = request.get_json()
        except BadRequest as exc:
            raise ApiError(
                400, "body is not valid JSON", [{"field": "body", "problem": str(exc.description)}]
            ) from None
        records = len(parsed) if isinstance(parsed, list) else 1
        duplicated = duplicate_key(request.get_data(), records, keys_per_record)
        if duplicated is not None:
            problem = f"duplicate key {duplicated!r}: each key may appear once per object"
            raise ApiError(422, "invalid request", [{"field": duplicated, "problem": problem}])

    def score(records: list[dict[str, Any]]) -> tuple[MLEModel, list[Any], Any, Any, list[list[str]]]:
        """Score validated records (dumped once, as plain dicts), logging each."""
        model = services().served_model()
        features = [record["features"] for record in records]
        warnings = unknown_categories(model, features)
        idx = [record["idx"] for record in records]
        labels, probabilities = model.predict_with_logging(
            idx, model.feature_schema.frame(features), with_probability=True, api_key=g.api_key, validated=True
        )
        metrics.SCORED.inc(len(records))
        return model, idx, labels, probabilities, warnings

    def predict(body: Predict) -> Response:  # type: ignore[valid-type]
        """Predict one client's label (logged in `predictions`)."""
        model, idx, labels, probabilities, warnings = score([body.model_dump()])  # type: ignore[attr-defined]
        answer = PredictResponse(
            idx=idx[0],
            label=int(labels[0]),
            probability=float(probabilities[0]),
            model_version=model.version_ or "unversioned",
            threshold=model.decision_threshold,
            warnings=warnings[0],
        )
        return jsonify(answer.model_dump())

    def predict_batch(body: Batch) -> Response:  # type: ignore[valid-type]
        """Predict many clients in one vectorised call (each logged); at most MAX_BATCH_SIZE."""
        records = body.model_dump()  # type: ignore[attr-defined]
        max_batch = services().settings.max_batch
        if not 1 <= len(records) <= max_batch:
            problem = f"send 1 to {max_batch} records, not {len(records)}"
            raise ApiError(422, "invalid request", [{"field": "body", "problem": problem}])
        model, idx, labels, probabilities, warnings = score(records)
        # Plain dicts in BatchResponse's shape: a thousand pydantic objects would cost more than the model.
        predictions = [
            {"idx": i, "label": label, "probability": p, "warnings": w}
            for i, label, p, w in zip(idx, labels.tolist(), probabilities.tolist(), warnings, strict=True)
        ]
        return jsonify(
            predictions=predictions, model_version=model.version_ or "unversioned", threshold=model.decision_threshold
        )

    bp.post("/predict", responses={200: PredictResponse, **REFUSALS})(predict)
    bp.post("/predict/batch", responses={200: BatchResponse, **REFUSALS})(predict_batch)
    return bp
