"""The ``quantlib`` engine: closed forms, QuantLib's documented TF gap, the
ordering of puts and calls, no-arbitrage bounds, and agreement with QuantLib
driven by hand."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import numpy as np
import pytest
import QuantLib as ql
from scipy.stats import norm

import convpricer as cp
from convpricer import analytic
from convpricer.engines import quantlib_engine as qe
from convpricer.errors import EngineError
from convpricer.instruments import ConvertibleNote, ZeroCouponConvertible
from convpricer.market import Curve, Market
from convpricer.structure import CapitalStructure

VAL = date(2025, 2, 21)
MAT = date(2030, 2, 21)
PUT = date(2028, 2, 22)
CALL = date(2028, 3, 1)
MARKET = Market(valuation_date=VAL, btc_price=96000, equity_price=100, btc_vol=0.5,
                equity_vol=0.4, correlation=0.5, risk_free_rate=0.04)
# A 5-year note of 1000 face, conversion price 150, American conversion.
NOTE = ZeroCouponConvertible(name="note", face=1000.0, notional=1e9, issue_date=VAL,
                             maturity=MAT, conversion_ratio=1000 / 150)


def value(note: ZeroCouponConvertible, market: Market = MARKET, **options) -> float:
    return qe.price(note, market, greeks=False, **options).value


@pytest.mark.parametrize("spot", [60.0, 100.0, 250.0])
def test_no_spread_european_is_bond_plus_calls(spot: float) -> None:
    """cs = 0, conversion at maturity only: face * DF + ratio * BS call(K = conversion price)."""
    note = replace(NOTE, conversion="european")
    m = MARKET.replace(equity_price=spot)
    t = m.time(MAT)
    exact = note.face * np.exp(-0.04 * t) + note.conversion_ratio * analytic.black_scholes(
        spot, note.conversion_price, t, 0.04, 0.0, 0.4)
    assert value(note, m) == pytest.approx(exact, rel=1e-4)


def test_spread_european_gap_to_exact_tf() -> None:
    """QuantLib blends r and r + cs by conversion probability: on a 100-face 5y note
    (S 100, conversion price 150, vol 40%, r 4%, cs 3%) it converges to 90.805
    (LR, 32001 steps) against exact TF 91.9753, a gap of 1.17."""
    note = replace(NOTE, face=100.0, conversion_ratio=100 / 150, conversion="european",
                   credit_spread=0.03)
    exact = analytic.tf_european_zero(note, MARKET)
    ql_value = value(note)
    assert exact == pytest.approx(91.9753, abs=1e-4)
    assert ql_value == pytest.approx(90.805, abs=0.01)
    assert exact - ql_value == pytest.approx(1.170, abs=0.01)
    # both lie between the risky bond plus calls and the riskless one
    calls = note.conversion_ratio * analytic.black_scholes(100, 150, MARKET.time(MAT), 0.04,
                                                           0.0, 0.4)
    assert analytic.bond_floor(note, MARKET) + calls < ql_value < exact
    assert exact < analytic.bond_floor(note, MARKET, spread=0.0) + calls


def test_put_raises_hard_call_lowers_soft_call_between() -> None:
    note = replace(NOTE, credit_spread=0.03)
    plain = value(note)
    put = value(replace(note, put_dates=(PUT,)))
    hard = value(replace(note, call_start=CALL))
    soft = value(replace(note, call_start=CALL, call_trigger=1.3))
    assert put > plain + 10
    assert hard < soft < plain
    assert plain - hard > 10 and plain - soft > 1


@pytest.mark.parametrize("spread", [0.0, 0.03])
@pytest.mark.parametrize("spot", [20.0, 50.0, 100.0, 150.0, 400.0])
def test_american_above_parity_and_put_floor(spot: float, spread: float) -> None:
    """An American convertible with a put is worth at least its parity and its
    put-adjusted bond floor (tolerance: the put date snaps to the tree's grid)."""
    note = replace(NOTE, put_dates=(PUT,), credit_spread=spread)
    m = MARKET.replace(equity_price=spot)
    lower = max(note.parity(spot), analytic.bond_floor(note, m, with_puts=True))
    assert value(note, m) >= lower * (1 - 1e-3)


def _hand_built_quantlib(note: ConvertibleNote, tree: str, steps: int) -> float:
    """The same note, QuantLib only: 100 of face, NYSE-day soft calls, 30/360 coupons."""
    ql.Settings.instance().evaluationDate = ql.Date(21, 2, 2025)
    issue, maturity = ql.Date(21, 2, 2025), ql.Date(21, 2, 2030)
    nyse = ql.UnitedStates(ql.UnitedStates.NYSE)
    sched = ql.Schedule(issue, maturity, ql.Period(6, ql.Months), ql.NullCalendar(),
                        ql.Unadjusted, ql.Unadjusted, ql.DateGeneration.Backward, False)
    callability = ql.CallabilitySchedule()
    callability.append(ql.Callability(ql.BondPrice(100.0, ql.BondPrice.Clean),
                                      ql.Callability.Put, ql.Date(22, 2, 2028)))
    for d in nyse.businessDayList(ql.Date(1, 3, 2028), maturity - 1):
        callability.append(ql.SoftCallability(ql.BondPrice(100.0, ql.BondPrice.Clean), d, 1.3))
    bond = ql.ConvertibleFixedCouponBond(
        ql.AmericanExercise(issue, maturity), 100 / 150, callability, issue, 0, [0.00625],
        ql.Thirty360(ql.Thirty360.BondBasis), sched, 100.0)
    dc = ql.Actual365Fixed()
    process = ql.BlackScholesMertonProcess(
        ql.QuoteHandle(ql.SimpleQuote(100.0)),
        ql.YieldTermStructureHandle(ql.FlatForward(issue, 0.0, dc)),
        ql.YieldTermStructureHandle(ql.FlatForward(issue, 0.04, dc)),
        ql.BlackVolTermStructureHandle(ql.BlackConstantVol(issue, ql.NullCalendar(), 0.4, dc)))
    bond.setPricingEngine(ql.BinomialConvertibleEngine(
        process, tree, steps, ql.QuoteHandle(ql.SimpleQuote(0.03))))
    return bond.NPV() * note.face / 100.0


def test_equals_quantlib_driven_by_hand() -> None:
    note = ConvertibleNote(name="coupon note", face=1000.0, notional=1e9, issue_date=VAL,
                           maturity=MAT, conversion_ratio=1000 / 150, put_dates=(PUT,),
                           call_start=CALL, call_trigger=1.3, credit_spread=0.03,
                           coupon_rate=0.00625, coupon_frequency=2)
    r = qe.price(note, MARKET, greeks=False, tree="crr", steps=400)
    assert r.value == pytest.approx(_hand_built_quantlib(note, "crr", 400), rel=1e-12)
    assert r.settings == {"engine": "quantlib", "tree": "crr", "steps": 400,
                          "call_dates": qe.CALL_DATES}


def test_coupons_add_value() -> None:
    zero = replace(NOTE, credit_spread=0.03, put_dates=(PUT,))
    fields = {k: getattr(zero, k) for k in ("name", "face", "notional", "issue_date", "maturity",
                                            "conversion_ratio", "put_dates", "credit_spread")}
    coupon = ConvertibleNote(**fields, coupon_rate=0.00625)
    gain = value(coupon) - value(zero)
    # roughly the coupons' present value (about 6.25 a year for 5 years, discounted)
    assert 15 < gain < 31


@pytest.mark.parametrize(("issue", "maturity"), [(VAL, MAT),
                                                 (date(2024, 12, 5), date(2030, 6, 15))])
def test_negligible_conversion_is_the_straight_bond(issue: date, maturity: date) -> None:
    """A tiny conversion ratio leaves the coupon bond discounted at r + cs (QuantLib's
    own limit test); QuantLib's per-step discounting is off by about
    (r + cs)^2 * T * dt / 2 = 6e-5 at 1001 steps. (The second note's short first
    period lies before the valuation date: convpricer's schedule pays a full coupon
    for a short period, QuantLib a 30/360 fraction.)"""
    note = ConvertibleNote(name="bond", face=1000.0, notional=1e9, issue_date=issue,
                           maturity=maturity, conversion_ratio=1e-6,
                           conversion="european", credit_spread=0.03, coupon_rate=0.05)
    assert value(note) == pytest.approx(analytic.bond_floor(note, MARKET), rel=1e-4)


@pytest.mark.parametrize("options", [{"steps": 5}, {"steps": 500.5}, {"steps": "400"},
                                     {"steps": True}, {"tree": "binomial"}, {"paths": 1000}])
def test_bad_options_are_refused(options: dict) -> None:
    with pytest.raises(EngineError):
        qe.price(NOTE, MARKET, **options)


def test_odd_step_trees_use_odd_steps() -> None:
    """QuantLib's LR and Joshi4 trees always use an odd step count; the engine says so."""
    r = qe.price(NOTE, MARKET, greeks=False, tree="lr", steps=400)
    assert r.settings["steps"] == 401
    assert r.value == value(NOTE, tree="lr", steps=401)


def test_equity_greeks_match_black_scholes() -> None:
    """cs = 0, European: delta = ratio * N(d1), vega = ratio * S * phi(d1) * sqrt(T); no BTC."""
    note = replace(NOTE, conversion="european")
    r = qe.price(note, MARKET)
    t = MARKET.time(MAT)
    d1 = (np.log(100 / 150) + (0.04 + 0.08) * t) / (0.4 * np.sqrt(t))
    assert r.delta_equity == pytest.approx(note.conversion_ratio * norm.cdf(d1), rel=1e-3)
    assert r.vega_equity == pytest.approx(note.conversion_ratio * 100 * norm.pdf(d1)
                                          * np.sqrt(t), rel=1e-2)
    assert r.gamma_equity > 0
    assert r.delta_btc is None and r.gamma_btc is None and r.vega_btc is None
    assert r.parity == pytest.approx(note.conversion_ratio * 100)
    assert r.bond_floor == pytest.approx(1000 * np.exp(-0.04 * t))
    assert r.units == pytest.approx(1e6)


def test_curves_are_flattened_to_maturity_and_noted() -> None:
    curve_market = MARKET.replace(
        risk_free_rate=None, equity_vol=None,
        rate_curve=Curve((date(2026, 2, 21), date(2028, 2, 21), MAT), (0.03, 0.04, 0.05)),
        equity_vol_curve=Curve((date(2026, 2, 21), MAT), (0.6, 0.4)))
    t = MARKET.time(MAT)
    flat_market = MARKET.replace(risk_free_rate=curve_market.flat_rate(t),
                                 equity_vol=curve_market.vol("equity", t))
    note = replace(NOTE, credit_spread=0.03, put_dates=(PUT,))
    r = qe.price(note, curve_market, greeks=False)
    assert r.value == pytest.approx(value(note, flat_market), rel=1e-9)
    assert any("flattened" in n for n in r.notes)


def test_n_of_m_trigger_is_single_day_and_noted() -> None:
    soft = replace(NOTE, call_start=CALL, call_trigger=1.3)
    n_of_m = replace(soft, call_trigger_days=20, call_trigger_window=30)
    r = qe.price(n_of_m, MARKET, greeks=False, steps=201)
    assert r.value == value(soft, steps=201)
    assert any("20 of 30" in n for n in r.notes)


def test_structure_hazard_refused_coverage_noted() -> None:
    with_hazard = CapitalStructure(name="issuer", btc_holdings=500_000, shares_outstanding=2.5e8,
                                   instruments=(NOTE,), hazard_rate=0.02)
    with pytest.raises(EngineError, match="hazard_rate"):
        qe.price(NOTE, MARKET, with_hazard, greeks=False)
    issuer = replace(with_hazard, hazard_rate=0.0)
    r = qe.price(NOTE, MARKET, issuer, greeks=False, steps=101)
    assert r.value == value(NOTE, steps=101)
    assert "one-factor engine: BTC coverage not modelled" in r.notes


def test_registered_as_quantlib_engine() -> None:
    r = cp.price(NOTE, MARKET, engine="quantlib", greeks=False, steps=101)
    assert r.engine == "quantlib" and r.value == value(NOTE, steps=101)
