"""The base of every package's settings: which environment variable sets which field, and the
one place where a malformed value becomes a `ConfigError` naming its variable.

A subclass only declares fields. A field's variable is its `validation_alias`, else the class's
`env_prefix` + its name in capitals (no prefix: the name alone). Fields holding other settings
read their own variables; fields marked `NOT_FROM_ENV` are set by the caller only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Annotated, Any, Self

from pydantic import Field, ValidationError, ValidatorFunctionWrapHandler, WrapValidator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from machine_learning_engineering.errors import MLEError


class ConfigError(MLEError, ValueError):
    """A setting is missing or malformed; the message names the variable."""


class _NotFromEnv:
    """`Annotated` marker for a field no environment variable sets."""

    def __repr__(self) -> str:
        return "NOT_FROM_ENV"


# e.g. `user: Annotated[str, NOT_FROM_ENV]`: a login name fixed by the role, a command-line option.
NOT_FROM_ENV = _NotFromEnv()


def _tcp_port(value: object, handler: ValidatorFunctionWrapHandler) -> int:
    try:
        port: int = handler(value)
    except ValidationError:
        raise PydanticCustomError("tcp_port", "is not a TCP port number") from None
    return port


# A whole number from 1 to 65535, with one message for every way of not being one.
TcpPort = Annotated[int, Field(gt=0, lt=65536), WrapValidator(_tcp_port)]

# The environment read by the innermost `from_env` under way, so that the settings nested in
# it (the `database` of EtlSettings, ...) read the same mapping.
_reading: ContextVar[Mapping[str, str] | None] = ContextVar("_reading", default=None)


def environment(env: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """`env`, else the mapping an enclosing `from_env` reads, else `os.environ`."""
    if env is not None:
        return env
    reading = _reading.get()
    return os.environ if reading is None else reading


# Friendlier words than pydantic's for the usual mistakes; the rest keep pydantic's message.
_REASONS = {
    "int_parsing": "is not a whole number",
    "int_from_float": "is not a whole number",
    "float_parsing": "is not a number",
    "finite_number": "is not a finite number",
    "bool_parsing": "is not a boolean (1/0, true/false, yes/no)",
}


def _describe(error: ErrorDetails, variable: str | None) -> str:
    reason = _REASONS.get(error["type"]) or error["msg"].removeprefix("Value error, ")
    reason = reason.replace("Input should be", "must be", 1)
    if variable is not None:
        return f"{variable}={error['input']!r} {reason}"
    return f"{'.'.join(map(str, error['loc']))}: {reason}" if error["loc"] else reason


class _Variables(PydanticBaseSettingsSource):
    """The values of a settings class's variables in a mapping (empty ones count as unset:
    Compose passes an unset `${X:-}` as the empty string)."""

    def __init__(self, settings_cls: type[StackSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self._values = {
            name: environ[variable] for name, variable in settings_cls.variables().items() if environ.get(variable)
        }

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


class StackSettings(BaseSettings):
    """Settings read by `from_env`. Constructed directly, they take the given values and the
    defaults and read nothing (nested settings excepted: their defaults come from `from_env`)."""

    model_config = SettingsConfigDict(
        frozen=True,
        env_ignore_empty=True,
        validate_by_name=True,  # construct with field names even where the variable is an alias
        allow_inf_nan=False,
        extra="forbid",
    )

    @classmethod
    def variables(cls) -> dict[str, str]:
        """Field name -> the environment variable that sets it."""
        prefix = cls.model_config.get("env_prefix", "")
        found = {}
        for name, field in cls.model_fields.items():
            if NOT_FROM_ENV in field.metadata or (
                isinstance(field.annotation, type) and issubclass(field.annotation, BaseSettings)
            ):
                continue
            alias = field.validation_alias
            found[name] = alias if isinstance(alias, str) else f"{prefix}{name}".upper()
        return found

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        """Read from `env` instead of `os.environ` when given."""
        return cls._read(env)

    @classmethod
    def _read(cls, env: Mapping[str, str] | None, **values: Any) -> Self:
        """The `values` given, the rest from the environment; ConfigError names what is wrong."""
        token = _reading.set(environment(env))
        try:
            return cls(**values)
        except ValidationError as exc:
            variables = cls.variables()
            by_key = {**variables, **{variable: variable for variable in variables.values()}}
            raise ConfigError(
                "; ".join(
                    _describe(error, by_key.get(str(error["loc"][0])) if error["loc"] else None)
                    for error in exc.errors()
                )
            ) from None
        finally:
            _reading.reset(token)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The values given, then (inside `from_env` only) the variables; no .env or secret files."""
        reading = _reading.get()
        return (init_settings,) if reading is None else (init_settings, _Variables(cls, reading))
