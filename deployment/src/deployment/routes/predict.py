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
(`predict_with_logging`, the one logged path) all read. The body is read and parsed once, by
orjson (`deployment.jsontext`), after the bearer check; flask-openapi3 only documents the
request models (its delayed-validation protocol, `documented_body`). /predict is validated by
its request model; /predict/batch reads its body itself (`deployment.columns`: records or
columns, checked column by column, the request models deciding anything unusual). Answers
are written by orjson, in the shape asked in, the model's arrays as they are.
"""

# No `from __future__ import annotations`: flask-openapi3 reads the views' annotations, which
# name request models built at run time.

import json
from collections import Counter
from collections.abc import Callable
from operator import itemgetter
from typing import Any
from weakref import WeakKeyDictionary

import numpy as np
import orjson
from flask import Response, g, request
from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag
from flask_openapi3.types import ResponseDict
from pydantic import ValidationError

from deployment import jsontext, metrics
from deployment.columns import Batch, BodyError, read_batch, to_columns
from deployment.errors import ApiError, validation_error
from deployment.routes.context import Services
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
                warnings[i] = [*warnings[i], _unknown(name, value)]
    return warnings


def unknown_category(model: MLEModel, values: dict[str, Any]) -> list[str]:
    """`unknown_categories` for one client's values (/predict)."""
    warnings = NOTHING
    for name, known in known_categories(model).items():
        value = values.get(name)
        if value is not None and value not in known:
            warnings = [*warnings, _unknown(name, value)]
    return warnings


def _unknown(name: str, value: Any) -> str:
    return f"{name}: unknown category {value!r}, scored as missing"


# A loaded model's known categories never change: asked once per model, not per request.
_KNOWN: "WeakKeyDictionary[MLEModel, dict[str, frozenset[str]]]" = WeakKeyDictionary()


def known_categories(model: MLEModel) -> dict[str, frozenset[str]]:
    known = _KNOWN.get(model)
    if known is None:
        known = _KNOWN[model] = {name: frozenset(values) for name, values in model.known_categories().items()}
    return known


_VERDICT_LABELS = {True: "in", False: "out", None: "none"}


def count_verdicts(verdicts: list[Verdict]) -> None:
    if len(verdicts) == 1:  # /predict: one verdict, one counter
        metrics.judged(_VERDICT_LABELS[verdicts[0][0]], 1)
        return
    counts = Counter(map(itemgetter(0), verdicts))
    for value, label in _VERDICT_LABELS.items():
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


def read_single(body: Any, model: type[Any]) -> tuple[int, dict[str, Any]]:
    """/predict's parsed body through its request model: (idx, the feature values); pydantic's
    ValidationError (naming the field) for anything the model refuses."""
    validated = model.model_validate(body)
    return validated.idx, dict(validated.features.__dict__)


def answer_single(
    model: MLEModel, idx: int, verdict: Verdict, label: int, probability: float, warnings: list[str]
) -> Response:
    """PredictResponse, keys in order."""
    return _json(
        {
            "idx": idx,
            "in_distribution": verdict.in_distribution,
            "label": label,
            "model_version": model.version_ or "unversioned",
            "ood_reasons": reasons(verdict),
            "probability": probability,
            "threshold": model.decision_threshold,
            "warnings": warnings,
        }
    )


def answer_columns(
    model: MLEModel, batch: Batch, labels: Any, probabilities: Any, verdicts: list[Verdict], warnings: list[list[str]]
) -> Response:
    """ColumnarBatchResponse, keys in order: the model's arrays written by orjson as they are."""
    return _json(
        {
            "idx": batch.idx,
            "in_distribution": list(map(itemgetter(0), verdicts)),
            "label": _contiguous(labels),
            "model_version": model.version_ or "unversioned",
            "ood_reasons": _reason_lists(verdicts),
            "probability": _contiguous(probabilities),
            "threshold": model.decision_threshold,
            "warnings": warnings,
        }
    )


# A BatchResponse row, in its key order: the constant text around each row's six values.
_ROW = (
    b'{"idx":',
    b',"in_distribution":',
    b',"label":',
    b',"ood_reasons":',
    b',"probability":',
    b',"warnings":',
    b"},",
)
_EMPTY = b"[]"


def answer_records(
    model: MLEModel, batch: Batch, labels: Any, probabilities: Any, verdicts: list[Verdict], warnings: list[list[str]]
) -> Response:
    """BatchResponse, keys in order, written without a dict per row: each column's values are
    written by one orjson call and split into one text per row (numbers, true, false and null
    hold no comma), the lists of strings one by one where not empty, and the rows' text is
    interleaved with the constant text around them by slice assignment."""
    rows = batch.rows
    parts: list[bytes] = [
        _ROW[0], b"", _ROW[1], b"", _ROW[2], b"", _ROW[3], b"", _ROW[4], b"", _ROW[5], b"", _ROW[6]
    ] * rows  # fmt: skip
    parts[1::13] = _values(batch.idx)
    parts[3::13] = _values(list(map(itemgetter(0), verdicts)))
    parts[5::13] = _values(_contiguous(labels))
    parts[7::13] = list(map(_reasons, verdicts)) if any(map(itemgetter(1), verdicts)) else [_EMPTY] * rows
    parts[9::13] = _values(_contiguous(probabilities))
    parts[11::13] = _lists(warnings)
    parts[-1] = b"}"
    head = b'{"model_version":' + orjson.dumps(model.version_ or "unversioned") + b',"predictions":['
    tail = b'],"threshold":' + orjson.dumps(model.decision_threshold) + b"}\n"
    return Response(b"".join((head, *parts, tail)), content_type=JSON)


