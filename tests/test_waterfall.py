"""The waterfall: exact hand-computed payouts, the conversion equilibrium against
a brute-force search, properties under hypothesis, the dated (going-concern)
waterfall, a million states, and the ``convpricer waterfall`` command."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from datetime import date

import numpy as np
import pytest
from conftest import FIXTURES
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import convpricer as cp
from convpricer import cli
from convpricer.structure import priority_key
from convpricer.waterfall import insolvent, payouts, waterfall

M = 1e6  # USD millions, for readable arithmetic


# ----- a small structure with round numbers ------------------------------------------------
def toy(**issuer) -> cp.CapitalStructure:
    """1,000 BTC, $10M cash, 1M shares; claims (total $200.4M at face):

    C  secured zero note, $20M, not convertible
    A  senior note, $100M = 100k notes, 10 shares/note  -> $100 of claim per new share
    B  senior 2% coupon note, $50M = 50k notes, 5 sh/note -> $200 per new share
    P1 rank-1 preferred, 200k x $100 + $2 arrears = $20.4M, not convertible
    P2 rank-2 cumulative preferred, 100k x $100, 0.5 sh/share -> $200 per new share
    """
    d = date
    notes = (
        cp.ZeroCouponConvertible(name="C", face=1000.0, notional=20 * M,
                                 issue_date=d(2024, 1, 1), maturity=d(2032, 1, 1),
                                 conversion_ratio=0.0, seniority="secured"),
        cp.ZeroCouponConvertible(name="A", face=1000.0, notional=100 * M,
                                 issue_date=d(2024, 1, 1), maturity=d(2030, 1, 1),
                                 conversion_ratio=10.0, put_dates=(d(2028, 1, 1),)),
        cp.ConvertibleNote(name="B", face=1000.0, notional=50 * M, issue_date=d(2024, 1, 1),
                           maturity=d(2031, 1, 1), conversion_ratio=5.0,
                           put_dates=(d(2028, 4, 1),), coupon_rate=0.02, coupon_frequency=2),
    )
    prefs = (
        cp.PreferredStock(name="P1", liquidation_preference=100.0, units=200_000.0,
                          dividend_rate=0.08, rank=1, arrears=2.0),
        cp.PreferredStock(name="P2", liquidation_preference=100.0, units=100_000.0,
                          dividend_rate=0.10, rank=2, conversion_ratio=0.5),
    )
    kw = {"name": "toy", "btc_holdings": 1000.0, "cash": 10 * M,
          "shares_outstanding": 1 * M, **issuer}
    return cp.CapitalStructure(instruments=(*notes, *prefs, cp.CommonEquity(name="Common")),
                               **kw)


def row(df, name):
    r = df[df["name"] == name]
    assert len(r) == 1
    return r.iloc[0]


def assets_at(btc: float) -> float:
    return 10 * M + 1000.0 * btc


# ----- liquidation: exact cases --------------------------------------------------------------
def test_liquidation_insolvent():
    # assets 10M + 1000 x 100k = 110M. C (secured) takes 20M, 90M left for A + B
    # (150M pari passu): 60% each -> A 60M, B 30M, 600 per note. Nothing below.
    df = waterfall(toy(), 100_000.0)
    assert df.attrs["assets"] == pytest.approx(110 * M)
    assert row(df, "C").payout == pytest.approx(20 * M)
    assert row(df, "A").payout == pytest.approx(60 * M)
    assert row(df, "B").payout == pytest.approx(30 * M)
    assert row(df, "A").payout_per_unit == pytest.approx(600.0)
    assert row(df, "B").payout_per_unit == pytest.approx(600.0)
    for name in ("P1", "P2", "Common"):
        assert row(df, name).payout == 0.0
    assert not df["converted"].any()
    assert df.attrs["btc_sold"] == 1000.0 and df.attrs["btc_left"] == 0.0
    assert df.attrs["cash_used"] == 10 * M and df.attrs["default"]


def test_liquidation_partly_solvent():
    # assets 180M: C 20 -> 160 left; A + B 150 in full -> 10 left; P1 claims
    # 200k x (100 + 2) = 20.4M and gets the 10M (50 per share); P2, common nothing.
    df = waterfall(toy(), 170_000.0)
    assert row(df, "A").payout == pytest.approx(100 * M)
    assert row(df, "B").payout == pytest.approx(50 * M)
    assert row(df, "P1").due == pytest.approx(20.4 * M)
    assert row(df, "P1").payout_per_unit == pytest.approx(50.0)
    assert row(df, "P2").payout == 0.0 and row(df, "Common").payout == 0.0
    assert df.attrs["common_per_share"] == 0.0


def test_liquidation_one_class_converts():
    # assets 310M, claims 200.4M: gross residual 109.6M on 1M shares = 109.6/share.
    # A (100 of claim per new share) converts: 109.6 > 100; residual 209.6M on
    # 1M + 100k x 10 = 2M shares = 104.8/share. B and P2 (200/share) do not.
    # A receives 1M x 104.8 = 104.8M (1,048 per note) > 100M repayment.
    df = waterfall(toy(), 300_000.0)
    a = row(df, "A")
    assert a.converted and a.shares_issued == pytest.approx(1 * M)
    assert a.payout == pytest.approx(104.8 * M)
    assert a.payout_per_unit == pytest.approx(1048.0)
    assert not row(df, "B").converted and row(df, "B").payout == pytest.approx(50 * M)
    assert row(df, "P2").payout == pytest.approx(10 * M)
    assert row(df, "Common").payout == pytest.approx(104.8 * M)
    assert df.attrs["common_per_share"] == pytest.approx(104.8)
    assert df.attrs["common_shares"] == pytest.approx(2 * M)


def test_liquidation_rich_everyone_converts():
    # assets 610M, claims 200.4M: 409.6/share > 100 -> A converts:
    # (409.6 + 100) / 2M = 254.8 > 200 -> B converts: (509.6 + 50) / 2.25M = 248.71 > 200
    # -> P2 converts: (559.6 + 10) / 2.3M = 247.652... per share.
    df = waterfall(toy(), 600_000.0)
    ps = 569.6 * M / (2.3 * M)
    assert df.attrs["common_per_share"] == pytest.approx(ps)
    assert row(df, "A").payout == pytest.approx(1 * M * ps)
    assert row(df, "B").payout == pytest.approx(0.25 * M * ps)
    assert row(df, "P2").payout == pytest.approx(0.05 * M * ps)
    assert row(df, "P2").payout_per_unit == pytest.approx(0.5 * ps)
    assert row(df, "C").payout == pytest.approx(20 * M)
    assert row(df, "P1").payout == pytest.approx(20.4 * M)
    assert row(df, "Common").payout == pytest.approx(1 * M * ps)
    assert df["payout"].sum() == pytest.approx(610 * M)


def test_equity_price_does_not_change_a_liquidation():
    a, b = payouts(toy(), 300_000.0), payouts(toy(), 300_000.0, equity_price=1e6)
    np.testing.assert_array_equal(a.payout, b.payout)


# ----- liquidation: the equilibrium against brute force --------------------------------------
def brute_force(structure, assets: float):
    """Payoff of each class for every set of converters, by a plain scalar waterfall."""
    claims = structure.claims
    d = [c.notional + (c.arrears * c.units if isinstance(c, cp.PreferredStock) else 0.0)
         for c in claims]
    n_new = [c.units * c.conversion_ratio for c in claims]
    keys = [priority_key(c) for c in claims]

    def pay(conv: frozenset) -> list[float]:
        left, out = assets, [0.0] * len(claims)
        for key in sorted(set(keys)):
            grp = [i for i in range(len(claims)) if keys[i] == key and i not in conv]
            tot = sum(d[i] for i in grp)
            paid = min(left, tot)
            for i in grp:
                out[i] = d[i] * paid / tot
            left -= paid
        n = structure.shares_outstanding + sum(n_new[i] for i in conv)
        for i in conv:
            out[i] = n_new[i] * left / n
        return out

    return pay, [i for i in range(len(claims)) if n_new[i] > 0]


def nash_margin(pay, convertible, conv: frozenset) -> float:
    """Smallest gain (relative) any class makes by its decision given the others'; a
    negative value means a class would rather switch."""
    base = pay(conv)
    margins = []
    for j in convertible:
        other = pay(conv ^ {j})
        mine, alt = base[j], other[j]
        margins.append((mine - alt) / max(abs(mine), abs(alt), 1.0))
    return min(margins, default=1.0)


def test_toy_equilibrium_is_the_unique_nash_equilibrium():
    s = toy()
    for btc in (100_000.0, 170_000.0, 250_000.0, 300_000.0, 400_000.0, 600_000.0, 5e6):
        pay, convertible = brute_force(s, assets_at(btc))
        p = payouts(s, btc)
        found = frozenset(np.flatnonzero(p.converted[:, 0]))
        assert nash_margin(pay, convertible, found) > -1e-12
        np.testing.assert_allclose(p.payout[:, 0], pay(found), rtol=1e-12)
        for r in range(len(convertible) + 1):
            for c in itertools.combinations(convertible, r):
                if frozenset(c) != found:
                    assert nash_margin(pay, convertible, frozenset(c)) < 1e-12


# ----- hypothesis: random structures ----------------------------------------------------------
@st.composite
def structures(draw):
    n_notes = draw(st.integers(0, 4))
    n_prefs = draw(st.integers(0, 3))
    assume(n_notes + n_prefs > 0)
    insts = []
    for i in range(n_notes):
        face = draw(st.sampled_from([100.0, 1000.0]))
        insts.append(cp.ZeroCouponConvertible(
            name=f"note{i}", face=face, notional=face * draw(st.integers(1, 5_000_000)),
            issue_date=date(2024, 1, 1), maturity=date(2030, 1, 1),
            conversion_ratio=draw(st.sampled_from([0.0, 0.5, 2.0, 5.0, 20.0])),
            put_dates=(date(2028, 1, 1),),
            seniority=draw(st.sampled_from(["secured", "senior_unsecured", "subordinated"]))))
    for i in range(n_prefs):
        cum = draw(st.booleans())
        insts.append(cp.PreferredStock(
            name=f"pref{i}", liquidation_preference=draw(st.sampled_from([25.0, 100.0])),
            units=float(draw(st.integers(1, 20_000_000))),
            dividend_rate=draw(st.sampled_from([0.0, 0.08, 0.1])), cumulative=cum,
            conversion_ratio=draw(st.sampled_from([0.0, 0.1, 0.5])),
            rank=draw(st.integers(1, 3)),
            arrears=draw(st.sampled_from([0.0, 3.0])) if cum else 0.0))
    return cp.CapitalStructure(
        name="h", instruments=tuple(insts),
        btc_holdings=draw(st.floats(0.0, 1e6)), cash=draw(st.floats(0.0, 1e9)),
        other_assets=draw(st.floats(0.0, 1e9)),
        shares_outstanding=draw(st.floats(1e5, 1e9)))


prices = st.lists(st.floats(0.0, 2e6), min_size=1, max_size=40)
slow = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def claim_at_face(structure) -> np.ndarray:
    return np.array([c.notional + (c.arrears * c.units if isinstance(c, cp.PreferredStock)
                                   else 0.0) for c in structure.claims])


@slow
@given(structures(), prices)
def test_liquidation_properties(s, btc):
    b = np.array(btc)
    p = payouts(s, b)
    claim = claim_at_face(s)
    # conservation
    np.testing.assert_allclose(p.payout.sum(axis=0) + p.common, p.assets, rtol=1e-9, atol=1e-3)
    assert (p.payout >= 0).all() and (p.common >= 0).all()
    conv = p.converted
    tol = np.broadcast_to(1e-9 * claim[:, None] + 1e-3, conv.shape)
    # a converting class is never worse off than repaid in full; the others are paid
    # in full as soon as anyone converts
    assert (p.payout[conv] >= (claim[:, None] * conv)[conv] - tol[conv]).all()
    some = conv.any(axis=0)
    np.testing.assert_allclose(p.payout[~conv & some[None, :]],
                               np.broadcast_to(claim[:, None], conv.shape)[~conv & some],
                               rtol=1e-9)
    keys = [priority_key(c) for c in s.claims]
    for i, ki in enumerate(keys):
        short = (p.payout[i] < claim[i] - tol[i]) & ~conv[i]
        # priority: while i is short, nothing goes to any junior claim or to common
        for j, kj in enumerate(keys):
            if kj > ki:
                assert (p.payout[j][short] == 0).all()
            if kj == ki:  # pro rata within a rank
                np.testing.assert_allclose(p.payout[j][short] / claim[j],
                                           p.payout[i][short] / claim[i], rtol=1e-9)
        assert (p.common[short] == 0).all()


@slow
@given(structures(), st.floats(0.0, 1e6))
def test_liquidation_is_the_nash_equilibrium(s, btc):
    pay, convertible = brute_force(s, float(s.assets(btc)))
    p = payouts(s, btc)
    found = frozenset(np.flatnonzero(p.converted[:, 0]))
    assert nash_margin(pay, convertible, found) > -1e-9
    np.testing.assert_allclose(p.payout[:, 0], pay(found), rtol=1e-9, atol=1e-3)
    for r in range(len(convertible) + 1):  # and no other set is one (beyond rounding)
        for c in itertools.combinations(convertible, r):
            if frozenset(c) != found:
                assert nash_margin(pay, convertible, frozenset(c)) < 1e-9


@slow
@given(structures(), prices)
def test_liquidation_monotone_in_btc(s, btc):
    b = np.sort(np.array(btc))
    p = payouts(s, b)
    tol = 1e-9 * (p.payout[:, -1:] + 1.0)
    assert (np.diff(p.payout, axis=1) >= -tol).all()
    assert (np.diff(p.common) >= -1e-9 * (p.common[-1] + 1.0)).all()
    assert (np.diff(p.common_per_share) >= -1e-9 * (p.common_per_share[-1] + 1.0)).all()


DATES = [date(2027, 6, 30), date(2028, 1, 1), date(2028, 3, 31), date(2030, 1, 1)]


@slow
@given(structures(), prices, st.one_of(st.none(), st.floats(0.0, 5000.0)),
       st.sampled_from(DATES))
def test_dated_properties(s, btc, equity, d):
    b = np.array(btc)
    p = payouts(s, b, equity, d)
    np.testing.assert_allclose(p.payout.sum(axis=0) + p.common, p.assets, rtol=1e-9, atol=1e-3)
    assert (p.payout >= 0).all()
    # default iff insolvent (these notes' puts are at face, so no state owes more cash
    # than the notes' face)
    np.testing.assert_array_equal(p.default, insolvent(s, b, d))
    ok = ~p.default
    # funding: cash first, then BTC at the state's price
    spent = (p.assets - p.common)[ok]
    np.testing.assert_allclose(p.cash_used[ok] + p.btc_sold[ok] * b[ok] + p.other_used[ok],
                               spent, rtol=1e-9, atol=1e-3)
    assert (p.cash_used[ok] <= s.cash).all()
    assert (p.btc_sold[ok][p.cash_used[ok] < s.cash] == 0).all()
    claims = s.claims
    notes = np.array([isinstance(c, cp.ZeroCouponConvertible) for c in claims], bool)
    # converters take shares, no cash; solvent notes are paid in full
    conv = p.converted[:, ok]
    assert (p.payout[:, ok][conv] == 0).all()
    units = np.array([c.units * c.conversion_ratio for c in claims])
    np.testing.assert_allclose(p.shares_issued[:, ok], conv * units[:, None])
    np.testing.assert_allclose(p.payout[notes][:, ok], (p.due * ~p.converted)[notes][:, ok])
    if equity is None:
        assert not conv.any()
    # the dividend surplus test: after paying, assets cover notes and senior claims
    prefs = [i for i, c in enumerate(claims) if isinstance(c, cp.PreferredStock)]
    face_left = sum(c.notional for c in claims if isinstance(c, cp.ZeroCouponConvertible)
                    and d not in (c.maturity, *c.put_dates))
    for i in prefs:
        senior = face_left + sum(claims[j].units * (claims[j].liquidation_preference
                                                    + p.arrears[j]) for j in prefs
                                 if priority_key(claims[j]) < priority_key(claims[i]))
        paid_so_far = sum(p.payout[j] for j in range(len(claims))
                          if notes[j] or priority_key(claims[j]) <= priority_key(claims[i]))
        cover = p.assets - paid_so_far - senior
        paying = ok & (p.payout[i] > 0)
        assert (cover[paying] >= -1e-6 * p.assets[paying] - 1e-3).all()


# ----- the dated (going-concern) waterfall: exact cases ---------------------------------------
def test_put_date_solvent_without_equity_price_holders_put():
    # 2028-01-01: A's put date (1,000 per note, zero coupon) and a coupon date of B
    # (2% / 2 x 1,000 = 10 per note). Assets 310M >= notes' face 170M: solvent.
    # Cash due: A 100k x 1,000 = 100M, B 50k x 10 = 0.5M; total 100.5M:
    # cash 10M, then (100.5M - 10M) / 300k = 301.67 BTC sold.
    df = waterfall(toy(), 300_000.0, date=date(2028, 1, 1))
    assert not df.attrs["default"]
    assert row(df, "A").payout == pytest.approx(100 * M) and not row(df, "A").converted
    assert row(df, "B").payout == pytest.approx(0.5 * M)
    assert row(df, "C").payout == 0.0 and row(df, "P1").payout == 0.0
    assert df.attrs["cash_used"] == pytest.approx(10 * M)
    assert df.attrs["btc_sold"] == pytest.approx(90.5 * M / 300_000.0)
    assert df.attrs["btc_left"] == pytest.approx(1000.0 - 90.5 * M / 300_000.0)
    # common keeps 310 - 100.5 = 209.5M; claims still outstanding at face: C 20 + B 50
    # + P1 20.4 + P2 10 = 100.4M -> NAV per share (209.5 - 100.4) / 1M = 109.1
    assert row(df, "Common").payout == pytest.approx(209.5 * M)
    assert df.attrs["common_per_share"] == pytest.approx(109.1)


def test_put_date_holders_convert_when_parity_beats_repayment():
    # S = 150: A's parity 10 x 150 = 1,500 > 1,000: converts, 1M new shares, no cash.
    # Only B's coupon (0.5M) is paid, from cash.
    df = waterfall(toy(), 300_000.0, equity_price=150.0, date=date(2028, 1, 1))
    a = row(df, "A")
    assert a.converted and a.payout == 0.0 and a.shares_issued == pytest.approx(1 * M)
    assert a.due == pytest.approx(100 * M)
    assert df.attrs["cash_used"] == pytest.approx(0.5 * M) and df.attrs["btc_sold"] == 0.0
    assert df.attrs["common_shares"] == pytest.approx(2 * M)
    # S = 99: parity 990 < 1,000: put
    df = waterfall(toy(), 300_000.0, equity_price=99.0, date=date(2028, 1, 1))
    assert not row(df, "A").converted and row(df, "A").payout == pytest.approx(100 * M)


def test_put_with_accrued_interest():
    # 2028-04-01: B's put. Accrued since 2028-01-01: 10 x 91/182 = 5 per note;
    # B demands 50k x 1,005 = 50.25M, paid from 10M cash and 40.25M / 200k BTC.
    df = waterfall(toy(), 200_000.0, date=date(2028, 4, 1))
    assert row(df, "B").payout_per_unit == pytest.approx(1005.0)
    assert df.attrs["btc_sold"] == pytest.approx(40.25 * M / 200_000.0)


def test_default_liquidates_everything():
    # 2028-01-01 at 150k: assets 160M < notes' face 170M -> default, liquidation:
    # C 20M, A + B share 140M pro rata (933.33 per note), nothing below.
    df = waterfall(toy(), 150_000.0, equity_price=500.0, date=date(2028, 1, 1))
    assert df.attrs["default"]
    assert row(df, "C").payout == pytest.approx(20 * M)
    assert row(df, "A").payout_per_unit == pytest.approx(140 / 150 * 1000)
    assert row(df, "B").payout_per_unit == pytest.approx(140 / 150 * 1000)
    assert row(df, "P1").payout == 0.0 and row(df, "Common").payout == 0.0
    assert df.attrs["btc_left"] == 0.0
    assert bool(insolvent(toy(), 150_000.0)) and not bool(insolvent(toy(), 160_000.0))


def test_dividend_surplus_test_and_arrears():
    # 2028-03-31, a quarter end: P1 owes 8%/4 x 100 = 2 + 2 arrears = 4 per share
    # (0.8M); P2 owes 10%/4 x 100 = 2.5 (0.25M). No note is due.
    # Assets 190.5M: P1's surplus 190.5 - 170 (notes) = 20.5M >= 0.8M: paid, arrears 0.
    # P2: 189.7 - (170 + P1's 20M) = -0.3M: nothing; cumulative -> arrears 2.5.
    d = date(2028, 3, 31)
    df = waterfall(toy(), 180_500.0, date=d)
    assert row(df, "P1").payout == pytest.approx(0.8 * M) and row(df, "P1").arrears == 0.0
    assert row(df, "P2").payout == 0.0 and row(df, "P2").arrears == pytest.approx(2.5)
    # Assets 190.9M: P2's surplus 190.1 - 190 = 0.1M: 0.1M paid pro rata,
    # (0.25 - 0.1)M / 100k = 1.5 per share in arrears.
    df = waterfall(toy(), 180_900.0, date=d)
    assert row(df, "P2").payout == pytest.approx(0.1 * M)
    assert row(df, "P2").arrears == pytest.approx(1.5)
    # a non-cumulative preferred loses what it is not paid
    s = toy()
    nc = cp.PreferredStock(name="P2", liquidation_preference=100.0, units=100_000.0,
                           dividend_rate=0.10, rank=2, cumulative=False)
    s = s.replace(instruments=(*s.instruments[:4], nc, s.instruments[5]))
    df = waterfall(s, 180_500.0, date=d)
    assert row(df, "P2").payout == 0.0 and row(df, "P2").arrears == 0.0
    # not a dividend date: nothing is paid
    df = waterfall(toy(), 180_500.0, date=date(2028, 3, 30))
    assert df.loc[df["kind"] != "common_equity", "payout"].sum() == 0.0


def test_matured_notes_are_settled():
    # 2032-01-01: A (2030) and B (2031) have matured; only C (20M) is outstanding and due.
    p = payouts(toy(), 20_000.0, date=date(2032, 1, 1))
    assert not p.default[0]
    np.testing.assert_allclose(p.payout[:3, 0], [20 * M, 0.0, 0.0])
    assert not bool(insolvent(toy(), 10_000.0, date=date(2032, 1, 1)))
    assert bool(insolvent(toy(), 10_000.0))


def test_maturity_pays_face_and_last_coupon():
    # 2031-01-01: B's maturity and last coupon: 1,000 + 10 per note.
    p = payouts(toy(), 300_000.0, date=date(2031, 1, 1))
    i = p.names.index("B")
    assert p.per_unit[i, 0] == pytest.approx(1010.0)


# ----- arrays, shapes, inputs --------------------------------------------------------------
def test_broadcast_grid_and_state_frame():
    b = np.array([100_000.0, 300_000.0, 600_000.0])[:, None]
    s = np.array([50.0, 150.0])[None, :]
    p = payouts(toy(), b, s, date=date(2028, 1, 1))
    assert p.payout.shape == (5, 3, 2) and p.common.shape == (3, 2)
    i = p.names.index("A")
    np.testing.assert_array_equal(p.converted[i], [[False, False], [False, True],
                                                   [False, True]])
    df = waterfall(toy(), [100_000.0, 300_000.0], date=date(2028, 1, 1))
    assert list(df["state"]) == [0] * 6 + [1] * 6
    assert df.attrs["assets"].shape == (2,)
    one = waterfall(toy(), 300_000.0, date=date(2028, 1, 1))
    np.testing.assert_allclose(df[df.state == 1]["payout"].to_numpy(),
                               one["payout"].to_numpy())


def test_million_states():
    b = np.random.default_rng(7).lognormal(np.log(100_000.0), 1.0, 1_000_000)
    for d in (None, date(2028, 1, 1)):
        p = payouts(toy(), b, 0.001 * b, date=d)
        np.testing.assert_allclose(p.payout.sum(axis=0) + p.common, p.assets, rtol=1e-9)


@pytest.mark.parametrize("kwargs", [{"btc_price": -1.0}, {"btc_price": [1.0, np.nan]},
                                    {"btc_price": "x"}, {"btc_price": 1.0, "equity_price": -2},
                                    {"btc_price": 1.0, "date": "2028-02-30"}])
def test_bad_input_is_refused(kwargs):
    with pytest.raises(cp.InputError):
        waterfall(toy(), **kwargs)


def test_fixture_and_common_per_share_for_valuation():
    s, m = cp.load(FIXTURES / "illustrative.toml")
    df = waterfall(s, m.btc_price)
    # 100k BTC x 96k + 50M = 9,650M; claims at face 2,000 + 1,000 + 730 + 500 = 4,230M;
    # nobody converts (5,420M / 50M = 108.4 per share < 1000 / 4.297 = 232.7)
    assert df.attrs["common_per_share"] == pytest.approx(108.4)
    assert df.attrs["common_per_share"] == pytest.approx(s.nav_per_share(m.btc_price))


# ----- the command line ----------------------------------------------------------------------
FILE = str(FIXTURES / "illustrative.toml")


def test_cli_json(capsys):
    assert cli.main(["waterfall", FILE, "--btc-price", "300000", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"btc_price", "assets", "claims", "common", "cash_used", "btc_sold",
            "btc_left"} <= set(out)
    assert {"payout", "per_share", "shares"} <= set(out["common"])
    for c in out["claims"]:
        assert {"name", "kind", "due", "payout", "payout_per_unit", "converted",
                "shares_issued"} <= set(c)
    total = sum(c["payout"] for c in out["claims"]) + out["common"]["payout"]
    assert total == pytest.approx(out["assets"])
    assert [c["converted"] for c in out["claims"]] == [True, True, False, False]


def test_cli_dated_table_and_csv(capsys):
    args = ["waterfall", FILE, "--btc-price", "30000", "--date", "2028-03-01"]
    assert cli.main(args) == 0
    assert "due on 2028-03-01" in capsys.readouterr().out
    assert cli.main([*args, "--equity-price", "500", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("name,kind,due,payout") and len(lines) == 6


@pytest.mark.parametrize("extra", [["--btc-price", "-5"], ["--btc-price", "nan"],
                                   ["--btc-price", "1", "--date", "tomorrow"],
                                   ["--btc-price", "1", "--date", "2020-01-01"],
                                   ["--btc-price", "1", "--equity-price", "-1"]])
def test_cli_bad_input_exits_2(extra, capsys):
    assert cli.main(["waterfall", FILE, *extra]) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    assert cap.err.startswith("convpricer: error:") and len(cap.err.strip().splitlines()) == 1


def test_cli_missing_price_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["waterfall", FILE])
    assert e.value.code == 2
    assert "--btc-price" in capsys.readouterr().err


def test_cli_entry_point():
    r = subprocess.run([sys.executable, "-m", "convpricer", "waterfall", FILE,
                        "--btc-price", "50000", "--format", "json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["btc_price"] == 50000.0
    r = subprocess.run([sys.executable, "-m", "convpricer", "waterfall", FILE,
                        "--btc-price", "-1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
