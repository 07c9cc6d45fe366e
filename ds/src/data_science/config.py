"""Training settings, read from the environment here and nowhere else."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from machine_learning_engineering.config import DatabaseSettings, number_from_env


@dataclass(frozen=True)
class TrainSettings:
    model_dir: Path
    wait_timeout: float
    test_size: float
    seed: int
    database: DatabaseSettings

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TrainSettings:
        env = os.environ if env is None else env
        return cls(
            model_dir=Path(env.get("MODEL_DIR", "") or "models"),
            wait_timeout=number_from_env(env, "TRAIN_WAIT_TIMEOUT", 3600.0),
            test_size=number_from_env(env, "TRAIN_TEST_SIZE", 0.2, 0, 1),
            seed=int(number_from_env(env, "TRAIN_SEED", 42, -1, 2**32)),
            # The data scientist reads; writing is not theirs to do.
            database=DatabaseSettings.from_env("ds", env),
        )
