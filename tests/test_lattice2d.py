"""The ``lattice2d`` engine against closed forms (Black-Scholes, exact
Tsiveriotis-Fernandes, Margrabe, a constant hazard), one-dimensional integrals
(structural default at maturity, a put under curves), QuantLib, a daily Monte
Carlo of soft calls, and the bounds and orderings any convertible obeys."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate
from scipy.special import ndtr
from scipy.stats import norm

from benchmarks import nofm_reference
from convpricer import analytic, engines
from convpricer.engines import lattice2d as lat
from convpricer.engines import nofm
from convpricer.errors import EngineError, InputError
from convpricer.instruments import ConvertibleNote, PreferredStock, ZeroCouponConvertible
from convpricer.market import Curve, Market
from convpricer.structure import CapitalStructure

VAL = date(2025, 1, 2)
MAT = date(2030, 1, 2)
MARKET = Market(valuation_date=VAL, btc_price=100_000.0, equity_price=100.0, btc_vol=0.55,
                equity_vol=0.6, correlation=0.7, risk_free_rate=0.04)
#: 5-year zero, conversion price 1000 / 7 = 142.86, American conversion.
NOTE = ZeroCouponConvertible(name="note", face=1000.0, notional=1e9, issue_date=VAL,
                             maturity=MAT, conversion_ratio=7.0)
T = MARKET.time(MAT)


def value(inst, market: Market = MARKET, structure: CapitalStructure | None = None,
          **options) -> float:
    return lat.price(inst, market, structure, greeks=False, **options).value


def alone(inst, *, btc: float = 100_000.0, cash: float = 0.0, **issuer) -> CapitalStructure:
    """A capital structure holding only ``inst``."""
    return CapitalStructure(name="issuer", btc_holdings=btc, cash=cash,
                            shares_outstanding=1e8, instruments=(inst,), **issuer)


def bs_call(s, k, t, r, vol):
    sd = vol * np.sqrt(t)
    d1 = (np.log(s / k) + (r + vol * vol / 2) * t) / sd
    return s * ndtr(d1) - k * np.exp(-r * t) * ndtr(d1 - sd)


# ----- closed forms ---------------------------------------------------------------
@pytest.mark.parametrize("spot", [60.0, 100.0, 250.0])
def test_unlimited_coverage_european_is_bond_plus_calls(spot: float) -> None:
    """No structure, no spread, conversion at maturity only: face DF + ratio * call."""
    note = replace(NOTE, conversion="european")
    m = MARKET.replace(equity_price=spot)
    exact = 1000 * math.exp(-0.04 * T) + 7 * analytic.black_scholes(spot, 1000 / 7, T, 0.04,
                                                                     0.0, 0.6)
    assert value(note, m) == pytest.approx(exact, rel=1e-4)


def test_american_without_dividends_is_european() -> None:
    """Early conversion never pays without dividends or credit: American = European."""
    assert value(NOTE) == pytest.approx(value(replace(NOTE, conversion="european")), rel=1e-4)


@pytest.mark.parametrize("spread", [0.01, 0.05])
def test_credit_spread_european_is_exact_tf(spread: float) -> None:
    note = replace(NOTE, conversion="european", credit_spread=spread)
    assert value(note) == pytest.approx(analytic.tf_european_zero(note, MARKET), rel=1e-4)


CURVES = MARKET.replace(
    risk_free_rate=None, equity_vol=None,
    rate_curve=Curve((date(2026, 1, 2), date(2027, 7, 2), date(2030, 1, 2)),
                     (0.030, 0.045, 0.040)),
    equity_vol_curve=Curve((date(2026, 1, 2), date(2027, 7, 2), date(2030, 1, 2)),
                           (0.80, 0.65, 0.55)))


def test_curves_european_is_the_closed_form() -> None:
    """Rate and vol curves step by step = closed form with the integrated rate and
    total variance."""
    note = replace(NOTE, conversion="european", credit_spread=0.02)
    assert value(note, CURVES) == pytest.approx(analytic.tf_european_zero(note, CURVES),
                                                rel=1e-4)


def test_put_at_a_curve_date_is_an_integral_over_the_stock() -> None:
    """Put at 2027-07-02 (a curve date). Without dividends early conversion never
    pays, so continuation there is the European note on the rest of the curves:
    value = D(tp) E[max(put, C(tp, S_tp))], S_tp lognormal with variance V(tp)."""
    tp_date = date(2027, 7, 2)
    note = replace(NOTE, put_dates=(tp_date,), put_price=1000.0)
    m = CURVES
    tp = m.time(tp_date)
    d_p, d_t = float(m.discount(tp)), float(m.discount(T))
    v_p = float(m.variance("equity", tp))
    v_rest = float(m.variance("equity", T)) - v_p
    r_rest = math.log(d_p / d_t) / (T - tp)
    fwd = 100.0 / d_p

    def payoff(x: float) -> float:
        s = fwd * math.exp(-v_p / 2 + math.sqrt(v_p) * x)
        cont = 1000 * d_t / d_p + 7 * bs_call(s, 1000 / 7, T - tp, r_rest,
                                              math.sqrt(v_rest / (T - tp)))
        return max(1000.0, cont) * norm.pdf(x)

    exact = d_p * integrate.quad(payoff, -10, 10, limit=200, epsabs=1e-10)[0]
    assert value(note, m) == pytest.approx(exact, rel=1e-4)


def test_constant_hazard_with_total_equity_loss() -> None:
    """h constant, equity lost at default, European: survival discounts at r + h and
    the stock drifts at r + h, so value = face e^-(r+h)T + ratio * BS call at rate
    r + h, plus recovery * face * h / (r + h) * (1 - e^-(r+h)T)."""
    h, rec = 0.05, 0.4
    note = replace(NOTE, conversion="european", recovery_rate=rec)
    s = alone(note, btc=1e9, hazard_rate=h, default_equity_loss=1.0)
    x = 0.04 + h
    exact = (1000 * math.exp(-x * T) + 7 * analytic.black_scholes(100, 1000 / 7, T, x, 0.0, 0.6)
             + rec * 1000 * h / x * (1 - math.exp(-x * T)))
    assert value(note, structure=s) == pytest.approx(exact, rel=1e-4)
    # hazard_rate 0 (and coverage that never fails) gives the unlimited-coverage value
    no_hazard = value(note, structure=alone(note, btc=1e9))
    assert no_hazard == pytest.approx(value(note), rel=1e-9)


def test_state_dependent_hazard_is_a_default_risk() -> None:
    """h(S) = 5% (S / S0)^-1.5: worth less than without hazard, more than recovery."""
    s = alone(NOTE, btc=1e9, hazard_rate=0.05, hazard_exponent=1.5, default_equity_loss=0.8)
    r = lat.price(NOTE, MARKET, s, greeks=False)
    assert 400.0 < r.value < value(NOTE)
    assert 0.0 < r.p_default < 1.0
    assert r.p_impaired == pytest.approx(r.p_default)


# ----- two factors -----------------------------------------------------------------------
def margrabe_preferred(market: Market, horizon: float = 3.0):
    """A convertible preferred paying nothing whose claim dwarfs the issuer: at the
    horizon it takes every asset (k B, k = BTC per share) or converts (n S), and
    early conversion never pays, so its value is E[max(n S, k B)] discounted:
    k B0 e^-qT + exchange option."""
    pref = PreferredStock(name="pref", liquidation_preference=1e6, units=1e6,
                          dividend_rate=0.0, conversion_ratio=2.0)
    s = alone(pref, btc=10_000.0)                 # k = 0.01 BTC per share
    t = market.time(VAL.replace(year=VAL.year + int(horizon)))
    return pref, s, t


@pytest.mark.parametrize("rho", [-1.0, -0.3, 0.7, 1.0])
def test_margrabe_exchange_option(rho: float) -> None:
    m = MARKET.replace(correlation=rho)
    pref, s, t = margrabe_preferred(m)
    exact = 0.01 * 100_000 + analytic.margrabe(2 * 100.0, 0.01 * 100_000, t, 0.0, 0.0, 0.6,
                                               0.55, rho)
    assert value(pref, m, s, preferred_horizon=3.0) == pytest.approx(exact, rel=2e-4)


def test_margrabe_under_vol_curves() -> None:
    """Vol curves on the same dates: the exchange option's variance is
    V_S + V_B - 2 rho sum sqrt(dV_S dV_B) (forward vols are constant between dates);
    the lattice's coordinates then have a covariance on every step."""
    dates = (date(2026, 1, 2), date(2027, 1, 2), date(2028, 1, 2))
    m = MARKET.replace(equity_vol=None, btc_vol=None,
                       equity_vol_curve=Curve(dates, (0.9, 0.75, 0.65)),
                       btc_vol_curve=Curve(dates, (0.4, 0.5, 0.6)))
    pref, s, t = margrabe_preferred(m)
    grid = np.array([0.0, *(m.time(d) for d in dates[:-1]), t])
    dvs, dvb = np.diff(m.variance("equity", grid)), np.diff(m.variance("btc", grid))
    var = dvs.sum() + dvb.sum() - 2 * 0.7 * np.sqrt(dvs * dvb).sum()
    f1, f2 = 200.0, 1000.0
    d1 = (math.log(f1 / f2) + var / 2) / math.sqrt(var)
    exact = f2 + f1 * norm.cdf(d1) - f2 * norm.cdf(d1 - math.sqrt(var))
    assert value(pref, m, s, preferred_horizon=3.0) == pytest.approx(exact, rel=3e-4)


