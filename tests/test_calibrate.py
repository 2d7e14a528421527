"""Calibration recovers known parameters, refuses impossible or under-determined
problems; hazard_from_spread inverts the straight-bond pricing; realised
statistics match the reference data's reported figures."""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path

import numpy as np
import pytest

import convpricer as cp
from convpricer.analytic import bond_floor
from convpricer.calibrate import CalibrationError, calibrate, hazard_from_spread
from convpricer.realised import read_closes, realised

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
MARKET = cp.Market(valuation_date=date(2025, 2, 21), btc_price=96000.0, equity_price=100.0,
                   btc_vol=0.5, equity_vol=0.6, correlation=0.5, risk_free_rate=0.04)
NOTE = cp.ZeroCouponConvertible(name="note", face=1000.0, notional=1e9,
                                issue_date=date(2025, 2, 21), maturity=date(2030, 2, 21),
                                conversion_ratio=6.0, put_dates=(date(2028, 2, 21),))
STRUCTURE = cp.CapitalStructure(name="issuer", btc_holdings=1e6, shares_outstanding=1e8,
                                instruments=(NOTE,))
OPTS = {"engine": "quantlib", "steps": 200}


def test_recovers_equity_vol():
    target = cp.price(NOTE, MARKET, STRUCTURE, greeks=False, **OPTS).value
    res = calibrate(STRUCTURE, MARKET.replace(equity_vol=0.9), {"note": target},
                    ("equity_vol",), **OPTS)
    assert res.parameters["equity_vol"] == pytest.approx(0.6, abs=1e-4)
    assert res.rms_relative_error < 1e-6
    assert res.market.equity_vol == pytest.approx(0.6, abs=1e-4)


def test_recovers_credit_spread():
    noted = dataclasses.replace(NOTE, credit_spread=0.03)
    s = STRUCTURE.replace(instruments=(noted,))
    target = cp.price(noted, MARKET, s, greeks=False, **OPTS).value
    res = calibrate(STRUCTURE, MARKET, {"note": target}, ("credit_spread",), **OPTS)
    assert res.parameters["credit_spread"] == pytest.approx(0.03, abs=1e-4)


def test_multi_start_keeps_the_best_fit():
    target = cp.price(NOTE, MARKET, STRUCTURE, greeks=False, **OPTS).value
    res = calibrate(STRUCTURE, MARKET, {"note": target}, ("equity_vol",),
                    initial=[{"equity_vol": 2.5}, {"equity_vol": 0.3}], **OPTS)
    assert res.parameters["equity_vol"] == pytest.approx(0.6, abs=1e-4)
    assert res.evaluations >= 2


def test_price_below_every_model_value_has_no_solution():
    # a note is worth at least its bond floor; half of it cannot be reproduced
    # by any volatility
    low = 0.5 * bond_floor(NOTE, MARKET)
    with pytest.raises(CalibrationError) as e:
        calibrate(STRUCTURE, MARKET, {"note": low}, ("equity_vol",), **OPTS)
    assert e.value.result is not None and e.value.result.rms_relative_error > 0.02


def test_under_determined_and_bad_inputs_are_refused():
    with pytest.raises(cp.InputError, match="cannot be identified"):
        calibrate(STRUCTURE, MARKET, {"note": 1000.0}, ("equity_vol", "credit_spread"))
    with pytest.raises(cp.InputError, match="unknown"):
        calibrate(STRUCTURE, MARKET, {"note": 1000.0}, ("gamma",))
    with pytest.raises(cp.InputError, match="observed"):
        calibrate(STRUCTURE, MARKET, {"note": float("nan")}, ("equity_vol",))
    with pytest.raises(cp.InputError, match="names no note"):
        calibrate(STRUCTURE, MARKET, {"nope": 1000.0}, ("equity_vol",))


def test_hazard_from_spread_matches_credit_triangle_and_reprices():
    # zero recovery, zero coupon: survival exp(-hT) equals exp(-sT) exactly
    zero_rec = dataclasses.replace(NOTE, recovery_rate=0.0)
    assert hazard_from_spread(zero_rec, MARKET, 0.03) == pytest.approx(0.03, abs=1e-10)
    # with 40% recovery of face: reprice the bond by hand at that hazard rate.
    # Recovery of face on a discount bond is worth more than recovery of market
    # value, so h exceeds the credit-triangle s / (1 - R) (and stays close to it).
    h = hazard_from_spread(NOTE, MARKET, 0.03)
    r, t = 0.04, 1826 / 365  # 2025-02-21 to 2030-02-21 is 1826 days
    by_hand = np.exp(-(r + h) * t) + 0.4 * h / (r + h) * (1 - np.exp(-(r + h) * t))
    assert by_hand == pytest.approx(np.exp(-(r + 0.03) * t), rel=1e-9)
    assert 0.03 / 0.6 < h < 0.03 / 0.6 * 1.2
    assert hazard_from_spread(NOTE, MARKET, 0.0) == 0.0


@pytest.mark.skipif(not REFERENCE.exists(), reason="shared/reference not beside the repo")
def test_realised_2025_matches_reported_figures():
    # reference README: realised 2025 vol about 75% (MSTR) and 40% (BTC), correlation ~0.7
    r = realised(read_closes(REFERENCE / "btc_mstr_daily_close.csv"), "2025-01-01",
                 "2025-12-31")
    assert r["equity_vol"] == pytest.approx(0.75, abs=0.03)
    assert r["btc_vol"] == pytest.approx(0.40, abs=0.03)
    assert r["correlation"] == pytest.approx(0.70, abs=0.05)
    assert np.isfinite(r.to_numpy(dtype=float)).all()
