"""Event schedules in model time, shared by every engine.

A term sheet speaks in dates; engines speak in years from the valuation
date (Actual/365 Fixed). This module is the one place that turns coupons,
accrued interest, puts, calls and conversion windows into times and amounts.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import date

import numpy as np
import QuantLib as ql

from .instruments import PreferredStock, ZeroCouponConvertible
from .market import ql_date, year_fraction

#: Times closer than this (years, about 3 seconds) are the same event.
EVENT_TOL = 1e-7

#: Day count of coupon amounts (Strategy's indentures: 30/360).
COUPON_DAY_COUNT = ql.Thirty360(ql.Thirty360.BondBasis)


def _py(d: ql.Date) -> date:
    return date(d.year(), d.month(), d.dayOfMonth())


def on_times(t: float | np.ndarray, times: np.ndarray, tol: float) -> bool | np.ndarray:
    """Whether each of t is within ``tol`` of one of ``times`` (bool, t's shape)."""
    t = np.asarray(t, dtype=float)
    times = np.asarray(times, dtype=float)
    if times.size == 0:
        return np.zeros(t.shape, dtype=bool)[()]
    return (np.abs(t[..., None] - times) < tol).any(axis=-1)[()]


def coupon_dates(note: ZeroCouponConvertible) -> tuple[date, ...]:
    """All coupon dates of a note (unadjusted, rolled back from maturity), issue excluded."""
    if note.coupon == 0:
        return ()
    months = 12 // note.coupon_frequency_per_year
    sched = ql.Schedule(ql_date(note.issue_date), ql_date(note.maturity),
                        ql.Period(months, ql.Months), ql.NullCalendar(), ql.Unadjusted,
                        ql.Unadjusted, ql.DateGeneration.Backward, False)
    return tuple(_py(d) for d in list(sched)[1:])


@dataclass(frozen=True)
class ConvertibleSchedule:
    """A convertible's rights in model time (years from the valuation date).

    Amounts are USD per note. ``accrued(t)`` is the accrued coupon at time t
    (linear in time within the coupon period), added to put and call prices.
    """

    maturity: float
    redemption: float
    coupon_times: np.ndarray
    coupon_amounts: np.ndarray
    period_starts: np.ndarray       # accrual start of each remaining coupon period
    put_times: np.ndarray
    put_price: float
    call_start: float | None
    call_price: float
    trigger_price: float | None     # share price that allows a soft call
    trigger_days: int | None
    trigger_window: int | None
    conversion_start: float          # first time conversion is allowed
    conversion_ratio: float
    american: bool
    _accrual_fractions: tuple = ()  # (start_t, end_t, amount) per period, for accrued()

    def accrued(self, t: float | np.ndarray) -> np.ndarray | float:
        """Accrued coupon per note at time(s) t, linear within each period."""
        ta = np.atleast_1d(np.asarray(t, dtype=float))
        out = np.zeros_like(ta)
        for start, end, amount in self._accrual_fractions:
            # a time within EVENT_TOL of a coupon date is that date: the coupon is
            # paid then and nothing has accrued (no double count from rounding)
            m = (ta > start + EVENT_TOL) & (ta < end - EVENT_TOL)
            out[m] = amount * (ta[m] - start) / (end - start)
        return out if np.ndim(t) else float(out[0])

    def conversion_allowed(self, t: float | np.ndarray) -> bool | np.ndarray:
        """Whether the holder may convert at time(s) t."""
        if not self.american:
            return np.abs(np.asarray(t) - self.maturity) < 1e-12
        return np.asarray(t) >= self.conversion_start - 1e-12

    def call_allowed(self, t: float | np.ndarray) -> bool | np.ndarray:
        """Whether the issuer may call at time(s) t (call period; a trigger aside)."""
        t = np.asarray(t)
        if self.call_start is None:
            return np.zeros(t.shape, dtype=bool)[()]
        return (self.call_start - 1e-12 <= t) & (t < self.maturity)

    def is_put_time(self, t: float | np.ndarray) -> bool | np.ndarray:
        """Whether time(s) t are put dates."""
        return on_times(t, self.put_times, 1e-9)

    def event_times(self) -> np.ndarray:
        """Times at which something happens (coupons, puts, call and conversion starts,
        maturity): engines put a time step on each of them."""
        ts = [self.maturity, *self.coupon_times, *self.put_times]
        if self.call_start is not None and self.call_start > 0:
            ts.append(self.call_start)
        if self.american and self.conversion_start > 0:
            ts.append(self.conversion_start)
        return np.unique(np.round(np.array([t for t in ts if t > 0]), 12))


def convertible_schedule(note: ZeroCouponConvertible, valuation_date: date) -> ConvertibleSchedule:
    """The schedule of a note seen from ``valuation_date``."""
    vt = lambda d: year_fraction(valuation_date, d)  # noqa: E731
    cds = coupon_dates(note)
    starts = (note.issue_date, *cds[:-1]) if cds else ()
    periods = []
    ctimes, camts, cstarts = [], [], []
    for s, e in zip(starts, cds, strict=True):
        if e <= valuation_date:
            continue
        # 30/360 fraction of the period: a regular period pays coupon / frequency,
        # a short first period its fraction (as the indentures and QuantLib do)
        per = note.coupon * COUPON_DAY_COUNT.yearFraction(ql_date(s), ql_date(e))
        periods.append((vt(s), vt(e), per))
        ctimes.append(vt(e))
        camts.append(per)
        cstarts.append(vt(s))
    put_t = np.array([vt(d) for d in note.put_dates if d > valuation_date])
    if note.conversion == "european":
        conv_start = vt(note.maturity)
    else:
        conv_start = max(0.0, vt(note.conversion_start)) if note.conversion_start else 0.0
    return ConvertibleSchedule(
        maturity=vt(note.maturity), redemption=note.face,
        coupon_times=np.array(ctimes), coupon_amounts=np.array(camts),
        period_starts=np.array(cstarts), put_times=put_t, put_price=note.put_price,
        call_start=None if note.call_start is None else max(0.0, vt(note.call_start)),
        call_price=note.call_price, trigger_price=note.call_trigger_price,
        trigger_days=note.call_trigger_days, trigger_window=note.call_trigger_window,
        conversion_start=conv_start, conversion_ratio=note.conversion_ratio,
        american=note.conversion == "american", _accrual_fractions=tuple(periods))


#: Default horizon (years) to which a perpetual preferred is valued.
PREFERRED_HORIZON = 30.0


@dataclass(frozen=True)
class PreferredSchedule:
    """Dividend dates of a perpetual preferred to a finite horizon, in model time."""

    horizon: float
    dividend_times: np.ndarray
    dividend: float                 # per share per period, USD
    call_start: float | None
    call_price: float | None
    conversion_ratio: float


def preferred_schedule(pref: PreferredStock, valuation_date: date,
                       horizon: float = PREFERRED_HORIZON) -> PreferredSchedule:
    """Dividends on calendar period ends (quarter ends for quarterly, month ends
    for monthly; Strategy's STRK/STRF/STRD pay on quarter ends), to ``horizon`` years."""
    months = 12 // pref.dividend_frequency
    d = ql.Date.endOfMonth(ql_date(valuation_date))
    while d.month() % months != 0:
        d = ql.Date.endOfMonth(d + ql.Period(1, ql.Months))
    times = []
    while True:
        t = year_fraction(valuation_date, _py(d))
        if t > horizon + 1e-9:
            break
        if t > 0:
            times.append(t)
        d = ql.Date.endOfMonth(d + ql.Period(months, ql.Months))
    cs = None
    if pref.call_start is not None:
        cs = max(0.0, year_fraction(valuation_date, pref.call_start))
    return PreferredSchedule(horizon=horizon, dividend_times=np.array(times),
                             dividend=pref.dividend, call_start=cs, call_price=pref.call_price,
                             conversion_ratio=pref.conversion_ratio)


def time_grid(event_times: np.ndarray, horizon: float, steps: int) -> np.ndarray:
    """A grid from 0 to ``horizon`` with about ``steps`` steps that hits every event time.

    Each interval between consecutive events gets a whole number of equal steps
    (at least one), in proportion to its length.
    """
    ev = np.unique(np.concatenate([[0.0], event_times[(event_times > 0)
                                                      & (event_times <= horizon)], [horizon]]))
    dt = horizon / steps
    pieces = [np.array([0.0])]
    for a, b in itertools.pairwise(ev):
        n = max(1, round((b - a) / dt))
        pieces.append(np.linspace(a, b, n + 1)[1:])
    return np.concatenate(pieces)


#: The exchange calendar of the trading days on which calls are tested and a
#: soft-call trigger's closes are counted (NYSE), for every engine.
CALENDAR = ql.UnitedStates(ql.UnitedStates.NYSE)


def trading_days(start: date, end: date) -> list[date]:
    """NYSE trading days from ``start`` to ``end``, both included (none if end < start)."""
    if end < start:
        return []
    return [_py(d) for d in CALENDAR.businessDayList(ql_date(start), ql_date(end))]
