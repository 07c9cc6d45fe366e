"""What every blueprint of one app shares: set once by `create_app`, read per request."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from deployment.auth import Guard
from deployment.config import ServeSettings
from deployment.errors import ApiError
from deployment.keys import KeyRing
from deployment.model_holder import ModelHolder
from deployment.schemas import RequestModels
from machine_learning_engineering.model import MLEModel
from machine_learning_engineering.prediction_log import PredictionLogger

EXTENSION = "companydata"


@dataclass(frozen=True)
class Services:
    settings: ServeSettings
    holder: ModelHolder
    guard: Guard
    keyring: KeyRing | None
    prediction_log: PredictionLogger
    requests: RequestModels

    def served_model(self) -> MLEModel:
        model = self.holder.model
        if model is None:
            raise ApiError(
                503, "no model loaded yet", [{"field": "model", "problem": self.holder.problem or "loading"}]
            )
        return model


def services() -> Services:
    found: Services = current_app.extensions[EXTENSION]
    return found
