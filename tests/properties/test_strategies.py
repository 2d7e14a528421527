"""convpricer.testing itself: every strategy draws valid objects, the narrowing
keywords hold, documents read back exactly, bad arguments are refused."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from datetime import date

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

import convpricer as cp
from convpricer import testing as cpt
from convpricer.loader import parse

DAY = 1 / 365  # maturities are whole days: a range in years is met to within a day


@given(cpt.markets(equity_vol=(0.3, 0.4), btc_vol=0.5, correlation=(-0.2, 0.2),
                   risk_free_rate=(0.01, 0.02), equity_price=(50.0, 60.0)))
def test_markets_respect_ranges(m):
    assert isinstance(m, cp.Market)
    assert 0.3 <= m.equity_vol <= 0.4 and m.btc_vol == 0.5
    assert -0.2 <= m.correlation <= 0.2 and 0.01 <= m.risk_free_rate <= 0.02
    assert 50.0 <= m.equity_price <= 60.0 and m.valuation_date == cpt.VALUATION_DATE


@given(cpt.markets(curves=True, equity_vol=(0.2, 0.9)))
def test_market_curves_are_usable(m):
    assert m.rate_curve is not None and m.equity_vol_curve is not None
    for asset in ("btc", "equity"):  # total variance never decreases: a valid QuantLib curve
        ts = [m.time(d) for d in getattr(m, f"{asset}_vol_curve").dates]
        var = m.variance(asset, [t + DAY for t in ts])
        assert (np.diff(var) >= 0).all()
    t = m.time(m.equity_vol_curve.dates[-1])
    assert 0.2 - 1e-9 <= m.vol("equity", t) <= 0.9 + 1e-9  # an average of forward vols


@given(st.sampled_from([cpt.zero_coupon_convertibles, cpt.convertible_notes]),
       st.data())
def test_notes_respect_ranges(strategy, data):
    s = 250.0
    n = data.draw(strategy(equity_price=s, maturity=(1.0, 2.0), moneyness=(0.9, 1.1),
                           puts=True, calls=True, soft_call=True, conversion="american",
                           conversion_start=False, credit_spread=0.0))
    life = (n.maturity - cpt.VALUATION_DATE).days / 365
    assert 1.0 - DAY <= life <= 2.0 + DAY
    assert 0.9 - 1e-12 <= n.parity(s) / n.face <= 1.1 + 1e-12
    assert n.put_dates and all(cpt.VALUATION_DATE < d < n.maturity for d in n.put_dates)
    assert n.call_start is not None and n.call_trigger is not None
    assert n.issue_date <= cpt.VALUATION_DATE and n.conversion_start is None
    assert n.credit_spread == 0.0 and n.conversion == "american"
    assert isinstance(n, cp.ConvertibleNote) == (strategy is cpt.convertible_notes)


@given(cpt.preferred_stocks(convertible=True, moneyness=(0.5, 0.6), cumulative=True,
                            arrears=True, rank=2))
def test_preferreds_respect_ranges(p):
    assert 0.5 - 1e-12 <= p.parity(cpt.EQUITY_PRICE) / p.liquidation_preference <= 0.6 + 1e-12
    assert p.cumulative and p.rank == 2 and p.arrears >= 0


@given(cpt.capital_structures(instruments=3, coverage=(2.0, 3.0), common=True,
                              cash_fraction=0.0))
def test_structures_respect_coverage_and_count(s):
    assert len(s.claims) == 3 and s.common is not None and s.cash == 0.0
    due = sum(c.notional + getattr(c, "arrears", 0.0) * c.units for c in s.claims)
    assert 2.0 - 1e-9 <= float(s.assets(cpt.BTC_PRICE)) / due <= 3.0 + 1e-9


@given(cpt.capital_structures(hazard=True, instruments=(2, 4), kinds=cpt.NOTE_KINDS))
def test_hazard_structures_carry_no_spread(s):
    assert s.hazard_rate > 0 and all(n.credit_spread == 0 for n in s.convertibles)


@given(cpt.convertible_cases(kinds=cpt.CLAIM_KINDS, structure_options={"hazard": None}))
def test_cases_are_consistent(case):
    inst, m, s = case
    assert inst in s.instruments and inst.name == "subject"
    if isinstance(inst, cp.ZeroCouponConvertible):
        assert inst.maturity > m.valuation_date >= inst.issue_date


@given(cpt.markets(curves=None), cpt.capital_structures(common=None, hazard=None))
def test_documents_read_back_exactly(m, s):
    doc = parse(tomllib.loads(cpt.to_toml(cpt.to_document(s, m, {"kind": "quantlib"}))))
    assert doc.market == m and doc.structure == s and doc.engine == {"kind": "quantlib"}


@given(cpt.documents())
def test_documents_are_valid_files(text):
    doc = parse(tomllib.loads(text))
    assert doc.structure.instruments


def test_to_toml_writes_special_values():
    text = cpt.to_toml({"a": float("nan"), "b": float("-inf"), "c": [date(2025, 1, 2), True],
                        "t": {"x y": {"k": 1}}, "arr": [{"n": "q\"uote"}]})
    back = tomllib.loads(text)
    assert back["b"] == float("-inf") and back["a"] != back["a"]
    assert back["c"] == [date(2025, 1, 2), True] and back["t"]["x y"]["k"] == 1
    assert back["arr"] == [{"n": 'q"uote'}]


@pytest.mark.parametrize("make", [
    lambda: cpt.markets(equity_vol=(0.9, 0.1)),
    lambda: cpt.markets(equity_vol=(0.1, float("nan"))),
    lambda: cpt.zero_coupon_convertibles(moneyness="high"),
    lambda: cpt.capital_structures(kinds=("swap",)),
    lambda: cpt.capital_structures(instruments=(1.5, 2)),
    lambda: cpt.invalid_documents(breaks=["no such break"]),
])
def test_bad_arguments_are_refused(make):
    with pytest.raises(InvalidArgument):
        @given(make())
        def draw_one(x):
            pass
        draw_one()


def test_import_error_names_the_test_extra():
    code = ("import sys; sys.modules['hypothesis'] = None\n"
            "try:\n    import convpricer.testing\n"
            "except ModuleNotFoundError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "test extra" in out and "convpricer[test]" in out
