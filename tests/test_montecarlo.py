"""The ``montecarlo`` engine: closed forms within three standard errors, agreement
with QuantLib on an American note, reproducibility, the N-of-M soft call, hazard
and structural credit, funding by BTC sales, preferreds, and the study helpers.

Kept fast with 3-year notes, 16k-32k paths and coarse grids; the slow production
settings are measured in docs/sections/montecarlo.md."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import date

import numpy as np
import pytest

import convpricer as cp
from convpricer import analytic, decisions
from convpricer.engines import montecarlo as mc
from convpricer.errors import EngineError
from convpricer.instruments import ConvertibleNote, PreferredStock, ZeroCouponConvertible
from convpricer.market import Curve, Market
from convpricer.schedule import preferred_schedule
from convpricer.structure import CapitalStructure

VAL = date(2025, 2, 21)
MAT = date(2028, 2, 22)
MARKET = Market(valuation_date=VAL, btc_price=96000.0, equity_price=100.0, btc_vol=0.5,
                equity_vol=0.4, correlation=0.5, risk_free_rate=0.04)
# A 3-year zero of 1000 face, conversion price 125, conversion at maturity only.
EURO = ZeroCouponConvertible(name="note", face=1000.0, notional=1e9, issue_date=VAL,
                             maturity=MAT, conversion_ratio=8.0, conversion="european")
AMERICAN = replace(EURO, conversion="american", put_dates=(date(2027, 2, 22),),
                   call_start=date(2026, 2, 23), call_trigger=1.3)
FAST = {"paths": 32768, "pilot_paths": 16384, "steps_per_year": 26}


def mc_price(inst, market=MARKET, structure=None, **opts) -> cp.PricingResult:
    return mc.price(inst, market, structure, greeks=False, **{**FAST, **opts})


def within(res: cp.PricingResult, exact: float, extra: float = 0.0) -> bool:
    return abs(res.value - exact) <= 3 * res.std_error + extra


# ----- closed forms ------------------------------------------------------------
def test_european_no_credit_is_black_scholes() -> None:
    """Bond plus ratio calls; without the control variate within 3 SE, with it exact
    (the European payoff is its own control)."""
    t = MARKET.time(MAT)
    exact = 1000 * math.exp(-0.04 * t) + 8.0 * analytic.black_scholes(100, 125, t, 0.04, 0, 0.4)
    plain = mc_price(EURO, control_variate=False)
    assert plain.std_error > 0
    assert within(plain, exact)
    assert mc_price(EURO).value == pytest.approx(exact, abs=1e-8)


def test_european_with_spread_is_exact_tf() -> None:
    note = replace(EURO, credit_spread=0.03)
    exact = analytic.tf_european_zero(note, MARKET)
    res = mc_price(note, control_variate=False)
    assert within(res, exact)
    # the TF split matters: discounting everything at r + cs would be far off
    assert exact - 3 * res.std_error > exact - 8.0 * analytic.black_scholes(
        100, 125, MARKET.time(MAT), 0.07, 0.0, 0.4) + 5


def test_curves_used_step_by_step() -> None:
    """Rate and vol curves: agrees with the closed form integrated along the curves."""
    m = MARKET.replace(risk_free_rate=None, equity_vol=None,
                       rate_curve=Curve((date(2026, 2, 21), date(2028, 2, 21)), (0.02, 0.05)),
                       equity_vol_curve=Curve((date(2026, 2, 21), date(2028, 2, 21)),
                                              (0.6, 0.35)))
    note = replace(EURO, credit_spread=0.02)
    res = mc_price(note, m, control_variate=False)
    assert within(res, analytic.tf_european_zero(note, m))


def test_constant_hazard_closed_form() -> None:
    """h constant, equity lost at default, European note, recovery R of face at
    default: the surviving part is Black-Scholes at rate r + h (the pre-default
    equity drifts at r + h - q - h (1 - L), i.e. carry q + h (1 - L) = q for L = 1),
    plus R face h / (r + h) (1 - exp(-(r + h) T))."""
    h, r, t = 0.05, 0.04, MARKET.time(MAT)
    s = CapitalStructure(name="issuer", btc_holdings=1e6, shares_outstanding=1e8,
                         instruments=(EURO,), hazard_rate=h)
    survive = 1000 * math.exp(-(r + h) * t) + 8.0 * analytic.black_scholes(
        100, 125, t, r + h, 0.0, 0.4)
    recovery = 0.4 * 1000 * h / (r + h) * (1 - math.exp(-(r + h) * t))
    res = mc_price(EURO, structure=s)
    assert within(res, survive + recovery)
    assert res.p_default == pytest.approx(1 - math.exp(-h * t), rel=1e-3)
    assert res.extras["variance_reduction"] > 5


# ----- American features ------------------------------------------------------------
def test_american_without_carry_equals_european() -> None:
    """No dividends, no coupon: early conversion is never optimal and the engine
    (regression floored by the hold-one-step bound) reproduces the European value."""
    res = mc_price(replace(EURO, conversion="american"))
    assert res.value == pytest.approx(mc_price(EURO).value, abs=1e-6)


def test_american_put_soft_call_agrees_with_quantlib() -> None:
    """Put and single-day soft call (QuantLib tests the trigger on every NYSE day too):
    within 3 SE plus QuantLib's tree error (about 0.1 per 1000 at its defaults)."""
    qe = pytest.importorskip("convpricer.engines.quantlib_engine")
    res = mc_price(AMERICAN)
    ql_value = qe.price(AMERICAN, MARKET, greeks=False).value
    assert within(res, ql_value, extra=0.2)
    assert res.extras["variance_reduction"] > 2


