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
  issuer's decisions (``convpricer.decisions.exercise``), and implicit-Euler
  damping steps restart the scheme after every non-smooth event;
* the value at (S0, B0) is a bicubic spline of the mesh values in log
  coordinates; greeks are bump-and-reprice on the same mesh.

:func:`two_asset_option` shows QuantLib's own 2-D solver driven by Python
callbacks (``Fdm2dBlackScholesSolver`` with ``FdmInnerValueCalculatorProxy``
and ``FdmStepConditionProxy``): the tests price exchange options with it.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass
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
from ..schedule import PREFERRED_HORIZON, convertible_schedule, preferred_schedule, time_grid
from ..structure import CapitalStructure
from . import check_options

KINDS = frozenset({"zero_coupon_convertible", "convertible_note", "preferred_stock"})
OPTIONS = frozenset({"steps", "grid_equity", "grid_btc", "scheme", "damping_steps",
                     "preferred_horizon"})

#: ADI schemes of QuantLib's FdmSchemeDesc accepted by the ``scheme`` option.
SCHEMES: dict[str, Callable[[], ql.FdmSchemeDesc]] = {
    "hundsdorfer": ql.FdmSchemeDesc.Hundsdorfer,
    "douglas": ql.FdmSchemeDesc.Douglas,
    "craig_sneyd": ql.FdmSchemeDesc.CraigSneyd,
    "modified_craig_sneyd": ql.FdmSchemeDesc.ModifiedCraigSneyd,
}
#: Defaults (docs/sections/fdm2d.md: about 1e-3 relative or better against the
#: converged value on the illustrative notes, about a second per valuation).
DEFAULT_SCHEME = "hundsdorfer"
DEFAULT_STEPS_PER_YEAR = 50
MIN_STEPS = 10
DEFAULT_GRID_EQUITY = 150
DEFAULT_GRID_BTC = 60
MIN_GRID = 10
DEFAULT_DAMPING_STEPS = 2
#: Mesh: FdmBlackScholesMesher's width (eps, scale factor: +-5.6 standard
#: deviations) over at most MESH_YEARS, concentrated at the kink with density
#: MESH_DENSITY (Concentrating1dMesher's parameter, in log-price units).
MESH_EPS = 1e-4
MESH_SCALE = 1.5
MESH_YEARS = 10.0
MESH_DENSITY = 0.05
#: BTC mesh size when the value does not depend on B (no capital structure).
FLAT_GRID_BTC = 3

_NULL_POINT = (ql.nullDouble(), ql.nullDouble())
_TOL = 1e-9


# ----- options -----------------------------------------------------------------------
@dataclass(frozen=True)
class _Options:
    steps: int | None
    grid_equity: int
    grid_btc: int
    scheme: str
    damping_steps: int
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
        horizon = options.get("preferred_horizon", PREFERRED_HORIZON)
        if isinstance(horizon, bool) or not isinstance(horizon, int | float) \
                or not 0 < horizon <= 100:
            raise EngineError(f"engine fdm2d: preferred_horizon = {horizon!r} must be a "
                              "number of years in (0, 100]")
        return cls(steps=integer("steps", None, MIN_STEPS),
                   grid_equity=integer("grid_equity", DEFAULT_GRID_EQUITY, MIN_GRID),
                   grid_btc=integer("grid_btc", DEFAULT_GRID_BTC, MIN_GRID),
                   scheme=scheme, damping_steps=integer("damping_steps",
                                                        DEFAULT_DAMPING_STEPS, 0),
                   preferred_horizon=float(horizon))


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
        """S at every node, shape (1, nS)."""
        return np.exp(self.x)[None, :]

    @property
    def btc(self) -> np.ndarray:
        """B nodes, shape (nB,)."""
        return np.exp(self.y)

    def interpolate(self, surface: np.ndarray, equity_price: float, btc_price: float) -> float:
        """Bicubic spline of ``surface`` (nB, nS) in log coordinates at (S, B)."""
        ky = min(3, self.y.size - 1)
        spline = RectBivariateSpline(self.y, self.x, surface, kx=ky, ky=3)
        return float(spline(np.log(btc_price), np.log(equity_price))[0, 0])