def structural_european(note: ZeroCouponConvertible, s: CapitalStructure, m: Market) -> float:
    """One note, conversion at maturity only, default when assets < face at maturity:
    E[e^-rT (1{solvent} max(n S, F) + 1{insolvent} assets / notes)], an integral over
    ln B_T with S_T | B_T lognormal (variance sigma_S^2 T (1 - rho^2))."""
    r, sb, ss, rho = 0.04, m.btc_vol, m.equity_vol, m.correlation
    mb = math.log(m.btc_price) + (r - sb * sb / 2) * T
    ms = math.log(m.equity_price) + (r - ss * ss / 2) * T
    n, face = note.conversion_ratio, note.face
    x_star = (math.log(s.debt / s.btc_holdings) - mb) / (sb * math.sqrt(T))
    v = ss * ss * T * (1 - rho * rho)

    def solvent(x: float) -> float:
        mu = ms + rho * ss * math.sqrt(T) * x
        if v < 1e-14:
            return max(n * math.exp(mu), face) * norm.pdf(x)
        d1 = (mu + v - math.log(face / n)) / math.sqrt(v)
        return (face + n * (math.exp(mu + v / 2) * norm.cdf(d1)
                            - face / n * norm.cdf(d1 - math.sqrt(v)))) * norm.pdf(x)

    def insolvent(x: float) -> float:
        return s.btc_holdings * math.exp(mb + sb * math.sqrt(T) * x) / note.units * norm.pdf(x)

    low = integrate.quad(insolvent, -12, x_star, limit=200, epsabs=1e-10)[0]
    high = integrate.quad(solvent, x_star, 12, limit=200, epsabs=1e-10)[0]
    return math.exp(-r * T) * (low + high)