def test_coupon_note_agrees_with_quantlib() -> None:
    """Put off a coupon date. (On a coupon date this engine pays the coupon and the
    put price, as the waterfall and the indentures do; QuantLib's tree drops that
    coupon, about 5 per 1000 lower on this note.)"""
    qe = pytest.importorskip("convpricer.engines.quantlib_engine")
    note = ConvertibleNote(name="coupon", face=1000.0, notional=1e9, issue_date=date(2024, 3, 15),
                           maturity=MAT, conversion_ratio=8.0, coupon_rate=0.03,
                           put_dates=(date(2027, 3, 22),))
    res = mc_price(note)
    assert within(res, qe.price(note, MARKET, greeks=False).value, extra=0.2)


def test_n_of_m_soft_call_between_single_day_and_no_call() -> None:
    """A call needing 20 of 30 closes above 130% is harder to trigger than one
    needing a single close: the note is worth more, and less than with no call.
    Common random numbers make the ordering sharp."""
    no_call = mc_price(PUTTABLE)
    single = mc_price(AMERICAN)
    n_of_m = mc_price(replace(AMERICAN, call_trigger_days=20, call_trigger_window=30))
    assert single.value + 3 * single.std_error < n_of_m.value
    assert n_of_m.value + 3 * n_of_m.std_error < no_call.value
    assert n_of_m.settings["monitoring"] == "daily"


def test_put_floor_and_parity_bounds() -> None:
    res = mc_price(AMERICAN, paths=8192)
    assert res.value >= res.parity
    assert res.value >= 1000 * math.exp(-0.04 * MARKET.time(date(2027, 2, 22))) - 0.5


# ----- reproducibility ------------------------------------------------------------
PUTTABLE = replace(AMERICAN, call_start=None, call_trigger=None)


def test_same_seed_same_number_other_seed_other_number() -> None:
    a = mc_price(PUTTABLE, paths=8192, seed=7)
    b = mc_price(PUTTABLE, paths=8192, seed=7)
    c = mc_price(PUTTABLE, paths=8192, seed=8)
    assert a.value == b.value and a.std_error == b.std_error
    assert c.value != a.value
    assert abs(c.value - a.value) < 4 * math.hypot(a.std_error, c.std_error)
    assert a.settings["seed"] == 7 and a.settings["generator"] == "PCG64"


def test_batch_size_does_not_change_the_number() -> None:
    """One random stream per block of paths: batches are a memory knob only."""
    a = mc_price(PUTTABLE, paths=8192, batch=2048)
    b = mc_price(PUTTABLE, paths=8192, batch=8192)
    assert a.value == pytest.approx(b.value, abs=1e-9)


def test_default_seed_recorded() -> None:
    res = mc_price(EURO, paths=4096)
    assert res.settings["seed"] == mc.DEFAULT_SEED
    assert res.settings["paths"] == 4096 and res.std_error is not None


# ----- structural credit and funding ------------------------------------------------------------
def _thin(holdings: float) -> CapitalStructure:
    note = replace(EURO, conversion="american", put_dates=(date(2027, 2, 22),))
    return CapitalStructure(name="issuer", btc_holdings=holdings, shares_outstanding=1e8,
                            instruments=(note,))


