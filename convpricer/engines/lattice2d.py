"""The ``lattice2d`` engine: a recombining two-factor (equity, bitcoin) trinomial
lattice on a truncated rectangular grid; the default engine.

It values the model of docs/sections/two_factor_conventions.md by backward
induction; docs/sections/lattice2d.md gives the scheme, its measured accuracy
and cost, and the approximations:

* Coordinates: Z1 = martingale part of ln S, Z2 = martingale part of ln B minus
  gamma * Z1 with a constant gamma = rho * sigma_B / sigma_S (average vols to the
  horizon). The equity is an axis, so a soft-call trigger is a row of nodes.
  Without a capital structure nothing depends on bitcoin and Z2 is one node.
* Per step a 9-point stencil with fixed spacings dx_i = sqrt(LAMBDA * max step
  variance): 1-D trinomial marginals, the covariance of (Z1, Z2) (non-zero only
  under vol curves) by a cross term, the drift of a state-dependent hazard by
  the up/down probabilities. Node prices carry the deterministic drift with the
  lattice's own moment generating function (discounted prices are martingales
  on the lattice).
* The grid is truncated at ``width`` standard deviations of the horizon with
  ghost nodes by linear extrapolation: every step costs O(grid).
* Events on steps (schedule.time_grid); Tsiveriotis-Fernandes split, decisions
  by decisions.decide (compiled, lattice_kernel), credit by credit.Credit;
  discontinuities smoothed by cell averages (payoff at maturity, default and
  dividend tests) and the soft-call barrier by interpolation between node rows;
  Richardson
  extrapolation between ``steps`` and 2 x ``steps`` (``extrapolate``).
* Soft calls: an equivalent continuously monitored barrier, trigger x
  exp(c sigma sqrt(1 day)), with c = :func:`trigger_shift` (N of M days); on the
  first call date the exact daily rule's probability given S and S0
  (:func:`window_probability`); a call possible within the rule's first window
  by the rule's simulated mimicking hazard over its hot start (nofm), then the
  barrier.
* The root step from S0 (off the rows when a barrier is anchored on one): the
  discrete normal on the rows with the step's mean and variance.
* Cumulative preferred arrears: linear, through a second backward layer U.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
from scipy.optimize import brentq

from .. import analytic
from ..credit import Credit
from ..errors import EngineError, InputError
from ..greeks import bump_greeks
from ..instruments import PreferredStock, ZeroCouponConvertible
from ..market import Curve, Market
from ..results import PricingResult
from ..schedule import (
    PREFERRED_HORIZON,
    convertible_schedule,
    on_times,
    preferred_schedule,
    time_grid,
)
from ..structure import CapitalStructure
from . import check_options, lattice_kernel, nofm

KINDS = frozenset({"zero_coupon_convertible", "convertible_note", "preferred_stock"})
OPTIONS = frozenset({"steps", "preferred_steps", "extrapolate", "preferred_horizon", "width"})

#: Production defaults (docs/sections/lattice2d.md: accuracy and cost measured).
DEFAULT_STEPS = 500
#: A 30-year preferred needs finer steps (its quarterly dividends alone take 120
#: and its American conversion over 30 years converges slowly).
DEFAULT_PREFERRED_STEPS = 600
DEFAULT_WIDTH = 5.0
MIN_STEPS = 10
#: dx^2 / (largest step variance): 3 makes the trinomial match the normal's
#: fourth moment on the largest step.
LAMBDA = 3.0
#: One trading day in years (variance per close-to-close day: sigma^2 / 252).
TRADING_DAY = 1.0 / 252.0
#: Equivalent continuous barrier of a trigger tested on every trading day, in
#: daily standard deviations: -zeta(1/2) / sqrt(2 pi) (Broadie-Glasserman-Kou).
BGK_SHIFT = 0.5825971579390106
_TOL = 1e-9
#: "An instant before" a due date, in years (conversion allowed then may escape it).
_INSTANT = 1e-7


# ----- options ------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """What a valuation runs with (``steps`` is the coarse lattice)."""

    steps: int | None = None          # None: DEFAULT_STEPS, or DEFAULT_PREFERRED_STEPS
    preferred_steps: int | None = None  # a preferred's steps; None: steps as above
    extrapolate: bool = True
    preferred_horizon: float = PREFERRED_HORIZON
    width: float = DEFAULT_WIDTH


def _settings(options: dict[str, Any]) -> Settings:
    check_options("lattice2d", options, OPTIONS)
    s = Settings(**options)
    for name in ("steps", "preferred_steps"):
        n = getattr(s, name)
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < MIN_STEPS):
            raise EngineError(f"engine lattice2d: {name} = {n!r} must be an integer "
                              f">= {MIN_STEPS}")
    if not isinstance(s.extrapolate, bool):
        raise EngineError(f"engine lattice2d: extrapolate = {s.extrapolate!r} must be "
                          "true or false")
    for name, lo, hi in (("preferred_horizon", 0.25, 100.0), ("width", 3.0, 12.0)):
        v = getattr(s, name)
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            raise EngineError(f"engine lattice2d: {name} = {v!r} must be a number in "
                              f"[{lo:g}, {hi:g}]")
    return s


# ----- N-of-M soft-call trigger ---------------------------------------------------
def trigger_shift(days: int = 1, window: int = 1) -> float:
    """Equivalent continuous barrier of the rule "S >= K on ``days`` of the last
    ``window`` trading days", in daily standard deviations of ln S above ln K.

    A single-day rule is the Broadie-Glasserman-Kou constant (a calling issuer
    uses the first opportunity, so 1 of M is 1 of 1); N of M is measured by
    :func:`simulated_shift`.
    """
    return BGK_SHIFT if days == 1 else simulated_shift(days, window)


@functools.cache
def simulated_shift(days: int, window: int, paths: int = 65536) -> float:
    """c = E[W_T] for a walk with N(0, 1) daily steps arriving from far below (all
    earlier days below K, start 3 below it), T the first day the rule holds,
    walks reaching 25 below dropped (they would arrive afresh): a Brownian motion
    stopped at level c leaves an interval (-A, c) upward with the rule's
    probability (optional stopping). Seeded; standard error about 0.01
    (docs/sections/lattice2d.md)."""
    rng = np.random.default_rng(20250221)
    start, floor = 3.0, 25.0
    w = np.full(paths, -start)
    ring = np.zeros((window, paths), dtype=bool)
    count = np.zeros(paths, dtype=np.int32)
    stopped: list[np.ndarray] = []
    day = 0
    while w.size and day < 100_000:
        w += rng.standard_normal(w.size)
        above = w >= 0.0
        count += above.astype(np.int32) - ring[day % window]
        ring[day % window] = above
        day += 1
        hit, lost = count >= days, w <= -floor
        if hit.any() or lost.any():
            stopped.append(w[hit])
            keep = ~(hit | lost)
            w, ring, count = w[keep], ring[:, keep], count[keep]
    return float(np.concatenate(stopped).mean())


@functools.cache
def _window_normals(window: int, paths: int = 16384) -> np.ndarray:
    """Seeded N(0, 1) draws for :func:`window_probability`: (window + 1, paths)."""
    return np.random.default_rng(20250222).standard_normal((window + 1, paths))


def window_probability(days: int, window: int, x: np.ndarray, x0: float,
                       var_back: np.ndarray, var_total: float) -> np.ndarray:
    """P(the rule holds today | ln(S / K) = x today), on daily closes.

    ``x0`` is ln(S0 / K) at the valuation date, ``var_total`` the variance of ln S
    from then to today and ``var_back[j]`` (j = 0 .. window - 1) the variance from
    the close j trading days before today to today (infinite for a close before
    the valuation date: it counts as below the trigger). Given its two
    ends, ln S is a Brownian bridge (whatever its drift): a close j days back is
    above K when x >= theta_j = -(x0 v_j / V + B_j) / (1 - v_j / V), with B the
    bridge noise, so the rule holds when x reaches the ``days``-th smallest
    theta_j of a path; the probability is the share of seeded bridges
    (:func:`_window_normals`) whose threshold x reaches."""
    need = _window_thresholds(days, window, float(x0), tuple(np.asarray(var_back, float)),
                              float(var_total))
    return np.searchsorted(need, np.asarray(x), side="right") / need.size


def rule_probability(days: int, window: int, trigger_price: float, market: Market,
                     t: float, ln_s: np.ndarray) -> np.ndarray:
    """P(the rule "S >= trigger on ``days`` of the last ``window`` closes" holds at time
    t | ln S = ln_s at t), closes TRADING_DAY apart, those before the valuation date
    below the trigger: :func:`window_probability` with the equity variance of the
    market (shared by lattice2d and fdm2d)."""
    back = t - TRADING_DAY * np.arange(window)
    back = np.where(np.abs(back) < _TOL, 0.0, back)
    var_t = float(market.variance("equity", t))
    var_back = np.where(back >= 0.0, var_t - market.variance("equity", np.maximum(back, 0.0)),
                        np.inf)
    ln_k = math.log(trigger_price)
    return window_probability(days, window, ln_s - ln_k, math.log(market.equity_price) - ln_k,
                              var_back, var_t)


@functools.lru_cache(maxsize=64)
def _window_thresholds(days: int, window: int, x0: float, var_back: tuple[float, ...],
                       var_total: float) -> np.ndarray:
    """The sorted thresholds of :func:`window_probability`, one per seeded bridge
    (cached: the two lattices of a Richardson pair share them)."""
    z = _window_normals(window)
    vb = np.array(var_back)
    inside = vb < var_total * (1 - 1e-9)                   # after the valuation date
    v = np.minimum(vb, var_total)
    w = np.cumsum(np.sqrt(np.diff(v, prepend=0.0))[:, None] * z[:window], axis=0)
    w_total = w[-1] + math.sqrt(max(var_total - v[-1], 0.0)) * z[window]
    frac = (v / var_total)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        theta = -(x0 * frac + w - frac * w_total) / (1.0 - frac)
    theta[~inside] = np.inf
    theta[np.abs(vb - var_total) <= var_total * 1e-9] = -np.inf if x0 >= 0 else np.inf
    return np.sort(np.partition(theta, days - 1, axis=0)[days - 1])


# ----- the lattice ----------------------------------------------------------------
@dataclass
class _Lattice:
    """Geometry and per-step transition of one lattice (times[0] = 0 ... horizon).

    Rows are fixed levels z1 = ln(S / S0) (the equity drift is in the
    probabilities); columns z2 = ln B - ln_b(t) - gamma z1, a martingale.
    """

    times: np.ndarray
    dt: np.ndarray
    df: np.ndarray            # per-step risk-free discount factor D(t_k+1) / D(t_k)
    rate: np.ndarray          # per-step continuously compounded rate
    vol_s: np.ndarray         # per-step equity vol
    a: np.ndarray             # P(Z1 moves) per step
    b: np.ndarray             # P(Z2 moves) per step
    e: np.ndarray             # covariance / (dx1 dx2) per step
    g: np.ndarray             # weight of the mixed fourth difference per step
    m: np.ndarray             # mean move of Z1 (in rows) per step: the equity drift
    dx1: float
    dx2: float
    z1: np.ndarray
    z2: np.ndarray
    gamma: float
    s: np.ndarray             # equity price per row, shape (n1, 1)
    ln_b: np.ndarray          # ln B at z1 = z2 = 0, per time
    anchored: bool = False    # a row on a barrier (S0 is then between rows)
    notes: list[str] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return self.dt.size

    @property
    def two(self) -> bool:
        return self.dx2 > 0

    @property
    def shape(self) -> tuple[int, int]:
        return self.z1.size, self.z2.size

    @functools.cached_property
    def hazard_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Per step, the bounds of an extra (hazard) move of Z1 that keep every
        probability of the stencil non-negative."""
        p0 = _stencil(self.a, self.b, self.e, self.g, self.m)
        p1 = _stencil_drift(self.a, self.b, self.gp)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = -p0 / p1
        lo = np.where(p1 > 0, r, -np.inf).reshape(self.steps, -1).max(axis=1)
        hi = np.where(p1 < 0, r, np.inf).reshape(self.steps, -1).min(axis=1)
        return lo, hi

    @property
    def gp(self) -> float:
        """Move of Z2 (in columns) per row of a hazard move of Z1."""
        return self.gamma * self.dx1 / self.dx2 if self.two else 0.0

    def ln_btc(self, k: int) -> np.ndarray:
        """ln BTC price at the nodes of time k, shape (n1, n2)."""
        return self.ln_b[k] + self.gamma * self.z1[:, None] + self.z2[None, :]

    def before(self, ks: np.ndarray) -> np.ndarray:
        """The time before each of times[ks] (-inf before the first)."""
        return np.where(ks > 0, self.times[np.maximum(ks - 1, 0)], -np.inf)

    @property
    def u_grid(self) -> np.ndarray:
        """ln B - ln_b(t) at the nodes, flat (n1 * n2)."""
        return (self.gamma * self.z1[:, None] + self.z2[None, :]).reshape(-1)

    @property
    def cell(self) -> tuple[float, float]:
        """Half-widths of a node's cell in ln B (along the rows, |gamma| dx1 / 2, and the
        columns, dx2 / 2), the smaller first (lattice_kernel's box_cdf)."""
        h = sorted((abs(self.gamma) * self.dx1 / 2, self.dx2 / 2))
        return h[0], h[1]

    def below(self, k: int, ln_level: float) -> np.ndarray:
        """Share of each node's cell where ln B < ln_level (cell average of the test)."""
        x = (ln_level - self.ln_b[k] - self.u_grid).reshape(self.shape)
        return lattice_kernel.box_cdf(x, *self.cell)

    def root_view(self) -> _Lattice:
        """The three rows z1 = -dx1, 0, dx1 of a single column z2 = 0 around (S0, B0): the
        nodes at t = 0 (S0 is off the rows when a barrier is anchored on one)."""
        z1 = self.dx1 * _MOVES
        return dataclasses.replace(self, z1=z1, z2=np.zeros(1),
                                   s=self.s[0, 0] * np.exp(z1 - self.z1[0])[:, None])

    def expect_root(self, v: np.ndarray) -> np.ndarray:
        """E[v(t_1) | root rows at t = 0], shape (K, 3, 1): from each root row, the
        move of ln S to the rows, times the trinomial in Z2 and the cross terms. The
        move: with S0 on a row (no anchor) the stencil's trinomial; between rows
        (anchored) :func:`_root_move`, mean and variance exact and smooth in S0."""
        two = self.two
        a, b, e, g = self.a[0] - self.m[0] ** 2, self.b[0], self.e[0], self.g[0]
        target = -self.z1[0] / self.dx1 + self.m[0]
        f = min(max(math.floor(target), _REACH), self.z1.size - 2 - _REACH)
        if self.anchored:
            w1 = _root_move(a, target - f)      # rows f - _REACH + 1 .. f + _REACH
        else:
            near = round(target)
            w1 = np.zeros(2 * _REACH)
            i = near - f + _REACH - 2
            w1[i:i + 3] = _trinomial(a, target - near)
        c = (self.z2.size - 1) // 2
        cols = slice(c - 1, c + 2) if two else slice(c, c + 1)
        w2 = np.array([b / 2, 1 - b, b / 2]) if two else np.ones(1)
        p = w1[:, None] * w2[None, :]
        if two:
            # the cross terms, centred on the row nearest the mean
            n = round(target) - f + _REACH - 2
            p[n:n + 3] += g * np.outer(_D2, _D2) + e / 4 * np.outer(_MOVES, _MOVES)
        out = np.empty((v.shape[0], 3, 1))
        for i in range(3):
            block = v[:, f + i - _REACH:f + i + _REACH, cols]
            out[:, i, 0] = np.einsum("kab,ab->k", block, p)
        return out

    def expect(self, v: np.ndarray, k: int, mh: np.ndarray | None,
               scale: np.ndarray) -> np.ndarray:
        """scale[q] E[v(t_k+1) | node at t_k] on every node of each layer q, for a stack
        v of shape (K, n1, n2) (ghosts included, refilled in v); ``mh`` (n1, 1) is an
        extra mean move of Z1 in rows (hazard drift), with the matching move
        -gamma * mh of the bitcoin factor, or None (lattice_kernel.expect)."""
        out = np.empty_like(v)
        hazard = _NO_DRIFT if mh is None else np.ascontiguousarray(mh, dtype=float).reshape(-1)
        lattice_kernel.expect(v, out, self.a[k], self.b[k], self.e[k], self.g[k], self.m[k],
                              self.gp, hazard, scale)
        return out


