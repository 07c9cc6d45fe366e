"""EDA settings, read from the environment here and nowhere else.

`database` (ds_user) is only for waiting until feature_store has rows; the notebook reads
its own connection from the same DB_* variables in its parameters cell, so the kernel needs
nothing beyond what every other job has.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from machine_learning_engineering.config import DatabaseSettings, number_from_env


@dataclass(frozen=True)
class EdaSettings:
    output: Path
    sample_size: int
    cv_folds: int
    wait_timeout: float
    database: DatabaseSettings

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EdaSettings:
        env = os.environ if env is None else env
        return cls(
            output=Path(env.get("EDA_OUTPUT", "") or "eda/eda.pdf"),
            sample_size=int(number_from_env(env, "EDA_SAMPLE_SIZE", 100_000, 0)),
            cv_folds=int(number_from_env(env, "EDA_CV_FOLDS", 5, 1, 21)),
            wait_timeout=number_from_env(env, "EDA_WAIT_TIMEOUT", 3600.0),
            database=DatabaseSettings.from_env("ds", env),
        )

    def parameters(self) -> dict[str, int]:
        """What the notebook's `parameters` cell receives."""
        return {"sample_size": self.sample_size, "cv_folds": self.cv_folds}
