"""period_bounds: UTC alignment at every boundary, months of every length, caching."""

from datetime import datetime, timezone

import pytest

from pyengine.algorithms.periods import PERIODS, period_bounds


def ts(iso: str) -> int:
    """Epoch seconds of a UTC ISO timestamp (tests only; the engine never builds datetimes)."""
    return int(datetime.fromisoformat(iso).replace(tzinfo=timezone.utc).timestamp())


CASES = [
    # period, instant, expected start, expected end
    ("5m", "2026-03-10T12:04:59", "2026-03-10T12:00:00", "2026-03-10T12:05:00"),
    ("5m", "2026-03-10T12:05:00", "2026-03-10T12:05:00", "2026-03-10T12:10:00"),
    ("5m", "2026-12-31T23:59:59", "2026-12-31T23:55:00", "2027-01-01T00:00:00"),
    ("1h", "2026-03-10T12:59:59", "2026-03-10T12:00:00", "2026-03-10T13:00:00"),
    ("1h", "2026-03-10T13:00:00", "2026-03-10T13:00:00", "2026-03-10T14:00:00"),
    ("1d", "2026-03-10T23:59:59", "2026-03-10T00:00:00", "2026-03-11T00:00:00"),
    ("1d", "2026-03-11T00:00:00", "2026-03-11T00:00:00", "2026-03-12T00:00:00"),
    ("1d", "2028-02-29T12:00:00", "2028-02-29T00:00:00", "2028-03-01T00:00:00"),
    # 2026-01-04 is a Sunday, 2026-01-05 a Monday; the week spans the new year.
    ("7d", "2026-01-04T23:59:59", "2025-12-29T00:00:00", "2026-01-05T00:00:00"),
    ("7d", "2026-01-05T00:00:00", "2026-01-05T00:00:00", "2026-01-12T00:00:00"),
    ("7d", "2026-01-01T00:00:00", "2025-12-29T00:00:00", "2026-01-05T00:00:00"),
    ("7d", "1970-01-01T00:00:00", "1969-12-29T00:00:00", "1970-01-05T00:00:00"),
    ("1mo", "2026-01-31T23:59:59", "2026-01-01T00:00:00", "2026-02-01T00:00:00"),
    ("1mo", "2026-02-01T00:00:00", "2026-02-01T00:00:00", "2026-03-01T00:00:00"),
    ("1mo", "2026-02-28T23:59:59", "2026-02-01T00:00:00", "2026-03-01T00:00:00"),
    ("1mo", "2028-02-28T23:59:59", "2028-02-01T00:00:00", "2028-03-01T00:00:00"),
    ("1mo", "2028-02-29T23:59:59", "2028-02-01T00:00:00", "2028-03-01T00:00:00"),
    ("1mo", "2028-03-01T00:00:00", "2028-03-01T00:00:00", "2028-04-01T00:00:00"),
    ("1mo", "2000-02-29T00:00:00", "2000-02-01T00:00:00", "2000-03-01T00:00:00"),  # /400 leap
    ("1mo", "2100-02-28T00:00:00", "2100-02-01T00:00:00", "2100-03-01T00:00:00"),  # /100 not
    ("1mo", "2026-04-30T23:59:59", "2026-04-01T00:00:00", "2026-05-01T00:00:00"),
    ("1mo", "2026-12-31T23:59:59", "2026-12-01T00:00:00", "2027-01-01T00:00:00"),
    ("1mo", "2027-01-01T00:00:00", "2027-01-01T00:00:00", "2027-02-01T00:00:00"),
]


@pytest.mark.parametrize(("period", "at", "start", "end"), CASES)
def test_bounds(period, at, start, end):
    assert period_bounds(period, float(ts(at))) == (ts(start), ts(end))


@pytest.mark.parametrize(("period", "at", "start", "end"), CASES)
def test_bounds_a_fraction_of_a_second_later(period, at, start, end):
    assert period_bounds(period, ts(at) + 0.999) == (ts(start), ts(end))


def test_month_lengths():
    def month_days(iso):
        start, end = period_bounds("1mo", float(ts(iso)))
        return (end - start) // 86_400

    assert [month_days(f"2026-{m:02d}-15T00:00:00") for m in range(1, 13)] == \
        [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    assert month_days("2028-02-15T00:00:00") == 29


def test_bounds_are_ints_and_cached():
    first = period_bounds("1h", 1_767_225_600.5)
    assert all(type(b) is int for b in first)
    assert period_bounds("1h", 1_767_229_199.9) is first  # same hour: cached tuple
    later = period_bounds("1h", 1_767_229_200.0)
    assert later == (1_767_229_200, 1_767_232_800)
    assert period_bounds("1h", 1_767_225_600.5) == first  # going back recomputes correctly


def test_known_periods_and_unknown_period():
    assert PERIODS == {"5m", "1h", "1d", "7d", "1mo"}
    with pytest.raises(ValueError, match="unknown period '2w'"):
        period_bounds("2w", 0.0)