STRUCTURAL = replace(NOTE, conversion="european", notional=5e9)   # default below B = 50,000


@pytest.mark.parametrize("rho", [-1.0, 0.0, 0.7, 1.0])
def test_structural_default_at_maturity_is_an_integral(rho: float) -> None:
    m = MARKET.replace(correlation=rho)
    s = alone(STRUCTURAL)
    r = lat.price(STRUCTURAL, m, s, greeks=False)
    assert r.value == pytest.approx(structural_european(STRUCTURAL, s, m), rel=1e-3)
    # the default probability is P(B_T < 50,000)
    z = (math.log(0.5) - (0.04 - 0.55 ** 2 / 2) * T) / (0.55 * math.sqrt(T))
    assert r.p_default == pytest.approx(norm.cdf(z), abs=2e-3)


def test_structural_note_value_rises_with_correlation() -> None:
    """Defaults then come with low stock prices, when the conversion right lost in
    a default is worth little."""
    s = alone(STRUCTURAL)
    values = [value(STRUCTURAL, MARKET.replace(correlation=rho), s)
              for rho in (-1.0, -0.5, 0.0, 0.5, 1.0)]
    assert np.all(np.diff(values) > 0), values


# ----- QuantLib --------------------------------------------------------------------------
def test_agrees_with_quantlib_with_put_and_soft_call() -> None:
    """Unlimited coverage, no spread: QuantLib's tree (LR, 3201 steps, error about
    1e-4) on an American note with a put and a 130% soft call tested every NYSE day."""
    try:
        ql_engine = engines.get("quantlib")
    except EngineError as e:
        pytest.skip(str(e))
    m = MARKET.replace(equity_vol=0.5)
    note = replace(NOTE, put_dates=(date(2028, 1, 3),), call_start=date(2027, 1, 4),
                   call_trigger=1.3)
    ql_value = ql_engine.price(note, m, greeks=False, steps=3201).value
    assert value(note, m) == pytest.approx(ql_value, rel=2e-4)
    plain = replace(NOTE, conversion="american")
    assert value(plain, m) == pytest.approx(ql_engine.price(plain, m, greeks=False,
                                                            steps=3201).value, rel=1e-4)


