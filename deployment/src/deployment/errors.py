"""Every refusal the API makes, and the one mapping from pydantic's errors to them.

A refusal is a JSON `{"error": ..., "details": [{"field": ..., "problem": ...}]}` with its
status; no request can produce a stack trace. pydantic's validation errors become a 422
here and nowhere else (`validation_error`), with each `field` written as a path
(`features.attr_a`, `[3].idx`).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException
from werkzeug.sansio.response import Response as SansIOResponse

from machine_learning_engineering.errors import StackError

log = logging.getLogger(__name__)


class DeploymentError(StackError):
    """Base of every error the deployment package raises on purpose."""


class ApiError(DeploymentError):
    """A refusal: HTTP status, a short error and the fields at fault."""

    def __init__(self, status: int, error: str, details: list[dict[str, str]] | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.details = status, error, details or []

    def response(self) -> Response:
        response = jsonify(error=self.error, details=self.details)
        response.status_code = self.status
        if self.status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response


def field_path(loc: tuple[Any, ...]) -> str:
    """pydantic's error location as a readable path; `root` (a list body) is left out."""
    path = ""
    for part in loc:
        if part == "root":
            continue
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path or "body"


def validation_error(exc: ValidationError) -> Response:
    """The 422 for a request that is valid JSON but breaks the contract."""
    details = [{"field": field_path(e["loc"]), "problem": e["msg"]} for e in exc.errors(include_url=False)]
    return ApiError(422, "invalid request", details).response()


def register(app: Flask) -> None:
    """JSON for every error: ours, HTTP's (404, 405, 413) and the unexpected (500, logged)."""

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Response:
        return exc.response()

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> SansIOResponse | tuple[Response, int]:
        if exc.response is not None and exc.response.mimetype == "application/json":
            return exc.response  # a refusal already made (flask-openapi3 aborts with ours)
        return jsonify(
            error=exc.name.lower(), details=[{"field": "request", "problem": exc.description or ""}]
        ), exc.code or 500

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return jsonify(error="internal error", details=[]), 500
