"""The Flask application factory: `gunicorn "deployment.app:create_app()"`.

Every prediction takes the one logged path, `MLEModel.predict_with_logging`, and records who
asked (the API key's name). Every refusal is a JSON error that names the field and the
problem; no request can produce a stack trace.

Who may ask: when `API_TOKEN` is set or any API key was ever created (`python -m
deployment.keys`), `/predict` and `/predict/batch` need `Authorization: Bearer <token or key>`;
otherwise the API is open. If the key table could not be read since start, the API cannot
tell and fails closed (503), unless the request carries `API_TOKEN`.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from functools import wraps
from typing import Any

import pandas as pd
from flask import Flask, Response, g, jsonify, render_template, request
from pydantic import TypeAdapter, ValidationError
from werkzeug.exceptions import HTTPException

from data_science.features import CATEGORICAL, SCHEMA
from deployment import metrics
from deployment.config import ServeSettings
from deployment.keys import KeyRing, KeyStoreUnavailable
from deployment.model_holder import ModelHolder
from deployment.openapi import document
from deployment.schemas import EXAMPLE_REQUEST, Features, PredictRequest, PredictResponse
from machine_learning_engineering.config import DatabaseSettings
from machine_learning_engineering.prediction_log import PredictionLogger

log = logging.getLogger(__name__)
FEATURE_NAMES = list(Features.model_fields)
# Keys in one valid request: idx, features and the features' own. See `duplicate_key`.
KEYS_PER_RECORD = len(PredictRequest.model_fields) + len(FEATURE_NAMES)
# Recorded as the api_key of predictions made with the single shared API_TOKEN.
TOKEN_NAME = "API_TOKEN"


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


def duplicate_key(raw: bytes, records: int) -> str | None:
    """The first key that appears twice in one JSON object of a validated body, or None.

    JSON parsers keep the last of duplicated keys, so `{"idx": 1, "idx": 2}` would be scored
    as client 2 and logged as if the caller meant it. The exact check re-parses the body,
    which costs as much as validating it; it runs only when it can find something. Every
    key is followed by a colon, and a validated body has every field exactly once unless
    one repeats, so a body with no more colons than fields has no duplicate.
    """
    if raw.count(b":") <= records * KEYS_PER_RECORD:
        return None
    try:
        json.loads(raw, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        return exc.key
    return None


def create_app(
    settings: ServeSettings | None = None, holder: ModelHolder | None = None, keyring: KeyRing | None = None
) -> Flask:
    """The app; with no holder, the production wiring: model watcher, prediction log and keys from the environment."""
    settings = settings or ServeSettings.from_env()
    if holder is None:
        logger = PredictionLogger.default()
        logger.start()  # probes the database now: a wrong password shows in /ready and the log at once
        holder = ModelHolder(settings.model_dir, settings.model_poll_seconds, logger)
        holder.start()
        keyring = KeyRing(DatabaseSettings.from_env("mle"), settings.key_refresh_seconds)
        keyring.start()
    prediction_log = holder.logger or PredictionLogger.default()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["model_holder"] = holder
    single_adapter, batch_adapter = TypeAdapter(PredictRequest), TypeAdapter(list[PredictRequest])

    def body(adapter: TypeAdapter[Any]) -> Any:
        if request.mimetype != "application/json":
            raise ApiError(415, f"Content-Type must be application/json, not {request.mimetype or 'missing'}")
        raw = request.get_data(cache=False)
        try:
            parsed = adapter.validate_json(raw)
        except ValidationError as exc:
            raise _invalid(exc) from None
        duplicated = duplicate_key(raw, len(parsed) if isinstance(parsed, list) else 1)
        if duplicated is not None:
            raise ApiError(
                422,
                "invalid request",
                [
                    {
                        "field": duplicated,
                        "problem": f"duplicate key {duplicated!r}: each key may appear once per object",
                    }
                ],
            )
        return parsed

    def served_model():
        model = holder.model
        if model is None:
            raise ApiError(503, "no model loaded yet", [{"field": "model", "problem": holder.problem or "loading"}])
        return model

    def unknown_categories(model, records: list[PredictRequest]) -> list[list[str]]:
        """Per record, a warning for each category the model never saw: it is scored as missing.

        Refusing it would let one new store category take the API down; scoring it silently
        would hide it. The logged features keep the value as sent, for monitoring.
        """
        warnings: list[list[str]] = [[] for _ in records]
        for name in CATEGORICAL:
            known = set(model.categories_.get(name, ()))
            for i, record in enumerate(records):
                value = getattr(record.features, name)
                if value is not None and value not in known:
                    warnings[i].append(f"{name}: unknown category {value!r}, scored as missing")
        return warnings

    def frame(records: list[PredictRequest]) -> pd.DataFrame:
        return pd.DataFrame({name: [getattr(r.features, name) for r in records] for name in FEATURE_NAMES})

    def auth_required() -> bool:
        if settings.api_token:
            return True
        return keyring is not None and (not keyring.loaded or keyring.has_keys)

    def caller() -> str | None:
        """Who asks: a key's name, TOKEN_NAME, or None on an open API; else 401 / 503."""
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        presented = scheme.lower() == "bearer" and bool(credential)
        if presented:
            if settings.api_token and hmac.compare_digest(credential.encode(), settings.api_token.encode()):
                return TOKEN_NAME
            try:
                name = keyring.authenticate(credential) if keyring is not None else None
            except KeyStoreUnavailable:
                name = None
            if name is not None:
                return name
        if not auth_required():
            return None
        if presented and keyring is not None and not keyring.loaded:
            raise ApiError(
                503,
                "API keys cannot be checked right now",
                [{"field": "Authorization", "problem": f"the key table is unavailable ({keyring.last_error})"}],
            )
        raise ApiError(
            401,
            "missing or wrong bearer token",
            [{"field": "Authorization", "problem": "expected 'Bearer <API key or token>'"}],
        )

    def token_required(view):
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            g.api_key = caller()
            return view(*args, **kwargs)

        return guarded

    @app.before_request
    def start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def count(response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.REQUESTS.labels(endpoint, str(response.status_code)).inc()
        metrics.LATENCY.labels(endpoint).observe(time.perf_counter() - g.get("started", time.perf_counter()))
        return response

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
    def ready() -> tuple[Response, int]:
        """Ready to route to: a model is loaded and its predictions can be recorded.

        The log may be degraded (buffering through a database outage: still 200); once it
        could not be written for READY_LOG_OUTAGE_SECONDS it is failing, and this is a 503 so
        that an orchestrator stops sending traffic it could not record.
        """
        model = served_model()
        logging_state = prediction_log.health()
        failing = logging_state["state"] == "failing"
        status = "unready" if failing else "degraded" if logging_state["state"] == "degraded" else "ready"
        body = {"status": status, "model_version": model.version_, **holder.serving, "prediction_log": logging_state}
        if keyring is not None:
            body["api_keys"] = "loaded" if keyring.loaded else "unavailable"
        return jsonify(body), 503 if failing else 200

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), mimetype=metrics.CONTENT_TYPE.split(";")[0])

    @app.get("/model")
    def model_metadata() -> Response:
        return jsonify({**served_model().metadata_, "serving": holder.serving})

    @app.get("/openapi.json")
    def openapi() -> Response:
        model = holder.model
        categories = model.categories_ if model else None
        return jsonify(document(categories, settings.max_batch, auth_required()))

    @app.get("/")
    def page() -> str:
        model = holder.model
        return render_template(
            "index.html",
            version=model.version_ if model else None,
            features=SCHEMA,
            categories=model.categories_ if model else {},
            example=EXAMPLE_REQUEST,
            token_required=auth_required(),
        )

    @app.post("/predict")
    @token_required
    def predict() -> Response:
        record: PredictRequest = body(single_adapter)
        model = served_model()
        (warnings,) = unknown_categories(model, [record])
        label, probability = model.predict_with_logging(
            record.idx, frame([record]), with_probability=True, api_key=g.api_key
        )
        metrics.SCORED.inc()
        answer = PredictResponse(
            idx=record.idx,
            label=label,
            probability=probability,
            model_version=model.version_,
            threshold=model.threshold_,
            warnings=warnings,
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
        warnings = unknown_categories(model, records)
        idx = [r.idx for r in records]
        labels, probabilities = model.predict_with_logging(
            idx, frame(records), with_probability=True, api_key=g.api_key
        )
        metrics.SCORED.inc(len(records))
        # Plain dicts in BatchResponse's shape: a thousand pydantic objects would cost more than the model.
        predictions = [
            {"idx": i, "label": label, "probability": p, "warnings": w}
            for i, label, p, w in zip(idx, labels.tolist(), probabilities.tolist(), warnings, strict=True)
        ]
        return jsonify(predictions=predictions, model_version=model.version_, threshold=model.threshold_)

    return app