_NO_DRIFT = np.empty(0)
#: Rows either side of the root step's mean that its move reaches.
_REACH = 4
_MOVES = np.array([-1.0, 0.0, 1.0])
_D2 = np.array([1.0, -2.0, 1.0])


def _trinomial(a: float, eta: float) -> np.ndarray:
    """Weights of rows -1, 0, +1 for a move of mean ``eta`` and variance ``a`` (rows,
    |eta| < 1/2 with a >= |eta| (1 - |eta|))."""
    return np.array([(a + eta * eta - eta) / 2, 1 - a - eta * eta, (a + eta * eta + eta) / 2])


def _root_move(a: float, eta: float) -> np.ndarray:
    """Weights of rows -_REACH + 1 .. _REACH (from the row below the mean, at eta in
    [0, 1) below it) of a move of mean eta and variance ``a`` (rows): the
    maximum-entropy law on the rows with that mean and variance, w_j ~ exp(l1 j + l2
    j^2), a discrete normal, smooth in eta (a trinomial around the nearest row jumps
    where that row changes: a kink in delta); the two rows around the mean (mean
    exact, variance eta (1 - eta), the least a law on the rows can have) where ``a``
    is below that. Newton's method from the normal's (l1, l2), its step halved until
    the moments' error falls; nested root finding (l1 for the mean given l2, l2 for
    the variance) if it stalls."""
    j = np.arange(-_REACH + 1, _REACH + 1) - eta
    if a <= eta * (1 - eta) + 1e-9:
        return np.where(j == -eta, 1 - eta, 0.0) + np.where(j == 1 - eta, eta, 0.0)
    powers = np.vstack([np.ones_like(j), j, j * j, j ** 3, j ** 4])

    def fit(lam: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        x = lam[0] * j + lam[1] * j * j
        w = np.exp(x - x.max())
        w /= w.sum()
        m = powers @ w
        r = np.array([m[1], m[2] - a])
        return w, m, float(abs(r).max())

    lam = np.array([0.0, -0.5 / a])
    w, m, err = fit(lam)
    for _ in range(40):
        if err < 1e-13:
            return w
        jac = np.array([[m[2] - m[1] ** 2, m[3] - m[1] * m[2]],
                        [m[3] - m[1] * m[2], m[4] - m[2] ** 2]])
        step = np.linalg.lstsq(jac, np.array([m[1], m[2] - a]), rcond=None)[0]
        for _ in range(30):
            trial = lam - step
            if trial[1] < 0:
                w_t, m_t, err_t = fit(trial)
                if err_t < err:
                    lam, w, m, err = trial, w_t, m_t, err_t
                    break
            step = step / 2
        else:
            break
    return _root_move_nested(j, a)


def _root_move_nested(j: np.ndarray, a: float) -> np.ndarray:
    """:func:`_root_move` by nested root finding (rows ``j`` relative to the mean)."""
    def law(l1: float, l2: float) -> np.ndarray:
        x = l1 * j + l2 * j * j
        w = np.exp(x - x.max())
        return w / w.sum()

    def centred(l2: float) -> np.ndarray:
        return law(brentq(lambda l1: float(law(l1, l2) @ j), -200.0, 200.0, xtol=1e-14), l2)

    if a >= float(centred(-1e-6) @ (j * j)):
        raise EngineError(f"engine lattice2d: root step variance {a:.3g} rows is beyond "
                          f"{_REACH} rows")
    # variance rises with l2 = -exp(-u) from eta (1 - eta) (u -> -inf) to its top
    u = brentq(lambda u: float(centred(-math.exp(-u)) @ (j * j)) - a, -4.0,
               math.log(1e6), xtol=1e-13)
    return centred(-math.exp(-u))


def _stencil(a, b, e, g, m) -> np.ndarray:
    """The 9 probabilities p[k, i+1, j+1] of moves (i, j) per step."""
    w1 = np.stack([a / 2 - m / 2, 1 - a, a / 2 + m / 2], axis=1)
    w2 = np.stack([b / 2, 1 - b, b / 2], axis=1)
    return (w1[:, :, None] * w2[:, None, :] + g[:, None, None] * np.outer(_D2, _D2)
            + e[:, None, None] / 4 * np.outer(_MOVES, _MOVES))


def _stencil_drift(a, b, gp) -> np.ndarray:
    """The derivative of :func:`_stencil` with respect to an extra move mh of Z1
    (with -gp * mh of Z2)."""
    w2 = np.stack([b / 2, 1 - b, b / 2], axis=1)
    v1 = np.stack([a / 2, 1 - a, a / 2], axis=1)
    return 0.5 * (_MOVES[None, :, None] * w2[:, None, :]
                  - gp * v1[:, :, None] * _MOVES[None, None, :])


def _lattice(market: Market, times: np.ndarray, two_factor: bool, width: float,
             equity_drift: float, anchor: float | None) -> _Lattice:
    """Build the lattice on ``times``. ``equity_drift``: a constant extra drift of
    ln S per year (hazard x equity loss); ``anchor``: a level of ln(S/S0) to put
    on a row (a soft-call barrier)."""
    notes: list[str] = []
    dt = np.diff(times)
    vs = np.maximum(np.diff(market.variance("equity", times)), 0.0)
    vb = np.maximum(np.diff(market.variance("btc", times)), 0.0)
    disc = market.discount(times)
    df = disc[1:] / disc[:-1]
    rate = -np.log(df) / dt
    rho = market.correlation
    gamma = 0.0
    v2 = np.zeros_like(vs)
    cov = np.zeros_like(vs)
    if two_factor:
        gamma = rho * math.sqrt(vb.sum() / vs.sum())
        v2 = np.maximum(vb - 2 * gamma * rho * np.sqrt(vs * vb) + gamma * gamma * vs, 0.0)
        cov = rho * np.sqrt(vs * vb) - gamma * vs
        if v2.max() <= 1e-14 * vb.max():      # |rho| = 1 with proportional vols
            v2[:] = 0.0
            cov[:] = 0.0
    dx1 = math.sqrt(LAMBDA * vs.max())
    # equity drift in the probabilities, matched to the lattice's own moment
    # generating function: E[S(t_k+1)] = S(t_k) exp((r - q + drift) dt) exactly
    growth = np.expm1((rate - market.equity_carry + equity_drift) * dt)
    a = vs / dx1 ** 2
    for _ in range(2):
        m = (growth - a * (math.cosh(dx1) - 1)) / math.sinh(dx1)
        a = vs / dx1 ** 2 + m * m
    if v2.max() > 0.0:
        dx2 = math.sqrt(LAMBDA * v2.max())
        m2 = math.ceil(width * math.sqrt(v2.sum()) / dx2)
        b = v2 / dx2 ** 2
        e = cov / (dx1 * dx2)
    else:
        dx2, m2 = 0.0, 0
        b = np.zeros_like(vs)
        e = np.zeros_like(vs)
    lim = np.minimum(a - np.abs(m), b * (1 - np.abs(m)))
    if np.any(np.abs(e) > lim * (1 + 1e-9)):
        short = np.max(np.abs(e) - lim) * dx1 * dx2
        notes.append("covariance of the lattice coordinates clipped to keep probabilities "
                     f"non-negative (correlation near +-1 under vol curves; largest "
                     f"shortfall {short:.2e} per step)")
        e = np.clip(e, -lim, lim)
    g = np.maximum(np.abs(e) + np.abs(m) * b - a * b, 0.0) / 4
    if dx2 > 0:
        p0 = _stencil(a, b, e, g, m)
        mgf_b = np.einsum("kij,ij->k", p0,
                          np.exp(gamma * dx1 * _MOVES[:, None] + dx2 * _MOVES[None, :]))
    else:       # one column: the stencil is the trinomial in Z1 alone (b = e = g = 0)
        p0 = np.stack([a / 2 - m / 2, 1 - a, a / 2 + m / 2], axis=1)
        mgf_b = p0 @ np.exp(gamma * dx1 * _MOVES)
    if p0.min() < -1e-12:
        raise EngineError("engine lattice2d: negative transition probabilities "
                          f"({p0.min():.2e}); increase steps")
    ln_b = math.log(market.btc_price) + np.concatenate([[0.0], np.cumsum(
        (rate - market.btc_lending_yield) * dt - np.log(mgf_b))])
    # rows: the mean path of z1 +- width standard deviations, one row on the anchor
    mean = np.concatenate([[0.0], np.cumsum(m)]) * dx1
    half = width * math.sqrt(vs.sum())
    off = 0.0 if anchor is None else anchor - round(anchor / dx1) * dx1
    lo_row = math.floor((mean.min() - half - off) / dx1)
    hi_row = math.ceil((mean.max() + half - off) / dx1)
    # plus one ghost row (column) on each side
    z1 = off + dx1 * np.arange(lo_row - 1, hi_row + 2)
    z2 = dx2 * np.arange(-m2 - 1, m2 + 2) if dx2 > 0 else np.zeros(1)
    return _Lattice(times=times, dt=dt, df=df, rate=rate, vol_s=np.sqrt(vs / dt), a=a, b=b,
                    e=e, g=g, m=m, dx1=dx1, dx2=dx2, z1=z1,
                    z2=z2, gamma=gamma,
                    s=(market.equity_price * np.exp(z1))[:, None], ln_b=ln_b,
                    anchored=anchor is not None, notes=notes)


def _long_first_steps(times: np.ndarray, first_event: float) -> np.ndarray:
    """The steps before the first event as long as the longest step allows (fewer of
    them): the first step from S0 must reach the rows around it with its variance
    (schedule.time_grid may make them up to a third shorter than others)."""
    longest = np.diff(times).max()
    n = max(1, math.floor(first_event / longest + 1e-9))
    rest = times[times > first_event - _TOL]
    return np.concatenate([np.linspace(0.0, first_event, n + 1)[:-1], rest])


def _refine(times: np.ndarray) -> np.ndarray:
    """Every step halved (the 2N lattice of the Richardson pair)."""
    mid = 0.5 * (times[1:] + times[:-1])
    return np.insert(times, np.arange(1, times.size), mid)


def _boundary(test, lo: float = -60.0, hi: float = 60.0) -> float:
    """ln B at which a test that holds below some level stops holding (bisection);
    +inf if it always holds, -inf if never. ``test`` maps an array of B to bools."""
    if bool(test(np.array([math.exp(hi)]))[0]):
        return math.inf
    if not bool(test(np.array([math.exp(lo)]))[0]):
        return -math.inf
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if bool(test(np.array([math.exp(mid)]))[0]):
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


# ----- claims -------------------------------------------------------------------------
@dataclass
class _Layout:
    """Rows of the stacked value array: the value (its share part E and cash part D
    on two rows only when a credit spread discounts them differently), then [U]
    (value of $1 of arrears), then [p_convert, [p_impaired, p_default]] (the last
    two only where the claim can default: with a capital structure)."""

    split: bool
    arrears: bool
    probs: bool
    defaults: bool = True

    @property
    def d(self) -> int:
        """Row of the cash part (the value row itself without a split)."""
        return 1 if self.split else 0

    @property
    def u(self) -> int | None:
        return 1 + self.split if self.arrears else None

    @property
    def pc(self) -> int | None:
        return 1 + self.split + self.arrears if self.probs else None

    @property
    def pi(self) -> int | None:
        """Row of p_impaired (p_default the next)."""
        return self.pc + 1 if self.probs and self.defaults else None

    @property
    def size(self) -> int:
        return 1 + self.split + self.arrears + self.probs * (1 + 2 * self.defaults)

    @property
    def flags(self) -> tuple[bool, int, int, int]:
        """(split, U row, p_convert row, p_impaired row) for lattice_kernel, -1 where
        absent."""
        return (self.split, *(-1 if r is None else r for r in (self.u, self.pc, self.pi)))

    def value(self, v: np.ndarray) -> np.ndarray:
        return v[0] + v[1] if self.split else v[0]



#: Sub-points per cell when a decision date is smoothed (midpoint rule in Z1).
SMOOTHING_POINTS = 8
_SUB = (np.arange(SMOOTHING_POINTS) + 0.5) / SMOOTHING_POINTS - 0.5


def _exercise(v: np.ndarray, lay: _Layout, conv: np.ndarray, can_convert: bool,
              put: float | None, call: float | None, call_row: int,
              smooth: float | None = None, call_weight: np.ndarray | None = None) -> None:
    """decisions.decide on every node of the stack v, in place (lattice_kernel);
    ``conv`` is the conversion value per row, a call is allowed from row
    ``call_row`` up. With ``smooth`` (the row spacing dx1) the result is the
    average over each node's cell of the decisions taken on values interpolated
    linearly within the cell (conversion value exactly): a decision date's kink
    (put, first call date) no longer depends on where it falls between rows. With
    ``call_weight`` (n1, 1) the result is the mixture (called where allowed, not
    called) with that probability of the call being allowed."""
    if call_weight is not None:
        held = v.copy()
        _exercise(held, lay, conv, can_convert, put, None, 0, smooth)
        _exercise(v, lay, conv, can_convert, put, call, call_row, smooth)
        v[...] = call_weight * v + (1.0 - call_weight) * held
        return
    split, u, pc, pi = lay.flags
    rights = (bool(can_convert), np.nan if put is None else float(put),
              np.nan if call is None else float(call), int(call_row), split, lay.d, u, pc, pi)
    if smooth is None:
        lattice_kernel.decide_all(v, conv, *rights, np.empty(v[0].size, dtype=np.int8))
        return
    growth = np.exp(_SUB * smooth)
    lattice_kernel.smooth_decide(v, conv, _SUB, growth / growth.mean(), *rights)


def _cell_max(z: np.ndarray, s: np.ndarray, dx: float, ratio: float,
              cash: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """max(ratio * S, cash) at nodes (row coordinate z, price s), smoothed over each
    node's cell [z - dx/2, z + dx/2]: (share part, cash part, share converting). The
    cash part is the cell average; the share part is ratio * s times the S-weighted
    share of the cell converting, so that a node far from the kink keeps its exact
    payoff."""
    shape = np.broadcast_shapes(np.shape(z), np.shape(cash))
    cash = np.broadcast_to(np.asarray(cash, dtype=float), shape)
    if ratio <= 0:
        return np.zeros(shape), cash.copy(), np.zeros(shape)
    lo, hi = z - dx / 2, z + dx / 2
    with np.errstate(divide="ignore"):
        zs = np.log(cash / (ratio * s)) + z
    u = np.clip(zs, lo, hi)
    weighted = -np.expm1(u - hi) / -math.expm1(-dx)
    return ratio * s * weighted, cash * (u - lo) / dx, (hi - u) / dx


@dataclass
class _Step:
    """What happens at one time of the lattice (after the expectation)."""

    convert: bool = False
    put: float | None = None
    call: float | None = None
    barrier: float | None = None    # soft call: calls only at rows on or above it
    start_up: bool = False          # first N-of-M date: all days so far above the trigger
    smooth: bool = False            # a decision date's kink: cell-average the decisions
    due: bool = False               # structural default test
    escape: bool = False            # conversion allowed an instant before that test
    coupon: float = 0.0
    dividend: float = 0.0

    @property
    def decides(self) -> bool:
        return self.convert or self.put is not None or self.call is not None



def _call_row(lat: _Lattice, barrier: float | np.ndarray) -> int | np.ndarray:
    """First row a soft call is allowed on: the barrier's row and those above it
    (n1 where none is)."""
    return np.searchsorted(lat.z1, barrier - lat.dx1 / 2)


def _opt(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


@dataclass
class _Plan:
    """The events at the times lat.times[ks] of a lattice, as arrays over those steps
    (NaN: no put, call or barrier)."""

    ks: np.ndarray
    convert: np.ndarray
    due: np.ndarray
    escape: np.ndarray
    put: np.ndarray
    call: np.ndarray
    barrier: np.ndarray
    start_up: np.ndarray
    smooth: np.ndarray
    coupon: np.ndarray
    dividend: np.ndarray

    @classmethod
    def empty(cls, ks: np.ndarray) -> _Plan:
        n = ks.size
        no, nan, zero = np.zeros(n, bool), np.full(n, np.nan), np.zeros(n)
        return cls(ks=ks, convert=no, due=no.copy(), escape=no.copy(), put=nan,
                   call=nan.copy(), barrier=nan.copy(), start_up=no.copy(), smooth=no.copy(),
                   coupon=zero, dividend=zero.copy())

    def step(self, i: int) -> _Step:
        """The events of the i-th time of the plan."""
        return _Step(convert=bool(self.convert[i]), put=_opt(self.put[i]),
                     call=_opt(self.call[i]), barrier=_opt(self.barrier[i]),
                     start_up=bool(self.start_up[i]), smooth=bool(self.smooth[i]),
                     due=bool(self.due[i]), escape=bool(self.escape[i]),
                     coupon=float(self.coupon[i]), dividend=float(self.dividend[i]))


@dataclass
class _Ordinary:
    """A plan's ordinary steps (expectation, discount, plain decisions, a coupon, a
    preferred's dividend: no smoothing, first N-of-M date, default test or hazard)
    as lattice_kernel.sweep takes them, and where each run of them starts."""

    plan: _Plan
    start: np.ndarray       # start[k]: first step of the ordinary run ending at k - 1
    decides: np.ndarray
    call_row: np.ndarray    # first row a call is allowed on
    spread_df: np.ndarray
    unpaid: np.ndarray      # a preferred's surplus boundary, ln B - ln_b(t_k) (-inf: none)

    @classmethod
    def of(cls, plan: _Plan, lat: _Lattice, spread: float, hazard: bool,
           ln_unpaid: float) -> _Ordinary:
        ordinary = ~(plan.smooth | plan.start_up | plan.due | (plan.ks == 0) | hazard)
        n = ordinary.size
        start = np.maximum.accumulate(np.where(np.r_[True, ~ordinary], np.arange(n + 1), 0))
        barrier = np.where(np.isnan(plan.call), np.nan, plan.barrier)
        row = np.where(np.isnan(barrier), 0, _call_row(lat, barrier))
        return cls(plan=plan, start=start,
                   decides=plan.convert | ~np.isnan(plan.put) | ~np.isnan(plan.call),
                   call_row=row.astype(np.int64), spread_df=np.exp(-spread * lat.dt),
                   unpaid=ln_unpaid - lat.ln_b[plan.ks])

    def sweep(self, v: np.ndarray, tmp: np.ndarray, k: int, lat: _Lattice,
              conv: np.ndarray, lay: _Layout) -> int:
        """Run the ordinary steps ending at k - 1 in place; returns the next step."""
        j = int(self.start[k])
        if j < k:
            p = self.plan
            split, u, pc, pi = lay.flags
            lattice_kernel.sweep(v, tmp, k, j, lat.a, lat.b, lat.e, lat.g, lat.m, lat.df,
                                 self.spread_df, self.decides, p.convert, p.put, p.call,
                                 self.call_row, p.coupon, p.dividend, self.unpaid,
                                 lat.u_grid, *lat.cell, conv, split, lay.d, u, pc, pi)
        return j


#: Points of the liquidation table in ln B (per claim; linear in B between them).
_TABLE = 8193
#: Sub-points per axis when a payout depending on ln B is averaged over a cell.
_CELL = 4


class _Claim:
    """A note or a preferred share: its credit, its events, its payoff at the horizon."""

    inst: ZeroCouponConvertible | PreferredStock
    horizon: float
    spread: float
    ratio: float
    lay: _Layout

    def __init__(self, credit: Credit, market: Market, probs: bool, arrears: bool):
        self.credit = credit
        self.market = market
        self.lay = _Layout(split=self.spread > 0, arrears=arrears, probs=probs,
                           defaults=credit.structure is not None)
        self.ln_insolvent = _boundary(credit.insolvent) if credit.structural else -math.inf
        self.ln_unpaid = -math.inf
        self._table: tuple[float, float, np.ndarray, np.ndarray] | None = None

    def claim(self, t: float) -> float:
        raise NotImplementedError

    def can_convert(self, t: float | np.ndarray) -> bool | np.ndarray:
        raise NotImplementedError

    def plan(self, lat: _Lattice, ks: np.ndarray) -> _Plan:
        """The events at times lat.times[ks]."""
        raise NotImplementedError

    def anchor(self) -> float | None:
        """A level of ln(S / S0) to put on a row of the lattice (a barrier), or None."""
        return None

    def prepare(self, lats: list[_Lattice]) -> list[_Lattice]:
        """Anything the claim needs per lattice, before solving on them."""
        return lats

    def start_up(self, lat: _Lattice, k: int) -> np.ndarray | None:
        """Probability per row that a soft call is first allowed at time k (its first
        possible date, or a close of a hot start)."""
        return None

    def liquidation(self, lat: _Lattice, ln_b: np.ndarray) -> np.ndarray:
        """Credit.liquidation_value of the claim at ln B, from a table in ln B over the
        lattice's range (piecewise linear in B between _TABLE points: exact where the
        payout is linear in B, within a few 1e-6 of face near its kinks)."""
        if self._table is None:
            reach = 2.0 + abs(lat.gamma) * np.abs(lat.z1).max() + np.abs(lat.z2).max()
            lo, hi = lat.ln_b.min() - 1.5 * reach, lat.ln_b.max() + 1.5 * reach
            x = np.linspace(lo, hi, _TABLE)
            bs = np.exp(lo + (x[1] - x[0]) * np.arange(_TABLE))
            self._table = lo, x[1] - x[0], bs, self.credit.liquidation_value(self.inst, bs)
        return lattice_kernel.log_table(np.ascontiguousarray(ln_b, dtype=float), *self._table)

    def liquidation_cells(self, lat: _Lattice, k: int) -> np.ndarray:
        """The liquidation payout averaged over each node's cell (midpoint rule in
        both axes): its kinks in B no longer depend on where they fall between nodes."""
        h1, h2 = lat.gamma * lat.dx1, lat.dx2
        mid = (np.arange(_CELL) + 0.5) / _CELL - 0.5
        ln_b = lat.ln_btc(k)
        out = np.zeros(ln_b.shape)
        for u in (h1 * mid[:, None] + h2 * mid[None, :]).ravel():
            out += self.liquidation(lat, ln_b + u)
        return out / _CELL ** 2

    def _dead(self, lat: _Lattice, ln_b: np.ndarray, z: np.ndarray, s: np.ndarray,
              escape: bool, dx: float, claim: float) -> np.ndarray:
        """Rows of the value stack for claims liquidated at (ln B, z1 = z, S = s), the
        conversion-or-liquidation kink smoothed over a width dx of z1 (0: none)."""
        liq = self.liquidation(lat, ln_b)
        ratio = self.ratio if escape else 0.0
        if dx > 0:
            eq, de, pc = _cell_max(z, s, dx, ratio, liq)
        else:
            pc = (ratio * s > liq).astype(float)
            eq, de = pc * ratio * s, (1 - pc) * liq
        dead = np.zeros((self.lay.size, *liq.shape))
        dead[0] = eq
        dead[self.lay.d] += de
        if self.lay.u is not None:
            dead[self.lay.u] = (1 - pc) * np.minimum(liq / claim, 1.0)
        if self.lay.pc is not None:
            dead[self.lay.pc] = pc
        if self.lay.pi is not None:
            dead[self.lay.pi] = (1 - pc) * (liq < claim * (1 - 1e-12))
            dead[self.lay.pi + 1] = 1 - pc
        return dead

    def default(self, lat: _Lattice, k: int, v: np.ndarray, escape: bool) -> np.ndarray:
        """Structural default test at a due date, in place: each node takes the average
        over its cell of (liquidation where insolvent, its value elsewhere). With
        ``escape`` (conversion allowed) a holder converts an instant before the test
        where that beats the liquidation payout: the limit of converting on the last
        step before it. Cells wholly insolvent are liquidated with the conversion kink
        averaged over z1; on a cell the boundary crosses, the exact insolvent share
        weighs the means over _CELL x _CELL sub-points of the liquidation (exact) and
        of the value (linear from the neighbours). Returns the insolvent share."""
        shape = v.shape[1:]
        f = np.broadcast_to(lat.below(k, self.ln_insolvent), shape)
        full = f >= 1.0
        cut = (f > 0.0) & ~full
        if not (full.any() or cut.any()):
            return f
        claim = self.claim(lat.times[k])
        ln_b = np.broadcast_to(lat.ln_btc(k), shape)
        z = np.broadcast_to(lat.z1[:, None], shape)
        s = np.broadcast_to(lat.s, shape)
        live = v.copy() if cut.any() and full.any() else v
        if full.any():
            v[:, full] = self._dead(lat, ln_b[full], z[full], s[full], escape, lat.dx1, claim)
        if cut.any():
            i, j = np.nonzero(cut)
            n1, n2 = shape
            up, dn = np.minimum(i + 1, n1 - 1), np.maximum(i - 1, 0)
            g1 = (live[:, up, j] - live[:, dn, j]) / np.maximum(up - dn, 1)
            g2 = np.zeros_like(g1)
            if n2 > 1:
                rt, lt = np.minimum(j + 1, n2 - 1), np.maximum(j - 1, 0)
                g2 = (live[:, i, rt] - live[:, i, lt]) / np.maximum(rt - lt, 1)
            mid = (np.arange(_CELL) + 0.5) / _CELL - 0.5
            a, b = np.meshgrid(mid, mid if lat.two else np.zeros(1), indexing="ij")
            a, b = a.ravel()[:, None], b.ravel()[:, None]          # sub-points x nodes
            du = lat.gamma * lat.dx1 * a + lat.dx2 * b
            u = lat.gamma * z[cut] + (lat.z2[j] if n2 > 1 else 0.0)
            ins = u + du < self.ln_insolvent - lat.ln_b[k]
            dead = self._dead(lat, ln_b[cut] + du, z[cut] + lat.dx1 * a,
                              s[cut] * np.exp(lat.dx1 * a), escape, 0.0, claim)
            alive = live[:, i, j][:, None] + a * g1[:, None] + b * g2[:, None]
            n_dead = ins.sum(axis=0)
            n_live = ins.shape[0] - n_dead
            # the sub-points' conditional means; the most or least insolvent sub-point
            # where none falls on one side
            deep, shallow = np.argmin(du[:, 0]), np.argmax(du[:, 0])
            mean_dead = np.where(n_dead > 0, (dead * ins).sum(axis=1) / np.maximum(n_dead, 1),
                                 dead[:, deep])
            mean_live = np.where(n_live > 0, (alive * ~ins).sum(axis=1) / np.maximum(n_live, 1),
                                 alive[:, shallow])
            fc = f[cut]
            v[:, i, j] = fc * mean_dead + (1 - fc) * mean_live
        return f

    def apply(self, lat: _Lattice, k: int, v: np.ndarray, st: _Step, conv: np.ndarray) -> None:
        """Decisions, default test and cash flows of time k, in place. ``conv`` is the
        conversion value per row."""
        if st.decides:
            call, row = st.call, 0
            if call is not None and st.barrier is not None:
                row = int(_call_row(lat, st.barrier))
                if row >= lat.z1.size:
                    call = None
            weight = self.start_up(lat, k) if st.start_up and call is not None else None
            if weight is not None:
                row = 0
            _exercise(v, self.lay, conv, st.convert, st.put, call, row,
                      smooth=lat.dx1 if st.smooth else None, call_weight=weight)
        solvent = 1.0 - self.default(lat, k, v, st.escape) if st.due else 1.0
        self.cash_flows(lat, k, v, st, solvent)

    def cash_flows(self, lat: _Lattice, k: int, v: np.ndarray, st: _Step,
                   solvent: np.ndarray | float) -> None:
        """Coupon, or preferred dividend out of surplus (unpaid: arrears worth U), paid
        where the issuer is solvent, in place."""
        if st.coupon:
            v[self.lay.d] += solvent * st.coupon
        if st.dividend:
            lattice_kernel.pay_dividend(
                v, st.dividend, self.ln_unpaid - lat.ln_b[k], lat.u_grid, *lat.cell,
                self.lay.d, self.lay.flags[1],
                np.ascontiguousarray(np.broadcast_to(solvent, lat.shape)).reshape(-1))


class _Note(_Claim):
    def __init__(self, note: ZeroCouponConvertible, market: Market, credit: Credit,
                 probs: bool, reference: Market | None = None):
        self.spread = note.credit_spread
        super().__init__(credit, market, probs, arrears=False)
        self.inst = note
        self.sch = sch = convertible_schedule(note, market.valuation_date)
        self.horizon = sch.maturity
        self.ratio = note.conversion_ratio
        last = sch.coupon_times.size and abs(sch.coupon_times[-1] - sch.maturity) < _TOL
        self.final = sch.redemption + (sch.coupon_amounts[-1] if last else 0.0)
        self.call_from = sch.call_start
        # a soft call is a barrier on the equity: its trigger monitored on trading days
        self.level: float | None = None
        self.shift = 0.0
        if sch.trigger_price is not None:
            days = sch.trigger_days or 1
            self.level = sch.trigger_price
            self.shift = trigger_shift(days, sch.trigger_window or 1)
            # days before the valuation date count as below the trigger
            self.call_from = max(sch.call_start, (days - 1) * TRADING_DAY)
        # a hot start: the per-close hazard, then the barrier after its last close
        self.hot = nofm.hot_start(note, market, credit.equity_drift, reference) \
            if self.level is not None else None
        self._kill: dict[int, np.ndarray] = {}
        if self.hot is not None:
            self.call_from = self.hot.barrier_from

    def events(self) -> np.ndarray:
        ev = [*self.sch.event_times()]
        if self.call_from is not None:
            ev.append(self.call_from)
        if self.hot is not None:
            ev.append(self.hot.end)
        return np.array(ev)

    def claim(self, t: float) -> float:
        return self.sch.redemption + float(self.sch.accrued(t))

    def can_convert(self, t: float | np.ndarray) -> bool | np.ndarray:
        return (self.ratio > 0) & self.sch.conversion_allowed(t)

    def _barrier(self, vol: float) -> float:
        """Equivalent continuous barrier, ln(S / S0), at equity vol ``vol``."""
        return math.log(self.level / self.market.equity_price) \
            + self.shift * vol * math.sqrt(TRADING_DAY)

    def anchor(self) -> float | None:
        if self.call_from is None or self.call_from >= self.horizon or self.ratio <= 0:
            return None
        if self.level is None:
            # hard call: the issuer calls once parity reaches the call price (a zero-
            # coupon note exactly there): that level on a row is a barrier on a row
            return math.log(self.sch.call_price / (self.ratio * self.market.equity_price))
        t0, t1 = self.call_from, self.horizon
        var = self.market.variance("equity", np.array([t0, t1]))
        return self._barrier(math.sqrt((var[1] - var[0]) / (t1 - t0)))

    def prepare(self, lats: list[_Lattice]) -> list[_Lattice]:
        """A hot start's kill probabilities per step and row of each lattice, from the
        same simulated paths (nofm.HotStart.hazards)."""
        if self.hot is not None:
            ln_s0 = math.log(self.market.equity_price)
            cells = [(lat.times, ln_s0 + np.append(lat.z1 - lat.dx1 / 2, lat.z1[-1] + lat.dx1 / 2))
                     for lat in lats]
            for lat, kill in zip(lats, self.hot.hazards(cells), strict=True):
                self._kill[id(lat.times)] = kill
        return lats

    def start_up(self, lat: _Lattice, k: int) -> np.ndarray:
        """Probability that an N-of-M rule first holds at time k, given S in the node's
        cell: on a hot start the kill probability of the step (:meth:`prepare`);
        otherwise on the first call date (the barrier takes over afterwards)
        :func:`window_probability` on the trading days (TRADING_DAY apart) of the window
        ending then, those before the valuation date below the trigger."""
        if self.hot is not None:
            return self._kill[id(lat.times)][k][:, None]
        sch = self.sch
        # averaged over each row's cell: the probability jumps where today's close
        # crosses the trigger (one more day above)
        p = rule_probability(sch.trigger_days, sch.trigger_window, sch.trigger_price,
                             self.market, self.call_from, np.log(lat.s) + lat.dx1 * _SUB)
        return p.mean(axis=1, keepdims=True)

    def plan(self, lat: _Lattice, ks: np.ndarray) -> _Plan:
        t, sch, p = lat.times[ks], self.sch, _Plan.empty(ks)
        before = lat.before(ks)
        accrued = np.atleast_1d(sch.accrued(t))
        p.convert = np.atleast_1d(self.can_convert(t))
        p.due = np.atleast_1d(self.credit.is_due(t))
        p.escape = np.atleast_1d(self.can_convert(t - _INSTANT))
        put = np.atleast_1d(sch.is_put_time(t))
        p.put = np.where(put, sch.put_price + accrued, np.nan)
        first_call = np.zeros(ks.size, bool)
        if self.call_from is not None:
            callable_ = np.atleast_1d(sch.call_allowed(t)) & (t >= self.call_from - _TOL)
            p.call = np.where(callable_, sch.call_price + accrued, np.nan)
            if self.level is not None:
                p.barrier = np.where(callable_, self._barrier(lat.vol_s[ks]), np.nan)
            first_call = callable_ & (before < self.call_from - _TOL)
            p.start_up = first_call & ((sch.trigger_days or 1) > 1)
            if self.hot is not None:
                # the hot start: calls on steps with a hot close, by their hazard
                closes = self.hot.hot_times
                hot = np.searchsorted(closes, t + _TOL) > np.searchsorted(closes,
                                                                          before + _TOL)
                p.call = np.where(hot, sch.call_price + accrued, p.call)
                p.start_up = hot
                first_call = first_call | hot
        p.smooth = put | first_call | (p.convert & (ks > 0)
                                       & ~np.atleast_1d(self.can_convert(before)))
        for ct, amount in zip(sch.coupon_times[::-1], sch.coupon_amounts[::-1], strict=True):
            p.coupon[np.abs(t - ct) < _TOL] = amount     # the first of coincident coupons
        return p

    def terminal(self, lat: _Lattice) -> np.ndarray:
        k = lat.steps
        v = np.zeros((self.lay.size, *lat.shape))
        ratio = self.ratio if self.can_convert(lat.times[k]) else 0.0
        eq, de, pc = _cell_max(lat.z1[:, None], lat.s, lat.dx1, ratio, self.final)
        v[0] += eq
        v[self.lay.d] += de
        if self.lay.pc is not None:
            v[self.lay.pc] = pc
        if self.credit.is_due(lat.times[k]):
            self.default(lat, k, v, self.can_convert(lat.times[k] - _INSTANT))
        return v


class _Preferred(_Claim):
    def __init__(self, pref: PreferredStock, market: Market, credit: Credit, probs: bool,
                 horizon_years: float):
        self.spread = 0.0
        super().__init__(credit, market, probs, arrears=pref.cumulative)
        self.inst = pref
        vd = market.valuation_date
        self.horizon = market.time(vd + timedelta(days=round(horizon_years * 365)))
        self.sch = preferred_schedule(pref, vd, self.horizon)
        self.ratio = pref.conversion_ratio
        self.full_claim = pref.liquidation_preference + pref.arrears
        # ln B below which the liquidation payout falls short of the claim (-inf: never)
        self.ln_impaired = -math.inf
        if credit.structure is not None:
            self.ln_unpaid = _boundary(lambda b: ~credit.dividend_paid(pref, b))
            self.ln_impaired = _boundary(lambda b: credit.liquidation_value(pref, b)
                                         < self.full_claim * (1 - 1e-12))

    def events(self) -> np.ndarray:
        ev = [*self.sch.dividend_times]
        if self.sch.call_start is not None:
            ev.append(self.sch.call_start)
        return np.array(ev)

    def claim(self, t: float) -> float:
        return self.full_claim

    def can_convert(self, t: float) -> bool:
        return self.ratio > 0

    def anchor(self) -> float | None:
        if self.sch.call_start is None or self.ratio <= 0:
            return None
        return math.log(self.sch.call_price / (self.ratio * self.market.equity_price))

    def plan(self, lat: _Lattice, ks: np.ndarray) -> _Plan:
        t, sch, p = lat.times[ks], self.sch, _Plan.empty(ks)
        p.convert[:] = p.escape[:] = self.ratio > 0
        p.due = np.atleast_1d(self.credit.is_due(t))
        start = sch.call_start
        if start is not None:
            callable_ = t >= start - _TOL
            p.call = np.where(callable_, sch.call_price, np.nan)
            before = lat.before(ks)
            p.smooth = callable_ & (before < start - _TOL)
        p.dividend = np.where(np.atleast_1d(on_times(t, sch.dividend_times, _TOL)),
                              sch.dividend, 0.0)
        return p

    def terminal(self, lat: _Lattice) -> np.ndarray:
        k = lat.steps
        v = np.zeros((self.lay.size, *lat.shape))
        if self.credit.structure is None:
            cash = np.full((lat.shape[0], 1), self.full_claim)
        else:
            cash = self.liquidation_cells(lat, k)
        eq, de, pc = _cell_max(lat.z1[:, None], lat.s, lat.dx1, self.ratio, cash)
        v[0] += eq
        v[self.lay.d] += de
        paid = np.minimum(cash / self.full_claim, 1.0)
        if self.lay.u is not None:
            v[self.lay.u] = (1 - pc) * paid
        if self.lay.pc is not None:
            v[self.lay.pc] = pc
        if self.lay.pi is not None:
            # impaired: the share of the cell below the level (a step in B, smoothed)
            v[self.lay.pi] = (1 - pc) * lat.below(k, self.ln_impaired)
        st = self.plan(lat, np.array([k])).step(0)
        solvent = 1.0 - self.default(lat, k, v, st.escape) if st.due else 1.0
        self.cash_flows(lat, k, v, st, solvent)     # a dividend on the horizon date
        return v


# ----- backward induction --------------------------------------------------------------
@dataclass
class _Solution:
    value: float
    p_convert: float | None
    p_impaired: float | None
    p_default: float | None
    clipped_drift: int


def _solve(claim: _Claim, lat: _Lattice) -> _Solution:
    credit, lay = claim.credit, claim.lay
    hazard = credit.has_hazard
    h0 = float(credit.hazard(np.array(claim.market.equity_price)))
    loss = credit.equity_loss
    state_drift = hazard and credit.structure.hazard_exponent > 0
    clipped = 0
    s = lat.s
    h = credit.hazard(s) if hazard else None
    mh_unit = None if not state_drift else (h - h0) * loss / lat.dx1
    v = claim.terminal(lat)
    root = lat.root_view()
    plan = claim.plan(lat, np.arange(lat.steps))
    ordinary = _Ordinary.of(plan, lat, claim.spread, hazard, claim.ln_unpaid)
    conv = np.ascontiguousarray(claim.ratio * lat.s[:, 0])
    tmp = np.empty_like(v)
    scale = np.empty(lay.size)
    split, u, _, _ = lay.flags
    k = lat.steps
    while k > 0:
        k = ordinary.sweep(v, tmp, k, lat, conv, lay) - 1
        dt = lat.dt[k]
        mh = None
        lattice_kernel.layer_discounts(scale, lat.df[k], ordinary.spread_df[k], split, u)
        if k == 0:
            # from (S0, B0): the hazard drift there is in the deterministic part
            v = lat.expect_root(v) * scale[:, None, None]
            lat = root
            s = lat.s
            conv = np.ascontiguousarray(claim.ratio * s[:, 0])
            if hazard:
                h = credit.hazard(s)
        else:
            if state_drift:
                mh = mh_unit * dt
                lo, hi = lat.hazard_bounds
                out = (mh < lo[k]) | (mh > hi[k])
                if out.any():
                    clipped += int(np.count_nonzero(out))
                    mh = np.clip(mh, lo[k], hi[k])
            v = lat.expect(v, k, mh, scale)
        if hazard:
            # survive the step (every layer but p_impaired / p_default, which a
            # default sets to 1), or default and receive the payoff
            surv = np.exp(-h * dt)
            x = (lat.rate[k] + h) * dt
            weight = h * dt * np.where(np.abs(x) > 1e-12, -np.expm1(-x) / np.where(
                np.abs(x) > 1e-12, x, 1.0), 1.0)
            pay = credit.default_payoff(claim.inst, s, claim.can_convert(lat.times[k]))
            v[:lay.pi] *= surv
            v[lay.d] += weight * pay
            if lay.pi is not None:
                v[lay.pi:] = surv * v[lay.pi:] + (1 - surv)
        claim.apply(lat, k, v, plan.step(k), conv)
    top = v[:, 1, 0]
    probs = [None] * 3
    if lay.pc is not None:
        rows = (lay.pc, lay.pi, lay.pi + 1) if lay.pi is not None else (lay.pc,)
        probs = [float(np.clip(top[r], 0.0, 1.0)) for r in rows] + [0.0] * (3 - len(rows))
    return _Solution(float(lay.value(top)), *probs, clipped_drift=clipped)


@dataclass
class _Run:
    value: float
    solution: _Solution
    settings: dict[str, Any]
    notes: list[str]


def _claim(instrument, market: Market, credit: Credit, opt: Settings, probs: bool,
           reference: Market | None) -> _Claim:
    if isinstance(instrument, ZeroCouponConvertible):
        return _Note(instrument, market, credit, probs, reference)
    return _Preferred(instrument, market, credit, probs, opt.preferred_horizon)


def _run(instrument, market: Market, structure: CapitalStructure | None, opt: Settings,
         probs: bool, reference: Market | None = None) -> _Run:
    """One valuation (no greeks): the Richardson pair, or one lattice. ``reference``: the
    unbumped market of a bumped one (a hot start's simulated paths are its)."""
    credit = Credit(structure, market)
    claim = _claim(instrument, market, credit, opt, probs, reference)
    h = claim.horizon
    events = np.sort(np.concatenate([claim.events(), credit.due_times]))
    events = events[(events > _TOL) & (events < h - _TOL)]
    # one time per event, exact (the schedule's own tests allow only 1e-12)
    events = events[np.concatenate([[True], np.diff(events) > _TOL])] if events.size else events
    if isinstance(claim, _Note):
        steps = opt.steps or DEFAULT_STEPS
    else:
        steps = opt.preferred_steps or opt.steps or DEFAULT_PREFERRED_STEPS

    def grid(n: int) -> np.ndarray:
        return _long_first_steps(time_grid(events, h, n), events[0] if events.size else h)

    coarse = grid(steps)
    grids = [_refine(coarse), coarse] if opt.extrapolate else [coarse]
    # h(S0) L in the deterministic drift; h(S) - h(S0) through the probabilities
    drift = credit.equity_drift
    anchor = claim.anchor()

    def lattices(*times: np.ndarray) -> list[_Lattice]:
        return claim.prepare([_lattice(market, t, structure is not None, opt.width, drift,
                                       anchor) for t in times])

    def solve(lat: _Lattice, with_probs: bool) -> tuple[_Lattice, _Solution]:
        claim.lay.probs = with_probs
        return lat, _solve(claim, lat)

    # probabilities need no extrapolated accuracy: in one factor (or without
    # extrapolation) they ride on the last lattice, where p_convert's layer of a few
    # hundred nodes costs less than another lattice; in two factors a third lattice of
    # steps / 3 (three layers on the coarse lattice would cost as much as the fine one)
    third = probs and opt.extrapolate and structure is not None
    prob_steps = max(steps // 3, MIN_STEPS) if third else steps
    runs = [solve(lat, probs and not third and i == len(grids) - 1)
            for i, lat in enumerate(lattices(*grids))]
    values = [r[1].value for r in runs]
    first = runs[0][0]
    sol = runs[-1][1]
    clipped = max(r[1].clipped_drift for r in runs)
    if third:
        sol = solve(lattices(grid(prob_steps))[0], True)[1]
    value = 2 * values[0] - values[1] if opt.extrapolate else values[0]
    notes = list(first.notes)
    if clipped:
        notes.append(f"hazard drift clipped at {clipped} node-steps to keep "
                     "probabilities non-negative (extreme hazard at low equity prices)")
    settings = {
        "engine": "lattice2d", "steps": steps, "time_steps": first.steps,
        "extrapolate": opt.extrapolate, "grid": [first.z1.size - 2, max(first.z2.size - 2, 1)],
        "lambda": LAMBDA,
        "width": opt.width, "horizon": round(h, 6), "gamma": round(first.gamma, 6),
        **credit.describe(),
    }
    if probs:
        settings["probability_steps"] = prob_steps
    if opt.extrapolate:
        settings["richardson_correction"] = values[0] - values[1]
    if isinstance(claim, _Note) and claim.level is not None:
        settings["trigger_shift"] = round(claim.shift, 4)
        if claim.hot is not None:
            settings["hot_start"] = nofm.settings(claim.hot)
    return _Run(value=value, solution=sol, settings=settings, notes=notes)


def _model_notes(instrument, market: Market, structure: CapitalStructure | None,
                 opt: Settings) -> list[str]:
    notes = []
    if isinstance(instrument, ZeroCouponConvertible):
        if instrument.call_trigger is not None:
            n, m = instrument.call_trigger_days or 1, instrument.call_trigger_window or 1
            notes.append(f"soft call ({n} of {m} trading days) as an equivalent continuously "
                         "monitored barrier (docs/sections/lattice2d.md)")
            if nofm.is_hot_start(instrument, market):
                notes.append(nofm.HOT_NOTE)
        notes.append("bond_floor: risk-free curve plus credit_spread, no BTC-coverage credit")
    else:
        notes.append(f"perpetual valued to a {opt.preferred_horizon:g}-year horizon: terminal "
                     "value = liquidation payout plus arrears, or conversion")
        if instrument.cumulative:
            notes.append("arrears carried linearly: value of $1 added to the terminal claim")
        if instrument.conversion_ratio > 0:
            notes.append("p_convert and p_impaired of a convertible perpetual converge slowly "
                         "in steps: read them to about +-0.02 (docs/sections/lattice2d.md)")
    if structure is not None and structure.convertibles:
        notes.append("static structure: notes repaid at solvent due dates are refinanced "
                      "at the same seniority")
    return notes


def price(instrument: ZeroCouponConvertible | PreferredStock, market: Market,
          structure: CapitalStructure | None = None, *, greeks: bool = True,
          **options: Any) -> PricingResult:
    """Value one note (USD per note of face) or preferred share (USD per share).

    Options: ``steps`` (coarse lattice, int >= 10, default :data:`DEFAULT_STEPS` for a
    note, :data:`DEFAULT_PREFERRED_STEPS` for a preferred), ``preferred_steps`` (a
    preferred's steps when they should differ from ``steps``: a structure valued with
    both),
    ``extrapolate`` (Richardson with 2 x steps, default True),
    ``preferred_horizon`` (years, default 30), ``width`` (grid half-width in
    standard deviations of the horizon, default 5).
    """
    opt = _settings(options)
    if instrument.kind not in KINDS:
        raise EngineError(f"engine lattice2d does not value {instrument.kind} "
                          f"({instrument.name})")
    if structure is not None and instrument not in structure.instruments:
        raise InputError("instrument", instrument.name, "is not part of the given structure")
    vd = market.valuation_date
    if isinstance(instrument, ZeroCouponConvertible) and instrument.maturity <= vd:
        raise InputError("maturity", instrument.maturity.isoformat(),
                         f"is not after the valuation date {vd.isoformat()}: nothing to value")
    run = _run(instrument, market, structure, opt, probs=True)
    sens: dict[str, float] = {}
    notes = [*_model_notes(instrument, market, structure, opt), *run.notes]
    if greeks:
        curves = (market.equity_vol_curve, market.btc_vol_curve)
        vegas = all(c is None or isinstance(c, Curve) for c in curves)
        sens = bump_greeks(lambda m: _run(instrument, m, structure, opt, probs=False,
                                          reference=market).value,
                           market, run.value, vegas=vegas)
        if not vegas:
            notes.append("no vegas: a QuantLib vol term structure cannot be bumped")
    sol = run.solution
    is_note = isinstance(instrument, ZeroCouponConvertible)
    return PricingResult(
        name=instrument.name, kind=instrument.kind, engine="lattice2d", value=run.value,
        units=instrument.units,
        bond_floor=float(analytic.bond_floor(instrument, market)) if is_note else None,
        parity=instrument.parity(market.equity_price) if instrument.conversion_ratio > 0
        else None,
        delta_btc=sens.get("delta_btc"), delta_equity=sens.get("delta_equity"),
        gamma_btc=sens.get("gamma_btc"), gamma_equity=sens.get("gamma_equity"),
        vega_btc=sens.get("vega_btc"), vega_equity=sens.get("vega_equity"),
        correlation_sensitivity=sens.get("correlation_sensitivity"),
        p_convert=sol.p_convert, p_impaired=sol.p_impaired, p_default=sol.p_default,
        settings=run.settings, notes=tuple(notes))
