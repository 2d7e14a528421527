"""Holder and issuer decisions at one date, shared by the backward-induction
engines (lattice2d, fdm2d) and used by Monte Carlo on its regression estimates.

Values are split the Tsiveriotis-Fernandes way: ``equity`` is the part of the
value that will be settled in shares (discounted at r), ``debt`` the part
settled in cash (discounted at r + credit spread). Every array has the same
shape (the grid of states).

The decision at one state is :func:`decide`, compiled with numba so that the
lattice's compiled backward sweep (engines/lattice_kernel.py) takes the very
same decision node by node; :func:`exercise` applies it to arrays.
"""

from __future__ import annotations

import numpy as np
from numba import njit

HOLD, CONVERTED, PUT, CALLED_REDEEMED, CALLED_CONVERTED, DEFAULTED = range(6)


@njit(cache=True, nogil=True, inline="always")
def decide(equity: float, debt: float, conversion_value: float, can_convert: bool,
           put_value: float, call_value: float, call_allowed: bool
           ) -> tuple[float, float, int]:
    """The decisions at one state: (equity, debt, code). ``put_value`` and
    ``call_value`` are NaN where there is no put or call.

    The value after decisions is max(conversion, put, min(continuation,
    max(call, conversion))): the issuer calls where calling lowers the value;
    a called holder converts when conversion is worth more than the call price,
    so a call never takes a note below its conversion value.
    """
    code = HOLD
    if call_allowed and not np.isnan(call_value) \
            and max(call_value, conversion_value) < equity + debt:
        if conversion_value >= call_value:
            equity, debt, code = conversion_value, 0.0, CALLED_CONVERTED
        else:
            equity, debt, code = 0.0, call_value, CALLED_REDEEMED
    if not np.isnan(put_value) and put_value > equity + debt:
        equity, debt, code = 0.0, put_value, PUT
    if can_convert and conversion_value > equity + debt:
        equity, debt, code = conversion_value, 0.0, CONVERTED
    return equity, debt, code


@njit(cache=True, nogil=True)
def _exercise_flat(eq: np.ndarray, de: np.ndarray, conv: np.ndarray, put: np.ndarray,
                   call: np.ndarray, mask: np.ndarray, can_convert: bool,
                   code: np.ndarray) -> None:
    for i in range(eq.size):
        eq[i], de[i], code[i] = decide(eq[i], de[i], conv[i], can_convert, put[i], call[i],
                                       mask[i])


def exercise(equity: np.ndarray, debt: np.ndarray, conversion_value: np.ndarray, *,
             can_convert: bool, put_value: float | np.ndarray | None = None,
             call_value: float | np.ndarray | None = None,
             call_mask: np.ndarray | bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply the issuer's call, then the holder's put and conversion (:func:`decide`)
    on every state; the inputs broadcast against each other.

    Returns new arrays (equity, debt, decision) where decision holds the codes above.
    """
    nan = np.nan
    eq, de, conv, put, call, mask = np.broadcast_arrays(
        np.asarray(equity, dtype=float), np.asarray(debt, dtype=float),
        np.asarray(conversion_value, dtype=float),
        np.asarray(nan if put_value is None else put_value, dtype=float),
        np.asarray(nan if call_value is None else call_value, dtype=float),
        np.asarray(call_mask, dtype=bool))
    shape = eq.shape
    eq, de = eq.astype(float, order="C"), de.astype(float, order="C")   # copies
    code = np.empty(shape, dtype=np.int8)
    _exercise_flat(eq.reshape(-1), de.reshape(-1),
                   *(np.ascontiguousarray(a).reshape(-1) for a in (conv, put, call, mask)),
                   bool(can_convert), code.reshape(-1))
    return eq, de, code