def _mesher(size: int, process: ql.GeneralizedBlackScholesProcess, years: float,
            kink: float | None) -> ql.Fdm1dMesher:
    """ln-price mesh: FdmBlackScholesMesher's width, concentrated at ``kink`` with the
    kink on a node. (FdmBlackScholesMesher's own cPoint concentrates without
    pinning the point to a node in QuantLib 1.44, which costs the second order.)"""
    uniform = ql.FdmBlackScholesMesher(size, process, years, process.x0(), ql.nullDouble(),
                                       ql.nullDouble(), MESH_EPS, MESH_SCALE, _NULL_POINT)
    lo, hi = uniform.location(0), uniform.location(size - 1)
    if kink is None or not lo < np.log(kink) < hi:
        return uniform
    return ql.Concentrating1dMesher(lo, hi, size, (float(np.log(kink)), MESH_DENSITY), True)


def _above(x: np.ndarray, level: float) -> np.ndarray:
    """For each node's cell (between midpoints) the fraction above ``level`` (ln
    price). Splitting the terminal value by it keeps the discontinuous
    Tsiveriotis-Fernandes parts second-order accurate (half and half on the
    node at the kink)."""
    mid = 0.5 * (x[1:] + x[:-1])
    a = np.concatenate([[x[0]], mid])
    b = np.concatenate([mid, [x[-1]]])
    return (b - np.clip(level, a, b)) / (b - a)


def _build_mesh(market: Market, horizon: float, n_s: int, n_b: int, s_kink: float | None,
                b_kink: float | None) -> _Mesh:
    years = min(horizon, MESH_YEARS)
    ms = _mesher(n_s, market.process("equity"), years, s_kink)
    mb = _mesher(n_b, market.process("btc"), years, b_kink)
    composite = ql.FdmMesherComposite(ms, mb)
    return _Mesh(composite, np.array(ms.locations()), np.array(mb.locations()))


def _conditions() -> ql.FdmStepConditionComposite:
    return ql.FdmStepConditionComposite([], ql.FdmStepConditionVector())


class _Stepper:
    """Backward solvers of one market: ``r`` discounts at the risk-free rate, ``cs``
    at rate + credit spread with the same drift. The equity carry holds the
    hazard compensation -h0 * L of a constant hazard rate (``hazard_carry``)."""

    def __init__(self, market: Market, mesh: _Mesh, rho: float, horizon: float,
                 spread: float, hazard_carry: float, scheme: str) -> None:
        def solvers(cs: float) -> tuple[ql.FdmBackwardSolver, ql.FdmBackwardSolver]:
            p_s = _process(market, "equity", rate_spread=cs, carry_spread=cs + hazard_carry)
            p_b = _process(market, "btc", rate_spread=cs, carry_spread=cs)
            op = ql.Fdm2dBlackScholesOp(mesh.composite, p_s, p_b, rho, horizon)
            bcs = ql.FdmBoundaryConditionSet()
            return (ql.FdmBackwardSolver(op, bcs, _conditions(), SCHEMES[scheme]()),
                    ql.FdmBackwardSolver(op, bcs, _conditions(),
                                         ql.FdmSchemeDesc.ImplicitEuler()))

        self.solvers = {"r": solvers(0.0)}
        if spread > 0:
            self.solvers["cs"] = solvers(spread)

    def roll(self, a: ql.Array, kind: str, t_from: float, t_to: float, damp: bool) -> None:
        """One step back; a damping step is two implicit-Euler half steps."""
        main, implicit = self.solvers[kind]
        if damp:
            implicit.rollback(a, t_from, t_to, 2, 0)
        else:
            main.rollback(a, t_from, t_to, 1, 0)


# ----- the claim's rules on the mesh ----------------------------------------------------
@dataclass
class _State:
    """Numpy values of one date, shape (nB, nS). ``equity`` / ``debt``: the
    Tsiveriotis-Fernandes parts (one array ``equity`` holds the whole value when
    there is no spread); ``arrears``: value of 1 USD of preferred arrears;
    ``p_*``: probabilities divided by the discount factor to the date."""

    equity: np.ndarray
    debt: np.ndarray
    arrears: np.ndarray | None = None
    p_convert: np.ndarray | None = None
    p_impaired: np.ndarray | None = None
    p_default: np.ndarray | None = None

    def fields(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in vars(self).items() if v is not None}