def test_thin_coverage_defaults_and_costs() -> None:
    """1e9 of notes against 12,000 BTC (1.15x coverage): structural defaults at the
    put date and maturity make the note worth less than with unlimited coverage."""
    thin = _thin(12000.0)
    note = thin.instruments[0]
    res = mc_price(note, structure=thin)
    free = mc_price(note)
    assert res.p_default > 0.05 and res.p_impaired > 0.05
    assert res.value + 3 * res.std_error < free.value
    rich = mc_price(note, structure=_thin(1e6))
    assert rich.p_default == 0.0
    assert rich.value == pytest.approx(free.value, abs=3 * free.std_error)


def test_btc_sales_funding_direction() -> None:
    """A 1-year note A, almost surely repaid in cash, and the 3-year note B. Static:
    A is refinanced and still counts at B's due dates. btc_sales: A is paid by
    selling BTC at the path's price and leaves the structure; defaults at B's
    dates need BTC to have fallen since, so B defaults less and is worth more."""
    a = replace(EURO, name="A", maturity=date(2026, 2, 23), conversion_ratio=1.0)
    b = replace(EURO, name="B", conversion="american")
    s = CapitalStructure(name="issuer", btc_holdings=25000.0, shares_outstanding=1e8,
                         instruments=(a, b))
    static = mc_price(b, structure=s)
    sales = mc_price(b, structure=s, funding="btc_sales")
    assert sales.settings["funding"] == "btc_sales"
    assert sales.p_default < static.p_default
    assert sales.value > static.value + 2 * static.std_error
    paths = mc.simulate_claim(b, MARKET, s, paths=4096, funding="btc_sales", pilot_paths=4096,
                              steps_per_year=12)
    assert np.all(paths.btc_left <= 25000.0 + 1e-9)
    assert np.any(paths.btc_left < 25000.0 - 1.0)   # A's repayment sold BTC


def test_correlation_limits() -> None:
    """rho = +-1: Cholesky with a zero second factor; B and S move as one."""
    for rho in (1.0, -1.0):
        m = MARKET.replace(correlation=rho)
        sim = mc.simulate(None, m, 1.0, 4096, steps_per_year=12)
        rb, rs = np.diff(np.log(sim.btc), axis=1), np.diff(np.log(sim.equity), axis=1)
        assert np.corrcoef(rb.ravel(), rs.ravel())[0, 1] == pytest.approx(rho, abs=1e-9)
        s = _thin(12000.0)
        res = mc_price(s.instruments[0], m, s, paths=8192)
        assert math.isfinite(res.value) and res.std_error > 0


# ----- preferred stock ------------------------------------------------------------
def test_straight_preferred_without_issuer_is_an_annuity() -> None:
    """Not convertible, not callable, unlimited coverage: every dividend is paid and
    the terminal value is the preference, a deterministic sum (no noise)."""
    pref = PreferredStock(name="pref", liquidation_preference=100.0, units=1e7,
                          dividend_rate=0.08)
    res = mc.price(pref, MARKET, greeks=False, paths=4096, preferred_horizon=10)
    end = MARKET.time(date.fromisoformat(res.settings["preferred_horizon_date"]))
    sch = preferred_schedule(pref, VAL, end)
    exact = float(np.sum(2.0 * MARKET.discount(sch.dividend_times))) \
        + 100.0 * float(MARKET.discount(sch.horizon))
    assert res.value == pytest.approx(exact, rel=1e-9)
    assert res.std_error == pytest.approx(0.0, abs=1e-9)


def test_cumulative_arrears_tracked_per_path() -> None:
    """Notes of 2e9 against 25,000 BTC: dividends stop whenever BTC falls, arrears
    accumulate path by path (in whole dividends) and the preferred is worth less
    than with unlimited coverage."""
    note = replace(EURO, notional=2e9)
    pref = PreferredStock(name="pref", liquidation_preference=100.0, units=1e7,
                          dividend_rate=0.08, cumulative=True)
    s = CapitalStructure(name="issuer", btc_holdings=25000.0, shares_outstanding=1e8,
                         instruments=(note, pref))
    opts = {"paths": 8192, "pilot_paths": 4096, "preferred_horizon": 5}
    paths = mc.simulate_claim(pref, MARKET, s, **opts)
    assert paths.arrears.max() > 0
    whole = paths.arrears / pref.dividend
    assert np.allclose(whole, np.round(whole))
    capped = mc.price(pref, MARKET, s, greeks=False, **opts)
    free = mc.price(pref, MARKET, greeks=False, **opts)
    assert capped.value + 3 * capped.std_error < free.value
    assert capped.p_default > 0


