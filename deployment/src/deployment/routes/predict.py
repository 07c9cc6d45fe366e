"""POST /predict and /predict/batch: validated once, scored through MLEModel, every row logged.

Each request passes, in order: the bearer check (401/503), the media type (415), JSON
parsing (400; NaN and Infinity are not JSON), the duplicate-key check (422), then the request
models generated from the served model's feature declaration (422 naming field and row,
through `errors.validation_error`), then the served version's out-of-distribution gate on the
validated values (`MLEModel.check_distribution`): every answer row carries `in_distribution`
and `ood_reasons`, and with OOD_POLICY=reject a request with any row out of distribution is a
422 naming the rows and features, scored and logged for none of them.

No DataFrame on the way: the validated values become `Columns` (numbers float64, categories
str or None) once, which the gate, the model (`score_columns`) and the log record
(`predict_with_logging`, the one logged path) all read. /predict is validated by its request
model (flask-openapi3); /predict/batch reads its body itself (`deployment.columns`: records
or columns, checked column by column, the request models deciding anything unusual) and
answers in the shape it was asked in.
"""

# No `from __future__ import annotations`: flask-openapi3 reads the views' annotations, which
# name request models built at run time.

import json
from collections import Counter
from collections.abc import Callable
from operator import itemgetter
from typing import Any
from weakref import WeakKeyDictionary

from flask import Response, current_app, g, request
from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag
from flask_openapi3.types import ResponseDict
from pydantic import ValidationError
from werkzeug.exceptions import BadRequest

from deployment import metrics
from deployment.columns import Batch, BodyError, read_batch, to_columns
from deployment.errors import ApiError, validation_error
from deployment.routes.context import services
from deployment.schemas import BatchAnswer, ErrorResponse, PredictResponse, RequestModels
from machine_learning_engineering.model import Columns, MLEModel
from machine_learning_engineering.ood import IN_DISTRIBUTION, Verdict

REFUSALS: ResponseDict = {
    400: ErrorResponse,
    401: ErrorResponse,
    413: ErrorResponse,
    415: ErrorResponse,
    422: ErrorResponse,
    503: ErrorResponse,
}
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]
# Shared by every answer row without warnings or reasons (never changed in place).
NOTHING: list[str] = []


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


def duplicate_key(raw: bytes, keys: int) -> str | None:
    """The first key that appears twice in one JSON object of the body, or None.

    JSON parsers keep the last of duplicated keys, so `{"idx": 1, "idx": 2}` would be scored
    as client 2 and logged as if the caller meant it. The exact check re-parses the body,
    which costs as much as parsing it; it runs only when it can find something. Every key is
    followed by a colon, and a valid body has `keys` keys unless one repeats, so a body with
    no more colons than that has no duplicate.
    """
    if raw.count(b":") <= keys:
        return None
    try:
        json.loads(raw, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        return exc.key
    except ValueError:
        return None
    return None


def expected_keys(parsed: Any, fields: int) -> int:
    """How many keys a valid body of this shape holds: a record has idx, features and its
    `fields` features; columns have idx and one key per feature."""
    if isinstance(parsed, list):
        return len(parsed) * (2 + fields)
    if isinstance(parsed, dict) and "features" not in parsed:
        return 1 + fields
    return 2 + fields


def unknown_categories(model: MLEModel, values: dict[str, list[Any]], rows: int) -> list[list[str]]:
    """Per row, a warning for each category the model never saw: it is scored as missing.

    Refusing it would let one new store category take the API down; scoring it silently
    would hide it. The logged features keep the value as sent, for monitoring.
    """
    warnings = [NOTHING] * rows
    for name, known in known_categories(model).items():
        column = values.get(name)
        if column is None:
            continue
        unknown = set(column).difference(known)
        unknown.discard(None)
        if not unknown:
            continue
        for i, value in enumerate(column):
            if value in unknown:
                warnings[i] = [*warnings[i], f"{name}: unknown category {value!r}, scored as missing"]
    return warnings


# A loaded model's known categories never change: asked once per model, not per request.
_KNOWN: "WeakKeyDictionary[MLEModel, dict[str, frozenset[str]]]" = WeakKeyDictionary()


def known_categories(model: MLEModel) -> dict[str, frozenset[str]]:
    known = _KNOWN.get(model)
    if known is None:
        known = _KNOWN[model] = {name: frozenset(values) for name, values in model.known_categories().items()}
    return known


def count_verdicts(verdicts: list[Verdict]) -> None:
    counts = Counter(map(itemgetter(0), verdicts))
    for value, label in ((True, "in"), (False, "out"), (None, "none")):
        if counts[value]:
            metrics.judged(label, counts[value])


def single_field(row: int, name: str) -> str:
    """Where /predict's feature `name` ("": the features as a whole) sat in its body."""
    return f"features.{name}" if name else "features"


def refuse_out_of_distribution(
    idx: list[Any], verdicts: list[Verdict], field: Callable[[int, str], str], batch: bool
) -> None:
    """OOD_POLICY=reject: a 422 naming each row out of distribution and its features (`field`
    says where row i's feature sat in the body). One such row refuses the whole request (a
    batch is answered whole or not at all, as for invalid input)."""
    details = []
    for i, verdict in enumerate(verdicts):
        if verdict.in_distribution is not False:
            continue
        for finding in verdict.findings:
            problem = f"client idx {idx[i]}: {finding.reason}" if batch else finding.reason
            for name in finding.features or ("",):
                details.append({"field": field(i, name), "problem": problem})
    if details:
        metrics.OOD_REFUSED.inc()
        raise ApiError(422, "out of distribution (OOD_POLICY=reject)", details)


def reasons(verdict: Verdict) -> list[str]:
    return NOTHING if verdict is IN_DISTRIBUTION else verdict.reasons


def dumped(payload: Any) -> Response:
    """JSON as `jsonify` writes it (compact), without sorting keys: the callers write them in
    order already, and sorting a thousand rows' keys costs more than writing them."""
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=current_app.json.ensure_ascii)  # type: ignore[attr-defined]
    return Response(text + "\n", mimetype="application/json")