class _Rules:
    """What happens to a claim on the mesh: terminal value, events, hazard default."""

    horizon: float
    times_of_events: np.ndarray
    restarts: np.ndarray        # times after which the scheme is damped again
    needs_btc: bool
    face: float                 # the claim, for p_impaired
    recovery: float             # recovery at a hazard default, USD per unit
    arrears_recovery = 0.0

    def __init__(self, market: Market, credit: Credit, mesh: _Mesh) -> None:
        self.market, self.credit, self.mesh = market, credit, mesh
        self.S = mesh.equity
        self.B = mesh.btc

    def _liquidation(self, instrument: Any) -> np.ndarray | None:
        if self.credit.structure is None:
            return None
        return self.credit.liquidation_value(instrument, self.B)[:, None]

    def _insolvent(self, t: float) -> np.ndarray | None:
        if not (self.credit.structural and self.credit.is_due(t)):
            return None
        mask = self.credit.insolvent(self.B)
        return mask[:, None] if mask.any() else None

    @staticmethod
    def _end(st: _State, ended: np.ndarray, converted: np.ndarray, scale: float) -> None:
        """Probabilities where the claim ends by a decision (converted or repaid)."""
        if st.p_convert is None:
            return
        st.p_convert = np.where(ended, converted * scale, st.p_convert)
        st.p_impaired = np.where(ended, 0.0, st.p_impaired)
        st.p_default = np.where(ended, 0.0, st.p_default)
        if st.arrears is not None:
            st.arrears = np.where(converted, 0.0, np.where(ended, 1.0, st.arrears))

    def _default(self, st: _State, mask: np.ndarray, liq: np.ndarray, claim: float,
                 scale: float) -> None:
        """Structural default where ``mask``: liquidation value in cash."""
        st.equity = np.where(mask, 0.0, st.equity)
        st.debt = np.where(mask, liq, st.debt)
        if st.p_convert is not None:
            st.p_convert = np.where(mask, 0.0, st.p_convert)
            st.p_impaired = np.where(mask, (liq < claim - 1e-9) * scale, st.p_impaired)
            st.p_default = np.where(mask, scale, st.p_default)

    def terminal(self, st: _State) -> None:
        raise NotImplementedError

    def events(self, t: float, st: _State, scale: float) -> bool:
        """Apply what happens at ``t`` (in place); returns whether anything did."""
        raise NotImplementedError

    def default_payoff(self, t: float) -> np.ndarray:
        raise NotImplementedError


class _NoteRules(_Rules):
    def __init__(self, note: ZeroCouponConvertible, market: Market, credit: Credit,
                 mesh: _Mesh) -> None:
        super().__init__(market, credit, mesh)
        self.note = note
        self.sch = sch = convertible_schedule(note, market.valuation_date)
        self.horizon = sch.maturity
        self.face = note.face
        self.recovery = note.recovery_rate * note.face
        due = credit.due_times[credit.due_times <= sch.maturity + _TOL]
        self.times_of_events = np.unique(np.concatenate([sch.event_times(), due]))
        self.restarts = np.unique(np.concatenate([[sch.maturity], sch.put_times, due]))
        self.needs_btc = credit.structural
        self.conversion = sch.conversion_ratio * self.S
        trig = sch.trigger_price
        self.call_mask = True if trig is None else self.S >= trig
        self.liq = self._liquidation(note) if credit.structural else None

    def _coupon(self, t: float) -> float:
        m = np.abs(self.sch.coupon_times - t) < _TOL
        return float(self.sch.coupon_amounts[m].sum()) if m.any() else 0.0

    def terminal(self, st: _State) -> None:
        """Nothing before the events at maturity (which pay redemption or convert)."""

    def _maturity(self, st: _State, coupon: float, scale: float) -> None:
        """max(ratio * S, redemption + last coupon); the cash part is the
        redemption times the fraction of the node's cell below the conversion price."""
        pay = self.sch.redemption + coupon
        ratio = self.sch.conversion_ratio
        frac = _above(self.mesh.x, float(np.log(pay / ratio))) if ratio > 0 \
            else np.zeros(self.mesh.x.size)
        debt = pay * (1.0 - frac)
        st.equity = np.broadcast_to(np.maximum(self.conversion, pay) - debt,
                                    st.equity.shape).copy()
        st.debt = np.broadcast_to(debt, st.debt.shape).copy()
        if st.p_convert is not None:
            st.p_convert = np.broadcast_to(frac * scale, st.equity.shape).copy()

    def events(self, t: float, st: _State, scale: float) -> bool:
        sch = self.sch
        coupon = self._coupon(t)
        put = sch.is_put_time(t)
        call = sch.call_allowed(t)
        convert = sch.conversion_allowed(t)
        insolvent = self._insolvent(t)
        if abs(t - sch.maturity) < _TOL:
            self._maturity(st, coupon, scale)
        elif coupon or put or call or convert:
            st.debt = st.debt + coupon
            accrued = float(sch.accrued(t)) + coupon
            eq, de, dec = exercise(
                st.equity, st.debt, np.broadcast_to(self.conversion, st.equity.shape),
                can_convert=convert, put_value=sch.put_price + accrued if put else None,
                call_value=sch.call_price + accrued if call else None,
                call_mask=self.call_mask)
            st.equity, st.debt = eq, de
            self._end(st, dec != HOLD, (dec == CONVERTED) | (dec == CALLED_CONVERTED), scale)
        elif insolvent is None:
            return False
        if insolvent is not None:
            self._default(st, insolvent, self.liq, self.face + float(sch.accrued(t)), scale)
        return True

    def default_payoff(self, t: float) -> np.ndarray:
        return self.credit.default_payoff(self.note, self.S,
                                          self.sch.conversion_allowed(t))


