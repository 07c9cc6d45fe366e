"""Training settings, read from the environment here and nowhere else (the command line of
`python -m data_science.train` overrides them)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from machine_learning_engineering.config import DatabaseSettings
from machine_learning_engineering.settings import NOT_FROM_ENV, StackSettings

# The model's hyperparameters the job exposes (CustomerModel's constructor arguments).
HYPERPARAMETERS = ("learning_rate", "max_iter", "max_leaf_nodes")


class TrainSettings(StackSettings):
    """MODEL_DIR, TRAIN_WAIT_TIMEOUT, TRAIN_TEST_SIZE, TRAIN_SEED, TRAIN_TIME_LIMIT, TRAIN_PROMOTE,
    TRAIN_PROMOTION_TOLERANCE, and the `ds` login's DB_* variables. `params`, `warm_start_from`
    and `strict` come from the command line only."""

    model_config = SettingsConfigDict(env_prefix="TRAIN_")

    model_dir: Path = Field(Path("models"), validation_alias="MODEL_DIR")
    # Seconds to wait for feature_store.
    wait_timeout: float = Field(3600.0, gt=0)
    test_size: float = Field(0.2, gt=0, lt=1)
    seed: int = Field(42, ge=0, lt=2**32)
    # The data scientist reads; writing is not theirs to do.
    database: DatabaseSettings = Field(default_factory=lambda: DatabaseSettings.from_env("ds"))
    # Hyperparameters given explicitly (the rest: the model's defaults, or --warm-start-from's).
    params: Annotated[dict[str, Any], NOT_FROM_ENV] = Field(default_factory=dict)
    # Seconds the fit and evaluation may take; None (or 0): no limit.
    time_limit: float | None = Field(None, ge=0)
    # Promote when the candidate passes the gate (False: save a candidate only).
    promote: bool = True
    # A candidate may be this much worse than the champion (holdout ROC AUC) and still replace it.
    tolerance: float = Field(0.005, ge=0, lt=1, validation_alias="TRAIN_PROMOTION_TOLERANCE")
    # Start from this version's hyperparameters.
    warm_start_from: Annotated[str | None, NOT_FROM_ENV] = None
    # Exit non-zero when the candidate is not promoted (for CI; Compose does not set it).
    strict: Annotated[bool, NOT_FROM_ENV] = False

    @field_validator("time_limit")
    @classmethod
    def _zero_is_no_limit(cls, seconds: float | None) -> float | None:
        return seconds or None
