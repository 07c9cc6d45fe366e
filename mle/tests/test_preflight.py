"""STACK_ENV=production refuses documented default passwords and a missing API_TOKEN."""

from __future__ import annotations

import subprocess
import sys

import pytest

from machine_learning_engineering.config import ROLE_LOGINS, production_problems

STRONG = {variable: f"long-random-{user}-x9" for user, variable in ROLE_LOGINS.values()}
TOKEN = "t" * 32


def test_development_accepts_the_defaults() -> None:
    assert production_problems({}) == []
    assert production_problems({"STACK_ENV": "development"}) == []


def test_production_names_every_default_password_and_the_missing_token() -> None:
    problems = production_problems({"STACK_ENV": "production", "ADMIN_DB_PASSWORD": "admin"})
    text = "\n".join(problems)
    for _user, variable in ROLE_LOGINS.values():
        assert variable in text
    assert "ADMIN_DB_PASSWORD is the documented default" in text
    assert "ETL_DB_PASSWORD is unset" in text
    assert "API_TOKEN is unset" in text


@pytest.mark.parametrize("weak", [{"MLE_DB_PASSWORD": "mle_user"}, {"API_TOKEN": "short"}])
def test_production_refuses_one_weak_setting_among_strong_ones(weak) -> None:
    env = {"STACK_ENV": "Production", **STRONG, "API_TOKEN": TOKEN, **weak}
    (problem,) = production_problems(env)
    assert next(iter(weak)) in problem


def test_production_with_real_secrets_passes() -> None:
    assert production_problems({"STACK_ENV": "production", **STRONG, "API_TOKEN": TOKEN}) == []


def test_preflight_command_exits_1_and_names_the_problems() -> None:
    env = {"STACK_ENV": "production", "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "machine_learning_engineering.preflight"]
    refused = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert refused.returncode == 1
    assert "DS_DB_PASSWORD is unset" in refused.stderr and "API_TOKEN" in refused.stderr
    accepted = subprocess.run(cmd, env={**env, **STRONG, "API_TOKEN": TOKEN}, capture_output=True, text=True)
    assert (accepted.returncode, accepted.stdout.strip()) == (0, "preflight: ok")