class _PreferredRules(_Rules):
    def __init__(self, pref: PreferredStock, market: Market, credit: Credit, mesh: _Mesh,
                 horizon: float) -> None:
        super().__init__(market, credit, mesh)
        self.pref = pref
        self.sch = sch = preferred_schedule(pref, market.valuation_date, horizon)
        self.horizon = horizon
        claim = pref.liquidation_preference + pref.arrears
        self.face = claim
        due = credit.due_times[credit.due_times <= horizon + _TOL]
        extra = [sch.call_start] if sch.call_start else []
        self.times_of_events = np.unique(np.concatenate([sch.dividend_times, due, extra]))
        structured = credit.structure is not None
        self.restarts = np.unique(np.concatenate(
            [[horizon], due, sch.dividend_times if structured else []]))
        self.needs_btc = structured
        self.conversion = pref.conversion_ratio * self.S
        liq = self._liquidation(pref)
        #: fraction of the claim (preference + arrears) paid in a liquidation
        self.recovered = np.ones((self.B.size, 1)) if liq is None \
            else np.minimum(liq / claim, 1.0)
        self.liq = self.recovered * claim
        self.paid = np.ones((self.B.size, 1), bool) if not structured \
            else credit.dividend_paid(pref, self.B)[:, None]
        self.arrears_recovery = pref.recovery_rate
        self.recovery = pref.recovery_rate * pref.liquidation_preference

    @property
    def carries_arrears(self) -> bool:
        return self.pref.cumulative and (not bool(self.paid.all()) or self.pref.arrears > 0)

    def terminal(self, st: _State) -> None:
        st.debt = st.debt + self.recovered * self.pref.liquidation_preference
        if st.arrears is not None:
            st.arrears = st.arrears + self.recovered

    def events(self, t: float, st: _State, scale: float) -> bool:
        sch = self.sch
        dividend = bool(np.any(np.abs(sch.dividend_times - t) < _TOL))
        call = sch.call_start is not None and sch.call_start - _TOL <= t < self.horizon - _TOL
        convert = self.pref.conversion_ratio > 0
        insolvent = self._insolvent(t)
        at_horizon = abs(t - self.horizon) < _TOL
        if not (dividend or call or convert or insolvent is not None or at_horizon):
            return False
        paid = 0.0
        if dividend:
            paid = np.where(self.paid, sch.dividend, 0.0)
            missed = sch.dividend - paid
            if st.arrears is not None:
                st.debt = st.debt + missed * st.arrears
                st.arrears = np.where(self.paid, 1.0, st.arrears)
            st.debt = st.debt + paid
        if call or convert:
            call_value = sch.call_price + paid if call else None
            eq, de, dec = exercise(st.equity, st.debt,
                                   np.broadcast_to(self.conversion, st.equity.shape),
                                   can_convert=convert, call_value=call_value)
            st.equity, st.debt = eq, de
            self._end(st, dec != HOLD, (dec == CONVERTED) | (dec == CALLED_CONVERTED), scale)
        if insolvent is not None:
            self._default(st, insolvent, self.recovered * self.pref.liquidation_preference,
                          self.pref.liquidation_preference, scale)
            if st.arrears is not None:
                st.arrears = np.where(insolvent, self.recovered, st.arrears)
        return True

    def default_payoff(self, t: float) -> np.ndarray:
        return self.credit.default_payoff(self.pref, self.S, self.pref.conversion_ratio > 0)


