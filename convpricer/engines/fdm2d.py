"""The ``fdm2d`` engine: QuantLib's two-dimensional finite differences.

The PDE cross-check of ``lattice2d`` on the same term sheets and the same
model (docs/sections/two_factor_conventions.md; docs/sections/fdm2d.md has
the measurements). The state is (S, B) on a tensor mesh in (ln S, ln B):

* mesh: ``FdmMesherComposite`` of two ``FdmBlackScholesMesher`` (equity in
  dimension 0, BTC in dimension 1), each concentrated (``cPoint``) at its kink:
  the conversion price for S, the structural default barrier (assets = notes'
  face) for B. Without a capital structure the value does not depend on B and
  the BTC mesh has three nodes;
* operators: ``Fdm2dBlackScholesOp`` on processes built from the market's
  handles, so rates, carry and volatilities are read from the curves step by
  step (``setTime(t1, t2)`` takes the forward rate, forward carry and forward
  variance of each step). Exact Tsiveriotis-Fernandes uses two operators: one
  discounting at r, one at r + credit_spread with the same drift (the spread is
  added to the rate *and* the carry of *both* processes: QuantLib's 2-D
  operator discounts at the second process's rate);
* time stepping: ``FdmBackwardSolver`` (Hundsdorfer ADI by default) rolled back
  one step at a time; each step then applies in numpy the hazard rate (operator
  splitting), coupons, dividends, structural default and the holder's and
  issuer's decisions (``convpricer.decisions.exercise``); discontinuities sit on
  mesh nodes and are cell-weighted, and fully implicit damping steps restart
  the scheme after the terminal payoff and each put;
* the value at (S0, B0) is a bicubic spline of the mesh values in log
  coordinates; greeks are bump-and-reprice on the same mesh.

:func:`two_asset_option` shows QuantLib's own 2-D solver driven by Python
callbacks (``Fdm2dBlackScholesSolver`` with ``FdmInnerValueCalculatorProxy``
and ``FdmStepConditionProxy``): the tests price exchange options with it.
"""

from __future__ import annotations

import ctypes
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import QuantLib as ql
from scipy.interpolate import RectBivariateSpline
from scipy.linalg import solve_banded

from .. import analytic
from ..credit import Credit, credit_spread
from ..decisions import CALLED_CONVERTED, CONVERTED, HOLD, exercise
from ..errors import EngineError, InputError
from ..greeks import bump_greeks
from ..instruments import PreferredStock, ZeroCouponConvertible
from ..market import Curve, Market
from ..results import PricingResult
from ..schedule import (
    PREFERRED_HORIZON,
    convertible_schedule,
    preferred_schedule,
    time_grid,
    trading_days,
)
from ..structure import CapitalStructure
from . import check_options, nofm

KINDS = frozenset({"zero_coupon_convertible", "convertible_note", "preferred_stock"})
OPTIONS = frozenset({"steps", "grid_equity", "grid_btc", "scheme", "damping_steps",
                     "monitoring", "preferred_horizon"})

#: ADI schemes of QuantLib's FdmSchemeDesc accepted by the ``scheme`` option.
SCHEMES: dict[str, Callable[[], ql.FdmSchemeDesc]] = {
    "hundsdorfer": ql.FdmSchemeDesc.Hundsdorfer,
    "douglas": ql.FdmSchemeDesc.Douglas,
    "craig_sneyd": ql.FdmSchemeDesc.CraigSneyd,
    "modified_craig_sneyd": ql.FdmSchemeDesc.ModifiedCraigSneyd,
}
#: Defaults (docs/sections/fdm2d.md: about 1e-3 relative or better against
#: lattice2d and the converged value on the illustrative claims).
DEFAULT_SCHEME = "hundsdorfer"
#: When a note's issuer may call: "daily" on NYSE trading days of the call
#: window (each one a time step, as in montecarlo), or "grid" at every time step.
MONITORING = ("daily", "grid")
#: Trading days a year (the daily variance of the N-of-M trigger rule).
TRADING_DAYS = 252
#: Midpoints per S cell averaging the N-of-M rule's probability on its first date.
START_UP_POINTS = 16


@dataclass(frozen=True)
class Defaults:
    """Default mesh and time steps of one kind of claim."""

    grid_equity: int
    grid_btc: int
    steps_per_year: int


#: Notes: a few years, daily steps in call windows anyway. Preferreds: a 30-year
#: horizon on a mesh wide enough for the tails the terminal payoff needs; time
#: steps matter little there (10 or 33 a year agree to 1e-5, measured).
DEFAULTS = {"note": Defaults(grid_equity=150, grid_btc=60, steps_per_year=50),
            "preferred": Defaults(grid_equity=200, grid_btc=150, steps_per_year=10)}
MIN_STEPS = 10
MIN_GRID = 10
DEFAULT_DAMPING_STEPS = 2
#: Mesh: FdmBlackScholesMesher's width (eps, scale factor: +-5.6 standard
#: deviations of the horizon: a preferred's terminal liquidation payout grows
#: with B, and its value needs that tail), concentrated at the kinks with density
#: MESH_DENSITY (Concentrating1dMesher's parameter, in log-price units).
MESH_EPS = 1e-4
MESH_SCALE = 1.5
MESH_DENSITY = 0.05
#: Stronger concentration at a soft-call trigger: the daily call keeps the value
#: discontinuous there on the scale of one day's diffusion.
TRIGGER_DENSITY = 0.02
#: BTC mesh size when the value does not depend on B (no capital structure).
FLAT_GRID_BTC = 3

#: Damping scheme: Douglas ADI with theta = 1 (implicit Euler in each direction,
#: tridiagonal solves). QuantLib's ImplicitEuler solves the 2-D system by BiCGstab
#: to a tolerance relative to the whole vector, which far-field values (a
#: preferred's liquidation payout where BTC is 1e12) swamp: it returned values
#: several percent off at (S0, B0) (measured).
_DAMPING = ql.FdmSchemeDesc(ql.FdmSchemeDesc.DouglasType, 1.0, 0.0)
_NULL_POINT = (ql.nullDouble(), ql.nullDouble())
_TOL = 1e-9


