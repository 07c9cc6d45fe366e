"""Training settings, read from the environment here and nowhere else."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from machine_learning_engineering.config import ConfigError, DatabaseSettings


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not low < value < high:
        raise ConfigError(f"{name}={raw!r} must be between {low:g} and {high:g}")
    return value


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
            wait_timeout=_number(env, "TRAIN_WAIT_TIMEOUT", 3600.0, 0, float("inf")),
            test_size=_number(env, "TRAIN_TEST_SIZE", 0.2, 0, 1),
            seed=int(_number(env, "TRAIN_SEED", 42, -1, 2**32)),
            # The data scientist reads; writing is not theirs to do.
            database=DatabaseSettings.from_env("ds", env),
        )