# ----- studies, greeks, options ------------------------------------------------------------
def test_simulate_is_risk_neutral() -> None:
    sim = mc.simulate(None, MARKET, MAT, 32768, steps_per_year=4)
    t = MARKET.time(MAT)
    disc = np.exp(-0.04 * t)
    for x, spot in ((sim.btc[:, -1], 96000.0), (sim.equity[:, -1], 100.0)):
        pairs = (disc * x).reshape(-1, 2, mc.BLOCK // 2).mean(axis=1)
        assert abs(pairs.mean() - spot) < 4 * pairs.std() / math.sqrt(pairs.size)
    assert sim.btc.shape == (32768, sim.times.size) and sim.survival is None


def test_simulate_claim_outcomes_add_up() -> None:
    paths = mc.simulate_claim(AMERICAN, MARKET, paths=8192, pilot_paths=8192, steps_per_year=26)
    shares = sum(paths.share(name) for name in mc.OUTCOMES.values())
    assert shares == pytest.approx(1.0)
    assert np.mean(paths.value) == pytest.approx(paths.estimate, abs=5 * paths.std_error + 2)
    conv = np.isin(paths.outcome, (decisions.CONVERTED, decisions.CALLED_CONVERTED))
    assert np.all(paths.shares[conv] == 8.0) and np.all(paths.cash[conv] == 0.0)


def test_greeks_by_common_random_numbers() -> None:
    """European note: the control makes the value exact, so the bumped greeks are the
    closed form's; without a structure BTC does not enter."""
    res = mc.price(EURO, MARKET, paths=4096)
    t = MARKET.time(MAT)
    d1 = (math.log(100 / 125) + (0.04 + 0.08) * t) / (0.4 * math.sqrt(t))
    from scipy.stats import norm
    assert res.delta_equity == pytest.approx(8.0 * norm.cdf(d1), rel=2e-3)
    assert res.delta_btc == 0.0 and res.correlation_sensitivity == 0.0
    assert res.vega_equity > 0


def test_via_top_level_price() -> None:
    res = cp.price(AMERICAN, MARKET, engine="montecarlo", greeks=False, paths=4096,
                   pilot_paths=4096, steps_per_year=12)
    assert res.engine == "montecarlo" and res.std_error > 0


@pytest.mark.parametrize("opts", [{"bogus": 1}, {"monitoring": "weekly"},
                                  {"funding": "equity"}, {"paths": 0}, {"antithetic": "yes"},
                                  {"preferred_horizon": 500}])
def test_bad_options_refused(opts: dict) -> None:
    with pytest.raises(EngineError):
        mc.price(EURO, MARKET, greeks=False, **opts)


# ----- forced-conversion calls, early conversion, degenerate controls ----------------------------
def test_call_forcing_conversion_at_valuation_is_parity() -> None:
    """Callable now and the 130% trigger holds: the call forces conversion, so the
    note is worth exactly its conversion value, decided without regression."""
    note = replace(AMERICAN, call_start=VAL, put_dates=())
    m = MARKET.replace(equity_price=200.0)
    res = mc_price(note, m, paths=4096)
    assert res.value == pytest.approx(8.0 * 200.0, abs=1e-9)
    assert any("called_converted" in n for n in res.notes)


def test_deep_in_the_money_soft_call_coupon_note_agrees_with_quantlib() -> None:
    """Parity 1200 (trigger 1.3 x 83.3): the call forces conversion on most paths
    once it is allowed, where the claim stops at parity whatever the continuation
    (decided exactly): within 3 SE of QuantLib plus its tree error."""
    qe = pytest.importorskip("convpricer.engines.quantlib_engine")
    note = ConvertibleNote(name="deep", face=1000.0, notional=1e9, issue_date=date(2024, 3, 15),
                           maturity=MAT, conversion_ratio=12.0, coupon_rate=0.03,
                           call_start=date(2026, 2, 23), call_trigger=1.3)
    res = mc_price(note)
    assert within(res, qe.price(note, MARKET, greeks=False).value, extra=0.3)


def test_no_early_conversion_of_an_in_the_money_coupon_note() -> None:
    """No dividends: before maturity a holder converts only when called (the
    regression used to convert on 20-46% of paths of the fixtures' coupon notes
    where the call would force conversion anyway). Measured 0 of 16,384 here."""
    note = ConvertibleNote(name="cpn", face=1000.0, notional=1e9, issue_date=date(2024, 3, 15),
                           maturity=MAT, conversion_ratio=10.0, coupon_rate=0.02,
                           put_dates=(date(2027, 3, 22),), call_start=date(2026, 2, 23),
                           call_trigger=1.3, call_trigger_days=20, call_trigger_window=30)
    paths = mc.simulate_claim(note, MARKET, paths=16384, pilot_paths=8192, steps_per_year=26)
    early = np.mean((paths.outcome == decisions.CONVERTED)
                    & (paths.stop_time < paths.times[-1] - 1e-9))
    assert early < 1e-3
    assert paths.share("called_converted") > 0.2


def test_very_high_coverage_tends_to_no_structure() -> None:
    """5,000x coverage: no default, the value is the no-structure value (the
    default-shape regressors, non-zero on a handful of pilot paths, used to be
    fitted to their noise: 1479.5 +- 0.6 against 1500.9)."""
    note = ZeroCouponConvertible(name="n", face=1000.0, notional=1e7, issue_date=VAL,
                                 maturity=date(2027, 2, 22), conversion_ratio=100.0,
                                 seniority="secured", recovery_rate=0.0)
    m = MARKET.replace(btc_price=20000.0, equity_price=10.0, btc_vol=0.25, equity_vol=1.0,
                       correlation=0.0, risk_free_rate=0.0, equity_dividend_yield=0.015625)
    s = CapitalStructure(name="issuer", btc_holdings=2.5e6, shares_outstanding=5e5,
                         instruments=(note,))
    opts = {"pilot_paths": 2048, "steps_per_year": 12, "monitoring": "grid", "seed": 7}
    free = mc_price(note, m, **opts)
    rich = mc_price(note, m, s, **opts)
    assert rich.p_default == 0.0
    assert abs(rich.value - free.value) <= 3 * math.hypot(rich.std_error, free.std_error) + 1.0


def test_unsampled_control_is_left_out() -> None:
    """A 3-month note whose conversion option no path reaches: the European control
    does not vary, and a beta of noise over ~0 gave 5.7e6 for a note worth about
    its liquidation value (0.375x coverage)."""
    note = ZeroCouponConvertible(name="n", face=1000.0, notional=1e7, issue_date=VAL,
                                 maturity=date(2025, 5, 22), conversion_ratio=20.3125,
                                 seniority="secured", recovery_rate=0.0)
    m = MARKET.replace(btc_price=20000.0, equity_price=10.0, btc_vol=0.15, equity_vol=1.0,
                       correlation=0.0)
    s = CapitalStructure(name="issuer", btc_holdings=187.5, shares_outstanding=3.75e5,
                         instruments=(note,))
    res = mc_price(note, m, s, paths=2048, pilot_paths=2048, seed=7)
    liquidation = 187.5 * 20000.0 / 1e4 * math.exp(-0.04 * m.time(note.maturity))
    assert res.p_default > 0.5
    assert 0.5 * liquidation < res.value < 1000.0


def test_rare_event_control_is_left_out() -> None:
    """European zero at 23x coverage: one path of 2,048 reaches the BTC put's
    strike and defaults. A beta fitted to that one path made the residual
    constant: 71 below the no-structure value with a standard error of 0."""
    val = date(2025, 6, 30)
    note = ZeroCouponConvertible(name="n", face=1000.0, notional=1.4755e7, issue_date=val,
                                 maturity=date(2027, 6, 30), conversion_ratio=100.0,
                                 conversion="european", seniority="secured", recovery_rate=0.0)
    junior = PreferredStock(name="p", liquidation_preference=100.0, units=133309.0,
                            dividend_rate=0.0)
    m = Market(valuation_date=val, btc_price=20000.0, equity_price=10.0, btc_vol=0.75,
               equity_vol=1.0, correlation=0.0, risk_free_rate=0.0625)
    s = CapitalStructure(name="issuer", btc_holdings=16 * 2808.59, shares_outstanding=5617180.0,
                         instruments=(junior, note))
    opts = {"paths": 2048, "pilot_paths": 2048, "steps_per_year": 12, "monitoring": "grid",
            "seed": 7}
    free = mc_price(note, m, **opts)
    rich = mc_price(note, m, s, **opts)
    assert rich.std_error > 0
    assert abs(rich.value - free.value) <= 3 * rich.std_error + 5.0
