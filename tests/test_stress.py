"""Stress grids: drawdowns, equity rules (constant mNAV, mNAV collapse, NAV),
vol and correlation regimes; stress() is value_grid plus changes from base."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from test_grid import ENGINE, OPTIONS, _document

import convpricer as cp
from convpricer.cli import main
from convpricer.errors import InputError
from convpricer.loader import parse
from convpricer.stress import stress, stress_scenarios
from convpricer.testing import to_toml

NOTES = ["zero_coupon_convertible", "convertible_note"]


@pytest.fixture(scope="module")
def case():
    d = parse(_document())
    return d.structure, d.market


# ----- scenarios -------------------------------------------------------------------
def test_scenarios_are_the_cartesian_product_in_order(case):
    s, m = case
    sc = stress_scenarios(m, s, [0.0, 0.5], equity=["constant_mnav", "fixed"], mnav=[1.0],
                          btc_vols=[0.35, 0.55], correlations=[0.3, 0.6, 0.9])
    assert len(sc) == 2 * 3 * 2 * 3
    assert list(sc.columns) == ["btc_price", "equity_price", "btc_vol", "correlation"]
    assert list(sc.index.names) == ["btc_drawdown", "equity"]
    assert list(sc.index.get_level_values("equity").unique()) == ["constant_mnav", "fixed",
                                                                  "mnav=1"]
    assert list(sc["correlation"].iloc[:3]) == [0.3, 0.6, 0.9]  # innermost axis
    assert list(sc["btc_vol"].iloc[:6]) == [0.35] * 3 + [0.55] * 3
    half = sc.xs(0.5, level="btc_drawdown")
    assert (half["btc_price"] == m.btc_price * 0.5).all()


def test_equity_rules(case):
    s, m = case
    sc = stress_scenarios(m, s, [0.0, 0.6], equity=["constant_mnav", "fixed", "nav",
                                                    "diluted_nav"], mnav=[1.0, 2.5])
    for (d, rule), row in sc.iterrows():
        b = m.btc_price * (1 - d)
        assert row.btc_price == b
        mnav = s.mnav(row.equity_price, b)
        if rule == "constant_mnav":  # the share price follows BTC
            assert mnav == pytest.approx(s.mnav(m.equity_price, m.btc_price))
            assert row.equity_price == pytest.approx(m.equity_price * (1 - d))
        elif rule == "fixed":
            assert row.equity_price == m.equity_price
        elif rule == "nav":
            assert row.equity_price == pytest.approx(s.nav_per_share(b))
        elif rule == "diluted_nav":
            wf = cp.waterfall(s, btc_price=b)
            assert row.equity_price == pytest.approx(wf.attrs["common_per_share"])
        else:  # mNAV collapse: the market pays m times the bitcoin per share
            assert mnav == pytest.approx(float(rule.split("=")[1]))
    # equity at NAV is below equity at mNAV 1: the claims are senior to common
    at = sc.xs(0.0, level="btc_drawdown")["equity_price"]
    assert at["nav"] < at["mnav=1"]


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"btc_drawdowns": [0.5, 1.0]}, "btc_drawdowns[1]"),
    ({"btc_vols": [0.0]}, "btc_vols[0]"),
    ({"correlations": [1.5]}, "correlations[0]"),
    ({"equity": ["sideways"]}, "equity[0]"),
    ({"mnav": [-1.0]}, "equity[0]"),
    ({"btc_drawdowns": []}, "btc_drawdowns"),
])
def test_bad_stresses_are_refused(case, kwargs, field):
    s, m = case
    with pytest.raises(InputError) as e:
        stress_scenarios(m, s, **kwargs)
    assert e.value.field.startswith(field)


# ----- valuation -------------------------------------------------------------------
@pytest.fixture(scope="module")
def stressed(case):
    s, m = case
    sc = stress_scenarios(m, s, [0.0, 0.25, 0.5, 0.75, 0.97], equity=["constant_mnav"],
                          mnav=["nav"])
    return stress(s, m, sc, ENGINE, scheduler="processes", workers=2, **OPTIONS)


def test_no_stress_no_change(stressed):
    base = stressed[(stressed["btc_drawdown"] == 0) & (stressed["equity"] == "constant_mnav")]
    assert (base["change"] == 0).all() and (base["change_pct"] == 0).all()


def test_notes_lose_value_as_bitcoin_and_equity_fall(stressed):
    """At constant mNAV the share price falls with BTC: every note loses value, less
    than its parity does (the bond floor and the put cushion it)."""
    g = stressed[(stressed["equity"] == "constant_mnav") & stressed["kind"].isin(NOTES)]
    for _, x in g.groupby("name"):
        v = x.sort_values("btc_drawdown")["value"].to_numpy(float)
        assert np.all(np.diff(v) < 0)
        assert x["change_pct"].min() > -0.97  # the share price fell 97%
    common = stressed[(stressed["equity"] == "constant_mnav")
                      & (stressed["kind"] == "common_equity")]
    np.testing.assert_allclose(common["change_pct"], -common["btc_drawdown"], atol=1e-12)


def test_equity_at_nav_fails_where_nav_is_negative(case, stressed):
    s, m = case
    nav = stressed[stressed["equity"] == "nav"]
    for d, x in nav.groupby("btc_drawdown"):
        if s.nav_per_share(m.btc_price * (1 - d)) > 0:
            assert x["error"].isna().all()
        else:  # no positive share price: the scenario says so in its rows
            assert x["error"].str.contains("equity_price").all()
            assert x["value"].isna().all()
    assert stressed.attrs["errors"] >= 1


def test_stress_row_is_value_at_the_stressed_market(case, stressed):
    s, m = case
    row = stressed[(stressed["btc_drawdown"] == 0.5) & (stressed["equity"] == "constant_mnav")]
    direct = cp.value(s, m.replace(btc_price=m.btc_price / 2, equity_price=m.equity_price / 2),
                      ENGINE, greeks=False, **OPTIONS)
    np.testing.assert_allclose(row["value"].to_numpy(float), direct["value"].to_numpy(float),
                               rtol=1e-13)
    base = cp.value(s, m, ENGINE, greeks=False, **OPTIONS)
    np.testing.assert_allclose(row["base_value"].to_numpy(float),
                               base["value"].to_numpy(float), rtol=1e-13)


def test_lower_btc_vol_regime(case):
    """A calmer bitcoin (ETF era) changes nothing a one-factor engine sees; a
    two-factor engine's notes are worth at least as much (less default risk)."""
    s, m = case
    sc = stress_scenarios(m, s, [0.5], btc_vols=[0.35, 0.55])
    out = stress(s, m, sc, ENGINE, scheduler="sync", **OPTIONS)
    notes = out[out["kind"].isin(NOTES)].pivot(index="name", columns="btc_vol",
                                               values="value")
    assert (notes[0.35] >= notes[0.55] - 1e-9).all()


