"""No-arbitrage invariants of every engine, on generated term sheets and markets.

Each test runs once per engine (``@pytest.mark.engines``); an engine that is
not built yet skips. Engines run at coarse settings (conftest.COARSE), so a
comparison of two prices allows the engine's discretisation tolerance
``engine.tol`` x face (conftest.TOLERANCE; the measurements behind each number
are in docs/sections/testing.md). Bounds against closed forms use the same
tolerance.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import convpricer as cp
from convpricer import analytic
from convpricer import testing as cpt
from convpricer.schedule import PREFERRED_HORIZON, convertible_schedule

PROBABILITIES = ("p_convert", "p_impaired", "p_default")
#: The domain of the invariant tests: equity vols to 120%, BTC vols to 100%,
#: remaining lives to 6 years. Beyond (sigma sqrt(T) above about 3) the coarse
#: settings' discretisation error outgrows the tolerances (testing.md).
DOMAIN = {"equity_vol": (0.15, 1.2), "btc_vol": (0.15, 1.0)}
MATURITY = (0.25, 6.0)


def cases(engine, *, kinds=cpt.CLAIM_KINDS, structure=None, hazard=None, curves=None,
          others=cpt.CLAIM_KINDS, **note_options):
    """Cases this engine values: kinds it knows; hazard rates and curves only for
    the engines that model them (QuantLib refuses a hazard rate and flattens
    curves); ``others``: the kinds of the other claims of the structure."""
    kinds = tuple(k for k in kinds if k in engine.kinds)
    return cpt.convertible_cases(
        kinds=kinds, structure=structure,
        market_options={**DOMAIN, "curves": curves if engine.two_factor else False},
        note_options={"maturity": MATURITY, **note_options},
        structure_options={"hazard": hazard if engine.two_factor else False,
                           "kinds": others, "maturity": MATURITY})


def notes_only(engine, **options):
    return cases(engine, kinds=cpt.NOTE_KINDS, **options)


def with_instrument(structure, old, new):
    """``structure`` with term sheet ``old`` replaced by ``new`` (None: no structure)."""
    if structure is None:
        return None
    return structure.replace(instruments=tuple(new if x is old else x
                                               for x in structure.instruments))


def upper_bound(inst, market) -> float:
    """No instrument is worth more than its conversion shares plus every cash
    amount it can ever receive (undiscounted; rates and yields are >= 0 here)."""
    s = market.equity_price
    if isinstance(inst, cp.PreferredStock):
        return inst.parity(s) + max(inst.face, inst.call_price or 0.0) + inst.arrears \
            + inst.dividend_rate * inst.face * (PREFERRED_HORIZON + 1)
    sch = convertible_schedule(inst, market.valuation_date)
    return inst.parity(s) + max(inst.face, inst.put_price, inst.call_price) \
        + float(sch.coupon_amounts.sum())


@pytest.mark.engines("all")
@given(data=st.data())
def test_values_are_finite_non_negative_and_bounded(engine, data):
    inst, market, structure = data.draw(cases(engine, curves=None, hazard=None))
    r = engine.price(inst, market, structure)
    assert math.isfinite(r.value) and r.value >= 0.0
    assert r.value <= upper_bound(inst, market) + engine.slack(inst.face, r)
    for p in PROBABILITIES:
        v = getattr(r, p)
        assert v is None or -1e-12 <= v <= 1 + 1e-12, (p, v)
    for k, v in r.row().items():
        assert not (isinstance(v, float) and not math.isfinite(v)), (k, v)


@pytest.mark.engines("all")
@given(data=st.data())
def test_value_at_least_bond_floor(engine, data):
    """Without calls and with unlimited coverage a note is worth at least its
    straight bond (put-adjusted: holding to the best put date is one strategy)."""
    note, market, _ = data.draw(notes_only(engine, structure=False, calls=False))
    r = engine.price(note, market)
    assert r.value >= analytic.bond_floor(note, market, with_puts=True) \
        - engine.slack(note.face, r)


@pytest.mark.engines("all")
@given(data=st.data())
def test_american_value_at_least_parity(engine, data):
    """Conversion allowed now: converting at once is one strategy, whatever the
    issuer's credit (structure and hazard rate included)."""
    note, market, structure = data.draw(notes_only(engine, conversion="american",
                                                   conversion_start=False))
    r = engine.price(note, market, structure)
    assert r.value >= note.parity(market.equity_price) - engine.slack(note.face, r)


def assert_not_lower(engine, face, low, high):
    """``high`` is at least ``low`` up to the engine's slack."""
    assert high.value >= low.value - engine.slack(face, low, high), (low.value, high.value)


@pytest.mark.engines("all")
@given(data=st.data(), bump=st.floats(0.02, 0.5))
def test_monotone_in_equity_price(engine, data, bump):
    inst, market, structure = data.draw(cases(engine))
    up = market.replace(equity_price=market.equity_price * (1 + bump))
    assert_not_lower(engine, inst.face, engine.price(inst, market, structure),
                     engine.price(inst, up, structure))


