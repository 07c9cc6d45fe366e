"""Request and response shapes: validated strictly, and the source of the OpenAPI schemas."""

from __future__ import annotations

from typing import Annotated, Any

from annotated_types import Interval
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

# The challenge's example request: the OpenAPI example, the tests' baseline, example_request.py.
EXAMPLE_REQUEST = {"idx": 150000, "features": {"attr_a": 1, "attr_b": "c", "scd_a": 0.55, "scd_b": 3}}


def _integral(value: Any) -> Any:
    # JSON has one number type: 2.0 is the integer 2 (as JSON Schema says); 2.5 stays a refusal.
    return int(value) if isinstance(value, float) and value.is_integer() else value


Integer = Annotated[int, BeforeValidator(_integral)]
# The widest values the database holds for these columns (predictions.client_idx is bigint;
# the feature columns are integer): a larger one would be answered but never logged.
BIGINT_MAX = 2**63 - 1
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
Int32 = Annotated[int, Interval(ge=INT_MIN, le=INT_MAX), BeforeValidator(_integral)]


class Strict(BaseModel):
    # No coercion: "1" is not 1, true is not 1, 2.0 is not an integer; NaN and Infinity are refused.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Features(Strict):
    attr_a: Integer = Field(
        ge=INT_MIN, le=INT_MAX, description="Profile attribute, a whole number (1-5 in the data).", examples=[1]
    )
    attr_b: str = Field(description="Profile category; one of those the model was trained on.", examples=["c"])
    scd_a: float | None = Field(
        description="Current activity score; null for a client without activity.", examples=[0.55]
    )
    scd_b: Int32 | None = Field(description="Current activity level; null for a client without activity.", examples=[3])


class PredictRequest(Strict):
    idx: Integer = Field(ge=0, le=BIGINT_MAX, description="The client's id.", examples=[150000])
    features: Features


class Prediction(BaseModel):
    idx: int
    label: int = Field(description="Predicted label, 0 or 1 (probability >= the model's threshold).")
    probability: float = Field(description="Predicted P(label = 1).")


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
