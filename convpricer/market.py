"""Market snapshot: spot prices, volatilities, correlation and curves.

Conventions (design.md section 5):

* time is measured in years, Actual/365 Fixed from ``valuation_date``;
* rates are continuously compounded zero rates; a ``rate_curve`` is linear in
  the zero rate between its dates and flat outside;
* volatilities are annualised lognormal (Black) volatilities; a vol curve is
  linear in total variance (vol^2 * t) between its dates and flat outside;
* yields (dividend, borrow, BTC lending) are flat and continuously compounded.

From Python a curve may also be a QuantLib term structure or handle
(``ql.YieldTermStructure`` for ``rate_curve``, ``ql.BlackVolTermStructure``
for the vol curves); engines then read it exactly as they read a table.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from typing import Any, Literal

import numpy as np
import QuantLib as ql

from . import _checks as chk
from .errors import InputError

Asset = Literal["btc", "equity"]
DAY_COUNT = ql.Actual365Fixed()
_FAR = date(2199, 12, 31)  # QuantLib's last date: curves are extended flat to it


def ql_date(d: date) -> ql.Date:
    return ql.Date(d.day, d.month, d.year)


def year_fraction(start: date, end: date) -> float:
    """Actual/365 Fixed year fraction (negative if ``end`` is before ``start``)."""
    return (end - start).days / 365.0


@dataclass(frozen=True)
class Curve:
    """A term structure given as a table: ``values[i]`` applies at ``dates[i]``."""

    dates: tuple[date, ...]
    values: tuple[float, ...]

    def check(self, name: str, valuation_date: date, *, positive: bool) -> Curve:
        ds = chk.dates(f"{name}.dates", list(self.dates))
        check = chk.positive if positive else chk.number
        vs = chk.numbers(f"{name}.{'vols' if positive else 'zero_rates'}", list(self.values),
                         check)
        if not ds:
            raise InputError(f"{name}.dates", [], "must hold at least one date")
        if len(ds) != len(vs):
            raise InputError(f"{name}.dates", len(ds),
                             f"has {len(ds)} dates but {len(vs)} values: lengths must match")
        if ds[0] <= valuation_date:
            raise InputError(f"{name}.dates[0]", ds[0].isoformat(),
                             f"must be after the valuation date {valuation_date.isoformat()}")
        if positive:  # total variance vol^2 t must not decrease (no negative forward variance)
            tv = [v * v * year_fraction(valuation_date, d) for d, v in zip(ds, vs, strict=True)]
            for i in range(1, len(tv)):
                if tv[i] < tv[i - 1]:
                    raise InputError(f"{name}.vols[{i}]", vs[i], "total variance vol^2 * t "
                                     "decreases here: the forward variance would be negative")
        return Curve(ds, vs)


def _is_ql(obj: Any, cls: type, handle: type) -> bool:
    return isinstance(obj, cls | handle)


@dataclass(frozen=True, kw_only=True)
class Market:
    """One market snapshot. Prices in USD; rates, yields and vols per year."""

    valuation_date: date
    btc_price: float                      # USD per BTC
    equity_price: float                   # USD per common share
    btc_vol: float | None = None          # flat lognormal vol (or btc_vol_curve)
    equity_vol: float | None = None       # flat lognormal vol (or equity_vol_curve)
    correlation: float = 0.0              # of BTC and equity log-returns
    risk_free_rate: float | None = None   # flat cont. compounded (or rate_curve)
    equity_dividend_yield: float = 0.0
    equity_borrow_cost: float = 0.0
    btc_lending_yield: float = 0.0
    rate_curve: Curve | Any | None = None
    equity_vol_curve: Curve | Any | None = None
    btc_vol_curve: Curve | Any | None = None
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        vd = chk.a_date("market.valuation_date", self.valuation_date)
        s = object.__setattr__
        s(self, "valuation_date", vd)
        s(self, "btc_price", chk.positive("market.btc_price", self.btc_price))
        s(self, "equity_price", chk.positive("market.equity_price", self.equity_price))
        s(self, "correlation", chk.number("market.correlation", self.correlation, lo=-1, hi=1))
        for name in ("equity_dividend_yield", "equity_borrow_cost", "btc_lending_yield"):
            s(self, name, chk.number(f"market.{name}", getattr(self, name), lo=-1, hi=1))
        pairs = (("risk_free_rate", "rate_curve", False, ql.YieldTermStructure,
                  ql.YieldTermStructureHandle),
                 ("equity_vol", "equity_vol_curve", True, ql.BlackVolTermStructure,
                  ql.BlackVolTermStructureHandle),
                 ("btc_vol", "btc_vol_curve", True, ql.BlackVolTermStructure,
                  ql.BlackVolTermStructureHandle))
        for flat, curve, is_vol, qcls, qhandle in pairs:
            fv, cv = getattr(self, flat), getattr(self, curve)
            if fv is not None and cv is not None:
                raise InputError(f"market.{curve}", "given",
                                 f"give {curve} or {flat}, not both")
            if fv is None and cv is None:
                raise InputError(f"market.{flat}", None, f"is required (or give {curve})")
            if fv is not None:
                check = chk.positive if is_vol else (lambda f, v: chk.number(f, v, lo=-1, hi=1))
                s(self, flat, check(f"market.{flat}", fv))
            elif isinstance(cv, Curve):
                s(self, curve, cv.check(f"market.{curve}", vd, positive=is_vol))
            elif not _is_ql(cv, qcls, qhandle):
                raise InputError(f"market.{curve}", type(cv).__name__,
                                 f"must be a Curve or a QuantLib {qcls.__name__}")

    # ----- scalars ------------------------------------------------------
    @property
    def equity_carry(self) -> float:
        """q_S: dividend yield plus borrow cost (per year, continuous)."""
        return self.equity_dividend_yield + self.equity_borrow_cost

    def carry(self, asset: Asset) -> float:
        return self.btc_lending_yield if asset == "btc" else self.equity_carry

    def spot(self, asset: Asset) -> float:
        return self.btc_price if asset == "btc" else self.equity_price

    def time(self, d: date) -> float:
        """Year fraction (Act/365F) from the valuation date to ``d``."""
        return year_fraction(self.valuation_date, d)

    @property
    def has_curves(self) -> bool:
        return any(c is not None for c in (self.rate_curve, self.equity_vol_curve,
                                           self.btc_vol_curve))

    # ----- QuantLib term structures -----------------------------------------
    @cached_property
    def yield_handle(self) -> ql.YieldTermStructureHandle:
        """Risk-free discount curve as a QuantLib handle."""
        ref = ql_date(self.valuation_date)
        rc = self.rate_curve
        if rc is None:
            ts = ql.FlatForward(ref, self.risk_free_rate, DAY_COUNT, ql.Continuous)
        elif isinstance(rc, Curve):
            ds = [self.valuation_date, *rc.dates, _FAR]
            zs = [rc.values[0], *rc.values, rc.values[-1]]
            ts = ql.ZeroCurve([ql_date(d) for d in ds], zs, DAY_COUNT, ql.NullCalendar(),
                              ql.Linear(), ql.Continuous)
        else:
            return rc if isinstance(rc, ql.YieldTermStructureHandle) else \
                ql.YieldTermStructureHandle(rc)
        ts.enableExtrapolation()
        return ql.YieldTermStructureHandle(ts)

    def carry_handle(self, asset: Asset) -> ql.YieldTermStructureHandle:
        ts = ql.FlatForward(ql_date(self.valuation_date), self.carry(asset), DAY_COUNT,
                            ql.Continuous)
        return ql.YieldTermStructureHandle(ts)

    def vol_handle(self, asset: Asset) -> ql.BlackVolTermStructureHandle:
        key = f"vol_{asset}"
        if key in self._cache:
            return self._cache[key]
        flat = self.btc_vol if asset == "btc" else self.equity_vol
        curve = self.btc_vol_curve if asset == "btc" else self.equity_vol_curve
        ref = ql_date(self.valuation_date)
        if curve is None:
            ts = ql.BlackConstantVol(ref, ql.NullCalendar(), flat, DAY_COUNT)
        elif isinstance(curve, Curve):
            ts = ql.BlackVarianceCurve(ref, [ql_date(d) for d in curve.dates],
                                       list(curve.values), DAY_COUNT, False)
        else:
            h = curve if isinstance(curve, ql.BlackVolTermStructureHandle) else \
                ql.BlackVolTermStructureHandle(curve)
            self._cache[key] = h
            return h
        ts.enableExtrapolation()
        h = ql.BlackVolTermStructureHandle(ts)
        self._cache[key] = h
        return h

    def process(self, asset: Asset) -> ql.BlackScholesMertonProcess:
        """QuantLib Black-Scholes-Merton process of one factor."""
        return ql.BlackScholesMertonProcess(
            ql.QuoteHandle(ql.SimpleQuote(self.spot(asset))), self.carry_handle(asset),
            self.yield_handle, self.vol_handle(asset))

    # ----- vectorised evaluations used by the engines ------------------------
    def discount(self, t: np.ndarray | float) -> np.ndarray:
        """Risk-free discount factor to time(s) t (years)."""
        ta = np.atleast_1d(np.asarray(t, dtype=float))
        if self.rate_curve is None:
            out = np.exp(-self.risk_free_rate * ta)
        else:
            ts = self.yield_handle
            out = np.array([ts.discount(float(x), True) for x in ta])
        return out if np.ndim(t) else out[0]

    def variance(self, asset: Asset, t: np.ndarray | float) -> np.ndarray:
        """Total Black variance sigma(t)^2 * t to time(s) t (years)."""
        ta = np.atleast_1d(np.asarray(t, dtype=float))
        flat = self.btc_vol if asset == "btc" else self.equity_vol
        curve = self.btc_vol_curve if asset == "btc" else self.equity_vol_curve
        if curve is None:
            out = flat * flat * ta
        else:
            h = self.vol_handle(asset)
            out = np.array([h.blackVariance(float(x), 1.0, True) if x > 0 else 0.0
                            for x in ta])
        return out if np.ndim(t) else out[0]

    def vol(self, asset: Asset, t: float) -> float:
        """Black volatility to time t (flat vol, or the curve's vol at t)."""
        if t <= 0:
            t = 1e-8
        return float(np.sqrt(self.variance(asset, t) / t))

    def flat_rate(self, t: float) -> float:
        """Zero rate to time t (what QuantLib's one-factor engine flattens to)."""
        return float(-np.log(self.discount(max(t, 1e-8))) / max(t, 1e-8))

    # ----- scenarios ----------------------------------------------------------
    def replace(self, **changes: Any) -> Market:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def bumped(self, field_name: str, amount: float, *, relative: bool = False) -> Market:
        """A copy with one risk factor bumped (absolute, or relative if asked).

        Works for flat fields and curves alike: a vol or rate curve is shifted
        in parallel.
        """
        if field_name in ("btc_price", "equity_price"):
            v = getattr(self, field_name)
            return self.replace(**{field_name: v * (1 + amount) if relative else v + amount})
        if field_name == "correlation":
            return self.replace(correlation=float(np.clip(self.correlation + amount, -1, 1)))
        curve_of = {"risk_free_rate": "rate_curve", "btc_vol": "btc_vol_curve",
                    "equity_vol": "equity_vol_curve"}
        if field_name in curve_of:
            cname = curve_of[field_name]
            curve = getattr(self, cname)
            if curve is None:
                v = getattr(self, field_name)
                return self.replace(**{field_name: v * (1 + amount) if relative else v + amount})
            if isinstance(curve, Curve):
                vals = tuple(v * (1 + amount) if relative else v + amount for v in curve.values)
                return self.replace(**{cname: Curve(curve.dates, vals)})
            raise InputError(f"market.{cname}", "QuantLib object",
                             "cannot bump a user-supplied QuantLib term structure")
        v = getattr(self, field_name)
        return self.replace(**{field_name: v * (1 + amount) if relative else v + amount})