# ----- options -----------------------------------------------------------------------
@dataclass(frozen=True)
class _Options:
    steps: int | None
    grid_equity: int | None
    grid_btc: int | None
    scheme: str
    damping_steps: int
    monitoring: str
    preferred_horizon: float

    @classmethod
    def parse(cls, options: dict[str, Any]) -> _Options:
        def integer(name: str, default: int | None, lo: int) -> int | None:
            v = options.get(name, default)
            if v is None:
                return None
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < lo:
                raise EngineError(f"engine fdm2d: {name} = {v!r} must be an integer >= {lo}")
            return int(v)

        scheme = options.get("scheme", DEFAULT_SCHEME)
        if scheme not in SCHEMES:
            raise EngineError(f"engine fdm2d: scheme = {scheme!r} is not one of "
                              f"{', '.join(SCHEMES)}")
        monitoring = options.get("monitoring", MONITORING[0])
        if monitoring not in MONITORING:
            raise EngineError(f"engine fdm2d: monitoring = {monitoring!r} is not one of "
                              f"{', '.join(MONITORING)}")
        horizon = options.get("preferred_horizon", PREFERRED_HORIZON)
        if isinstance(horizon, bool) or not isinstance(horizon, int | float) \
                or not 0 < horizon <= 100:
            raise EngineError(f"engine fdm2d: preferred_horizon = {horizon!r} must be a "
                              "number of years in (0, 100]")
        return cls(steps=integer("steps", None, MIN_STEPS),
                   grid_equity=integer("grid_equity", None, MIN_GRID),
                   grid_btc=integer("grid_btc", None, MIN_GRID),
                   scheme=scheme, damping_steps=integer("damping_steps",
                                                        DEFAULT_DAMPING_STEPS, 0),
                   monitoring=monitoring, preferred_horizon=float(horizon))


# ----- numpy <-> QuantLib Array ---------------------------------------------------------
def _storage(a: ql.Array) -> np.ndarray:
    """A numpy view of a QuantLib Array's storage (QuantLib::Array holds its data
    pointer first). Valid only until the next QuantLib call on ``a``: ADI steps
    move-assign arrays, which swaps the storage."""
    addr = ctypes.c_void_p.from_address(int(a.this)).value
    return np.ctypeslib.as_array((ctypes.c_double * len(a)).from_address(addr))


def _zero_copy_works() -> bool:
    """Check the layout :func:`_storage` relies on before ever writing through it."""
    try:
        probe = [0.5, -1.25, 2.0, 3.5]
        a = ql.Array(probe)
        size = ctypes.c_size_t.from_address(int(a.this) + ctypes.sizeof(ctypes.c_void_p))
        if size.value != len(probe) or _storage(a).tolist() != probe:
            return False
        _storage(a)[:] = [1.0, 2.0, 3.0, 4.0]
        return [a[i] for i in range(4)] == [1.0, 2.0, 3.0, 4.0]
    except (TypeError, ValueError, AttributeError, OverflowError):
        return False


#: Whether arrays cross between numpy and QuantLib by memcpy (else element by
#: element: about 1 ms per 2,000 nodes, which dominates the run time).
ZERO_COPY = _zero_copy_works()


def _read(a: ql.Array) -> np.ndarray:
    return np.array(_storage(a)) if ZERO_COPY else np.fromiter(a, float, len(a))


def _write(a: ql.Array, values: np.ndarray) -> None:
    """Put ``values`` into ``a``, in place."""
    if ZERO_COPY:
        _storage(a)[:] = values.ravel()
    else:
        a.__setslice__(0, len(a), ql.Array(values.ravel().tolist()))


# ----- processes, meshes, operators ---------------------------------------------------
def _spread(handle: ql.YieldTermStructureHandle, spread: float) -> ql.YieldTermStructureHandle:
    if spread == 0:
        return handle
    return ql.YieldTermStructureHandle(ql.ZeroSpreadedTermStructure(
        handle, ql.QuoteHandle(ql.SimpleQuote(spread)), ql.Continuous))


def _process(market: Market, asset: str, *, rate_spread: float = 0.0,
             carry_spread: float = 0.0) -> ql.BlackScholesMertonProcess:
    """The market's process of one factor with spreads on its rate and carry curves."""
    return ql.BlackScholesMertonProcess(
        ql.QuoteHandle(ql.SimpleQuote(market.spot(asset))),
        _spread(market.carry_handle(asset), carry_spread),
        _spread(market.yield_handle, rate_spread), market.vol_handle(asset))

# ----- mesh ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Mesh:
    """The (ln S, ln B) mesh; arrays on it have shape (nB, nS) (S fastest)."""

    composite: ql.FdmMesherComposite
    x: np.ndarray        # ln S nodes
    y: np.ndarray        # ln B nodes

    @property
    def shape(self) -> tuple[int, int]:
        return self.y.size, self.x.size

    @property
    def equity(self) -> np.ndarray:
        """S at the nodes, shape (1, nS)."""
        return np.exp(self.x)[None, :]

    @property
    def btc(self) -> np.ndarray:
        """B at the nodes, shape (nB, 1)."""
        return np.exp(self.y)[:, None]

    def interpolate(self, surface: np.ndarray, equity_price: float, btc_price: float) -> float:
        """Bicubic spline of ``surface`` (nB, nS) in log coordinates at (S, B)."""
        ky = min(3, self.y.size - 1)
        spline = RectBivariateSpline(self.y, self.x, surface, kx=ky, ky=3)
        return float(spline(np.log(btc_price), np.log(equity_price))[0, 0])


def _mesher(size: int, process: ql.GeneralizedBlackScholesProcess, years: float,
            kinks: tuple[tuple[float, float], ...] = ()) -> ql.Fdm1dMesher:
    """ln-price mesh of one factor: FdmBlackScholesMesher's width, concentrated at
    each kink (price in USD, density) with the kink on a node, and at the spot.
    (FdmBlackScholesMesher's own cPoint concentrates at one point without pinning
    it to a node in QuantLib 1.44, which costs the second order at a discontinuity.)"""
    uniform = ql.FdmBlackScholesMesher(size, process, years, process.x0(), ql.nullDouble(),
                                       ql.nullDouble(), MESH_EPS, MESH_SCALE, _NULL_POINT)
    lo, hi = uniform.location(0), uniform.location(size - 1)
    points = {float(np.log(k)): (d, True) for k, d in kinks if k > 0 and lo < np.log(k) < hi}
    spot = float(np.log(process.x0()))
    if all(abs(spot - x) > MESH_DENSITY for x in points):
        points[spot] = (MESH_DENSITY, False)
    return ql.Concentrating1dMesher(
        lo, hi, size, [ql.Concentrating1dMesherPoint(x, d, required)
                       for x, (d, required) in sorted(points.items())], 1e-8)


def _build_mesh(market: Market, horizon: float, n_s: int, n_b: int,
                kinks: _Kinks) -> _Mesh:
    ms = _mesher(n_s, market.process("equity"), horizon, kinks.equity)
    mb = _mesher(n_b, market.process("btc"), horizon, kinks.btc)
    return _Mesh(ql.FdmMesherComposite(ms, mb), np.array(ms.locations()),
                 np.array(mb.locations()))


