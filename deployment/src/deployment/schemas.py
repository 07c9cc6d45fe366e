"""Request and response shapes: validated strictly, and the source of the OpenAPI schemas."""

from __future__ import annotations

from typing import Annotated, Any

from annotated_types import Interval
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, create_model

from data_science.features import SCHEMA, Feature

# The challenge's example request: the OpenAPI example, the tests' baseline, example_request.py.
EXAMPLE_REQUEST = {"idx": 150000, "features": {"attr_a": 1, "attr_b": "c", "scd_a": 0.55, "scd_b": 3}}


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
    # No coercion: "1" is not 1, true is not 1, 2.0 is not an integer; NaN and Infinity are refused.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def _annotation(feature: Feature) -> Any:
    """The request type of one declared feature: its kind, its range, null when nullable."""
    kind: Any = {"integer": int, "number": float, "category": Category}[feature.kind]
    if feature.kind != "category":
        kind = Annotated[kind, Interval(ge=feature.minimum, le=feature.maximum)]
    if feature.kind == "integer":
        kind = Annotated[kind, BeforeValidator(_integral)]
    return kind | None if feature.nullable else kind


# Built from the one declaration of the features (data_science.features.SCHEMA). Keys are
# required; a missing value is an explicit null.
Features: type[Strict] = create_model(
    "Features",
    __base__=Strict,
    __doc__="The client's features; every one may be null (missing), as in real data.",
    **{f.name: (_annotation(f), Field(description=f.description, examples=[f.example])) for f in SCHEMA},
)


class PredictRequest(Strict):
    idx: Integer = Field(ge=0, le=BIGINT_MAX, description="The client's id.", examples=[150000])
    features: Features


class Prediction(BaseModel):
    idx: int
    label: int = Field(description="Predicted label, 0 or 1 (probability >= the model's threshold).")
    probability: float = Field(description="Predicted P(label = 1).")
    warnings: list[str] = Field(
        default_factory=list,
        description="What was odd but scored, e.g. a category the model never saw (scored as missing).",
    )


class PredictResponse(Prediction):
    model_version: str
    threshold: float


class BatchResponse(BaseModel):
    predictions: list[Prediction]
    model_version: str
    threshold: float


class Problem(BaseModel):
    field: str
    problem: str


class ErrorResponse(BaseModel):
    error: str
    details: list[Problem] = Field(default_factory=list)