# ----- calls, puts, bounds ----------------------------------------------------------------
def test_called_at_par_when_parity_is_twice_par() -> None:
    note = replace(NOTE, call_start=VAL)
    m = MARKET.replace(equity_price=2000 / 7)
    assert value(note, m) == pytest.approx(2000.0, rel=1e-9)


def test_put_raises_and_call_lowers_the_value() -> None:
    base = value(NOTE)
    put = value(replace(NOTE, put_dates=(date(2028, 1, 3),)))
    call = value(replace(NOTE, call_start=date(2027, 1, 4)))
    soft = value(replace(NOTE, call_start=date(2027, 1, 4), call_trigger=1.3))
    assert put > base + 1
    assert call < soft < base - 1


@pytest.mark.parametrize("spot", [40.0, 100.0, 300.0])
def test_american_note_above_parity_and_put_adjusted_floor(spot: float) -> None:
    note = ConvertibleNote(name="c", face=1000.0, notional=1e9, issue_date=date(2024, 3, 1),
                           maturity=MAT, conversion_ratio=7.0, coupon_rate=0.02,
                           put_dates=(date(2027, 3, 1),), credit_spread=0.03)
    m = MARKET.replace(equity_price=spot)
    r = lat.price(note, m, greeks=False)
    floor = analytic.bond_floor(note, m, with_puts=True)
    assert r.value >= max(note.parity(spot), floor) - 1e-9
    assert r.bond_floor == pytest.approx(analytic.bond_floor(note, m))


# ----- N-of-M soft calls -----------------------------------------------------------------
def test_trigger_shift() -> None:
    """A single-day rule is the Broadie-Glasserman-Kou shift, which the estimator
    reproduces; 20 of 30 days sits about 4.2 daily standard deviations up."""
    assert lat.trigger_shift(1, 1) == lat.trigger_shift(1, 30) == pytest.approx(0.5826, abs=1e-4)
    assert lat.simulated_shift(1, 1) == pytest.approx(0.5826, abs=0.01)
    assert lat.trigger_shift(20, 30) == pytest.approx(4.21, abs=0.05)
    assert lat.trigger_shift(10, 30) < lat.trigger_shift(20, 30) < lat.trigger_shift(30, 30)


def test_n_of_m_call_between_single_day_and_no_call() -> None:
    callable_ = replace(NOTE, call_start=date(2027, 1, 4), call_trigger=1.3)
    single = value(callable_)
    n_of_m = value(replace(callable_, call_trigger_days=20, call_trigger_window=30))
    assert single < n_of_m < value(NOTE)


