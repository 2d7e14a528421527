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
    eq = np.array(equity, dtype=float, copy=True)
    de = np.array(debt, dtype=float, copy=True)
    decision = np.zeros(eq.shape, dtype=np.int8)
    if call_value is not None:
        called = np.maximum(call_value, conversion_value) < eq + de
        if call_mask is not True:
            called &= call_mask
        if called.any():
            by_conv = called & (conversion_value >= call_value)
            by_cash = called ^ by_conv
            _settle(eq, de, decision, by_conv, conversion_value, 0.0, CALLED_CONVERTED)
            _settle(eq, de, decision, by_cash, 0.0, call_value, CALLED_REDEEMED)
    if put_value is not None:
        put = put_value > eq + de
        if put.any():
            _settle(eq, de, decision, put, 0.0, put_value, PUT)
    if can_convert:
        conv = conversion_value > eq + de
        if conv.any():
            _settle(eq, de, decision, conv, conversion_value, 0.0, CONVERTED)
    return eq, de, decision


def _settle(eq: np.ndarray, de: np.ndarray, decision: np.ndarray, where: np.ndarray,
            equity_value: float | np.ndarray, debt_value: float | np.ndarray, code: int) -> None:
    """Where ``where`` holds, set the equity and debt parts and the decision code."""
    np.copyto(eq, equity_value, where=where)
    np.copyto(de, debt_value, where=where)
    np.copyto(decision, code, where=where)
