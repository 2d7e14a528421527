"""The waterfall (cp.waterfall, the public DataFrame) on structures drawn by
convpricer.testing: value is conserved, priority is respected, nothing is
negative or non-finite; in a liquidation and on each note's due dates.
(tests/test_waterfall.py checks the kernel against brute force.)"""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import convpricer as cp
from convpricer import testing as cpt
from convpricer.structure import priority_key

structures = cpt.capital_structures(instruments=(1, 5), common=None, coverage=(0.05, 5.0),
                                    preferred_options={"arrears": None})
btc_prices = st.lists(st.floats(0.0, 1e6), min_size=1, max_size=12)


def blocks(df, structure):
    """(claims block, common row) per state, claims in structure.claims order."""
    n = len(structure.claims) + 1
    for k in range(len(df) // n):
        block = df.iloc[k * n:(k + 1) * n]
        yield k, block.iloc[:-1], block.iloc[-1]


def attr(df, key, k):
    v = df.attrs[key]
    return float(np.asarray(v).ravel()[k])


def check_conservation(df, structure):
    for k, claims, common in blocks(df, structure):
        pay = claims["payout"].to_numpy(float)
        assert np.isfinite(pay).all() and (pay >= 0).all() and common["payout"] >= 0
        assets = attr(df, "assets", k)
        assert abs(pay.sum() + common["payout"] - assets) <= 1e-9 * max(assets, 1.0) + 1e-3


@given(structures, btc_prices)
def test_liquidation_conserves_value_and_priority(structure, btc):
    df = cp.waterfall(structure, btc_price=np.array(btc))
    check_conservation(df, structure)
    keys = [priority_key(c) for c in structure.claims]
    for _, claims, common in blocks(df, structure):
        due = claims["due"].to_numpy(float)
        pay = claims["payout"].to_numpy(float)
        conv = claims["converted"].to_numpy(bool)
        tol = 1e-9 * due + 1e-3
        assert (pay[~conv] <= due[~conv] + tol[~conv]).all()  # no one repaid above its claim
        for i, ki in enumerate(keys):
            if conv[i] or pay[i] >= due[i] - tol[i]:
                continue
            # i is short: nothing reaches a junior claim or common; its rank shares pro rata
            assert common["payout"] == 0
            for j, kj in enumerate(keys):
                if kj > ki:
                    assert pay[j] == 0
                elif kj == ki and not conv[j]:
                    assert abs(pay[j] / due[j] - pay[i] / due[i]) <= 1e-9


def due_dates(structure):
    return sorted({d for n in structure.convertibles
                   for d in (*n.put_dates, n.maturity)})


@given(st.data(), structures, btc_prices, st.floats(0.5, 2000.0))
def test_dated_waterfall_conserves_value(data, structure, btc, equity):
    dates = due_dates(structure)
    d = data.draw(st.sampled_from(dates)) if dates else cpt.VALUATION_DATE
    df = cp.waterfall(structure, btc_price=np.array(btc), equity_price=equity, date=d)
    check_conservation(df, structure)