def daily_soft_call(note: ZeroCouponConvertible, m: Market, paths: int = 40_000) -> tuple:
    """Monte Carlo with daily closes (252 a year) of a zero-coupon note with a soft
    call and no put, flat market without dividends. The issuer calls on the first
    day the trigger rule holds (days before the valuation date count as below; the
    note is then worth more than the call price or its conversion value, whichever
    holders take); then
    value = European + E[e^-r tau (max(n S_tau, face) - European(tau, S_tau))]."""
    r, vol, n, face = m.risk_free_rate, m.equity_vol, note.conversion_ratio, note.face
    days = round(T * 252)
    dt = T / days
    need, window = note.call_trigger_days or 1, note.call_trigger_window or 1
    t_call = max(0.0, m.time(note.call_start))
    rng = np.random.default_rng(11)
    z = np.log(m.equity_price) * np.ones(paths)
    ring = np.zeros((window, paths), bool)
    count = np.zeros(paths, np.int32)
    alive = np.ones(paths, bool)
    gain = np.zeros(paths)
    for d in range(1, days):
        half = rng.standard_normal(paths // 2)
        z += (r - vol * vol / 2) * dt + vol * math.sqrt(dt) * np.concatenate([half, -half])
        above = z >= math.log(note.call_trigger_price)
        count += above.astype(np.int32) - ring[d % window]
        ring[d % window] = above
        if d * dt < t_call - 1e-12:
            continue
        called = alive & (count >= need)
        if called.any():
            s, left = np.exp(z[called]), T - d * dt
            euro = face * math.exp(-r * left) + n * bs_call(s, face / n, left, r, vol)
            gain[called] = (np.maximum(n * s, face) - euro) * math.exp(-r * d * dt)
            alive &= ~called
    european = face * math.exp(-r * T) + n * bs_call(m.equity_price, face / n, T, r, vol)
    return european + gain.mean(), gain.std() / math.sqrt(paths)


#: Exact daily references (benchmarks/nofm_reference.py; 2,097,152 paths, standard
#: errors 0.002-0.008%): zero-coupon Strategy notes without put, unlimited coverage.
NOFM_REFERENCE = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "nofm_reference.json"


def _nofm_cases() -> list:
    rows = json.loads(NOFM_REFERENCE.read_text())["values"]
    return [pytest.param(r, id=f"{r['note']}-{r['fixture'][9:19]}-{r['call_start']}-"
                               f"{r['trigger_days'] or 1}of{30 if r['trigger_days'] else 1}"
                               + (f"-S{r['s_over_trigger']}K" if r.get("s_over_trigger")
                                  else ""))
            for r in rows]


def _nofm_note(row: dict) -> tuple[ZeroCouponConvertible, Market]:
    """The reference's case, as benchmarks/nofm_reference.py built it."""
    return nofm_reference.case(row["fixture"], row["note"], row["call_start"],
                               row["trigger_days"], row.get("s_over_trigger"))


@pytest.mark.parametrize("row", _nofm_cases())
def test_soft_call_against_exact_daily_reference(row: dict) -> None:
    """The N-of-M rule against the exact daily rule (docs/sections/lattice2d.md, at
    the defaults): a hot start (callable within the rule's first window: per-close
    hazard, then the barrier) measured within 0.023%, a future first call date
    (bridge-conditioned first date, then the barrier) within 0.01%; a single-day
    rule -0.15% with the stock at 0.9 x the trigger, callable now."""
    note, m = _nofm_note(row)
    days = row["trigger_days"]
    v = lat.price(note, m, greeks=False)
    hot = nofm.is_hot_start(note, m)
    assert (nofm.HOT_NOTE in v.notes) == hot == ("hot_start" in v.settings)
    # callable at once, or the 2027 notes (callable since 2024-12-20) at 2024-12-31
    assert hot == bool(days and (row["call_start"] == "now" or "2027" in row["note"]))
    tol = 4e-4 if days else 2e-3 if row.get("s_over_trigger") else 1e-3
    assert v.value == pytest.approx(row["value"], rel=tol, abs=3 * row["se"])


def test_hot_start_is_a_call_within_the_first_window() -> None:
    """A hot start: N of M, a call possible within the rule's first M closes, whatever
    the stock; not one: a later first call date, a single-day rule."""
    soft = replace(NOTE, call_start=VAL, call_trigger=1.3, call_trigger_days=20,
                   call_trigger_window=30)
    for s in (60.0, 140.0, 190.0, 400.0):
        assert nofm.is_hot_start(soft, MARKET.replace(equity_price=s))
    assert not nofm.is_hot_start(replace(soft, call_start=date(2027, 1, 4)), MARKET)
    assert not nofm.is_hot_start(replace(soft, call_trigger_days=None,
                                         call_trigger_window=None), MARKET)
    assert nofm.is_hot_start(replace(soft, call_start=VAL + timedelta(days=30)), MARKET)
    assert not nofm.is_hot_start(replace(soft, call_start=VAL + timedelta(days=60)), MARKET)
    # maturity before the rule's 20th close: no call possible, so no hot start (and no
    # note or setting saying there is one)
    short = replace(soft, maturity=VAL + timedelta(days=10))
    assert not nofm.is_hot_start(short, MARKET)
    res = lat.price(short, MARKET.replace(equity_price=190.0), greeks=False)
    assert nofm.HOT_NOTE not in res.notes and "hot_start" not in res.settings


def test_hot_start_hazard_is_a_probability_rising_with_the_stock() -> None:
    """The kill probability per step and cell: in [0, 1]; nothing before the rule can
    hold (N - 1 closes); on the first possible close the share of paths above on all N
    closes, so about 0 far below the trigger and about 1 far above it; on average
    over steps it rises with the stock."""
    soft = replace(NOTE, call_start=VAL, call_trigger=1.3, call_trigger_days=20,
                   call_trigger_window=30)
    m = MARKET.replace(equity_price=190.0)
    hot = nofm.hot_start(soft, m)
    times = np.linspace(0.0, hot.end, 101)
    edges = math.log(185.71) + np.linspace(-1.0, 1.0, 81)
    kill = hot.hazards([(times, edges)])[0]
    assert kill.shape == (101, 80) and kill.min() >= 0.0 and kill.max() <= 1.0
    first = np.searchsorted(times, hot.hot_times[0] - 1e-12)
    assert not kill[:first].any() and kill[first:].any()
    assert kill[first, :10].max() < 0.01 and kill[first, -10:].min() > 0.99
    mean = kill[first:].mean(axis=0)
    assert np.all(np.diff(mean[20:60]) > -0.02)


def test_hot_start_greeks_are_smooth() -> None:
    """Bumped markets weight the unbumped market's paths (likelihood ratio): the value
    is a smooth function of S0, so gammas by bumps agree from one S0 to the next
    (on independent paths per bump they scattered by +-0.01 around 0.0013)."""
    note, m = nofm_reference.case("strategy_2025-06-30.toml", "2030B notes", "now", 20, 0.9)
    gammas = [lat.price(note, m.replace(equity_price=m.equity_price * f)).gamma_equity
              for f in (0.995, 1.0, 1.005)]
    assert min(gammas) > 0.0 and max(gammas) - min(gammas) < 2e-4, gammas


def test_root_step_is_continuous_in_the_stock() -> None:
    """The first step from S0 is a discrete normal on the rows (maximum entropy with the
    step's mean and variance), smooth in S0: no jump where the nearest row changes
    (differences of the value over 0.5% bumps of S0 moved by 2.9% there before, by
    at most 0.23% now)."""
    note, m = nofm_reference.case("strategy_2025-06-30.toml", "2030B notes", "fixture", 20,
                                  1.0)
    s0 = m.equity_price
    v = np.array([lat.price(note, m.replace(equity_price=s0 * (1 + 0.005 * i)),
                            greeks=False).value for i in range(-1, 5)])
    delta = np.diff(v)
    assert np.all(np.abs(np.diff(delta)) < 5e-3 * delta[:-1]), delta


@pytest.mark.parametrize(("label", "start", "days"), [
    ("callable now, stock above trigger", VAL, 20),
    ("callable in two years", date(2027, 1, 4), 20),
    ("callable in two years, single day", date(2027, 1, 4), None)])
def test_soft_call_against_daily_monte_carlo(label, start, days) -> None:
    """The equivalent barrier against daily monitoring: within 1% (the issue's bound;
    measured 0.1-0.3%, docs/sections/lattice2d.md)."""
    m = MARKET.replace(equity_price=220.0 if start == VAL else 100.0)
    note = replace(NOTE, call_start=start, call_trigger=1.3, call_trigger_days=days,
                   call_trigger_window=None if days is None else 30)
    mc, se = daily_soft_call(note, m)
    assert value(note, m) == pytest.approx(mc, rel=0.01, abs=3 * se)


# ----- preferred stock -------------------------------------------------------------------
PREF = PreferredStock(name="pref", liquidation_preference=100.0, units=1e7, dividend_rate=0.08,
                      dividend_frequency=4, cumulative=True)


def test_preferred_with_ample_coverage_is_its_dividends_and_preference() -> None:
    from convpricer.schedule import preferred_schedule

    horizon = MARKET.time(VAL + timedelta(days=3650))   # 10 years of 365 days
    sch = preferred_schedule(PREF, VAL, horizon)
    exact = 2.0 * MARKET.discount(sch.dividend_times).sum() + 100 * MARKET.discount(horizon)
    assert value(PREF, preferred_horizon=10.0) == pytest.approx(exact, rel=1e-9)
    assert value(PREF, structure=alone(PREF, cash=2e9), preferred_horizon=10.0) == \
        pytest.approx(exact, rel=1e-9)


def test_conversion_and_cumulation_add_value() -> None:
    """Junior to 2.5bn of notes with 5bn of BTC: dividends can be missed."""
    notes = replace(NOTE, notional=2.5e9)

    def with_notes(pref: PreferredStock) -> float:
        s = CapitalStructure(name="issuer", btc_holdings=50_000.0, shares_outstanding=1e8,
                             instruments=(notes, pref))
        return value(pref, structure=s, preferred_horizon=10.0)

    plain = with_notes(PREF)
    assert with_notes(replace(PREF, conversion_ratio=0.5)) > plain
    assert with_notes(replace(PREF, cumulative=False)) < plain


# ----- engine contract ------------------------------------------------------------------
def test_result_settings_and_greeks() -> None:
    s = alone(STRUCTURAL)
    r = lat.price(STRUCTURAL, MARKET, s)
    assert r.engine == "lattice2d" and r.parity == pytest.approx(700.0)
    assert {"steps", "extrapolate", "grid", "lambda", "width", "horizon"} <= set(r.settings)
    assert r.settings["steps"] == lat.DEFAULT_STEPS and r.settings["extrapolate"] is True
    assert r.settings["probability_steps"] == lat.DEFAULT_STEPS // 3   # with a structure
    assert r.delta_equity > 0 and r.delta_btc > 0 and r.vega_equity > 0
    assert r.correlation_sensitivity > 0
    free = lat.price(NOTE, MARKET)
    assert free.delta_btc == 0.0 and free.correlation_sensitivity == 0.0
    assert 0 < free.p_convert < 1 and free.p_default == 0.0


def test_extrapolation_and_steps() -> None:
    note = replace(NOTE, conversion="european")
    exact = analytic.tf_european_zero(note, MARKET)
    coarse = value(note, steps=100, extrapolate=False)
    assert abs(value(note, steps=100) - exact) < 0.1 * abs(coarse - exact)


def test_preferred_steps_apply_to_preferreds_only() -> None:
    opts = {"greeks": False, "steps": 40, "preferred_steps": 60}
    assert lat.price(PREF, MARKET, **opts).settings["steps"] == 60
    assert lat.price(NOTE, MARKET, **opts).settings["steps"] == 40
    assert lat.price(PREF, MARKET, greeks=False, steps=40).settings["steps"] == 40
    assert lat.price(PREF, MARKET, greeks=False).settings["steps"] == lat.DEFAULT_PREFERRED_STEPS


@pytest.mark.parametrize("options", [{"paths": 10}, {"steps": 5}, {"steps": 100.0},
                                     {"preferred_steps": 9}, {"preferred_steps": True},
                                     {"extrapolate": "yes"}, {"width": 1.0},
                                     {"preferred_horizon": 0.0}])
def test_bad_options_are_refused(options) -> None:
    with pytest.raises(EngineError):
        lat.price(NOTE, MARKET, greeks=False, **options)


def test_instrument_outside_the_structure_is_refused() -> None:
    with pytest.raises(InputError):
        lat.price(NOTE, MARKET, alone(replace(NOTE, name="other")), greeks=False)


@pytest.mark.parametrize("field", ["value", "delta_btc", "p_convert"])
def test_a_non_finite_result_is_refused(field) -> None:
    ok = lat.price(NOTE, MARKET, greeks=False)
    with pytest.raises(ArithmeticError, match=field):
        ok.with_(**{field: math.nan})


@pytest.mark.parametrize(("a", "eta"), [(1 / 3, 0.0), (1 / 3, 0.5), (0.08, 0.98), (0.3, 0.7)])
def test_root_move_is_the_discrete_normal_with_the_steps_moments(a: float, eta: float) -> None:
    """Newton's fit and the nested root finding give the same law, with mean eta and
    variance a on the rows, non-negative, and heavier on the nearer row."""
    w = lat._root_move(a, eta)
    j = np.arange(-lat._REACH + 1, lat._REACH + 1) - eta
    assert w.min() >= 0.0 and w.sum() == pytest.approx(1.0, abs=1e-12)
    assert w @ j == pytest.approx(0.0, abs=1e-10) and w @ (j * j) == pytest.approx(a, abs=1e-10)
    np.testing.assert_allclose(lat._root_move_nested(j, a), w, atol=1e-9)
    near = lat._REACH - 1 + round(eta)
    assert w[near] >= w.max() - 1e-12