# ----- one valuation ---------------------------------------------------------------------
@dataclass(frozen=True)
class _Plan:
    """What stays fixed across bumped markets: the mesh and the time grid."""

    instrument: ZeroCouponConvertible | PreferredStock
    structure: CapitalStructure | None
    options: _Options
    mesh: _Mesh
    times: np.ndarray
    horizon: float
    rho: float


@dataclass(frozen=True)
class _Solution:
    value: float
    p_convert: float | None = None
    p_impaired: float | None = None
    p_default: float | None = None


def _rules(plan: _Plan, market: Market, credit: Credit) -> _Rules:
    inst = plan.instrument
    if isinstance(inst, PreferredStock):
        return _PreferredRules(inst, market, credit, plan.mesh, plan.horizon)
    return _NoteRules(inst, market, credit, plan.mesh)


def _upwind(mesh: _Mesh, speed: np.ndarray, dt: float) -> np.ndarray:
    """Banded matrix (lower, upper = 1, 1) of one implicit upwind step of
    dV/dtau = a(x) dV/dx in backward time: forward differences where a > 0,
    backward differences where a < 0 (monotone, first order in x)."""
    n = mesh.x.size
    dx = np.diff(mesh.x)
    up = np.zeros(n)
    down = np.zeros(n)
    up[:-1] = np.maximum(speed[:-1], 0.0) * dt / dx
    down[1:] = np.maximum(-speed[1:], 0.0) * dt / dx
    ab = np.zeros((3, n))
    ab[0, 1:] = -up[:-1]
    ab[1] = 1.0 + up + down
    ab[2, :-1] = -down[1:]
    return ab


def _solve(plan: _Plan, market: Market, *, probabilities: bool) -> _Solution:
    """Backward induction on the mesh under ``market``."""
    inst, mesh, opts = plan.instrument, plan.mesh, plan.options
    credit = Credit(plan.structure, market)
    rules = _rules(plan, market, credit)
    spread = credit_spread(inst)
    h = credit.hazard(np.exp(mesh.x))                         # per S node
    loss = credit.equity_loss
    h0 = credit.hazard_rate if credit.has_hazard else 0.0
    if credit.has_hazard and spread > 0:
        raise EngineError(f"engine fdm2d: {inst.name} has both a credit_spread and an "
                          "issuer hazard rate")
    stepper = _Stepper(market, mesh, plan.rho, plan.horizon, spread, -min(h0, h.max()) * loss,
                       opts.scheme)
    # residual equity drift (h(S) - h0) * L of a state-dependent hazard (operator splitting)
    residual = (h - min(h0, h.max())) * loss if credit.has_hazard else None
    zeros = np.zeros(mesh.shape)
    st = _State(equity=zeros, debt=zeros)
    if isinstance(rules, _PreferredRules) and rules.carries_arrears:
        st.arrears = zeros
    if probabilities:
        st.p_convert, st.p_impaired, st.p_default = zeros, zeros, zeros
    rules.terminal(st)
    times = plan.times
    df_end = float(market.discount(times[-1]))
    rules.events(times[-1], st, 1.0 / df_end)
    kinds = {"equity": "r", "debt": "cs" if spread > 0 else "r"}
    split = spread > 0
    if not split:
        st.equity, st.debt = st.equity + st.debt, zeros
    arrays = {k: ql.Array(v.ravel().tolist()) for k, v in st.fields().items()
              if split or k != "debt"}
    restarts = rules.restarts
    damp_left = opts.damping_steps
    for i in range(times.size - 2, -1, -1):
        t0, t1 = float(times[i]), float(times[i + 1])
        if np.any(np.abs(restarts - t1) < _TOL):
            damp_left = opts.damping_steps
        damp = damp_left > 0
        damp_left -= 1
        for k, a in arrays.items():
            stepper.roll(a, kinds.get(k, "r"), t1, t0, damp)
        vals = {k: _read(a).reshape(mesh.shape) for k, a in arrays.items()}
        st = _State(debt=vals.pop("debt", zeros), **vals)
        scale = 1.0 / float(market.discount(t0))
        if credit.has_hazard:
            _hazard_step(st, rules, h, residual, mesh, t0, t1 - t0, scale)
        changed = rules.events(t0, st, scale)
        if not split:
            st.equity, st.debt = st.equity + st.debt, zeros
        if changed or credit.has_hazard:
            for k, v in st.fields().items():
                if k in arrays:
                    _write(arrays[k], v)
    vals = {k: _read(a).reshape(mesh.shape) for k, a in arrays.items()}
    s0, b0 = market.equity_price, market.btc_price
    value_surface = vals["equity"] + vals.get("debt", 0.0)
    if "arrears" in vals:
        value_surface = value_surface + inst.arrears * vals["arrears"]
    value = mesh.interpolate(value_surface, s0, b0)
    if not probabilities:
        return _Solution(value)
    p = {k: float(np.clip(mesh.interpolate(vals[k], s0, b0), 0.0, 1.0))
         for k in ("p_convert", "p_impaired", "p_default")}
    return _Solution(value, **p)


