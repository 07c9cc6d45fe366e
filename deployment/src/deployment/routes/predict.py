"""POST /predict and /predict/batch: validated once, scored through MLEModel, every row logged.

Each request passes, in order: the bearer check (401/503), the media type (415), JSON
parsing (400; NaN and Infinity are not JSON), the duplicate-key check (422), then the
request model generated from the served model's feature declaration (422, by flask-openapi3
through `errors.validation_error`), then the served version's out-of-distribution gate on the
validated values (`MLEModel.check_distribution`): every answer row carries `in_distribution`
and `ood_reasons`, and with OOD_POLICY=reject a request with any row out of distribution is a
422 naming the rows and features, scored and logged for none of them. The validated values
become a typed frame (`feature_schema.frame`) that the model scores without checking it again;
each logged row carries its verdict.
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
from machine_learning_engineering.ood import Verdict

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


def count_verdicts(verdicts: list[Verdict]) -> None:
    counts = {True: 0, False: 0, None: 0}
    for verdict in verdicts:
        counts[verdict.in_distribution] += 1
    for value, label in ((True, "in"), (False, "out"), (None, "none")):
        if counts[value]:
            metrics.OOD.labels(label).inc(counts[value])


def refuse_out_of_distribution(idx: list[Any], verdicts: list[Verdict], batch: bool) -> None:
    """OOD_POLICY=reject: a 422 naming each row out of distribution and its features. One such
    row refuses the whole request (a batch is answered whole or not at all, as for invalid input)."""
    details = []
    for i, verdict in enumerate(verdicts):
        if verdict.in_distribution is not False:
            continue
        row = f"[{i}]." if batch else ""
        for finding in verdict.findings:
            problem = f"client idx {idx[i]}: {finding.reason}" if batch else finding.reason
            for name in finding.features or ("",):
                field = f"{row}features.{name}" if name else f"{row}features"
                details.append({"field": field, "problem": problem})
    if details:
        metrics.OOD_REFUSED.inc()
        raise ApiError(422, "out of distribution (OOD_POLICY=reject)", details)


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

    def score(
        records: list[dict[str, Any]], batch: bool
    ) -> tuple[MLEModel, list[Any], Any, Any, list[list[str]], list[Verdict]]:
        """Judge, then score validated records (dumped once, as plain dicts), logging each with its verdict."""
        context = services()
        model = context.served_model()
        features = [record["features"] for record in records]
        idx = [record["idx"] for record in records]
        verdicts = model.check_distribution(features)
        count_verdicts(verdicts)
        if context.settings.ood_policy == "reject":
            refuse_out_of_distribution(idx, verdicts, batch)
        warnings = unknown_categories(model, features)
        labels, probabilities = model.predict_with_logging(
            idx,
            model.feature_schema.frame(features),
            with_probability=True,
            api_key=g.api_key,
            validated=True,
            verdicts=verdicts,
        )
        metrics.SCORED.inc(len(records))
        return model, idx, labels, probabilities, warnings, verdicts

    def predict(body: Predict) -> Response:  # type: ignore[valid-type]
        """Predict one client's label (logged in `predictions`), with the out-of-distribution gate's verdict."""
        model, idx, labels, probabilities, warnings, verdicts = score([body.model_dump()], batch=False)  # type: ignore[attr-defined]
        answer = PredictResponse(
            idx=idx[0],
            label=int(labels[0]),
            probability=float(probabilities[0]),
            model_version=model.version_ or "unversioned",
            threshold=model.decision_threshold,
            warnings=warnings[0],
            in_distribution=verdicts[0].in_distribution,
            ood_reasons=verdicts[0].reasons,
        )
        return jsonify(answer.model_dump())

    def predict_batch(body: Batch) -> Response:  # type: ignore[valid-type]
        """Predict many clients in one vectorised call (each logged with its verdict); at most MAX_BATCH_SIZE."""
        records = body.model_dump()  # type: ignore[attr-defined]
        max_batch = services().settings.max_batch
        if not 1 <= len(records) <= max_batch:
            problem = f"send 1 to {max_batch} records, not {len(records)}"
            raise ApiError(422, "invalid request", [{"field": "body", "problem": problem}])
        model, idx, labels, probabilities, warnings, verdicts = score(records, batch=True)
        # Plain dicts in BatchResponse's shape: a thousand pydantic objects would cost more than the model.
        predictions = [
            {
                "idx": i,
                "label": label,
                "probability": p,
                "warnings": w,
                "in_distribution": v.in_distribution,
                "ood_reasons": v.reasons,
            }
            for i, label, p, w, v in zip(idx, labels.tolist(), probabilities.tolist(), warnings, verdicts, strict=True)
        ]
        return jsonify(
            predictions=predictions, model_version=model.version_ or "unversioned", threshold=model.decision_threshold
        )

    bp.post("/predict", responses={200: PredictResponse, **REFUSALS})(predict)
    bp.post("/predict/batch", responses={200: BatchResponse, **REFUSALS})(predict_batch)
    return bp
