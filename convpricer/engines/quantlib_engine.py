"""The ``quantlib`` engine: QuantLib's own one-factor convertible pricer.

The note becomes a ``ConvertibleZeroCouponBond`` or ``ConvertibleFixedCouponBond``
(QuantLib's notional is 100: ``conversionRatio`` is shares per 100 of face and
prices are per 100; results are rescaled to USD per note of ``face``), valued by
``BinomialConvertibleEngine`` on the market's equity process with the note's
``credit_spread``. QuantLib's numbers are reported as they are; what it cannot
represent is either refused or stated in ``result.notes`` (docs/sections/
quantlib_engine.md has the measured effect of each simplification):

* its Tsiveriotis-Fernandes lattice discounts each node at a rate blended by
  conversion probability, not with the exact cash/equity split;
* rate, carry and volatility curves are flattened to their values at maturity;
* calls, puts and soft-call triggers act on discrete dates only: a call period
  is expanded into every NYSE business day of it, and an N-of-M-days trigger
  becomes a single-day trigger;
* bitcoin coverage and a hazard rate are outside this one-factor model.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import QuantLib as ql

from .. import analytic
from ..errors import EngineError, InputError
from ..greeks import bump_greeks
from ..instruments import ZeroCouponConvertible
from ..market import Curve, Market, ql_date
from ..results import PricingResult
from ..schedule import CALENDAR, coupon_dates
from ..structure import CapitalStructure
from . import check_options

KINDS = frozenset({"zero_coupon_convertible", "convertible_note"})
OPTIONS = frozenset({"steps", "tree"})

#: QuantLib tree names accepted by BinomialConvertibleEngine.
TREES = ("crr", "jr", "eqp", "trigeorgis", "tian", "lr", "j4")
#: Default tree and steps: about 1e-4 relative accuracy on a 5-year note
#: (measured: docs/sections/quantlib_engine.md).
DEFAULT_TREE = "lr"
DEFAULT_STEPS = 1001
MIN_STEPS = 10
#: Trees that QuantLib builds with an odd number of steps while its convertible
#: lattice keeps the even count it was given (an even count is off by ~3e-4).
ODD_TREES = frozenset({"lr", "j4"})

#: QuantLib's convertible notional: its prices and ratios are per 100 of face.
QL_FACE = 100.0
#: Call periods are expanded into the business days of this calendar.
CALL_DATES = "every NYSE business day of the call period"
#: Accrual day count of the coupons (the indentures' 30/360).
COUPON_DAY_COUNT = ql.Thirty360(ql.Thirty360.BondBasis)


def price(instrument: ZeroCouponConvertible, market: Market,
          structure: CapitalStructure | None = None, *, greeks: bool = True,
          **options: Any) -> PricingResult:
    """Value one convertible note with QuantLib (USD per note of ``face``).

    Options: ``tree`` (one of :data:`TREES`, default :data:`DEFAULT_TREE`) and
    ``steps`` (int >= 10, default :data:`DEFAULT_STEPS`; rounded up to odd for
    the lr and j4 trees, and ``settings["steps"]`` says what was used). Greeks
    are on the equity factor only (bump and reprice); ``delta_btc`` is left None.
    """
    check_options("quantlib", options, OPTIONS)
    tree, steps = _tree_and_steps(options)
    _check_supported(instrument, market, structure)
    ql.Settings.instance().evaluationDate = ql_date(market.valuation_date)
    bond = _bond(instrument, market.valuation_date)
    scale = instrument.face / QL_FACE

    def value(m: Market) -> float:
        bond.setPricingEngine(_engine(instrument, m, tree, steps))
        return bond.NPV() * scale

    base = value(market)
    sens: dict[str, float] = {}
    notes = _notes(instrument, market, structure)
    if greeks:
        vegas = market.equity_vol_curve is None or isinstance(market.equity_vol_curve, Curve)
        sens = bump_greeks(value, market, base, factors=("equity",), vegas=vegas,
                           correlation=False)
        if not vegas:
            notes.append("no vega: a QuantLib equity vol term structure cannot be bumped")
    return PricingResult(
        name=instrument.name, kind=instrument.kind, engine="quantlib", value=base,
        units=instrument.units, bond_floor=float(analytic.bond_floor(instrument, market)),
        parity=instrument.parity(market.equity_price),
        delta_equity=sens.get("delta_equity"), gamma_equity=sens.get("gamma_equity"),
        vega_equity=sens.get("vega_equity"),
        settings={"engine": "quantlib", "tree": tree, "steps": steps,
                  "call_dates": CALL_DATES if instrument.is_callable else "none"},
        notes=tuple(notes))


# ----- options and scope ------------------------------------------------------
def _tree_and_steps(options: dict[str, Any]) -> tuple[str, int]:
    tree = options.get("tree", DEFAULT_TREE)
    if tree not in TREES:
        raise EngineError(f"engine quantlib: tree = {tree!r} is not one of {', '.join(TREES)}")
    steps = options.get("steps", DEFAULT_STEPS)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < MIN_STEPS:
        raise EngineError(f"engine quantlib: steps = {steps!r} must be an integer >= {MIN_STEPS}")
    return tree, (steps | 1 if tree in ODD_TREES else steps)


def _check_supported(note: ZeroCouponConvertible, market: Market,
                     structure: CapitalStructure | None) -> None:
    """Refuse what QuantLib's engine would value wrongly or not at all."""
    vd = market.valuation_date
    if note.maturity <= vd:
        raise InputError("maturity", note.maturity.isoformat(),
                         f"is not after the valuation date {vd.isoformat()}: nothing to value")
    if note.issue_date > vd:
        raise EngineError(f"engine quantlib: {note.name} is issued after the valuation date; "
                          "QuantLib would value it as of its issue date")
    if note.conversion_ratio <= 0:
        raise EngineError(f"engine quantlib: {note.name} has conversion_ratio 0; "
                          "QuantLib's convertible engine needs a positive ratio")
    if structure is not None and structure.hazard_rate > 0:
        raise EngineError("engine quantlib: issuer.hazard_rate is not modelled by QuantLib's "
                          "convertible engine (constant credit spread only); use lattice2d")


