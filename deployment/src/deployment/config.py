"""API settings, read from the environment here and nowhere else."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from machine_learning_engineering.config import ConfigError, number_from_env, production_problems


@dataclass(frozen=True)
class ServeSettings:
    model_dir: Path
    api_token: str | None = field(repr=False)
    max_batch: int
    max_body_bytes: int
    model_poll_seconds: float
    key_refresh_seconds: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServeSettings:
        env = os.environ if env is None else env
        problems = production_problems(env)
        if problems:
            raise ConfigError("STACK_ENV=production: " + "; ".join(problems))
        return cls(
            model_dir=Path(env.get("MODEL_DIR", "") or "models"),
            api_token=env.get("API_TOKEN") or None,
            max_batch=int(number_from_env(env, "MAX_BATCH_SIZE", 1000, 0, 100_001)),
            max_body_bytes=int(number_from_env(env, "MAX_BODY_BYTES", 1 << 20, 1023, 1 << 30)),
            model_poll_seconds=number_from_env(env, "MODEL_POLL_SECONDS", 2.0, 0, 3600),
            key_refresh_seconds=number_from_env(env, "API_KEYS_REFRESH_SECONDS", 5.0, 0, 3600),
        )
