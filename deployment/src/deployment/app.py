"""The Flask application factory: `gunicorn "deployment.app:create_app()"`.

The API serves whichever MLEModel subclass `MODEL_CLASS` names and knows it only through that
contract: its feature declaration makes the request models, the OpenAPI document and the
page; `predict_with_logging` scores and records every prediction with who asked. The routes
are blueprints per concern (`deployment.routes`); flask-openapi3 generates the document at
`/openapi.json` from them and the pydantic models; every refusal is JSON (`deployment.errors`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from flask import Request, Response, request
from flask.json.provider import DefaultJSONProvider
from flask_openapi3.models.info import Info
from flask_openapi3.openapi import OpenAPI
from werkzeug.exceptions import BadRequest

from deployment import errors, jsontext, metrics
from deployment.auth import Guard
from deployment.config import ServeSettings
from deployment.keys import KeyRing
from deployment.model_holder import ModelHolder
from deployment.routes import ops, page, predict
from deployment.routes.context import EXTENSION, Services
from deployment.schemas import ErrorResponse, request_models
from machine_learning_engineering.config import DatabaseSettings
from machine_learning_engineering.model import model_class
from machine_learning_engineering.prediction_log import PredictionLogger

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


class ApiRequest(Request):
    """A body that is not JSON is refused naming where the parser stopped."""

    def on_json_loading_failed(self, e: ValueError | None) -> Any:
        raise BadRequest(f"Invalid JSON: {e}" if e is not None else "Invalid JSON")


class StrictJSONProvider(DefaultJSONProvider):
    """JSON as the standard says: NaN and Infinity are refused as invalid JSON (400), and so is
    nesting deeper than the parser goes (`[[[[...`: a 400, not a RecursionError's 500)."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return jsontext.strict_loads(s, **kwargs)


# Where `timed` leaves the time a request reached the app, in its WSGI environ.
STARTED = "companydata.started"


def timed(wsgi_app: WSGIApplication) -> WSGIApplication:
    """The app with each request's arrival time noted for the latency metric (`count`): in
    the environ, which costs less than a before-request hook writing it to `g`."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ[STARTED] = time.perf_counter()
        return wsgi_app(environ, start_response)

    return app


def create_app(
    settings: ServeSettings | None = None, holder: ModelHolder | None = None, keyring: KeyRing | None = None
) -> OpenAPI:
    """The app; with no holder, the production wiring: model watcher, prediction log and keys from the environment."""
    settings = settings or ServeSettings.from_env()
    if holder is None:
        logger = PredictionLogger.default()
        logger.start()  # probes the database now: a wrong password shows in /ready and the log at once
        holder = ModelHolder(model_class(settings.model_class), settings.model_dir, settings.model_poll_seconds, logger)
        holder.start()
        keyring = KeyRing(DatabaseSettings.from_env("mle"), settings.key_refresh_seconds)
        keyring.start()
    models = request_models(holder.model_class.feature_schema, settings.max_batch, settings.max_columns)
    app = OpenAPI(
        __name__,
        info=Info(title="companydata prediction API", version="1.0.0"),
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        validation_error_callback=errors.validation_error,
        validation_error_model=ErrorResponse,
        doc_ui=False,
    )
    app.json = StrictJSONProvider(app)
    app.request_class = ApiRequest
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions[EXTENSION] = Services(
        settings=settings,
        holder=holder,
        guard=Guard(settings.api_token, keyring),
        keyring=keyring,
        prediction_log=holder.logger or PredictionLogger.default(),
        requests=models,
    )
    errors.register(app)

    app.wsgi_app = timed(app.wsgi_app)  # type: ignore[method-assign, assignment]

    @app.after_request
    def count(response: Response) -> Response:
        now = time.perf_counter()
        rule = request.url_rule
        metrics.answered(
            rule.rule if rule else "unmatched", response.status_code, now - request.environ.get(STARTED, now)
        )
        return response

    app.register_api(predict.blueprint(models, app.extensions[EXTENSION]))
    app.register_api(ops.bp)
    app.register_api(page.bp)
    return app
