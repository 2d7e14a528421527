"""Peers run in the same process on the same term sheets: QuantLib's
BinomialConvertibleEngine and FinancePy's BondConvertible.

Both are one-factor (share price only) binomial trees. Each peer maps a
convpricer note once and then values it at any number of steps; only the
valuation is timed (the term-sheet mapping is not part of either library's cost).

* QuantLib: the ``quantlib`` engine's own mapping (``quantlib_engine._bond`` /
  ``_engine``: puts, every NYSE business day of the call period as a (soft)
  callability, coupons, the credit spread as the engine's quote), valued with
  the tree asked for. Its model is QuantLib's blended-discount TF lattice
  (docs/sections/quantlib_engine.md), so its error is measured against its own
  converged value.
* FinancePy (``financepy.products.bonds.BondConvertible``, version in the
  machine header): 100 of par, conversion ratio per 100, the same put dates and
  the call period as the same NYSE business days at the call price, flat
  continuously compounded discount curve, no dividends, the note's credit spread
  and recovery rate. Known differences, all FinancePy's model as it is:

  - credit is Hull's reduced form: hazard h = spread / (1 - recovery), the bond
    recovers ``recovery`` x par at default, not Tsiveriotis-Fernandes;
  - no soft call: a call date is a hard call (no trigger), and a call caps the
    value at the call price even below conversion value (min(max(hold, conv,
    put), call));
  - no accrued interest on put and call prices;
  - ``num_steps_per_year`` is the total number of tree steps (its
    ``num_times = num_steps_per_year`` line), and each value is the average of
    the trees with N and N + 1 steps (two trees per valuation);
  - the tree is a numba-compiled O(N^2) loop; the first call compiles (cached
    on disk), so peers are warmed up before timing.
"""

from __future__ import annotations

from datetime import date

import QuantLib as ql

from convpricer.engines import quantlib_engine as qe
from convpricer.instruments import ZeroCouponConvertible
from convpricer.market import Market, ql_date


class QuantLibTree:
    """QuantLib's BinomialConvertibleEngine on one note; ``value(steps)`` in USD per note."""

    library = "QuantLib"

    def __init__(self, note: ZeroCouponConvertible, market: Market, tree: str = "crr"):
        if tree not in qe.TREES:
            raise ValueError(f"tree {tree!r} is not one of {qe.TREES}")
        self.note, self.market, self.tree = note, market, tree
        self.name = f"QuantLib {tree}"
        self._today = ql_date(market.valuation_date)
        ql.Settings.instance().evaluationDate = self._today
        self.bond = qe._bond(note, market.valuation_date)
        self.scale = note.face / qe.QL_FACE

    def steps_used(self, steps: int) -> int:
        """QuantLib's lr and j4 trees always run an odd number of steps."""
        return steps | 1 if self.tree in qe.ODD_TREES else steps

    def value(self, steps: int) -> float:
        ql.Settings.instance().evaluationDate = self._today
        self.bond.setPricingEngine(qe._engine(self.note, self.market, self.tree,
                                              self.steps_used(steps)))
        return self.bond.NPV() * self.scale


def _fp_date(d: date):
    from financepy.utils.date import Date

    return Date(d.day, d.month, d.year)


class FinancePyTree:
    """FinancePy's BondConvertible on one note; ``value(steps)`` in USD per note.
    ``steps`` is FinancePy's ``num_steps_per_year`` argument, which is the total
    number of tree steps (see the module docstring)."""

    library = "FinancePy"
    name = "FinancePy"

    def __init__(self, note: ZeroCouponConvertible, market: Market):
        from financepy.market.curves.discount_curve_flat import DiscountCurveFlat
        from financepy.products.bonds import BondConvertible
        from financepy.utils.day_count import DayCountTypes
        from financepy.utils.frequency import FrequencyTypes

        if market.has_curves or market.equity_carry != 0:
            raise ValueError("FinancePy peer: flat market without dividends only")
        vd = market.valuation_date
        per_100 = 100.0 / note.face
        freq = {1: FrequencyTypes.ANNUAL, 2: FrequencyTypes.SEMI_ANNUAL,
                4: FrequencyTypes.QUARTERLY, 12: FrequencyTypes.MONTHLY}
        calls = [date(d.year(), d.month(), d.dayOfMonth()) for d in qe.call_dates(note, vd)]
        puts = [d for d in note.put_dates if d > vd]
        start = note.maturity if note.conversion == "european" \
            else max(note.conversion_start or vd, vd)
        self.bond = BondConvertible(
            _fp_date(note.maturity), float(note.coupon_rate) if note.coupon > 0 else 0.0,
            freq[note.coupon_frequency_per_year] if note.coupon > 0 else FrequencyTypes.ANNUAL,
            _fp_date(start), note.conversion_ratio * per_100,
            [_fp_date(d) for d in calls], [note.call_price * per_100] * len(calls),
            [_fp_date(d) for d in puts], [note.put_price * per_100] * len(puts),
            DayCountTypes.THIRTY_360_BOND)
        self.settle = _fp_date(vd)
        self.curve = DiscountCurveFlat(self.settle, float(market.flat_rate(
            market.time(note.maturity))), FrequencyTypes.CONTINUOUS, DayCountTypes.ACT_365F)
        self.args = dict(stock_price=market.equity_price,
                         stock_volatility=market.vol("equity", market.time(note.maturity)),
                         dividend_dts=[], dividend_yields=[], credit_spread=note.credit_spread,
                         recovery_rate=note.recovery_rate)
        self.scale = note.face / 100.0

    @staticmethod
    def steps_used(steps: int) -> int:
        return steps

    def value(self, steps: int) -> float:
        out = self.bond.value(self.settle, discount_curve=self.curve,
                              num_steps_per_year=int(steps), **self.args)
        return float(out["cbprice"]) * self.scale
