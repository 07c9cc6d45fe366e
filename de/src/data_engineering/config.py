"""ETL settings, read from the environment here and nowhere else."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from machine_learning_engineering.config import DatabaseSettings


@dataclass(frozen=True)
class EtlSettings:
    raw_data_dir: Path
    database: DatabaseSettings

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EtlSettings:
        env = os.environ if env is None else env
        return cls(
            raw_data_dir=Path(env.get("RAW_DATA_DIR", "") or "data/raw"),
            # The ETLs create and replace tables: they are the owner's job.
            database=DatabaseSettings.from_env("admin", env),
        )
