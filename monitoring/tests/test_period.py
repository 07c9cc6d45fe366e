"""Periods: whole UTC days, both ends included."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from monitoring import PeriodError
from monitoring.period import Period


def test_a_day_is_one_utc_day() -> None:
    day = Period.parse("2026-03-04", "2026-03-04", today=date(2026, 3, 5))
    assert day == Period.day(date(2026, 3, 4)) and day.days == 1 and day.key == "2026-03-04"
    assert day.start == datetime(2026, 3, 4, tzinfo=UTC) and day.end == datetime(2026, 3, 5, tzinfo=UTC)
    assert str(day) == "2026-03-04"


def test_a_week_includes_both_ends() -> None:
    week = Period.parse("2026-03-01", "2026-03-07", today=date(2026, 3, 8))
    assert week.days == 7 and week.key == "2026-03-01_2026-03-07" and str(week) == "2026-03-01 to 2026-03-07"
    assert week.end == datetime(2026, 3, 8, tzinfo=UTC)


def test_today_may_be_reported_so_far() -> None:
    assert Period.parse("2026-03-04", "2026-03-04", today=date(2026, 3, 4)).days == 1


@pytest.mark.parametrize(
    ("since", "until", "message"),
    [
        ("2026-03-04T00:00", "2026-03-04", "--since '2026-03-04T00:00' is not a date in the form YYYY-MM-DD"),
        ("2026-02-29", "2026-03-04", "--since '2026-02-29' is not a valid date"),
        ("2026-03-04", "", "--until '' is not a date in the form YYYY-MM-DD"),
        ("2026-03-04", "2026-03-03", "--until 2026-03-03 is before --since 2026-03-04"),
        ("2026-03-06", "2026-03-07", "--since 2026-03-06 is in the future (today is 2026-03-05 UTC)"),
    ],
)
def test_a_bad_period_names_the_value(since: str, until: str, message: str) -> None:
    with pytest.raises(PeriodError, match=message.replace("(", r"\(").replace(")", r"\)")) as refused:
        Period.parse(since, until, today=date(2026, 3, 5))
    assert refused.value.exit_code == 2
