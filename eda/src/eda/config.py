"""EDA settings, read from the environment here and nowhere else.

`database` (ds_user) is only for waiting until feature_store has rows; the notebook reads
its own connection from the same DB_* variables in its parameters cell, so the kernel needs
nothing beyond what every other job has.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from machine_learning_engineering.config import DatabaseSettings
from machine_learning_engineering.settings import StackSettings


class EdaSettings(StackSettings):
    """EDA_OUTPUT, EDA_SAMPLE_SIZE, EDA_CV_FOLDS, EDA_WAIT_TIMEOUT, MODEL_CLASS, and the `ds`
    login's DB_* variables."""

    model_config = SettingsConfigDict(env_prefix="EDA_")

    output: Path = Path("eda/eda.pdf")
    sample_size: int = Field(100_000, gt=0)
    cv_folds: int = Field(5, gt=1, lt=21)
    # Seconds to wait for feature_store.
    wait_timeout: float = Field(3600.0, gt=0)
    # The MLEModel subclass studied: an entry point name in `companydata.models`, or `module:Class`.
    model_class: str = Field("customer", validation_alias="MODEL_CLASS")
    database: DatabaseSettings = Field(default_factory=lambda: DatabaseSettings.from_env("ds"))

    def parameters(self) -> dict[str, int | str]:
        """What the notebook's `parameters` cell receives."""
        return {"sample_size": self.sample_size, "cv_folds": self.cv_folds, "model_class": self.model_class}