def _values(column: Any) -> list[bytes]:
    """Each scalar's JSON text (numbers, true, false, null: no commas inside)."""
    return orjson.dumps(column, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].split(b",")


def _lists(column: list[list[str]]) -> list[bytes]:
    if not any(column):
        return [_EMPTY] * len(column)
    return [orjson.dumps(strings) if strings else _EMPTY for strings in column]


def _reason_lists(verdicts: list[Verdict]) -> list[list[str]]:
    """Each verdict's reasons; one shared empty list for every row without (most of them)."""
    if not any(map(itemgetter(1), verdicts)):
        return [NOTHING] * len(verdicts)
    return [verdict.reasons if verdict.findings else NOTHING for verdict in verdicts]


def _reasons(verdict: Verdict) -> bytes:
    return orjson.dumps(verdict.reasons) if verdict.findings else _EMPTY


# The dtypes orjson writes itself as `tolist()` would have them (OPT_SERIALIZE_NUMPY; float32
# it writes in float32's shortest form, so it goes as a list); any other array goes as a list.
_NATIVE = frozenset(
    map(np.dtype, ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float64"))
)


def _contiguous(values: Any) -> Any:
    """What orjson writes as it is: a C-contiguous array of a number dtype it knows, or a list."""
    if isinstance(values, np.ndarray):
        if values.dtype in _NATIVE and values.flags.c_contiguous and values.ndim == 1:
            return values
        return values.tolist()
    return values


JSON = "application/json"


def _json(payload: Any) -> Response:
    return Response(jsontext.dumps(payload), content_type=JSON)


def documented_body(model: Any) -> Callable[[Callable[..., Response]], Callable[..., Response]]:
    """For a view that reads its body itself: flask-openapi3 documents `model` as the request
    body and leaves validation to the view (its delayed-validation protocol, the one its own
    `validate_request` decorator uses)."""

    def mark(view: Callable[..., Response]) -> Callable[..., Response]:
        view.__annotations__ = {**view.__annotations__, "body": model}
        view.__delay_validate_request__ = True  # type: ignore[attr-defined]
        return view

    return mark


def blueprint(models: RequestModels, context: Services) -> APIBlueprint:
    """The prediction endpoints for one feature declaration, served with `context`."""
    bp = APIBlueprint("predict", __name__, abp_tags=[Tag(name="predict")], abp_security=SECURITY)
    fields = len(models.features.model_fields)
    settings = context.settings

    @bp.before_request
    def admit() -> None:
        """Who asks, then a JSON body with each key once, parsed once (`g.body`) for the view.
        Nothing of the body is read before the bearer check."""
        g.api_key = context.guard.caller()
        # The usual header is the media type alone: compared as it is, parsed only otherwise.
        if request.environ.get("CONTENT_TYPE") != JSON and request.mimetype != JSON:
            raise ApiError(415, f"Content-Type must be application/json, not {request.mimetype or 'missing'}")
        raw = request.get_data()  # MAX_CONTENT_LENGTH: a 413 before anything is read
        try:
            parsed = jsontext.loads(raw)
        except ValueError as exc:
            raise ApiError(
                400, "body is not valid JSON", [{"field": "body", "problem": f"Invalid JSON: {exc}"}]
            ) from None
        duplicated = duplicate_key(raw, expected_keys(parsed, fields))
        if duplicated is not None:
            problem = f"duplicate key {duplicated!r}: each key may appear once per object"
            raise ApiError(422, "invalid request", [{"field": duplicated, "problem": problem}])
        g.body = parsed

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
        if settings.ood_policy == "reject":
            refuse_out_of_distribution(idx, verdicts, field, batch)
        return verdicts

    @documented_body(models.predict)
    def predict() -> Response:
        """Predict one client's label (logged in `predictions`), with the out-of-distribution gate's verdict."""
        try:
            client, values = read_single(g.body, models.predict)
        except ValidationError as exc:
            return validation_error(exc)
        model = context.served_model()
        idx = [client]
        columns = model.feature_schema.columns([values])
        verdicts = judge(model, idx, columns, single_field, batch=False)
        labels, probabilities = score(model, idx, columns, verdicts)
        warnings = unknown_category(model, values)
        return answer_single(model, client, verdicts[0], int(labels[0]), float(probabilities[0]), warnings)

    @documented_body(models.batch)
    def predict_batch() -> Response:
        """Predict many clients in one vectorised call, each logged with its verdict.

        Records (at most MAX_BATCH_SIZE) are answered as records; columns (one array per field,
        at most MAX_COLUMNAR_ROWS rows) are answered as columns."""
        model = context.served_model()
        try:
            batch = read_batch(g.body, models, model.feature_schema, settings.max_batch, settings.max_columns)
        except BodyError as exc:
            raise ApiError(422, "invalid request", [{"field": exc.field, "problem": exc.problem}]) from None
        except ValidationError as exc:  # what the request models refuse, named as for /predict
            return validation_error(exc)
        columns = to_columns(model.feature_schema, batch.values)
        verdicts = judge(model, batch.idx, columns, batch.field, batch=True)
        labels, probabilities = score(model, batch.idx, columns, verdicts)
        warnings = unknown_categories(model, batch.values, batch.rows)
        answer = answer_columns if batch.columnar else answer_records
        return answer(model, batch, labels, probabilities, verdicts, warnings)

    bp.post("/predict", responses={200: PredictResponse, **REFUSALS})(predict)
    bp.post("/predict/batch", responses={200: BatchAnswer, **REFUSALS})(predict_batch)
    return bp
