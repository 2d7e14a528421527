"""Holder and issuer decisions at one date, shared by the backward-induction
engines (lattice2d, fdm2d) and used by Monte Carlo on its regression estimates.

Values are split the Tsiveriotis-Fernandes way: ``equity`` is the part of the
value that will be settled in shares (discounted at r), ``debt`` the part
settled in cash (discounted at r + credit spread). Every array has the same
shape (the grid of states).
"""

from __future__ import annotations

import numpy as np

HOLD, CONVERTED, PUT, CALLED_REDEEMED, CALLED_CONVERTED, DEFAULTED = range(6)


def exercise(equity: np.ndarray, debt: np.ndarray, conversion_value: np.ndarray, *,
             can_convert: bool, put_value: float | np.ndarray | None = None,
             call_value: float | np.ndarray | None = None,
             call_mask: np.ndarray | bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply the issuer's call, then the holder's put and conversion.

    The value after decisions is max(conversion, put, min(continuation,
    max(call, conversion))): the issuer calls where calling lowers the value;
    a called holder converts when conversion is worth more than the call price,
    so a call never takes a note below its conversion value.

    Returns (equity, debt, decision) where decision holds the codes above.
    """
    cont = equity + debt
    decision = np.zeros(cont.shape, dtype=np.int8)
    eq, de = equity.copy(), debt.copy()
    if call_value is not None:
        forced = np.maximum(call_value, conversion_value)
        called = (forced < cont) & call_mask
        by_conv = called & (conversion_value >= call_value)
        by_cash = called & ~by_conv
        eq = np.where(by_conv, conversion_value, np.where(by_cash, 0.0, eq))
        de = np.where(called, np.where(by_cash, call_value, 0.0), de)
        decision[by_conv] = CALLED_CONVERTED
        decision[by_cash] = CALLED_REDEEMED
    total = eq + de
    if put_value is not None:
        put = put_value > total
        eq = np.where(put, 0.0, eq)
        de = np.where(put, put_value, de)
        decision[put] = PUT
        total = eq + de
    if can_convert:
        conv = conversion_value > total
        eq = np.where(conv, conversion_value, eq)
        de = np.where(conv, 0.0, de)
        decision[conv] = CONVERTED
    return eq, de, decision
