from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from flask import Flask

from data_science.model import CustomerModel
from deployment.app import create_app
from deployment.config import ServeSettings
from deployment.keys import KeyRing
from deployment.model_holder import ModelHolder
from machine_learning_engineering.prediction_log import PredictionLogger
from testkit.localdb import free_port
from testkit.process import gunicorn


@pytest.fixture(scope="session")
def trained(feature_frame: pd.DataFrame) -> CustomerModel:
    """Fitted as training fits a version: the model, its out-of-distribution gate and reference
    sample, and its compiled scoring path (verified against scikit-learn, as training does)."""
    model = CustomerModel(max_iter=60).fit(feature_frame).fit_reference(feature_frame, seed=42)
    model.compile_scoring(feature_frame)
    return model


@pytest.fixture
def model_dir(tmp_path: Path, trained: CustomerModel) -> Path:
    trained.save(tmp_path / "models")
    return tmp_path / "models"


@pytest.fixture
def logger(companydata) -> Iterator[PredictionLogger]:
    logger = PredictionLogger(companydata.settings("mle"))
    yield logger
    logger.close()


@pytest.fixture
def make_app(model_dir: Path, logger: PredictionLogger) -> Callable[..., Flask]:
    def make(keyring: KeyRing | None = None, **overrides) -> Flask:
        settings = ServeSettings(
            **{
                "model_dir": model_dir,
                "api_token": None,
                "max_batch": 1000,
                "max_body_bytes": 1 << 20,
                "model_poll_seconds": 60.0,
                **overrides,
            }
        )
        holder = ModelHolder(CustomerModel, settings.model_dir, settings.model_poll_seconds, logger)
        holder.refresh()
        return create_app(settings, holder, keyring)

    return make


@pytest.fixture
def client(make_app):
    return make_app().test_client()


@dataclass
class Server:
    url: str

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


@pytest.fixture
def server(companydata, model_dir: Path) -> Iterator[Server]:
    """The API under the real gunicorn configuration, on a free local port."""
    env = companydata.env(MODEL_DIR=str(model_dir), GUNICORN_WORKERS="2", MODEL_POLL_SECONDS="0.2")
    with gunicorn(env, free_port()) as url:
        yield Server(url)
