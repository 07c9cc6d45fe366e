"""API settings, read from the environment here and nowhere else."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Self

from pydantic import Field

from machine_learning_engineering.config import ConfigError, production_problems
from machine_learning_engineering.settings import StackSettings


class ServeSettings(StackSettings):
    """MODEL_DIR, MODEL_CLASS, API_TOKEN, MAX_BATCH_SIZE, MAX_COLUMNAR_ROWS, MAX_BODY_BYTES, MODEL_POLL_SECONDS,
    API_KEYS_REFRESH_SECONDS, OOD_POLICY; `from_env` also applies the STACK_ENV=production rules."""

    model_dir: Path = Path("models")
    # The MLEModel subclass served: an entry point name in `companydata.models`, or `module:Class`.
    model_class: str = "customer"
    # None: the prediction endpoints are open.
    api_token: str | None = Field(None, repr=False)
    max_batch: int = Field(1000, gt=0, lt=100_001, validation_alias="MAX_BATCH_SIZE")
    # Rows in one columnar /predict/batch body: a row in columns costs a quarter of a record to
    # read, so ten times as many fit in about the time of a full batch of records.
    max_columns: int = Field(10_000, gt=0, lt=1_000_001, validation_alias="MAX_COLUMNAR_ROWS")
    max_body_bytes: int = Field(1 << 20, gt=1023, lt=1 << 30)
    model_poll_seconds: float = Field(2.0, gt=0, lt=3600)
    key_refresh_seconds: float = Field(5.0, gt=0, lt=3600, validation_alias="API_KEYS_REFRESH_SECONDS")
    # What an out-of-distribution row gets: flag (answered, with in_distribution false and the
    # reasons) or reject (422 naming the rows and features; nothing scored). docs/monitoring.md.
    ood_policy: Literal["flag", "reject"] = "flag"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        """Refuses, first, a production stack that still has a documented development secret."""
        problems = production_problems(env)
        if problems:
            raise ConfigError("STACK_ENV=production: " + "; ".join(problems))
        return super().from_env(env)
