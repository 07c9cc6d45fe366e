"""One root for the stack's deliberate errors, one base per package under it.

A `StackError` is a refusal with a message a user can act on (a bad file, a busy database, a
wrong setting), never a bug; `cli.run` logs it as one line and exits with its `exit_code`.
Each package has its own base (`MLEError` here, `DataEngineeringError`, `DataScienceError`,
`DeploymentError`, `EdaError`), so a caller can catch one package's errors.
"""

from __future__ import annotations


class StackError(Exception):
    """A deliberate refusal: logged as one line, the process exits with `exit_code`."""

    exit_code: int = 1


class MLEError(StackError):
    """Base of every error machine_learning_engineering raises on purpose."""