def _above(x: np.ndarray, level: Any) -> np.ndarray:
    """For each node's cell (between midpoints of ``x``) the fraction above ``level``
    (same units as x; an array of levels broadcasts against the cells, e.g. one per
    BTC row). Weighting a discontinuous update by it (half and half on a node at the
    discontinuity) keeps the second order."""
    mid = 0.5 * (x[1:] + x[:-1])
    a = np.concatenate([[x[0]], mid])
    b = np.concatenate([mid, [x[-1]]])
    return (b - np.clip(level, a, b)) / (b - a)


def _below(y: np.ndarray, barrier: float | None,
           nodal: Callable[[], np.ndarray]) -> np.ndarray:
    """Fraction of each B cell (ln B nodes ``y``) below ``barrier`` (USD), shape
    (nB, 1); without a barrier the predicate ``nodal`` holds everywhere or nowhere."""
    if barrier is None:
        return nodal().astype(float)[:, None]
    return 1.0 - _above(y, np.log(barrier))[:, None]


def _switch(pred: Callable[[np.ndarray], np.ndarray], guess: float) -> float | None:
    """The BTC price where a monotone predicate of B changes value (bisection in
    ln B), or None if it does not change between guess * 1e-8 and guess * 1e8."""
    lo, hi = np.log(guess) - 18.0, np.log(guess) + 18.0
    p_lo = bool(pred(np.array([np.exp(lo)]))[0])
    if bool(pred(np.array([np.exp(hi)]))[0]) == p_lo:
        return None
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if bool(pred(np.array([np.exp(mid)]))[0]) == p_lo:
            lo = mid
        else:
            hi = mid
    return float(np.exp(0.5 * (lo + hi)))


