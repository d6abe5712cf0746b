"""UTC-aligned budget periods (5m, 1h, 1d, 7d, 1mo) as integer epoch-second bounds."""

import math

_DAY_S = 86_400
_WEEK_S = 7 * _DAY_S
# 1970-01-01 was a Thursday; the first Monday 00:00 UTC is 4 days later. Weeks are counted
# from there so that `// _WEEK_S` lands on Mondays.
_MONDAY_EPOCH_S = 4 * _DAY_S

# Fixed-length periods: length in seconds and the offset their grid is aligned to.
_FIXED: dict[str, tuple[int, int]] = {
    "5m": (300, 0),
    "1h": (3_600, 0),
    "1d": (_DAY_S, 0),
    "7d": (_WEEK_S, _MONDAY_EPOCH_S),
}
PERIODS = frozenset((*_FIXED, "1mo"))

# Last bounds computed per period: in steady state every call lands in the same period, so the
# answer is one dict lookup and two comparisons.
_cache: dict[str, tuple[int, int]] = {}


# Days in each month of a common year; February gains a day in leap years.
_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _days_before_year(year: int) -> int:
    """Days from 1970-01-01 to January 1st of `year` (proleptic Gregorian; negative before)."""
    y = year - 1
    # 719162 = days from 0001-01-01 to 1970-01-01.
    return 365 * y + y // 4 - y // 100 + y // 400 - 719_162


def _month_start_days(year: int, month: int) -> int:
    """Days from 1970-01-01 to the 1st of `month` (1..12) in `year`."""
    days = _days_before_year(year) + sum(_MONTH_DAYS[: month - 1])
    return days + 1 if month > 2 and _is_leap(year) else days


def _year_month(days: int) -> tuple[int, int]:
    """(year, month) of the date `days` days after 1970-01-01."""
    # A year has 365 or 366 days, so this guess is off by at most one; correct it.
    year = 1970 + days // 366
    while _days_before_year(year + 1) <= days:
        year += 1
    while _days_before_year(year) > days:
        year -= 1
    month = 12
    while _month_start_days(year, month) > days:
        month -= 1
    return year, month


def _compute(period: str, t: int) -> tuple[int, int]:
    fixed = _FIXED.get(period)
    if fixed is not None:
        length_s, offset_s = fixed
        start_s = (t - offset_s) // length_s * length_s + offset_s
        return start_s, start_s + length_s
    if period == "1mo":
        year, month = _year_month(t // _DAY_S)
        start_s = _month_start_days(year, month) * _DAY_S
        next_year, next_month = (year + 1, 1) if month == 12 else (year, month + 1)
        return start_s, _month_start_days(next_year, next_month) * _DAY_S
    raise ValueError(f"unknown period {period!r}; expected one of {sorted(PERIODS)}")


def period_bounds(period: str, now_s: float) -> tuple[int, int]:
    """(start_s, end_s) of the UTC period containing `now_s`: start inclusive, end exclusive.

    Raises ValueError for a period not in PERIODS.
    """
    cached = _cache.get(period)
    if cached is not None and cached[0] <= now_s < cached[1]:
        return cached
    bounds = _compute(period, math.floor(now_s))
    _cache[period] = bounds
    return bounds
