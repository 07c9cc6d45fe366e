"""Training settings, read from the environment here and nowhere else (the command line of
`python -m data_science.train` overrides them)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from machine_learning_engineering.config import ConfigError, DatabaseSettings, number_from_env

# The model's hyperparameters the job exposes (CustomerModel's constructor arguments).
HYPERPARAMETERS = ("learning_rate", "max_iter", "max_leaf_nodes")


@dataclass(frozen=True)
class TrainSettings:
    model_dir: Path
    wait_timeout: float
    test_size: float
    seed: int
    database: DatabaseSettings
    # Hyperparameters given explicitly (the rest: the model's defaults, or --warm-start-from's).
    params: dict[str, Any] = field(default_factory=dict)
    # Seconds the fit and evaluation may take; None: no limit.
    time_limit: float | None = None
    # Promote when the candidate passes the gate (False: save a candidate only).
    promote: bool = True
    # A candidate may be this much worse than the champion (holdout ROC AUC) and still replace it.
    tolerance: float = 0.005
    # Start from this version's hyperparameters.
    warm_start_from: str | None = None
    # Exit non-zero when the candidate is not promoted (for CI; Compose does not set it).
    strict: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TrainSettings:
        env = os.environ if env is None else env
        time_limit = number_from_env(env, "TRAIN_TIME_LIMIT", 0.0, -1)
        promote = env.get("TRAIN_PROMOTE", "1").strip().lower()
        if promote not in ("1", "0", "true", "false", "yes", "no"):
            raise ConfigError(f"TRAIN_PROMOTE={env.get('TRAIN_PROMOTE')!r} must be 1 or 0")
        return cls(
            model_dir=Path(env.get("MODEL_DIR", "") or "models"),
            wait_timeout=number_from_env(env, "TRAIN_WAIT_TIMEOUT", 3600.0),
            test_size=number_from_env(env, "TRAIN_TEST_SIZE", 0.2, 0, 1),
            seed=int(number_from_env(env, "TRAIN_SEED", 42, -1, 2**32)),
            # The data scientist reads; writing is not theirs to do.
            database=DatabaseSettings.from_env("ds", env),
            time_limit=time_limit or None,
            promote=promote in ("1", "true", "yes"),
            tolerance=number_from_env(env, "TRAIN_PROMOTION_TOLERANCE", 0.005, -1e-12, 1),
        )