def _split(x: np.ndarray, conversion: np.ndarray, cash: Any, ratio: float
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """max(conversion, cash) as (share part, cash part, fraction converting): the
    cash part is ``cash`` times the fraction of each S cell below the conversion
    price cash / ratio, so the discontinuous Tsiveriotis-Fernandes parts stay
    second-order accurate. ``cash``: scalar or (nB, 1)."""
    cash = np.asarray(cash, dtype=float)
    shape = np.broadcast_shapes(conversion.shape, cash.shape)
    if ratio <= 0:
        return np.zeros(shape), np.broadcast_to(cash, shape).copy(), np.zeros(shape)
    with np.errstate(divide="ignore"):
        frac = _above(x, np.log(cash / ratio))
    debt = cash * (1.0 - frac)
    return np.maximum(conversion, cash) - debt, np.broadcast_to(debt, shape).copy(), \
        np.broadcast_to(frac, shape).copy()


@dataclass(frozen=True)
class _Kinks:
    """Where the claim's updates are discontinuous or kinked (USD), with the mesh
    density to concentrate there."""

    equity: tuple[tuple[float, float], ...]   # conversion price, soft-call trigger
    btc: tuple[tuple[float, float], ...]      # default and dividend surplus barriers
    trigger: float | None           # soft-call trigger price tested on each call date
    insolvency: float | None        # B below which the issuer is insolvent
    surplus: float | None           # B from which a preferred dividend is paid

    @classmethod
    def of(cls, inst: Any, market: Market, credit: Credit) -> _Kinks:
        b0 = market.btc_price
        insolvency = _switch(credit.insolvent, b0) if credit.structural else None
        surplus = trigger = None
        if isinstance(inst, PreferredStock):
            claim = inst.liquidation_preference + inst.arrears
            equity = ((claim / inst.conversion_ratio, MESH_DENSITY),) \
                if inst.conversion_ratio > 0 else ()
            if credit.structure is not None:
                surplus = _switch(lambda b: credit.dividend_paid(inst, b), b0)
        else:
            sch = convertible_schedule(inst, market.valuation_date)
            equity = ((_final(sch) / inst.conversion_ratio, MESH_DENSITY),) \
                if inst.conversion_ratio > 0 else ()
            trigger = _trigger(inst, market)
            if trigger is not None:
                equity = (*equity, (trigger, TRIGGER_DENSITY))
        btc = tuple((b, MESH_DENSITY) for b in (insolvency, surplus) if b is not None)
        return cls(equity, btc, trigger, insolvency, surplus)


def _final(sch: Any) -> float:
    """Redemption plus the coupon paid at maturity, USD per note."""
    last = sch.coupon_times.size and abs(sch.coupon_times[-1] - sch.maturity) < _TOL
    return sch.redemption + (float(sch.coupon_amounts[-1]) if last else 0.0)


def _call_from(note: ZeroCouponConvertible, market: Market) -> float | None:
    """First time a call is possible: call_start, and not before an N-of-M trigger
    can hold (trading days before the valuation date count as below)."""
    sch = convertible_schedule(note, market.valuation_date)
    if sch.call_start is None:
        return None
    return max(sch.call_start, ((note.call_trigger_days or 1) - 1) / TRADING_DAYS)


def _trigger(note: ZeroCouponConvertible, market: Market) -> float | None:
    """The price tested on each call date after the first. A single-day trigger
    tested daily is the trigger itself; an N-of-M rule is the single-day rule at a
    trigger moved by (trigger_shift(N, M) - BGK_SHIFT) daily standard deviations
    (lattice2d's equivalent continuous barriers of both rules,
    docs/sections/lattice2d.md). Its first date is :func:`_start_up`'s."""
    trig = note.call_trigger_price
    start = _call_from(note, market)
    if trig is None or start is None or note.call_trigger_days is None:
        return trig
    from .lattice2d import BGK_SHIFT, trigger_shift  # the one N-of-M rule estimate

    t1 = market.time(note.maturity)
    var = market.variance("equity", np.array([start, t1]))
    vol = float(np.sqrt((var[1] - var[0]) / (t1 - start)))
    shift = trigger_shift(note.call_trigger_days, note.call_trigger_window) - BGK_SHIFT
    return trig * float(np.exp(shift * vol / np.sqrt(TRADING_DAYS)))


def _start_up(note: ZeroCouponConvertible, market: Market, x: np.ndarray,
              t: float) -> np.ndarray:
    """P(the N-of-M rule holds at t | S in each cell of the ln S nodes ``x``), shape
    (1, nS): lattice2d.rule_probability averaged over each cell by START_UP_POINTS
    midpoints (the probability jumps where today's close crosses the trigger)."""
    from .lattice2d import rule_probability  # the one N-of-M rule estimate

    mid = 0.5 * (x[1:] + x[:-1])
    lo, hi = np.concatenate([[x[0]], mid]), np.concatenate([mid, [x[-1]]])
    u = (np.arange(START_UP_POINTS) + 0.5) / START_UP_POINTS
    p = rule_probability(note.call_trigger_days, note.call_trigger_window,
                         note.call_trigger_price, market, t,
                         lo[:, None] + (hi - lo)[:, None] * u)
    return p.mean(axis=1)[None, :]


def _call_days(note: ZeroCouponConvertible, market: Market, call_from: float) -> np.ndarray:
    """Times of the NYSE trading days on which the issuer may call (from the first
    call date, or today, to the day before maturity), from ``call_from`` (years)."""
    vd = market.valuation_date
    days = trading_days(max(note.call_start, vd), note.maturity - timedelta(days=1))
    times = np.array([market.time(d) for d in days])
    return times[times >= call_from - _TOL]


def _preferred_horizon(market: Market, years: float) -> float:
    """The horizon in model time: ``years`` rounded to whole days (as lattice2d,
    montecarlo)."""
    return market.time(market.valuation_date + timedelta(days=round(years * 365)))


# ----- time stepping ---------------------------------------------------------------------
def _conditions() -> ql.FdmStepConditionComposite:
    return ql.FdmStepConditionComposite([], ql.FdmStepConditionVector())


class _Stepper:
    """Backward solvers of one market: ``r`` discounts at the risk-free rate, ``cs``
    at rate + credit spread with the same drift. The equity carry includes
    ``hazard_carry`` = -h(S0) * L (the compensation of the hazard at S0)."""

    def __init__(self, market: Market, mesh: _Mesh, rho: float, horizon: float,
                 spread: float, hazard_carry: float, scheme: str) -> None:
        def solvers(cs: float) -> tuple[ql.FdmBackwardSolver, ql.FdmBackwardSolver]:
            p_s = _process(market, "equity", rate_spread=cs, carry_spread=cs + hazard_carry)
            p_b = _process(market, "btc", rate_spread=cs, carry_spread=cs)
            op = ql.Fdm2dBlackScholesOp(mesh.composite, p_s, p_b, rho, horizon)
            bcs = ql.FdmBoundaryConditionSet()
            return (ql.FdmBackwardSolver(op, bcs, _conditions(), SCHEMES[scheme]()),
                    ql.FdmBackwardSolver(op, bcs, _conditions(), _DAMPING))

        self.solvers = {"r": solvers(0.0)}
        if spread > 0:
            self.solvers["cs"] = solvers(spread)

    def roll(self, a: ql.Array, kind: str, t_from: float, t_to: float, damp: bool) -> None:
        """One step back; a damping step is two fully implicit (theta = 1) Douglas
        half steps."""
        main, implicit = self.solvers[kind]
        if damp:
            implicit.rollback(a, t_from, t_to, 2, 0)
        else:
            main.rollback(a, t_from, t_to, 1, 0)


def _drift_step(x: np.ndarray, speed: np.ndarray, dt: float, v: np.ndarray) -> np.ndarray:
    """One Crank-Nicolson step of dV/dtau = a(x) dV/dx (backward time) on every
    column of ``v`` (nS, m): central differences on the non-uniform mesh ``x``
    (one-sided at the ends), second order; a tridiagonal solve."""
    n = x.size
    h = np.diff(x)
    lo, di, up = np.zeros(n), np.zeros(n), np.zeros(n)
    a, b = h[:-1], h[1:]
    lo[1:-1], di[1:-1], up[1:-1] = -b / (a * (a + b)), (b - a) / (a * b), a / (b * (a + b))
    di[0], up[0] = -1.0 / h[0], 1.0 / h[0]
    lo[-1], di[-1] = -1.0 / h[-1], 1.0 / h[-1]
    lo, di, up = (0.5 * dt * speed * c for c in (lo, di, up))
    rhs = (1.0 + di)[:, None] * v
    rhs[1:] += lo[1:, None] * v[:-1]
    rhs[:-1] += up[:-1, None] * v[1:]
    ab = np.zeros((3, n))
    ab[0, 1:], ab[1], ab[2, :-1] = -up[:-1], 1.0 - di, -lo[1:]
    return solve_banded((1, 1), ab, rhs, check_finite=False)


# ----- the claim's rules on the mesh ----------------------------------------------------
@dataclass
class _State:
    """Values at one date, shape (nB, nS). ``equity`` / ``debt``: the
    Tsiveriotis-Fernandes parts (without a spread ``debt`` is folded into
    ``equity`` between dates); ``arrears``: value of 1 USD of preferred arrears
    added to the terminal claim; ``p_*``: probabilities divided by the discount
    factor to the date."""

    equity: np.ndarray
    debt: np.ndarray
    arrears: np.ndarray | None = None
    p_convert: np.ndarray | None = None
    p_impaired: np.ndarray | None = None
    p_default: np.ndarray | None = None

    def fields(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in vars(self).items() if v is not None}

    def blend(self, other: _State, w: np.ndarray) -> _State:
        """w * other + (1 - w) * self, field by field."""
        return _State(**{k: w * getattr(other, k) + (1.0 - w) * v
                         for k, v in self.fields().items()})

    def settle(self, dec: np.ndarray, scale: float) -> None:
        """Probabilities and arrears where a decision ends the claim (in place)."""
        converted = (dec == CONVERTED) | (dec == CALLED_CONVERTED)
        ended = dec != HOLD
        if self.arrears is not None:   # lost at conversion, paid at a call
            self.arrears = np.where(converted, 0.0, np.where(ended, 1.0, self.arrears))
        if self.p_convert is not None:
            self.p_convert = np.where(ended, converted * scale, self.p_convert)
            self.p_impaired = np.where(ended, 0.0, self.p_impaired)
            self.p_default = np.where(ended, 0.0, self.p_default)


class _Rules:
    """A claim on the mesh: its dates, its terminal value, what happens on each
    date (decisions, then the structural default test, then cash flows on the
    solvent part, as lattice2d), its hazard default."""

    inst: Any
    horizon: float
    ratio: float
    event_times: np.ndarray
    #: times after which the scheme is damped again: the horizon and the kinks
    #: that are not cell-averaged (puts, first call date). Jumps that are (default
    #: and dividend tests) are not damped: damping every due date or dividend date
    #: costs the scheme its second order in time on long horizons (measured).
    restarts: np.ndarray
    arrears = False             # carries the value of 1 USD of arrears

    def __init__(self, market: Market, credit: Credit, mesh: _Mesh, kinks: _Kinks) -> None:
        self.market = market
        self.credit = credit
        self.mesh = mesh
        self.conversion = self.ratio * mesh.equity
        #: fraction of each B cell in default, shape (nB, 1)
        self.insolvent = _below(mesh.y, kinks.insolvency,
                                lambda: credit.insolvent(mesh.btc[:, 0]))
        # a cell the barrier cuts pays the liquidation value in the middle of its
        # insolvent part
        b = mesh.btc[:, 0].copy()
        cut = (self.insolvent[:, 0] > 0) & (self.insolvent[:, 0] < 1)
        if cut.any():
            lower = np.concatenate([[mesh.y[0]], 0.5 * (mesh.y[1:] + mesh.y[:-1])])
            b[cut] = np.exp(0.5 * (lower[cut] + np.log(kinks.insolvency)))
        self.liq = credit.liquidation_value(self.inst, b)[:, None] \
            if credit.structural else None

    def claim(self, t: float) -> float:
        """What the holder is owed at t (USD per unit), for p_impaired."""
        raise NotImplementedError

    def can_convert(self, t: float) -> bool:
        raise NotImplementedError

    def terminal(self, scale: float, probabilities: bool) -> _State:
        raise NotImplementedError

    def decide(self, t: float, st: _State, scale: float) -> _State | None:
        """Holder's and issuer's decisions at t (None: none possible)."""
        raise NotImplementedError

    def pay(self, t: float, st: _State, solvent: Any) -> bool:
        """Cash flows of t on the solvent part, in place; whether there were any."""
        raise NotImplementedError

    def start(self, scale: float, probabilities: bool) -> _State:
        """The state at the horizon, after its default test."""
        st = self.terminal(scale, probabilities)
        return self._default(self.horizon, st, scale) if self._due(self.horizon) else st

    def events(self, t: float, st: _State, scale: float) -> _State | None:
        """The state after what happens at t < horizon (None: nothing happens)."""
        out = self.decide(t, st, scale)
        due = self._due(t)
        st = out or st
        if due:
            st = self._default(t, st, scale)
        paid = self.pay(t, st, 1.0 - self.insolvent if due else 1.0)
        return st if out is not None or due or paid else None

    def _due(self, t: float) -> bool:
        return self.credit.structural and self.credit.is_due(t) and bool(self.insolvent.any())

    def _default(self, t: float, st: _State, scale: float) -> _State:
        """Structural default on the insolvent part of each B cell: the liquidation
        payout in cash, or conversion an instant before where that is allowed and
        worth more (the limit of converting on the step before, as lattice2d)."""
        ratio = self.ratio if self.can_convert(t) else 0.0
        eq, de, frac = _split(self.mesh.x, self.conversion, self.liq, ratio)
        dead = _State(equity=eq, debt=de)
        claim = self.claim(t)
        if st.arrears is not None:
            dead.arrears = (1.0 - frac) * np.minimum(self.liq / claim, 1.0)
        if st.p_convert is not None:
            dead.p_convert = frac * scale
            dead.p_impaired = (1.0 - frac) * (self.liq < claim * (1 - 1e-12)) * scale
            dead.p_default = (1.0 - frac) * scale
        return st.blend(dead, self.insolvent)

    def default_payoff(self, t: float) -> np.ndarray:
        return self.credit.default_payoff(self.inst, self.mesh.equity[0], self.can_convert(t))


class _NoteRules(_Rules):
    def __init__(self, note: ZeroCouponConvertible, market: Market, credit: Credit,
                 mesh: _Mesh, kinks: _Kinks, monitoring: str, times: np.ndarray,
                 reference: Market) -> None:
        self.inst = note
        self.ratio = note.conversion_ratio
        super().__init__(market, credit, mesh, kinks)
        self.sch = sch = convertible_schedule(note, market.valuation_date)
        self.horizon = sch.maturity
        self.call_from = _call_from(note, market)
        #: an N-of-M rule's hot start (nofm): calls on its closes by their hazard on
        #: the time grid ``times``, the equivalent trigger after them
        self.hot = nofm.hot_start(note, market, credit.equity_drift, reference) \
            if note.call_trigger_days is not None else None
        self.times = times
        self._kill: np.ndarray | None = None
        if self.hot is not None:
            self.call_from = self.hot.barrier_from
        #: call dates (None: every time step from call_from)
        self.call_days = _call_days(note, market, self.call_from) \
            if monitoring == "daily" and self.call_from is not None else None
        #: the first call date (the first call day on or after call_from)
        self.first_call = self.call_days[0] \
            if self.call_days is not None and self.call_days.size else self.call_from
        due = credit.due_times[credit.due_times <= sch.maturity + _TOL]
        starts = [] if self.first_call is None else [self.first_call]
        self.event_times = np.concatenate(
            [sch.event_times(), due, starts, [] if self.call_days is None else self.call_days,
             [] if self.hot is None else self.hot.hot_times])
        self.restarts = np.concatenate([[sch.maturity], sch.put_times, starts])
        #: fraction of each S cell where a soft call is allowed, shape (1, nS)
        self.callable = np.ones((1, mesh.x.size)) if kinks.trigger is None \
            else _above(mesh.x, np.log(kinks.trigger))[None, :]
        #: an N-of-M rule's probability per S cell on its first date (None: the
        #: trigger as on every other date)
        self.start_up = _start_up(note, market, mesh.x, self.first_call) \
            if (note.call_trigger_days or 1) > 1 and self.first_call is not None \
            and self.first_call < sch.maturity and self.hot is None else None

    def accrued(self, t: float) -> float:
        """Accrued coupon at t, zero on a coupon date (grid times are rounded: a
        time a hair before a coupon date must not accrue the whole period)."""
        sch = self.sch
        edges = np.concatenate([sch.coupon_times, sch.period_starts])
        if edges.size and np.min(np.abs(edges - t)) < _TOL:
            return 0.0
        return float(sch.accrued(t))

    def claim(self, t: float) -> float:
        return self.sch.redemption + self.accrued(t)

    def can_convert(self, t: float) -> bool:
        return self.ratio > 0 and self.sch.conversion_allowed(t)

    def terminal(self, scale: float, probabilities: bool) -> _State:
        ratio = self.ratio if self.can_convert(self.horizon) else 0.0
        eq, de, frac = _split(self.mesh.x, self.conversion, _final(self.sch), ratio)
        shape = self.mesh.shape
        st = _State(equity=np.broadcast_to(eq, shape).copy(),
                    debt=np.broadcast_to(de, shape).copy())
        if probabilities:
            st.p_convert = np.broadcast_to(frac * scale, shape).copy()
            st.p_impaired, st.p_default = np.zeros(shape), np.zeros(shape)
        return st

    def _hot_kill(self, t: float) -> np.ndarray | None:
        """A hot start's kill probability per S cell of the step ending at t, shape
        (1, nS); None outside the hot start."""
        if self.hot is None or t > self.hot.end + _TOL:
            return None
        if self._kill is None:
            x = self.mesh.x
            mid = 0.5 * (x[1:] + x[:-1])
            edges = np.concatenate([[2 * x[0] - mid[0]], mid, [2 * x[-1] - mid[-1]]])
            self._kill = self.hot.hazards([(self.times, edges)])[0]
        return self._kill[int(np.argmin(np.abs(self.times - t)))][None, :]

    def _calls(self, t: float) -> bool:
        kill = self._hot_kill(t)
        if kill is not None:
            return bool(kill.any()) and bool(self.sch.call_allowed(t))
        if self.call_from is None or t < self.call_from - _TOL \
                or not self.sch.call_allowed(t):
            return False
        return self.call_days is None or bool(np.any(np.abs(self.call_days - t) < _TOL))

    def _exercise(self, st: _State, t: float, scale: float, call: bool) -> _State:
        sch = self.sch
        accrued = self.accrued(t)
        eq, de, dec = exercise(
            st.equity, st.debt, np.broadcast_to(self.conversion, st.equity.shape),
            can_convert=self.can_convert(t),
            put_value=sch.put_price + accrued if sch.is_put_time(t) else None,
            call_value=sch.call_price + accrued if call else None)
        out = _State(**{**st.fields(), "equity": eq, "debt": de})
        out.settle(dec, scale)
        return out

    def decide(self, t: float, st: _State, scale: float) -> _State | None:
        call = self._calls(t)
        if not (call or self.can_convert(t) or self.sch.is_put_time(t)):
            return None
        out = self._exercise(st, t, scale, call)
        allowed = self._hot_kill(t)
        if allowed is None:
            allowed = self.start_up if self.start_up is not None \
                and abs(t - self.first_call) < _TOL else self.callable
        if call and not allowed.all():   # soft call: where the trigger allows it
            out = self._exercise(st, t, scale, False).blend(out, allowed)
        return out

    def pay(self, t: float, st: _State, solvent: Any) -> bool:
        hit = np.abs(self.sch.coupon_times - t) < _TOL
        if not hit.any():
            return False
        st.debt = st.debt + solvent * float(self.sch.coupon_amounts[hit].sum())
        return True


class _PreferredRules(_Rules):
    def __init__(self, pref: PreferredStock, market: Market, credit: Credit, mesh: _Mesh,
                 kinks: _Kinks, horizon: float) -> None:
        self.inst = pref
        self.ratio = pref.conversion_ratio
        super().__init__(market, credit, mesh, kinks)
        self.sch = sch = preferred_schedule(pref, market.valuation_date, horizon)
        self.horizon = horizon
        self.arrears = pref.cumulative
        due = credit.due_times[credit.due_times <= horizon + _TOL]
        calls = [] if sch.call_start is None else [sch.call_start]
        self.event_times = np.concatenate([sch.dividend_times, due, calls])
        self.restarts = np.concatenate([[horizon], calls])
        #: fraction of each B cell where a dividend passes the surplus test
        self.paid = 1.0 - _below(mesh.y, kinks.surplus,
                                 lambda: ~credit.dividend_paid(pref, mesh.btc[:, 0])) \
            if credit.structure is not None else np.ones((mesh.y.size, 1))

    def claim(self, t: float) -> float:
        return self.inst.liquidation_preference + self.inst.arrears

    def can_convert(self, t: float) -> bool:
        return self.ratio > 0

    def terminal(self, scale: float, probabilities: bool) -> _State:
        """At the horizon: the liquidation payout (the claim without a structure),
        or conversion if worth more."""
        claim = self.claim(self.horizon)
        cash = np.full((self.mesh.y.size, 1), claim) if self.credit.structure is None \
            else self.credit.liquidation_value(self.inst, self.mesh.btc[:, 0])[:, None]
        eq, de, frac = _split(self.mesh.x, self.conversion, cash, self.ratio)
        st = _State(equity=eq, debt=de)
        recovered = np.minimum(cash / claim, 1.0)
        if self.arrears:
            st.arrears = (1.0 - frac) * recovered
        if probabilities:
            st.p_convert = frac * scale
            st.p_impaired = (1.0 - frac) * (recovered < 1 - 1e-12) * scale
            st.p_default = np.zeros(eq.shape)
        return st

    def decide(self, t: float, st: _State, scale: float) -> _State | None:
        start = self.sch.call_start
        call = start is not None and t >= start - _TOL
        if not (call or self.ratio > 0):
            return None
        eq, de, dec = exercise(st.equity, st.debt,
                               np.broadcast_to(self.conversion, st.equity.shape),
                               can_convert=self.ratio > 0,
                               call_value=self.sch.call_price if call else None)
        out = _State(**{**st.fields(), "equity": eq, "debt": de})
        out.settle(dec, scale)
        return out

    def pay(self, t: float, st: _State, solvent: Any) -> bool:
        """A dividend out of surplus; a missed cumulative one adds to the terminal
        claim (valued by ``arrears``), a missed non-cumulative one is lost."""
        if not np.any(np.abs(self.sch.dividend_times - t) < _TOL):
            return False
        owed = self.paid if st.arrears is None else self.paid + (1 - self.paid) * st.arrears
        st.debt = st.debt + self.sch.dividend * solvent * owed
        return True


# ----- one valuation ---------------------------------------------------------------------
@dataclass(frozen=True)
class _Plan:
    """What stays fixed across bumped markets: the mesh and the time grid."""

    instrument: ZeroCouponConvertible | PreferredStock
    structure: CapitalStructure | None
    options: _Options
    kinks: _Kinks
    mesh: _Mesh
    times: np.ndarray
    horizon: float
    reference: Market           # the unbumped market (a hot start's simulated paths)


@dataclass(frozen=True)
class _Solution:
    value: float
    p_convert: float | None = None
    p_impaired: float | None = None
    p_default: float | None = None


def _rules(plan: _Plan, market: Market, credit: Credit) -> _Rules:
    inst = plan.instrument
    if isinstance(inst, PreferredStock):
        return _PreferredRules(inst, market, credit, plan.mesh, plan.kinks, plan.horizon)
    return _NoteRules(inst, market, credit, plan.mesh, plan.kinks, plan.options.monitoring,
                      plan.times, plan.reference)


def _solve(plan: _Plan, market: Market, *, probabilities: bool) -> _Solution:
    """Backward induction on the plan's mesh and time grid under ``market``."""
    inst, mesh, opts, times = plan.instrument, plan.mesh, plan.options, plan.times
    credit = Credit(plan.structure, market)
    rules = _rules(plan, market, credit)
    spread = credit_spread(inst)
    if credit.has_hazard and spread > 0:
        raise EngineError(f"engine fdm2d: {inst.name} has both a credit_spread and an "
                          "issuer hazard rate")
    h = credit.hazard(np.exp(mesh.x))                            # per S node
    h0 = float(credit.hazard(np.array(market.equity_price)))     # in the operator's drift
    loss = credit.equity_loss
    stepper = _Stepper(market, mesh, market.correlation, plan.horizon, spread, -h0 * loss,
                       opts.scheme)
    split = spread > 0
    zeros = np.zeros(mesh.shape)
    st = rules.start(1.0 / float(market.discount(times[-1])), probabilities)
    if not split:
        st.equity, st.debt = st.equity + st.debt, zeros
    arrays = {k: ql.Array(v.ravel().tolist()) for k, v in st.fields().items()
              if split or k != "debt"}
    damp_left = 0
    restarts = np.unique(np.round(rules.restarts, 12))
    for i in range(times.size - 2, -1, -1):
        t0, t1 = float(times[i]), float(times[i + 1])
        if np.any(np.abs(restarts - t1) < _TOL):
            damp_left = opts.damping_steps
        for k, a in arrays.items():
            stepper.roll(a, "cs" if k == "debt" else "r", t1, t0, damp_left > 0)
        damp_left -= 1
        st = _State(**{"debt": zeros, **{k: _read(a).reshape(mesh.shape)
                                         for k, a in arrays.items()}})
        df0 = float(market.discount(t0))
        if credit.has_hazard:
            rate = float(np.log(df0 / market.discount(t1))) / (t1 - t0)
            st = _hazard_step(st, rules, h, (h - h0) * loss, rate, t0, t1 - t0, 1.0 / df0)
        after = rules.events(t0, st, 1.0 / df0)
        if after is None and not credit.has_hazard:
            continue
        st = after or st
        if not split:
            st.equity, st.debt = st.equity + st.debt, zeros
        for k, a in arrays.items():
            _write(a, getattr(st, k))
    vals = {k: _read(a).reshape(mesh.shape) for k, a in arrays.items()}
    s0, b0 = market.equity_price, market.btc_price
    value = mesh.interpolate(vals["equity"] + vals.get("debt", 0.0), s0, b0)
    if not probabilities:
        return _Solution(value)
    p = {k: float(np.clip(mesh.interpolate(vals[k], s0, b0), 0.0, 1.0))
         for k in ("p_convert", "p_impaired", "p_default")}
    return _Solution(value, **p)


def _hazard_step(st: _State, rules: _Rules, h: np.ndarray, residual: np.ndarray,
                 rate: float, t: float, dt: float, scale: float) -> _State:
    """Operator splitting of the hazard over one step: the equity drift the
    operator lacks, (h(S) - h(S0)) * L (Crank-Nicolson, central), then survival
    exp(-h dt), the default payoff received at the default time (discounted
    within the step) and default probabilities."""
    fields = st.fields()
    if np.any(residual != 0):
        nb = st.equity.shape[0]
        names = list(fields)
        rhs = np.concatenate([fields[k].T for k in names], axis=1)     # (nS, nB * k)
        out = _drift_step(rules.mesh.x, residual, dt, rhs)
        fields = {k: out[:, j * nb:(j + 1) * nb].T for j, k in enumerate(names)}
    surv = np.exp(-h * dt)[None, :]
    # integral of h exp(-(r + h) s) ds over the step
    weight = (h / (rate + h) * -np.expm1(-(rate + h) * dt))[None, :] if abs(rate) > 0 \
        else 1.0 - surv
    out = _State(equity=surv * fields["equity"],
                 debt=surv * fields["debt"] + weight * rules.default_payoff(t))
    if "arrears" in fields:
        out.arrears = surv * fields["arrears"]
    if "p_convert" in fields:
        out.p_convert = surv * fields["p_convert"]
        out.p_impaired = surv * fields["p_impaired"] + (1.0 - surv) * scale
        out.p_default = surv * fields["p_default"] + (1.0 - surv) * scale
    return out


# ----- the engine ------------------------------------------------------------------------
def _check_supported(inst: Any, market: Market) -> None:
    if not isinstance(inst, ZeroCouponConvertible | PreferredStock):
        raise EngineError(f"engine fdm2d does not value {getattr(inst, 'kind', inst)!r}")
    if isinstance(inst, ZeroCouponConvertible) and inst.maturity <= market.valuation_date:
        raise InputError("maturity", inst.maturity.isoformat(), "is not after the valuation "
                         f"date {market.valuation_date.isoformat()}: nothing to value")


def _plan(inst: Any, market: Market, structure: CapitalStructure | None,
          opts: _Options) -> _Plan:
    """Horizon, kinks, mesh (from the unbumped market) and time grid."""
    credit = Credit(structure, market)
    if isinstance(inst, PreferredStock):
        horizon = _preferred_horizon(market, opts.preferred_horizon)
        needs_btc = structure is not None
    else:
        horizon = market.time(inst.maturity)
        needs_btc = credit.structural
    kinks = _Kinks.of(inst, market, credit)
    default = DEFAULTS["preferred" if isinstance(inst, PreferredStock) else "note"]
    mesh = _build_mesh(market, horizon, opts.grid_equity or default.grid_equity,
                       (opts.grid_btc or default.grid_btc) if needs_btc else FLAT_GRID_BTC,
                       kinks)
    steps = opts.steps or max(MIN_STEPS, round(default.steps_per_year * horizon))
    plan = _Plan(inst, structure, opts, kinks, mesh, np.empty(0), horizon, market)
    # one time per event: times from different sources agree to rounding only, and
    # the horizon is the terminal date
    events = np.unique(np.round(_rules(plan, market, credit).event_times, 12))
    events = events[(events > _TOL) & (events < horizon - _TOL)]
    return dataclasses.replace(plan, times=time_grid(events, horizon, steps))


def price(instrument: ZeroCouponConvertible | PreferredStock, market: Market,
          structure: CapitalStructure | None = None, *, greeks: bool = True,
          **options: Any) -> PricingResult:
    """Value one note (USD per note of ``face``) or preferred share (USD per share).

    Options: ``steps`` (time steps to the horizon, plus one per call date),
    ``grid_equity`` and ``grid_btc`` (mesh nodes per factor; defaults by kind in
    :data:`DEFAULTS`), ``scheme`` (one of :data:`SCHEMES`),
    ``damping_steps`` (implicit steps after the horizon and each put),
    ``monitoring`` (:data:`MONITORING`) and ``preferred_horizon`` (years).
    """
    check_options("fdm2d", options, OPTIONS)
    opts = _Options.parse(options)
    _check_supported(instrument, market)
    plan = _plan(instrument, market, structure, opts)
    base = _solve(plan, market, probabilities=True)
    notes = _notes(plan, market)
    sens: dict[str, float] = {}
    flat_btc = plan.mesh.shape[0] == FLAT_GRID_BTC
    if greeks:
        vegas = all(c is None or isinstance(c, Curve)
                    for c in (market.equity_vol_curve, market.btc_vol_curve))
        if not vegas:
            notes.append("no vegas: a QuantLib vol term structure cannot be bumped")
        sens = bump_greeks(lambda m: _solve(plan, m, probabilities=False).value, market,
                           base.value, factors=("equity",) if flat_btc else ("btc", "equity"),
                           vegas=vegas, correlation=not flat_btc)
        if flat_btc:   # no capital structure: the value does not depend on B
            sens.update(delta_btc=0.0, gamma_btc=0.0, correlation_sensitivity=0.0)
            if vegas:
                sens["vega_btc"] = 0.0
    is_note = isinstance(instrument, ZeroCouponConvertible)
    return PricingResult(
        name=instrument.name, kind=instrument.kind, engine="fdm2d", value=base.value,
        units=instrument.units,
        bond_floor=float(analytic.bond_floor(instrument, market)) if is_note else None,
        parity=instrument.parity(market.equity_price),
        p_convert=base.p_convert, p_impaired=base.p_impaired, p_default=base.p_default,
        settings=_settings(plan, market), notes=tuple(notes), **sens)


def _settings(plan: _Plan, market: Market) -> dict[str, Any]:
    opts, mesh = plan.options, plan.mesh
    out = {"engine": "fdm2d", "steps": int(plan.times.size - 1),
           "grid_equity": int(mesh.shape[1]), "grid_btc": int(mesh.shape[0]),
           "scheme": opts.scheme, "damping_steps": opts.damping_steps,
           "monitoring": opts.monitoring, "horizon": plan.horizon,
           "equity_range": [float(np.exp(mesh.x[0])), float(np.exp(mesh.x[-1]))],
           "btc_range": [float(np.exp(mesh.y[0])), float(np.exp(mesh.y[-1]))],
           "zero_copy": ZERO_COPY,
           **Credit(plan.structure, market).describe()}
    if plan.kinks.trigger is not None:
        out["call_trigger_tested"] = plan.kinks.trigger
    inst = plan.instrument
    if isinstance(inst, ZeroCouponConvertible) and inst.call_trigger_days is not None:
        hot = nofm.hot_start(inst, market)
        if hot is not None:
            out["hot_start"] = nofm.settings(hot)
    return out


def _notes(plan: _Plan, market: Market) -> list[str]:
    inst = plan.instrument
    notes = []
    if isinstance(inst, ZeroCouponConvertible) and inst.is_callable:
        notes.append("calls " + ("on NYSE trading days" if plan.options.monitoring == "daily"
                                 else "at every time step"))
        if nofm.is_hot_start(inst, market):
            notes.append(nofm.HOT_NOTE + " (a single-day trigger at the equivalent level, "
                         "lattice2d.trigger_shift)")
        elif inst.call_trigger_days is not None:
            notes.append(f"soft call on {inst.call_trigger_days} of "
                         f"{inst.call_trigger_window} days: on its first date with the "
                         "probability that the rule holds (lattice2d.window_probability), "
                         "then as a single-day trigger at the equivalent level "
                         "(lattice2d.trigger_shift)")
    if isinstance(inst, PreferredStock):
        notes.append(f"perpetual valued to a {plan.options.preferred_horizon:g}-year horizon: "
                     "terminal value = liquidation payout, or conversion")
        if inst.cumulative:
            notes.append("arrears carried linearly: value of 1 USD added to the terminal "
                         "claim (as lattice2d)")
    if plan.structure is not None and plan.structure.hazard_rate > 0 \
            and plan.structure.hazard_exponent > 0:
        notes.append("state-dependent hazard: equity drift beyond h(S0) * L by operator "
                     "splitting (a Crank-Nicolson convection step after each ADI step)")
    if abs(market.correlation) == 1.0:
        notes.append("correlation +-1: QuantLib's 2-D operator is degenerate but stable; "
                     "accuracy measured in docs/sections/fdm2d.md")
    return notes


# ----- QuantLib's own 2-D solver with Python callbacks -----------------------------------
class _Payoff:
    """FdmInnerValueCalculatorProxy callback: the payoff at a mesh node."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def innerValue(self, it: ql.FdmLinearOpIterator, t: float) -> float:
        return float(self.values[it.index()])

    avgInnerValue = innerValue


class _Exercise:
    """FdmStepConditionProxy callback: American exercise, max(value, payoff), in
    numpy on the solver's own array after every step."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def applyTo(self, a: ql.Array, t: float) -> None:
        _write(a, np.maximum(_read(a), self.values))


def two_asset_option(payoff: Callable[[np.ndarray, np.ndarray], np.ndarray],
                     market: Market, maturity: float, *, american: bool = False,
                     grid: int = 150, steps: int = 100, damping_steps: int = 2,
                     kinks: tuple[tuple[float, ...], tuple[float, ...]] = ((), ()),
                     scheme: str = DEFAULT_SCHEME) -> float:
    """Value of ``payoff(S, B)`` (USD) at ``maturity`` years, European or American,
    on the market's equity and BTC, with QuantLib's ``Fdm2dBlackScholesSolver``:
    the payoff enters through ``FdmInnerValueCalculatorProxy`` (one Python call
    per node) and American exercise through ``FdmStepConditionProxy`` (one call
    per time step). ``kinks``: prices (USD) of S and of B put on mesh nodes."""
    if scheme not in SCHEMES:
        raise EngineError(f"two_asset_option: scheme = {scheme!r} is not one of "
                          f"{', '.join(SCHEMES)}")
    p_s, p_b = market.process("equity"), market.process("btc")
    ms = _mesher(grid, p_s, maturity, tuple((k, MESH_DENSITY) for k in kinks[0]))
    mb = _mesher(grid, p_b, maturity, tuple((k, MESH_DENSITY) for k in kinks[1]))
    mesh = ql.FdmMesherComposite(ms, mb)
    s = np.exp(np.array(mesh.locations(0)))
    b = np.exp(np.array(mesh.locations(1)))
    values = np.asarray(payoff(s, b), dtype=float)
    conditions = ql.FdmStepConditionVector()
    if american:
        conditions.append(ql.FdmStepConditionProxy(_Exercise(values)))
    desc = ql.FdmSolverDesc(mesh, ql.FdmBoundaryConditionSet(),
                            ql.FdmStepConditionComposite([], conditions),
                            ql.FdmInnerValueCalculatorProxy(_Payoff(values)), maturity,
                            steps, damping_steps)
    solver = ql.Fdm2dBlackScholesSolver(p_s, p_b, market.correlation, desc, SCHEMES[scheme]())
    return float(solver.valueAt(market.equity_price, market.btc_price))
