"""The dates a report covers: `--since` to `--until`, both inclusive, whole days in UTC.

A daily report (Dagster's `drift_report` partition, the schedule) is `since == until`. The API's
predictions count by `predicted_at` in [since 00:00 UTC, the day after until 00:00 UTC); the batch
scores by `partition_date` from since to until.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from monitoring import PeriodError

# A report over more than a year is almost certainly a typo in a date (and reads every row).
MAX_DAYS = 366
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_date(text: str, option: str) -> date:
    """A YYYY-MM-DD date, or a PeriodError naming the option and the value."""
    if not _DATE.fullmatch(text):
        raise PeriodError(f"{option} {text!r} is not a date in the form YYYY-MM-DD")
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise PeriodError(f"{option} {text!r} is not a valid date: {exc}") from None


@dataclass(frozen=True)
class Period:
    """From `since` to `until`, both inclusive."""

    since: date
    until: date

    def __post_init__(self) -> None:
        if self.until < self.since:
            raise PeriodError(
                f"--until {self.until.isoformat()} is before --since {self.since.isoformat()}: the period is empty"
            )
        if self.days > MAX_DAYS:
            raise PeriodError(
                f"the period {self.since.isoformat()} to {self.until.isoformat()} spans {self.days} days;"
                f" at most {MAX_DAYS} are reported at once"
            )

    @classmethod
    def parse(cls, since: str, until: str, today: date | None = None) -> Period:
        """From the command line's text; a period starting after `today` (UTC) is refused."""
        period = cls(parse_date(since, "--since"), parse_date(until, "--until"))
        today = today or datetime.now(UTC).date()
        if period.since > today:
            raise PeriodError(f"--since {since} is in the future (today is {today.isoformat()} UTC): nothing to report")
        return period

    @classmethod
    def day(cls, day: date) -> Period:
        return cls(day, day)

    @property
    def days(self) -> int:
        return (self.until - self.since).days + 1

    @property
    def start(self) -> datetime:
        """The first instant of the period (UTC)."""
        return datetime.combine(self.since, time(), UTC)

    @property
    def end(self) -> datetime:
        """The first instant after the period (UTC), excluded."""
        return datetime.combine(self.until + timedelta(days=1), time(), UTC)

    @property
    def key(self) -> str:
        """`2026-03-04` for a day, `2026-03-01_2026-03-07` for a longer period: file names, run names."""
        if self.since == self.until:
            return self.since.isoformat()
        return f"{self.since.isoformat()}_{self.until.isoformat()}"

    def __str__(self) -> str:
        return self.since.isoformat() if self.since == self.until else f"{self.since} to {self.until}"
