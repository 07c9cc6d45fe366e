"""GET /health, /ready, /metrics, /model and /openapi.json: what operators and clients read."""

from __future__ import annotations

import copy
from typing import Any

from flask import Response, current_app, jsonify
from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag
from flask_openapi3.openapi import OpenAPI

from deployment import metrics
from deployment.routes.context import services
from deployment.schemas import ErrorResponse, Health, Readiness

bp = APIBlueprint("ops", __name__, abp_tags=[Tag(name="operations")])


@bp.get("/health", responses={200: Health})
def health() -> Response:
    """The process is alive."""
    return jsonify(status="ok")


@bp.get("/ready", responses={200: Readiness, 503: Readiness})
def ready() -> tuple[Response, int]:
    """Ready to route to: a model is loaded and its predictions can be recorded.

    The log may be degraded (buffering through a database outage: still 200); once it could
    not be written for READY_LOG_OUTAGE_SECONDS it is failing, and this is a 503 so that an
    orchestrator stops sending traffic it could not record.
    """
    context = services()
    model = context.served_model()
    logging_state = context.prediction_log.health()
    failing = logging_state["state"] == "failing"
    status = "unready" if failing else "degraded" if logging_state["state"] == "degraded" else "ready"
    body = {
        "status": status,
        "model_version": model.version_,
        **context.holder.serving,
        "prediction_log": logging_state,
    }
    if context.keyring is not None:
        body["api_keys"] = "loaded" if context.keyring.loaded else "unavailable"
    return jsonify(body), 503 if failing else 200


@bp.get("/metrics", responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
def prometheus_metrics() -> Response:
    """Prometheus metrics: requests, latency, prediction log, model version."""
    return Response(metrics.exposition(), mimetype=metrics.CONTENT_TYPE.split(";")[0])


@bp.get(
    "/model", responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}, 503: ErrorResponse}
)
def model_metadata() -> Response:
    """Metadata of the model version being served (its metadata.json, with the gate's summary
    under `ood` when it has one), why it serves, whether and how its gate is applied, and
    which path scores it in this process (`serving.scoring`: `MLEModel.scoring()`)."""
    context = services()
    model = context.served_model()
    serving = {
        **context.holder.serving,
        "ood_gate": model.ood_gate_ is not None,
        "ood_policy": context.settings.ood_policy,
        "scoring": model.scoring(),
    }
    return jsonify({**model.metadata_, "serving": serving})


@bp.get("/openapi.json", responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}})
def openapi() -> Response:
    """This document: generated from the routes and the request and response models; what
    changes at run time (whether a token is needed, the served model's categories) is filled in."""
    app: OpenAPI = current_app  # type: ignore[assignment]
    document: dict[str, Any] = copy.deepcopy(app.api_doc)
    context = services()
    if not context.guard.required():  # an open API: say so, rather than ask clients for a token
        for item in document.get("paths", {}).values():
            for operation in item.values():
                if isinstance(operation, dict) and "security" in operation:
                    operation["security"] = []
    model = context.holder.model
    features = document.get("components", {}).get("schemas", {}).get("Features", {}).get("properties", {})
    for name, known in (model.known_categories() if model else {}).items():  # documentation only
        if name in features:
            features[name]["description"] = (
                f"{features[name].get('description', '')} Known to the served model: {', '.join(known)}."
            )
    return jsonify(document)