def _notes(note: ZeroCouponConvertible, market: Market,
           structure: CapitalStructure | None) -> list[str]:
    notes = []
    if note.credit_spread > 0:
        notes.append("QuantLib discounts at a rate blended by conversion probability, "
                     "not the exact Tsiveriotis-Fernandes split")
    if market.has_curves:
        notes.append("QuantLib flattens rate, carry and vol curves to their maturity values: "
                     "this is QuantLib's flattened number")
    if note.call_trigger_days is not None:
        notes.append(f"soft call on {note.call_trigger_days} of {note.call_trigger_window} "
                     "days approximated by a single-day trigger (QuantLib cannot do N of M)")
    if structure is not None:
        notes.append("one-factor engine: BTC coverage not modelled")
    return notes


# ----- term sheet -> QuantLib -------------------------------------------------
def _bond(note: ZeroCouponConvertible, valuation_date: date) -> ql.Bond:
    """QuantLib's convertible on 100 of face, settling on the valuation date."""
    ratio = note.conversion_ratio * QL_FACE / note.face
    issue, maturity = ql_date(note.issue_date), ql_date(note.maturity)
    callability = _callability(note, valuation_date)
    if note.coupon > 0:
        dates = [issue, *(ql_date(d) for d in coupon_dates(note))]
        schedule = ql.Schedule(dates, ql.NullCalendar(), ql.Unadjusted)
        return ql.ConvertibleFixedCouponBond(_exercise(note, valuation_date), ratio,
                                             callability, issue, 0, [note.coupon_rate],
                                             COUPON_DAY_COUNT, schedule, QL_FACE)
    schedule = ql.Schedule([issue, maturity], ql.NullCalendar(), ql.Unadjusted)
    return ql.ConvertibleZeroCouponBond(_exercise(note, valuation_date), ratio, callability,
                                        issue, 0, ql.Actual365Fixed(), schedule, QL_FACE)


def _exercise(note: ZeroCouponConvertible, valuation_date: date) -> ql.Exercise:
    """Conversion right: from conversion_start (or today) to maturity, or at maturity only."""
    maturity = ql_date(note.maturity)
    if note.conversion == "european":
        return ql.EuropeanExercise(maturity)
    start = max(note.conversion_start or valuation_date, valuation_date)
    return ql.AmericanExercise(ql_date(start), maturity)


def call_dates(note: ZeroCouponConvertible, valuation_date: date) -> list[ql.Date]:
    """The dates on which the issuer may call: every NYSE business day from
    call_start (or the day after valuation) to the day before maturity."""
    if note.call_start is None:
        return []
    first = ql_date(note.call_start) if note.call_start > valuation_date \
        else ql_date(valuation_date) + 1
    return list(CALENDAR.businessDayList(first, ql_date(note.maturity) - 1))


def _callability(note: ZeroCouponConvertible,
                 valuation_date: date) -> ql.CallabilitySchedule:
    """Holder puts and issuer (soft) calls as QuantLib callabilities, clean prices
    per 100 of face (QuantLib adds the accrued coupon), in date order."""
    per_100 = QL_FACE / note.face
    items: list[tuple[ql.Date, ql.Callability]] = []
    put_px = ql.BondPrice(note.put_price * per_100, ql.BondPrice.Clean)
    for d in note.put_dates:
        if d > valuation_date:
            items.append((ql_date(d), ql.Callability(put_px, ql.Callability.Put, ql_date(d))))
    call_px = ql.BondPrice(note.call_price * per_100, ql.BondPrice.Clean)
    for d in call_dates(note, valuation_date):
        items.append((d, ql.Callability(call_px, ql.Callability.Call, d)
                      if note.call_trigger is None
                      else ql.SoftCallability(call_px, d, note.call_trigger)))
    items.sort(key=lambda x: x[0].serialNumber())
    return ql.CallabilitySchedule([c for _, c in items])


def _engine(note: ZeroCouponConvertible, market: Market, tree: str,
            steps: int) -> ql.PricingEngine:
    spread = ql.QuoteHandle(ql.SimpleQuote(note.credit_spread))
    return ql.BinomialConvertibleEngine(market.process("equity"), tree, steps, spread,
                                        ql.DividendSchedule())