# ----- command line ----------------------------------------------------------------
def test_cli_stress(case, tmp_path, capsys):
    s, m = case
    doc = tmp_path / "doc.toml"
    doc.write_text(to_toml(_document()), encoding="utf-8")
    args = ["stress", str(doc), "--btc-drawdowns", "0,0.5", "--mnav", "1",
            "--correlations", "0.5,0.8", "--scheduler", "sync"]
    assert main([*args, "--format", "csv"]) == 0
    got = pd.read_csv(io.StringIO(capsys.readouterr().out))
    want = stress(s, m, stress_scenarios(m, s, [0.0, 0.5], mnav=[1.0],
                                         correlations=[0.5, 0.8]),
                  ENGINE, scheduler="sync", **OPTIONS)
    assert len(got) == len(want) == 4 * len(s.instruments)
    np.testing.assert_allclose(got["value"], want["value"].to_numpy(float), rtol=1e-12)
    assert main([*args, "--format", "json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert js["scenarios"] == 4 and js["errors"] == 0
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "mnav=1" in text and "change_pct" in text
    out = tmp_path / "stress.csv"
    assert main([*args, "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out and len(pd.read_csv(out)) == len(want)
    assert main(["stress", str(doc), "--btc-drawdowns", "0,1.5"]) == 2
    assert "btc_drawdowns[1]" in capsys.readouterr().err
    assert main(["stress", str(doc), "--equity", "sideways"]) == 2
    assert "sideways" in capsys.readouterr().err