@pytest.mark.engines("all")
@given(data=st.data(), bump=st.floats(0.02, 0.3))
def test_monotone_in_equity_volatility(engine, data, bump):
    """Vega >= 0 holds for payoffs convex in S (Ekstrom 2006, game options):
    no credit spread (Tsiveriotis-Fernandes vega turns negative deep in the
    money, where (1 - exp(-cs T)) d1 > sigma sqrt(T)), no soft call (the trigger
    makes the issuer's payoff non-convex), no structure. Vols to 0.9 + 0.3: the
    coarse fdm2d grid misses by 2% of face at sigma sqrt(T) = 3 (testing.md)."""
    inst, market, _ = data.draw(cpt.convertible_cases(
        kinds=tuple(k for k in cpt.CLAIM_KINDS if k in engine.kinds), structure=False,
        market_options={**DOMAIN, "equity_vol": (0.15, 0.9), "curves": False},
        note_options={"maturity": MATURITY, "credit_spread": 0.0, "soft_call": False}))
    up = market.replace(equity_vol=market.equity_vol + bump)
    assert_not_lower(engine, inst.face, engine.price(inst, market), engine.price(inst, up))


def coverage_cases(engine):
    """Where more coverage can only help: a preferred (a structural default
    leaves it nothing), or the structure's only note, zero-coupon with puts at
    face (on each of its due dates a solvent issuer pays at least face, a
    default less). Not in general: at a due date of another note, or a coupon
    date of a note worth less than par, a default pays a long-dated note its
    liquidation value at once, which can beat holding it (docs/sections/testing.md)."""
    return cases(engine, kinds=("zero_coupon_convertible", "preferred_stock"), structure=True,
                 others=("preferred_stock",), put_price=1.0)


@pytest.mark.engines("two_factor")
@given(data=st.data(), bump=st.floats(0.02, 1.0))
def test_monotone_in_btc_price(engine, data, bump):
    """A higher BTC price at the same share price only adds coverage."""
    inst, market, structure = data.draw(coverage_cases(engine))
    up = market.replace(btc_price=market.btc_price * (1 + bump))
    assert_not_lower(engine, inst.face, engine.price(inst, market, structure),
                     engine.price(inst, up, structure))


@pytest.mark.engines("two_factor")
@given(data=st.data(), more=st.floats(0.05, 3.0))
def test_monotone_in_coverage(engine, data, more):
    """More BTC held (same claims, same prices)."""
    inst, market, structure = data.draw(coverage_cases(engine))
    richer = structure.replace(btc_holdings=structure.btc_holdings * (1 + more))
    assert_not_lower(engine, inst.face, engine.price(inst, market, structure),
                     engine.price(inst, market, richer))


@pytest.mark.engines("all")
@given(data=st.data())
def test_put_never_lowers_value(engine, data):
    """A holder put is a right. Without a structure: with one, a put date is
    also a date on which the issuer must be solvent (a due date of the
    structural model), which can cost the holders (docs/sections/testing.md)."""
    note, market, _ = data.draw(notes_only(engine, structure=False, puts=True))
    bare = dataclasses.replace(note, put_dates=())
    assert_not_lower(engine, note.face, engine.price(bare, market), engine.price(note, market))


@pytest.mark.engines("all")
@given(data=st.data())
def test_call_never_raises_value(engine, data):
    """An issuer call is the issuer's right, structure and hazard included."""
    note, market, structure = data.draw(notes_only(engine, calls=True))
    bare = dataclasses.replace(note, call_start=None, call_trigger=None,
                               call_trigger_days=None, call_trigger_window=None)
    assert_not_lower(engine, note.face, engine.price(note, market, structure),
                     engine.price(bare, market, with_instrument(structure, note, bare)))


@pytest.mark.engines("two_factor")
@given(data=st.data())
def test_two_factor_tends_to_one_factor_as_coverage_grows(engine, get_engine, data):
    """As BTC coverage grows, the two-factor price rises to the one-factor
    (quantlib) price of the same note: no credit spread (QuantLib blends the
    discount rate), no calls (QuantLib calls on every business day), the
    structure's only note (see coverage_cases)."""
    one = get_engine("quantlib")
    note, market, structure = data.draw(
        cases(engine, kinds=("zero_coupon_convertible",), structure=True, curves=False,
              others=("preferred_stock",), hazard=False, put_price=1.0, calls=False,
              credit_spread=0.0))
    limit = one.price(note, market)
    ladder = [engine.price(note, market, structure.replace(
        btc_holdings=structure.btc_holdings * k)) for k in (1.0, 4.0, 16.0, 1e4)]
    slack = [engine.slack(note.face, r, limit) + one.tol * note.face for r in ladder]
    gaps = [limit.value - r.value for r in ladder]
    assert all(g >= -s for g, s in zip(gaps, slack, strict=True))   # below the limit
    assert all(b <= a + s for a, b, s in zip(gaps, gaps[1:], slack, strict=False))  # closing
    assert abs(gaps[-1]) <= slack[-1]                                # and closed
