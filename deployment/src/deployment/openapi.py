"""The OpenAPI 3.1 document, built from the same pydantic models that validate requests."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from deployment.schemas import EXAMPLE_REQUEST, BatchResponse, ErrorResponse, PredictRequest, PredictResponse

REF = "#/components/schemas/{model}"


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json({"$ref": REF.format(model="ErrorResponse")}, description)


def document(categories: dict[str, list[str]] | None, max_batch: int, token_required: bool) -> dict[str, Any]:
    _, defs = models_json_schema(
        [(m, "validation") for m in (PredictRequest, PredictResponse, BatchResponse, ErrorResponse)], ref_template=REF
    )
    schemas = defs["$defs"]
    for name, known in (categories or {}).items():  # the served model's categories, as documentation
        prop = schemas["Features"]["properties"][name]
        prop["description"] += f" Known to the served model: {', '.join(known)}."
    request = {"$ref": REF.format(model="PredictRequest")}
    schemas["PredictRequest"]["examples"] = [EXAMPLE_REQUEST]
    refused = {
        "400": _error("Body is not valid JSON."),
        "413": _error("Body too large."),
        "415": _error("Content-Type is not application/json."),
        "422": _error("Valid JSON that breaks the contract; `details` names each field and problem."),
        "503": _error("No model loaded yet, or API keys cannot be checked right now."),
    }
    if token_required:
        refused["401"] = _error("Missing or wrong bearer token or API key.")
    readiness = {
        "type": "object",
        "properties": {
            "status": {"enum": ["ready", "degraded", "unready"]},
            "model_version": {"type": "string"},
            "model_role": {"enum": ["champion", "fallback"]},
            "champion_version": {"type": ["string", "null"]},
            "no_skill": {"type": "boolean"},
            "fallback_reason": {"type": ["string", "null"]},
            "prediction_log": {
                "type": "object",
                "properties": {
                    "state": {"enum": ["ok", "degraded", "failing"]},
                    "outage_seconds": {"type": ["number", "null"]},
                    "buffered": {"type": "integer"},
                    "last_error": {"type": ["string", "null"]},
                },
            },
            "api_keys": {"enum": ["loaded", "unavailable"]},
        },
        "required": ["status", "model_version", "prediction_log"],
    }
    security = [{"bearer": []}] if token_required else []
    return {
        "openapi": "3.1.0",
        "info": {"title": "companydata prediction API", "version": "1.0.0"},
        "paths": {
            "/predict": {
                "post": {
                    "summary": "Predict one client's label (logged in `predictions`).",
                    "security": security,
                    "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
                    "responses": {
                        "200": _json({"$ref": REF.format(model="PredictResponse")}, "The prediction."),
                        **refused,
                    },
                }
            },
            "/predict/batch": {
                "post": {
                    "summary": f"Predict up to {max_batch} clients in one vectorised call (each logged).",
                    "security": security,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"type": "array", "items": request, "minItems": 1, "maxItems": max_batch}
                            }
                        },
                    },
                    "responses": {
                        "200": _json(
                            {"$ref": REF.format(model="BatchResponse")}, "One prediction per record, in order."
                        ),
                        **refused,
                    },
                }
            },
            "/health": {
                "get": {
                    "summary": "The process is alive.",
                    "responses": {
                        "200": _json({"type": "object", "properties": {"status": {"const": "ok"}}}, "Alive.")
                    },
                }
            },
            "/ready": {
                "get": {
                    "summary": "A model is loaded and its predictions can be recorded.",
                    "responses": {
                        "200": _json(
                            readiness, "Ready; `degraded` while the prediction log buffers through an outage."
                        ),
                        "503": _json(
                            {"anyOf": [{"$ref": REF.format(model="ErrorResponse")}, readiness]},
                            "No model loaded yet, or the prediction log could not be written for too long.",
                        ),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics: requests, latency, prediction log, model version.",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/model": {
                "get": {
                    "summary": "Metadata of the model version being served.",
                    "responses": {
                        "200": _json({"type": "object"}, "The version's metadata.json."),
                        "503": _error("No model."),
                    },
                }
            },
            "/": {
                "get": {
                    "summary": "A page with a form to ask for a prediction.",
                    "responses": {
                        "200": {"description": "HTML page.", "content": {"text/html": {"schema": {"type": "string"}}}}
                    },
                }
            },
            "/openapi.json": {
                "get": {"summary": "This document.", "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1.")}}
            },
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
