"""Request and response shapes: validated strictly, and the source of the OpenAPI document.

The request models are built from the served model class's feature declaration
(`MLEModel.feature_schema`), so the API takes whatever features the configured model
declares: a second model is a new subclass, not a change here. `/predict/batch` takes two
bodies: the challenge's records (`[{"idx", "features"}, ...]`) and columns (`{"idx": [...],
"attr_a": [...], ...}`, one array per field, row i of each array is client i), each answered
in its own shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from annotated_types import Interval
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    RootModel,
    StringConstraints,
    create_model,
)

from machine_learning_engineering.schema import Feature, FeatureSchema

# The example client idx (the challenge's): the OpenAPI example, the page, example_request.py.
EXAMPLE_IDX = 150000


def _integral(value: Any) -> Any:
    # JSON has one number type: 2.0 is the integer 2 (as JSON Schema says); 2.5 stays a refusal.
    return int(value) if isinstance(value, float) and value.is_integer() else value


Integer = Annotated[int, BeforeValidator(_integral)]
# The widest client idx the prediction log holds (predictions.client_idx is bigint): a larger
# one would be answered but never logged.
BIGINT_MAX = 2**63 - 1
# Category values: what the log's jsonb can hold (no NUL), and short enough to be a category.
Category = Annotated[str, StringConstraints(max_length=200, pattern=r"^[^\x00]*$")]


class Strict(BaseModel):
    # No coercion: "1" is not 1, true is not 1, 2.5 is not an integer; NaN and Infinity are refused.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def _annotation(feature: Feature) -> Any:
    """The request type of one declared feature: its kind, its range, null when nullable."""
    kind: Any = {"integer": int, "number": float, "category": Category}[feature.kind]
    if feature.kind != "category":
        kind = Annotated[kind, Interval(ge=feature.minimum, le=feature.maximum)]
    if feature.kind == "integer":
        kind = Annotated[kind, BeforeValidator(_integral)]
    return kind | None if feature.nullable else kind


@dataclass(frozen=True)
class RequestModels:
    """The request models of one feature declaration: `records` and `columns` validate the two
    bodies of /predict/batch (and name the field and row at fault); `batch` documents both."""

    features: type[Strict]
    predict: type[Strict]
    records: type[RootModel[Any]]
    columns: type[Strict]
    batch: type[RootModel[Any]]
    example: dict[str, Any]
    columns_example: dict[str, Any]


def request_models(schema: FeatureSchema, max_batch: int, max_columns: int | None = None) -> RequestModels:
    """The single and batch request models for `schema`: at most `max_batch` records, or
    `max_columns` rows in columns (default `max_batch`). Keys are required; a missing value is
    an explicit null."""
    # Typed as Any, like `_annotation`: an unpacked dict of a narrower value type would have to
    # fit create_model's own keyword parameters (`__base__`, `__doc__`, ...) too.
    fields: dict[str, Any] = {
        f.name: (_annotation(f), Field(description=f.description, examples=[f.example])) for f in schema
    }
    features: type[Strict] = create_model(
        "Features",
        __base__=Strict,
        __doc__="The client's features; every nullable one may be null (missing), as in real data.",
        **fields,
    )
    example: dict[str, JsonValue] = {"idx": EXAMPLE_IDX, "features": schema.example}
    predict: type[Strict] = create_model(
        "PredictRequest",
        __base__=Strict,
        __doc__="One client: its idx and its features.",
        idx=(Integer, Field(ge=0, le=BIGINT_MAX, description="The client's id.", examples=[EXAMPLE_IDX])),
        features=(features, ...),
    )
    predict.model_config["json_schema_extra"] = {"examples": [example]}
    predict.model_rebuild(force=True)
    # The bounds are documented here and enforced by the view, which names them in its refusal.
    bounds = Field(json_schema_extra={"minItems": 1, "maxItems": max_batch})
    records: type[RootModel[Any]] = type(
        "BatchRecords",
        (RootModel[Annotated[list[predict], bounds]],),
        {"__doc__": "Several clients as records (the challenge's format), answered as records."},
    )
    rows = max_batch if max_columns is None else max_columns
    idx = Annotated[Annotated[int, Interval(ge=0, le=BIGINT_MAX)], BeforeValidator(_integral)]

    def column(annotation: Any, description: str, example: list[Any]) -> Any:
        extra: dict[str, JsonValue] = {"minItems": 1, "maxItems": rows}
        return (list[annotation], Field(description=description, examples=[example], json_schema_extra=extra))

    columns_example: dict[str, JsonValue] = {
        "idx": [EXAMPLE_IDX, EXAMPLE_IDX + 1],
        **{f.name: [f.example, None if f.nullable else f.example] for f in schema},
    }
    columns: type[Strict] = create_model(
        "ColumnarBatch",
        __base__=Strict,
        __doc__=f"Several clients as columns: one array per field, all of the same length (1 to {rows:,}); "
        "row i of every array is client i. Answered in columns too.",
        idx=column(idx, "The clients' ids.", [EXAMPLE_IDX, EXAMPLE_IDX + 1]),
        **{f.name: column(_annotation(f), f"{f.description} One value per client.", [f.example]) for f in schema},
    )
    columns.model_config["json_schema_extra"] = {"examples": [columns_example]}
    columns.model_rebuild(force=True)
    batch: type[RootModel[Any]] = type(
        "BatchRequest",
        (RootModel[Annotated[list[predict], bounds] | columns],),
        {"__doc__": "Several clients, scored in one vectorised call: records, or columns."},
    )
    return RequestModels(features, predict, records, columns, batch, example, columns_example)


class Prediction(BaseModel):
    idx: int
    label: int = Field(description="Predicted label, 0 or 1 (probability >= the model's threshold).")
    probability: float = Field(description="Predicted P(label = 1).")
    warnings: list[str] = Field(
        default_factory=list,
        description="What was odd but scored, e.g. a category the model never saw (scored as missing).",
    )
    in_distribution: bool | None = Field(
        description="The out-of-distribution gate's verdict: true when the features look like the model's "
        "training rows, false when not (see ood_reasons), null when the served version has no gate."
    )
    ood_reasons: list[str] = Field(
        default_factory=list,
        description="Why the gate judged the features out of distribution, e.g. "
        '"attr_a=12 outside [1, 5] seen in training"; ["no gate in this version"] when it has none.',
    )


class PredictResponse(Prediction):
    model_version: str
    threshold: float | None = Field(description="The served model's decision threshold, if it has one.")


class BatchResponse(BaseModel):
    """The answer to records: one prediction per record, in order."""

    predictions: list[Prediction]
    model_version: str
    threshold: float | None


class ColumnarBatchResponse(BaseModel):
    """The answer to columns: one array per field of `Prediction`, row i is client i."""

    idx: list[int]
    label: list[int]
    probability: list[float]
    warnings: list[list[str]]
    in_distribution: list[bool | None]
    ood_reasons: list[list[str]]
    model_version: str
    threshold: float | None


class BatchAnswer(RootModel[BatchResponse | ColumnarBatchResponse]):
    """The answer to /predict/batch, in the shape of its body: records, or columns."""


class Problem(BaseModel):
    field: str
    problem: str


class ErrorResponse(BaseModel):
    error: str
    details: list[Problem] = Field(default_factory=list)


class Health(BaseModel):
    status: str = Field(description="ok: the process is alive.")


class PredictionLogState(BaseModel):
    state: str = Field(description="ok, degraded (buffering through an outage) or failing.")
    outage_seconds: float | None = None
    buffered: int = 0
    last_error: str | None = None


class Readiness(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: str = Field(description="ready, degraded (the log buffers through an outage) or unready.")
    model_version: str | None
    model_role: str | None = Field(None, description="champion or fallback.")
    champion_version: str | None = None
    no_skill: bool | None = None
    fallback_reason: str | None = None
    prediction_log: PredictionLogState
    api_keys: str | None = Field(None, description="loaded or unavailable.")
