"""data_science's deliberate errors share one base (under the stack's StackError)."""

from __future__ import annotations

from machine_learning_engineering.errors import StackError


class DataScienceError(StackError):
    """Base of every error data_science raises on purpose; the message says what to do."""
