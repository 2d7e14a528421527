"""Closed forms: Black-Scholes, the exact Tsiveriotis-Fernandes European
convertible, Margrabe, and straight-bond floors. Used by engines for control
values and by the tests as references."""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from .instruments import ZeroCouponConvertible
from .market import Market
from .schedule import convertible_schedule


def black_scholes(spot: float, strike: float, t: float, rate: float, carry: float, vol: float,
                  call: bool = True) -> float:
    """Black-Scholes price with continuous rate and carry (yield) to time t (years)."""
    if t <= 0 or vol <= 0:
        fwd_intrinsic = spot * np.exp(-carry * t) - strike * np.exp(-rate * t)
        return float(max(fwd_intrinsic, 0.0) if call else max(-fwd_intrinsic, 0.0))
    sd = vol * np.sqrt(t)
    d1 = (np.log(spot / strike) + (rate - carry + 0.5 * vol * vol) * t) / sd
    d2 = d1 - sd
    if call:
        return float(spot * np.exp(-carry * t) * norm.cdf(d1)
                     - strike * np.exp(-rate * t) * norm.cdf(d2))
    return float(strike * np.exp(-rate * t) * norm.cdf(-d2)
                 - spot * np.exp(-carry * t) * norm.cdf(-d1))


def margrabe(s1: float, s2: float, t: float, q1: float, q2: float, vol1: float, vol2: float,
             rho: float) -> float:
    """Value of the option to exchange asset 2 for asset 1: E[max(S1 - S2, 0)]."""
    v = np.sqrt(max(vol1 ** 2 + vol2 ** 2 - 2 * rho * vol1 * vol2, 0.0))
    f1, f2 = s1 * np.exp(-q1 * t), s2 * np.exp(-q2 * t)
    if v * np.sqrt(t) < 1e-12:
        return float(max(f1 - f2, 0.0))
    d1 = (np.log(f1 / f2) + 0.5 * v * v * t) / (v * np.sqrt(t))
    return float(f1 * norm.cdf(d1) - f2 * norm.cdf(d1 - v * np.sqrt(t)))


def tf_european_zero(note: ZeroCouponConvertible, market: Market,
                     credit_spread: float | None = None) -> float:
    """Exact Tsiveriotis-Fernandes value of a zero-coupon note convertible only at
    maturity, with no put or call, under the market's curves:

        ratio * S * exp(-qT) * N(d1) + face * exp(-(r + cs) T) * N(-d2),  K = face/ratio,

    with r integrated along the rate curve and the equity's total variance.
    """
    cs = note.credit_spread if credit_spread is None else credit_spread
    t = market.time(note.maturity)
    df = float(market.discount(t))
    r = -np.log(df) / t
    vol = market.vol("equity", t)
    q = market.equity_carry
    s, k, n = market.equity_price, note.conversion_price, note.conversion_ratio
    sd = vol * np.sqrt(t)
    d1 = (np.log(s / k) + (r - q + 0.5 * vol * vol) * t) / sd
    d2 = d1 - sd
    return float(n * s * np.exp(-q * t) * norm.cdf(d1)
                 + note.face * np.exp(-(r + cs) * t) * norm.cdf(-d2))


def bond_floor(note: ZeroCouponConvertible, market: Market, *,
               spread: float | None = None, with_puts: bool = False) -> float:
    """Straight-bond value per note: remaining coupons and redemption discounted
    along the rate curve plus the note's credit spread (or ``spread``).

    With ``with_puts`` the holder redeems at the best put date (deterministic
    rates make that a choice among a few bonds): the put-adjusted floor.
    """
    cs = note.credit_spread if spread is None else spread
    sch = convertible_schedule(note, market.valuation_date)

    def pv_to(t_end: float, final: float) -> float:
        m = sch.coupon_times <= t_end + 1e-12
        ct = sch.coupon_times[m]
        pv = float(np.sum(sch.coupon_amounts[m] * market.discount(ct) * np.exp(-cs * ct))) \
            if ct.size else 0.0
        return pv + final * float(market.discount(t_end)) * np.exp(-cs * t_end)

    best = pv_to(sch.maturity, sch.redemption)
    if with_puts:
        for tp in sch.put_times:
            best = max(best, pv_to(tp, sch.put_price))
    return best