def _hazard_step(st: _State, rules: _Rules, h: np.ndarray, residual: np.ndarray | None,
                 mesh: _Mesh, t: float, dt: float, scale: float) -> None:
    """Operator splitting of the hazard over one step: the residual equity drift
    (implicit upwind), then survival exp(-h dt) with the default payoff as source."""
    fields = st.fields()
    if residual is not None and np.any(residual != 0):
        ab = _upwind(mesh, residual, dt)
        names = list(fields)
        rhs = np.concatenate([fields[k].T for k in names], axis=1)     # (nS, nB * k)
        out = solve_banded((1, 1), ab, rhs, check_finite=False)
        nb = mesh.shape[0]
        for j, k in enumerate(names):
            setattr(st, k, out[:, j * nb:(j + 1) * nb].T.copy())
    surv = np.exp(-h * dt)[None, :]
    hit = 1.0 - surv
    payoff = rules.default_payoff(t)
    st.equity = surv * st.equity
    st.debt = surv * st.debt + hit * payoff
    if st.arrears is not None:
        st.arrears = surv * st.arrears + hit * rules.arrears_recovery
    if st.p_convert is not None:
        converts = payoff > rules.recovery + 1e-12
        st.p_convert = surv * st.p_convert + hit * converts * scale
        st.p_impaired = surv * st.p_impaired + hit * scale
        st.p_default = surv * st.p_default + hit * scale


# ----- the engine ------------------------------------------------------------------------
def _check_supported(inst: Any, market: Market, structure: CapitalStructure | None) -> None:
    if not isinstance(inst, ZeroCouponConvertible | PreferredStock):
        raise EngineError(f"engine fdm2d does not value {getattr(inst, 'kind', inst)!r}")
    if isinstance(inst, ZeroCouponConvertible) and inst.maturity <= market.valuation_date:
        raise InputError("maturity", inst.maturity.isoformat(), "is not after the valuation "
                         f"date {market.valuation_date.isoformat()}: nothing to value")


def _plan(inst: Any, market: Market, structure: CapitalStructure | None,
          opts: _Options) -> _Plan:
    """Horizon, time grid and mesh (from the unbumped market)."""
    credit = Credit(structure, market)
    if isinstance(inst, PreferredStock):
        horizon = opts.preferred_horizon
        s_kink = inst.liquidation_preference / inst.conversion_ratio \
            if inst.conversion_ratio > 0 else None
        needs_btc = structure is not None
    else:
        horizon = market.time(inst.maturity)
        s_kink = inst.conversion_price if inst.conversion_ratio > 0 else None
        needs_btc = credit.structural
    b_kink = None
    if needs_btc and structure.btc_holdings > 0:
        barrier = (structure.debt - structure.cash - structure.other_assets) \
            / structure.btc_holdings
        b_kink = barrier if barrier > 0 else None
    n_b = opts.grid_btc if needs_btc else FLAT_GRID_BTC
    mesh = _build_mesh(market, horizon, opts.grid_equity, n_b, s_kink, b_kink)
    steps = opts.steps or max(MIN_STEPS, round(DEFAULT_STEPS_PER_YEAR * horizon))
    dummy = _rules(_Plan(inst, structure, opts, mesh, np.empty(0), horizon, 0.0), market,
                   credit)
    times = time_grid(dummy.times_of_events, horizon, steps)
    return _Plan(inst, structure, opts, mesh, times, horizon, market.correlation)


