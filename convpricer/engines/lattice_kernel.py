"""Compiled (numba) inner loops of the ``lattice2d`` engine: the 9-point transition
with its ghost nodes, the decisions at every node, and a backward sweep over a
run of ordinary steps.

A value stack has shape (K, n1, n2): layer 0 the value (or its share part E
when a credit spread splits it), then the cash part D, the value of $1 of
arrears U and the indicator layers p_convert, p_impaired, p_default where
present (lattice2d._Layout; p_impaired and p_default only where the claim can
default). Layer indices are passed as ints, -1 = absent.

An *ordinary* step is an expectation, the discount, the decisions of
:func:`convpricer.decisions.decide` (a soft call allowed from one row up), a
coupon and a preferred's dividend out of surplus: :func:`sweep` runs a whole
run of them. Everything else (structural default tests, smoothed decision
dates, the first N-of-M date, hazard credit, the root) stays in lattice2d's
Python, which calls the same :func:`expect`, :func:`decide_all`,
:func:`smooth_decide`, :func:`pay_dividend`, :func:`box_cdf` and
:func:`log_table` from here.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..decisions import CALLED_CONVERTED, CONVERTED, HOLD, decide

_JIT = {"cache": True, "nogil": True, "fastmath": False}


@njit(**_JIT)
def ghosts(v: np.ndarray) -> None:
    """Refill the ghost rows (and columns when n2 > 1) of (K, n1, n2) by linear
    extrapolation, in place."""
    kk, n1, n2 = v.shape
    for q in range(kk):
        if n2 > 1:
            for i in range(n1):
                v[q, i, 0] = 2.0 * v[q, i, 1] - v[q, i, 2]
                v[q, i, n2 - 1] = 2.0 * v[q, i, n2 - 2] - v[q, i, n2 - 3]
        for j in range(n2):
            v[q, 0, j] = 2.0 * v[q, 1, j] - v[q, 2, j]
            v[q, n1 - 1, j] = 2.0 * v[q, n1 - 2, j] - v[q, n1 - 3, j]


@njit(**_JIT)
def _z1(wu: float, w0: float, wd: float, a: float, m: float, h: float) -> float:
    """The trinomial in Z1: up with probability (a + m + h) / 2, down (a - m - h) / 2."""
    return (1.0 - a) * w0 + 0.5 * (a + m + h) * wu + 0.5 * (a - m - h) * wd


@njit(**_JIT)
def expect(x: np.ndarray, out: np.ndarray, a: float, b: float, e: float, g: float,
           m: float, gp: float, mh: np.ndarray, scale: np.ndarray) -> None:
    """out = scale[q] E[x(t_k+1) | node at t_k] on every node of each layer q of a
    C-contiguous stack (K, n1, n2) (scale: the layers' discount factors over the
    step, or ones), ghosts refilled in x and out. Per step: P(Z1 moves) a, mean move
    m (rows); P(Z2 moves) b; covariance term e; mixed fourth-difference weight g.
    ``mh`` (n1,) is an extra mean move of Z1 in rows per row (hazard drift) with
    the move -gp * mh of Z2 (columns), or empty."""
    ghosts(x)
    kk, n1, n2 = x.shape
    hazard = mh.size > 0
    if n2 == 1:
        x1, o1 = x.reshape(kk, n1), out.reshape(kk, n1)
        for q in range(kk):
            xq, oq, f = x1[q], o1[q], scale[q]
            for i in range(1, n1 - 1):
                oq[i] = f * _z1(xq[i + 1], xq[i], xq[i - 1], a, m, mh[i] if hazard else 0.0)
        ghosts(out)
        return
    c = 1.0 - b
    for q in range(kk):
        f = scale[q]
        for i in range(1, n1 - 1):
            h = mh[i] if hazard else 0.0
            xu, x0, xd, o = x[q, i + 1], x[q, i], x[q, i - 1], out[q, i]
            for j in range(1, n2 - 1):
                r = _z1(0.5 * b * (xu[j + 1] + xu[j - 1]) + c * xu[j],
                        0.5 * b * (x0[j + 1] + x0[j - 1]) + c * x0[j],
                        0.5 * b * (xd[j + 1] + xd[j - 1]) + c * xd[j], a, m, h)
                if e != 0.0:
                    r += 0.25 * e * (xu[j + 1] + xd[j - 1] - xu[j - 1] - xd[j + 1])
                if g != 0.0:
                    r += g * ((xu[j + 1] - 2.0 * xu[j] + xu[j - 1])
                              - 2.0 * (x0[j + 1] - 2.0 * x0[j] + x0[j - 1])
                              + (xd[j + 1] - 2.0 * xd[j] + xd[j - 1]))
                if hazard and gp != 0.0:
                    r -= 0.5 * gp * h * (_z1(xu[j + 1], x0[j + 1], xd[j + 1], a, 0.0, 0.0)
                                         - _z1(xu[j - 1], x0[j - 1], xd[j - 1], a, 0.0, 0.0))
                o[j] = f * r
    ghosts(out)


@njit(inline="always", **_JIT)
def _box(y: float, h1: float, h2: float) -> float:
    """P(U1 + U2 <= y) for independent U1 ~ U[-h1, h1], U2 ~ U[-h2, h2], 0 <= h1 <= h2."""
    if h2 <= 0.0:
        return 1.0 if y > 0.0 else 0.0
    if y >= h1 + h2:
        return 1.0
    if y <= -h1 - h2:
        return 0.0
    if h1 <= 1e-12 * h2:
        return min(max((y + h2) / (2.0 * h2), 0.0), 1.0)
    f = (_ramp2(y + h1 + h2) - _ramp2(y - h1 + h2) - _ramp2(y + h1 - h2)
         + _ramp2(y - h1 - h2)) / (4.0 * h1 * h2)
    return min(max(f, 0.0), 1.0)


@njit(**_JIT)
def box_cdf(x: np.ndarray, h1: float, h2: float) -> np.ndarray:
    """P(U1 + U2 <= x) elementwise for independent U1 ~ U[-h1, h1], U2 ~ U[-h2, h2],
    0 <= h1 <= h2 (the share of a node's cell below a level), an array of x's shape."""
    out = np.empty(x.shape)
    flat, res = x.ravel(), out.reshape(-1)
    for n in range(flat.size):
        res[n] = _box(flat[n], h1, h2)
    return out


@njit(**_JIT)
def log_table(ln_x: np.ndarray, lo: float, step: float, x: np.ndarray,
              values: np.ndarray) -> np.ndarray:
    """A table of values at x[i] = exp(lo + i * step), read at exp(ln_x): linear in x
    between points, the end values outside (as np.interp on x)."""
    out = np.empty(ln_x.shape)
    flat, res = ln_x.ravel(), out.reshape(-1)
    last = values.size - 1
    for n in range(flat.size):
        y = (flat[n] - lo) / step
        if y <= 0.0:
            res[n] = values[0]
        elif y >= last:
            res[n] = values[last]
        else:
            i = min(int(y), last - 1)
            w = (np.exp(flat[n]) - x[i]) / (x[i + 1] - x[i])
            res[n] = values[i] + w * (values[i + 1] - values[i])
    return out


@njit(**_JIT)
def pay_dividend(v: np.ndarray, amount: float, shift: float, u_grid: np.ndarray, h1: float,
                 h2: float, d: int, u: int, solvent: np.ndarray) -> None:
    """Add a preferred dividend to the cash part of the stack v (K, n1, n2), in place:
    paid on the share of each node's cell where ln B - ln_b(t) = u_grid + cell >= shift
    (the surplus test; shift = -inf: always), else owed as arrears worth U per $1 (u
    >= 0; lost otherwise); times ``solvent`` per node (empty: 1). The cell's
    half-widths in ln B: 0 <= h1 <= h2."""
    kk, n1, n2 = v.shape
    flat = v.reshape(kk, n1 * n2)
    for n in range(n1 * n2):
        paid = 1.0 - _box(shift - u_grid[n], h1, h2)
        owed = paid + (1.0 - paid) * flat[u, n] if u >= 0 else paid
        flat[d, n] += amount * owed * (solvent[n] if solvent.size else 1.0)


@njit(**_JIT)
def _ramp2(y: float) -> float:
    return 0.5 * y * y if y > 0.0 else 0.0


@njit(inline="always", **_JIT)
def _settle_node(col: np.ndarray, code: int, u: int, pc: int, pi: int) -> None:
    """Update U and the indicator layers of one node's layers ``col`` (K,) after its
    decision ``code``: $1 of arrears is worth 0 to a converted holder and 1 to one
    paid in cash; p_convert (row pc) 1 or 0 where the claim ended, p_impaired and
    p_default (rows pi, pi + 1; pi = -1 where the claim cannot default) 0 there."""
    if code == HOLD:
        return
    converted = code == CONVERTED or code == CALLED_CONVERTED
    if u >= 0:
        col[u] = 0.0 if converted else 1.0
    if pc >= 0:
        col[pc] = 1.0 if converted else 0.0
    if pi >= 0:
        col[pi] = 0.0
        col[pi + 1] = 0.0


@njit(**_JIT)
def _settle_layers(v: np.ndarray, code: np.ndarray, u: int, pc: int, pi: int) -> None:
    """:func:`_settle_node` on every node of the flat stack v (K, nodes)."""
    for n in range(code.size):
        if code[n] != HOLD:
            _settle_node(v[:, n], code[n], u, pc, pi)


@njit(inline="always", **_JIT)
def _decide_rows(e_row: np.ndarray, d_row: np.ndarray, code: np.ndarray, conv: np.ndarray,
                 can_convert: bool, put: float, call: float, call_row: int, split: bool,
                 n2: int) -> None:
    """decide on every node (rows of n2 nodes), value parts in e_row / d_row. Inlined
    at each call site of decide_all, so that an absent put or call (a literal NaN)
    and a literal can_convert are folded out of the loop by the compiler."""
    i = j = 0                       # one flat loop: node n is (row i, column j)
    for n in range(d_row.size):
        eq, de, code[n] = decide(e_row[n] if split else 0.0, d_row[n], conv[i], can_convert,
                                 put, call, i >= call_row)
        if split:
            e_row[n], d_row[n] = eq, de
        else:
            d_row[n] = eq + de
        j += 1
        if j == n2:
            i, j = i + 1, 0


@njit(**_JIT)
def decide_all(v: np.ndarray, conv: np.ndarray, can_convert: bool, put: float,
               call: float, call_row: int, split: bool, d: int, u: int, pc: int, pi: int,
               code: np.ndarray) -> None:
    """decide on every node of the stack (K, n1, n2); a call allowed on rows >= call_row.
    ``code``: a work array of n1 * n2 int8 (the decisions)."""
    kk, n1, n2 = v.shape
    flat = v.reshape(kk, n1 * n2)
    e, de = flat[0], flat[d]
    nan = np.nan
    if np.isnan(put) and np.isnan(call):            # conversion only (most dates)
        if can_convert:
            _decide_rows(e, de, code, conv, True, nan, nan, 0, split, n2)
        else:
            return
    elif np.isnan(put):
        _decide_rows(e, de, code, conv, can_convert, nan, call, call_row, split, n2)
    else:
        _decide_rows(e, de, code, conv, can_convert, put, call, call_row, split, n2)
    if u >= 0 or pc >= 0:
        _settle_layers(flat, code, u, pc, pi)


@njit(**_JIT)
def smooth_decide(v: np.ndarray, conv: np.ndarray, offsets: np.ndarray, growth: np.ndarray,
                  can_convert: bool, put: float, call: float, call_row: int, split: bool,
                  d: int, u: int, pc: int, pi: int) -> None:
    """decide averaged over each node's cell, in place on the stack (K, n1, n2): at
    sub-points z1 + offsets[q] * dx1 of the row the layers are interpolated
    linearly (central slope between rows, one-sided at the edges) and the
    conversion value is conv[i] * growth[q] (exact in S); the node takes the mean
    of the sub-points' values after decisions. A decision date's kink then no
    longer depends on where it falls between rows."""
    kk, n1, n2 = v.shape
    out = np.zeros_like(v)
    sub = np.empty(kk)
    nq = offsets.size
    for i in range(n1):
        lo, hi = max(i - 1, 0), min(i + 1, n1 - 1)
        scale = 1.0 / (hi - lo)
        allowed = i >= call_row
        for j in range(n2):
            for q in range(nq):
                for m in range(kk):
                    sub[m] = v[m, i, j] + offsets[q] * (v[m, hi, j] - v[m, lo, j]) * scale
                eq, de, code = decide(sub[0] if split else 0.0, sub[d], conv[i] * growth[q],
                                      can_convert, put, call, allowed)
                if split:
                    sub[0], sub[1] = eq, de
                else:
                    sub[0] = eq + de
                _settle_node(sub, code, u, pc, pi)
                for m in range(kk):
                    out[m, i, j] += sub[m]
    for m in range(kk):
        for i in range(n1):
            for j in range(n2):
                v[m, i, j] = out[m, i, j] / nq


@njit(**_JIT)
def layer_discounts(scale: np.ndarray, df: float, spread_df: float, split: bool,
                    u: int) -> None:
    """The discount factor of each layer of a stack over one step, into ``scale``: the
    value (or its share part E) and U at df, a split's cash part D at df x spread_df,
    the indicator layers 1."""
    scale[:] = 1.0
    scale[0] = df
    if split:
        scale[1] = df * spread_df
    if u >= 0:
        scale[u] = df


@njit(**_JIT)
def sweep(v: np.ndarray, tmp: np.ndarray, k_hi: int, k_lo: int, a: np.ndarray,
          b: np.ndarray, e: np.ndarray, g: np.ndarray, m: np.ndarray, df: np.ndarray,
          spread_df: np.ndarray, decides: np.ndarray, convert: np.ndarray, put: np.ndarray,
          call: np.ndarray, call_row: np.ndarray, coupon: np.ndarray, dividend: np.ndarray,
          unpaid: np.ndarray, u_grid: np.ndarray, h1: float, h2: float, conv: np.ndarray,
          split: bool, d: int, u: int, pc: int, pi: int) -> None:
    """Ordinary steps k = k_hi - 1 down to k_lo, in place on v (tmp: a buffer of v's
    shape): expectation, discount (value at df[k], the cash part of a split value
    also at spread_df[k], U at df[k]), decisions where ``decides[k]`` (put/call NaN:
    none; conversion value conv per row), coupon[k] added to the cash part, a
    preferred's dividend[k] by :func:`pay_dividend` with its surplus boundary at
    unpaid[k] (ln B - ln_b(t_k))."""
    none = np.empty(0)
    code = np.empty(v.shape[1] * v.shape[2], dtype=np.int8)
    scale = np.empty(v.shape[0])
    src, dst = v, tmp
    for k in range(k_hi - 1, k_lo - 1, -1):
        layer_discounts(scale, df[k], spread_df[k], split, u)
        expect(src, dst, a[k], b[k], e[k], g[k], m[k], 0.0, none, scale)
        src, dst = dst, src
        if decides[k]:
            decide_all(src, conv, convert[k], put[k], call[k], call_row[k], split, d, u, pc,
                       pi, code)
        if coupon[k] != 0.0:
            src[d] += coupon[k]
        if dividend[k] != 0.0:
            pay_dividend(src, dividend[k], unpaid[k], u_grid, h1, h2, d, u, none)
    if (k_hi - k_lo) % 2:
        v[...] = src
