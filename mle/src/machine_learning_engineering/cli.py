"""One bootstrap for every command line of the stack: logging, exit codes, errors.

Every entry point (`companydata-etl`, `companydata-train`, ...) is `run(main)`: the same log
format, and the same exit codes -- 0 done, 1 failed (a `StackError` logs one line naming what
and why; anything else logs its traceback), 2 a usage or configuration error, 75 try again
later (EX_TEMPFAIL: the database is busy), 130 interrupted; a command may return others it
documents (the training job's 3).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence

from machine_learning_engineering.errors import StackError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_TEMPFAIL, EXIT_INTERRUPTED = 0, 1, 2, 75, 130
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

log = logging.getLogger("machine_learning_engineering.cli")


def setup_logging(level: int = logging.INFO) -> None:
    """The stack's log format on stderr (once per process; a second call changes nothing)."""
    logging.basicConfig(level=level, format=LOG_FORMAT)


def execute(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run `main(argv)` and turn what it raises into a logged line and an exit code."""
    setup_logging()
    try:
        return main(argv)
    except StackError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        return EXIT_INTERRUPTED
    except Exception:
        log.exception("failed with an unexpected error")
        return EXIT_FAILED


def run(main: Callable[[Sequence[str] | None], int]) -> Callable[[], None]:
    """A console-script entry point for `main`: `companydata-x = "pkg.module:entry"` with
    `entry = run(main)`."""

    def entry() -> None:
        sys.exit(execute(main, sys.argv[1:]))

    return entry
