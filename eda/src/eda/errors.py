"""eda's deliberate errors share one base (under the stack's StackError)."""

from __future__ import annotations

from machine_learning_engineering.errors import StackError


class EdaError(StackError):
    """Base of every error eda raises on purpose; the message says what to do."""
