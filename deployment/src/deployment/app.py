"""The Flask application factory: `gunicorn "deployment.app:create_app()"`.

Every prediction takes the one logged path, `MLEModel.predict_with_logging`. Every refusal is
a JSON error that names the field and the problem; no request can produce a stack trace.
"""

from __future__ import annotations

import hmac
import logging
from functools import wraps
from typing import Any

import pandas as pd
from flask import Flask, Response, jsonify, render_template, request
from pydantic import TypeAdapter, ValidationError
from werkzeug.exceptions import HTTPException

from deployment.config import ServeSettings
from deployment.model_holder import ModelHolder
from deployment.openapi import document
from deployment.schemas import Features, PredictRequest, PredictResponse
from machine_learning_engineering.prediction_log import PredictionLogger

log = logging.getLogger(__name__)
FEATURE_NAMES = list(Features.model_fields)


class ApiError(Exception):
    def __init__(self, status: int, error: str, details: list[dict[str, str]] | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.details = status, error, details or []


def _field(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path or "body"


def _invalid(exc: ValidationError) -> ApiError:
    details = [{"field": _field(e["loc"]), "problem": e["msg"]} for e in exc.errors(include_url=False)]
    if any(e["type"] == "json_invalid" for e in exc.errors()):
        return ApiError(400, "body is not valid JSON", details)
    return ApiError(422, "invalid request", details)


def create_app(settings: ServeSettings | None = None, holder: ModelHolder | None = None) -> Flask:
    settings = settings or ServeSettings.from_env()
    if holder is None:
        holder = ModelHolder(settings.model_dir, settings.model_poll_seconds, PredictionLogger.default())
        holder.start()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["model_holder"] = holder
    single_adapter, batch_adapter = TypeAdapter(PredictRequest), TypeAdapter(list[PredictRequest])

    def body(adapter: TypeAdapter[Any]) -> Any:
        if request.mimetype != "application/json":
            raise ApiError(415, f"Content-Type must be application/json, not {request.mimetype or 'missing'}")
        try:
            return adapter.validate_json(request.get_data(cache=False))
        except ValidationError as exc:
            raise _invalid(exc) from None

    def served_model():
        model = holder.model
        if model is None:
            raise ApiError(503, "no model loaded yet", [{"field": "model", "problem": holder.problem or "loading"}])
        return model

    def check_categories(model, records: list[PredictRequest], prefix: str) -> None:
        known = model.categories_["attr_b"]
        bad = [(i, r.features.attr_b) for i, r in enumerate(records) if r.features.attr_b not in known]
        if bad:
            details = [
                {
                    "field": f"{prefix.format(i=i)}features.attr_b",
                    "problem": f"unknown category {v!r}; known: {', '.join(known)}",
                }
                for i, v in bad[:20]
            ]
            raise ApiError(422, "invalid request", details)

    def frame(records: list[PredictRequest]) -> pd.DataFrame:
        return pd.DataFrame({name: [getattr(r.features, name) for r in records] for name in FEATURE_NAMES})

    def token_required(view):
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if settings.api_token:
                supplied = request.headers.get("Authorization", "")
                if not hmac.compare_digest(supplied.encode(), f"Bearer {settings.api_token}".encode()):
                    raise ApiError(
                        401,
                        "missing or wrong bearer token",
                        [{"field": "Authorization", "problem": "expected 'Bearer <token>'"}],
                    )
            return view(*args, **kwargs)

        return guarded

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> tuple[Response, int]:
        response = jsonify(error=exc.error, details=exc.details)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response, exc.status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        return jsonify(
            error=exc.name.lower(), details=[{"field": "request", "problem": exc.description or ""}]
        ), exc.code or 500

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return jsonify(error="internal error", details=[]), 500

    @app.get("/health")
    def health() -> Response:
        return jsonify(status="ok")

    @app.get("/ready")
    def ready() -> Response:
        return jsonify(status="ready", model_version=served_model().version_)

    @app.get("/model")
    def model_metadata() -> Response:
        return jsonify(served_model().metadata_)

    @app.get("/openapi.json")
    def openapi() -> Response:
        model = holder.model
        categories = model.categories_["attr_b"] if model else None
        return jsonify(document(categories, settings.max_batch, bool(settings.api_token)))

    @app.get("/")
    def page() -> str:
        model = holder.model
        categories = model.categories_["attr_b"] if model else ["a", "b", "c", "d"]
        return render_template(
            "index.html",
            version=model.version_ if model else None,
            categories=categories,
            token_required=bool(settings.api_token),
        )

    @app.post("/predict")
    @token_required
    def predict() -> Response:
        record: PredictRequest = body(single_adapter)
        model = served_model()
        check_categories(model, [record], prefix="")
        label, probability = model.predict_with_logging(record.idx, frame([record]), with_probability=True)
        answer = PredictResponse(
            idx=record.idx,
            label=label,
            probability=probability,
            model_version=model.version_,
            threshold=model.threshold_,
        )
        return jsonify(answer.model_dump())

    @app.post("/predict/batch")
    @token_required
    def predict_batch() -> Response:
        records: list[PredictRequest] = body(batch_adapter)
        if not 1 <= len(records) <= settings.max_batch:
            raise ApiError(
                422,
                "invalid request",
                [{"field": "body", "problem": f"send 1 to {settings.max_batch} records, not {len(records)}"}],
            )
        model = served_model()
        check_categories(model, records, prefix="[{i}].")
        idx = [r.idx for r in records]
        labels, probabilities = model.predict_with_logging(idx, frame(records), with_probability=True)
        # Plain dicts in BatchResponse's shape: a thousand pydantic objects would cost more than the model.
        predictions = [
            {"idx": i, "label": label, "probability": p}
            for i, label, p in zip(idx, labels.tolist(), probabilities.tolist(), strict=True)
        ]
        return jsonify(predictions=predictions, model_version=model.version_, threshold=model.threshold_)

    return app