def documented_body(model: Any) -> Callable[[Callable[..., Response]], Callable[..., Response]]:
    """For a view that reads its body itself: flask-openapi3 documents `model` as the request
    body and leaves validation to the view (its delayed-validation protocol, the one its own
    `validate_request` decorator uses)."""

    def mark(view: Callable[..., Response]) -> Callable[..., Response]:
        view.__annotations__ = {**view.__annotations__, "body": model}
        view.__delay_validate_request__ = True  # type: ignore[attr-defined]
        return view

    return mark


def blueprint(models: RequestModels) -> APIBlueprint:
    """The prediction endpoints for one feature declaration."""
    bp = APIBlueprint("predict", __name__, abp_tags=[Tag(name="predict")], abp_security=SECURITY)
    fields = len(models.features.model_fields)
    Predict = models.predict

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
        duplicated = duplicate_key(request.get_data(), expected_keys(parsed, fields))
        if duplicated is not None:
            problem = f"duplicate key {duplicated!r}: each key may appear once per object"
            raise ApiError(422, "invalid request", [{"field": duplicated, "problem": problem}])

    def score(model: MLEModel, idx: list[int], columns: Columns, verdicts: list[Verdict]) -> tuple[Any, Any]:
        """Score validated columns whose verdicts are known, logging each row with its verdict."""
        labels, probabilities = model.predict_with_logging(
            idx, columns, with_probability=True, api_key=g.api_key, validated=True, verdicts=verdicts
        )
        metrics.SCORED.inc(len(idx))
        return labels, probabilities

    def judge(
        model: MLEModel, idx: list[int], columns: Columns, field: Callable[[int, str], str], batch: bool
    ) -> list[Verdict]:
        """The gate's verdicts, counted; OOD_POLICY=reject refuses here, before anything is scored."""
        verdicts = model.check_distribution(columns)
        count_verdicts(verdicts)
        if services().settings.ood_policy == "reject":
            refuse_out_of_distribution(idx, verdicts, field, batch)
        return verdicts

    def predict(body: Predict) -> Response:  # type: ignore[valid-type]
        """Predict one client's label (logged in `predictions`), with the out-of-distribution gate's verdict."""
        model = services().served_model()
        values = body.features.model_dump()  # type: ignore[attr-defined]
        idx = [body.idx]  # type: ignore[attr-defined]
        columns = model.feature_schema.columns([values])
        verdicts = judge(model, idx, columns, single_field, batch=False)
        labels, probabilities = score(model, idx, columns, verdicts)
        warnings = unknown_categories(model, {name: [value] for name, value in values.items()}, 1)
        verdict = verdicts[0]
        return dumped(  # PredictResponse, keys in order
            {
                "idx": idx[0],
                "in_distribution": verdict.in_distribution,
                "label": int(labels[0]),
                "model_version": model.version_ or "unversioned",
                "ood_reasons": reasons(verdict),
                "probability": float(probabilities[0]),
                "threshold": model.decision_threshold,
                "warnings": warnings[0],
            }
        )

    @documented_body(models.batch)
    def predict_batch() -> Response:
        """Predict many clients in one vectorised call, each logged with its verdict.

        Records (at most MAX_BATCH_SIZE) are answered as records; columns (one array per field,
        at most MAX_COLUMNAR_ROWS rows) are answered as columns."""
        context = services()
        model = context.served_model()
        settings = context.settings
        try:
            batch = read_batch(
                request.get_json(), models, model.feature_schema, settings.max_batch, settings.max_columns
            )
        except BodyError as exc:
            raise ApiError(422, "invalid request", [{"field": exc.field, "problem": exc.problem}]) from None
        except ValidationError as exc:  # what the request models refuse, named as for /predict
            return validation_error(exc)
        columns = to_columns(model.feature_schema, batch.values)
        verdicts = judge(model, batch.idx, columns, batch.field, batch=True)
        labels, probabilities = score(model, batch.idx, columns, verdicts)
        return answer(model, batch, labels.tolist(), probabilities.tolist(), verdicts)

    def answer(
        model: MLEModel, batch: Batch, labels: list[int], probabilities: list[float], verdicts: list[Verdict]
    ) -> Response:
        warnings = unknown_categories(model, batch.values, batch.rows)
        flags = list(map(itemgetter(0), verdicts))
        why = list(map(reasons, verdicts))
        version, threshold = model.version_ or "unversioned", model.decision_threshold
        if batch.columnar:  # ColumnarBatchResponse, keys in order
            return dumped(
                {
                    "idx": batch.idx,
                    "in_distribution": flags,
                    "label": labels,
                    "model_version": version,
                    "ood_reasons": why,
                    "probability": probabilities,
                    "threshold": threshold,
                    "warnings": warnings,
                }
            )
        # BatchResponse: plain dicts in its shape (a thousand pydantic objects would cost more than the model)
        predictions = [
            {"idx": i, "in_distribution": f, "label": label, "ood_reasons": r, "probability": p, "warnings": w}
            for i, f, label, r, p, w in zip(batch.idx, flags, labels, why, probabilities, warnings, strict=True)
        ]
        return dumped({"model_version": version, "predictions": predictions, "threshold": threshold})

    bp.post("/predict", responses={200: PredictResponse, **REFUSALS})(predict)
    bp.post("/predict/batch", responses={200: BatchAnswer, **REFUSALS})(predict_batch)
    return bp