def price(instrument: ZeroCouponConvertible | PreferredStock, market: Market,
          structure: CapitalStructure | None = None, *, greeks: bool = True,
          **options: Any) -> PricingResult:
    """Value one note (USD per note of ``face``) or preferred share (USD per share).

    Options: ``steps`` (time steps to the horizon, default
    ``DEFAULT_STEPS_PER_YEAR`` per year), ``grid_equity`` and ``grid_btc`` (mesh
    nodes per factor), ``scheme`` (one of :data:`SCHEMES`), ``damping_steps``
    (implicit-Euler steps after each non-smooth event) and ``preferred_horizon``
    (years, preferred stock only).
    """
    check_options("fdm2d", options, OPTIONS)
    opts = _Options.parse(options)
    _check_supported(instrument, market, structure)
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
        if flat_btc:   # no structure: the value does not depend on B
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
    return {"engine": "fdm2d", "steps": int(plan.times.size - 1),
            "grid_equity": int(mesh.shape[1]), "grid_btc": int(mesh.shape[0]),
            "scheme": opts.scheme, "damping_steps": opts.damping_steps,
            "horizon": plan.horizon,
            "equity_range": [float(np.exp(mesh.x[0])), float(np.exp(mesh.x[-1]))],
            "btc_range": [float(np.exp(mesh.y[0])), float(np.exp(mesh.y[-1]))],
            "credit": Credit(plan.structure, market).describe()}


def _notes(plan: _Plan, market: Market) -> list[str]:
    inst = plan.instrument
    notes = []
    if isinstance(inst, ZeroCouponConvertible) and inst.call_trigger_days is not None:
        notes.append(f"soft call on {inst.call_trigger_days} of {inst.call_trigger_window} "
                     "days approximated by a trigger on the day itself")
    if isinstance(inst, PreferredStock):
        notes.append(f"perpetual preferred valued to a {plan.horizon:g}-year horizon")
        if inst.cumulative and plan.structure is not None:
            notes.append("arrears valued as a claim paid at the next dividend the surplus "
                         "test allows (not a state variable)")
    credit = Credit(plan.structure, market)
    if credit.has_hazard and plan.structure.hazard_exponent > 0:
        notes.append("state-dependent hazard drift by operator splitting (upwind, first "
                     "order in the mesh)")
    if abs(plan.rho) == 1.0:
        notes.append("correlation +-1: the 2-D operator is degenerate; measured in "
                     "docs/sections/fdm2d.md")
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
    numpy on the solver's own array at every step."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def applyTo(self, a: ql.Array, t: float) -> None:
        _write(a, np.maximum(_read(a), self.values))


def two_asset_option(payoff: Callable[[np.ndarray, np.ndarray], np.ndarray],
                     market: Market, maturity: float, *, american: bool = False,
                     grid: int = 150, steps: int = 100, damping_steps: int = 2,
                     kink: tuple[float | None, float | None] = (None, None),
                     scheme: str = DEFAULT_SCHEME) -> float:
    """Value of ``payoff(S, B)`` (USD) at ``maturity`` years, European or American,
    on equity and BTC, with QuantLib's ``Fdm2dBlackScholesSolver``: the payoff
    enters through ``FdmInnerValueCalculatorProxy`` (one Python call per node)
    and American exercise through ``FdmStepConditionProxy`` (one call per step).
    ``kink`` concentrates each mesh at a price (USD)."""
    if scheme not in SCHEMES:
        raise EngineError(f"two_asset_option: scheme = {scheme!r} is not one of "
                          f"{', '.join(SCHEMES)}")
    p_s, p_b = market.process("equity"), market.process("btc")
    ms = _mesher(grid, p_s, maturity, kink[0])
    mb = _mesher(grid, p_b, maturity, kink[1])
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
