"""The ``montecarlo`` engine: two-factor (BTC, equity) paths, least-squares
early exercise, structural and hazard credit, seeded and reproducible.

It values the model of docs/sections/two_factor_conventions.md path by path;
docs/sections/montecarlo.md gives the scheme, the measured errors and costs.

* Paths: exact log-normal steps under the market's curves (integrated rate
  ln D(t0)/D(t1) and forward variance V(t1) - V(t0) per step), correlated
  by Cholesky (rho = +-1 included), numpy ``Generator(PCG64)``: one stream per
  block of :data:`BLOCK` paths, so a result does not depend on ``batch``.
  Antithetic pairs within each block (default on).
* Grid: every event date (coupons, puts, call and conversion starts,
  maturity, the structure's due dates, preferred dividends); NYSE trading
  days inside a note's call window with ``monitoring="daily"`` (the soft-call
  trigger, N of the last M closes, is counted there); ``steps_per_year``
  equal steps elsewhere.
* Early exercise: Longstaff-Schwartz. A pilot set of paths is simulated and
  stored; going backward, the continuation's share-settled part (discounted
  at r) and cash part (at r + credit_spread) are regressed on a basis in
  (ln S/K, S/K, BTC coverage, trigger count), and ``decisions.exercise``
  decides on the regressed values. Fresh paths are then valued forward, in
  batches, with that fitted policy: an out-of-sample, low-biased estimator.
* Credit: structural default at ``Credit.due_times`` (liquidation value in
  cash); hazard default integrated out along each path (discounting by the
  path's survival plus a recovery cash flow per step: a conditional
  expectation, no default draws); preferred dividends out of surplus with
  exact per-path cumulative arrears.
* Funding (``funding``): ``"static"`` (the lattice's assumption) or
  ``"btc_sales"`` (repayments at solvent due dates are paid from cash and BTC
  sold at the path's price; holdings fall for later tests).
* Control variates: the exact European TF value of converting or redeeming
  at maturity (closed form on a shadow path without the hazard drift) and,
  with a structure, a BTC put struck where coverage fails.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import QuantLib as ql
from scipy.special import ndtr

from .. import analytic, decisions
from ..credit import Credit
from ..errors import EngineError, InputError
from ..greeks import bump_greeks
from ..instruments import PreferredStock, ZeroCouponConvertible
from ..market import Curve, Market, ql_date
from ..results import PricingResult
from ..schedule import (
    CALENDAR,
    PREFERRED_HORIZON,
    convertible_schedule,
    preferred_schedule,
    time_grid,
    trading_days,
)
from ..structure import CapitalStructure, priority_key
from ..waterfall import payouts
from . import check_options

KINDS = frozenset({"zero_coupon_convertible", "convertible_note", "preferred_stock"})
OPTIONS = frozenset({"paths", "seed", "antithetic", "steps_per_year", "monitoring", "funding",
                     "preferred_horizon", "basis_degree", "pilot_paths", "batch",
                     "control_variate"})

#: Paths per random stream: each block of paths draws from its own PCG64 stream
#: (SeedSequence spawn key (purpose, block)), antithetic pairs within a block.
BLOCK = 2048
DEFAULT_SEED = 20250221
#: Production defaults (docs/sections/montecarlo.md: standard errors and costs).
DEFAULT_PATHS = 1 << 17
DEFAULT_PILOT = 1 << 15
DEFAULT_BATCH = 1 << 15
#: Grid steps per year outside daily windows and event dates: notes, preferreds.
DEFAULT_STEPS_PER_YEAR = 52
DEFAULT_PREFERRED_STEPS_PER_YEAR = 12
DEFAULT_DEGREE = 3
MONITORING = ("daily", "grid")
FUNDING = ("static", "btc_sales")
#: Outcome code (beside decisions.HOLD...DEFAULTED): held to maturity and
#: redeemed, or held to the preferred's horizon.
MATURED = 6
OUTCOMES = {decisions.CONVERTED: "converted", decisions.PUT: "put",
            decisions.CALLED_REDEEMED: "called_redeemed",
            decisions.CALLED_CONVERTED: "called_converted",
            decisions.DEFAULTED: "defaulted", MATURED: "matured"}
_PURPOSE_VALUE, _PURPOSE_PILOT = 0, 1
_XI_CLIP = 5.0     # ln(S/K) is clipped to +-5 in the regression basis
_COV_CLIP = 3.0    # ln(assets / claims) likewise to +-3
_TOL = 1e-9
#: A control "moves" on a sample beyond this x max(|mean|, 1) from its median. Relative
#: to its mean, not 1e-9: a BTC put struck far below spot is worth ~1e-6 on many
#: paths stopped early and more than 1% of its mean on a handful, whose defaults
#: then fixed its beta (measured: a European zero at 16x coverage 1969.5 +- 0.4,
#: one defaulting path of 2,048, against 2299.9 without a structure).
_CONTROL_TOL = 1e-2
_MIN_CONTROL_SAMPLES = 64  # controls moving on fewer (pair-averaged) samples are left out
_INSTANT = 1e-6    # "an instant before" a due date, years
_MIN_REGRESSION = 64  # fewer candidate pilot paths at a date: no exercise there
#: Expected number of regressed pilot paths failing the next structural test below
#: which the default-shape regressors are left out: a shape seen on a handful of
#: paths is fitted to their noise (measured: -21 per 1000 at 5,000x coverage).
_MIN_DEFAULTS = 10.0


# ----- options ------------------------------------------------------------
@dataclass(frozen=True)
class Options:
    """Validated engine options (what produced the number; recorded in settings)."""

    paths: int = DEFAULT_PATHS
    seed: int = DEFAULT_SEED
    antithetic: bool = True
    steps_per_year: int | None = None     # None: 52 for notes, 12 for preferreds
    monitoring: str = "daily"
    funding: str = "static"
    preferred_horizon: float = PREFERRED_HORIZON
    basis_degree: int = DEFAULT_DEGREE
    pilot_paths: int = DEFAULT_PILOT
    batch: int = DEFAULT_BATCH
    control_variate: bool = True


def _whole(name: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < lo:
        raise EngineError(f"engine montecarlo: {name} = {value!r} must be an integer >= {lo}")
    return int(value)


def _blocks(n: int) -> int:
    """n rounded up to whole blocks of paths."""
    return -(-n // BLOCK) * BLOCK


def options(**opts: Any) -> Options:
    """Validate engine options; path counts are rounded up to whole :data:`BLOCK`\\ s."""
    check_options("montecarlo", opts, OPTIONS)
    o = Options(**opts)
    for flag in ("antithetic", "control_variate"):
        if not isinstance(getattr(o, flag), bool):
            raise EngineError(f"engine montecarlo: {flag} = {getattr(o, flag)!r} must be "
                              "true or false")
    if o.monitoring not in MONITORING:
        raise EngineError(f"engine montecarlo: monitoring = {o.monitoring!r} is not one of "
                          f"{', '.join(MONITORING)}")
    if o.funding not in FUNDING:
        raise EngineError(f"engine montecarlo: funding = {o.funding!r} is not one of "
                          f"{', '.join(FUNDING)}")
    h = o.preferred_horizon
    if isinstance(h, bool) or not isinstance(h, int | float) or not 0.25 <= h <= 100:
        raise EngineError(f"engine montecarlo: preferred_horizon = {h!r} must be a number of "
                          "years in [0.25, 100]")
    return dataclasses.replace(
        o, paths=_blocks(_whole("paths", o.paths, 2)),
        seed=_whole("seed", o.seed, 0),
        steps_per_year=None if o.steps_per_year is None
        else _whole("steps_per_year", o.steps_per_year, 1),
        basis_degree=_whole("basis_degree", o.basis_degree, 1),
        pilot_paths=_blocks(_whole("pilot_paths", o.pilot_paths, 2)),
        batch=_blocks(_whole("batch", o.batch, 2)), preferred_horizon=float(h))


# ----- random numbers ------------------------------------------------------------
class _Normals:
    """Independent standard normals for paths [first, first + n), one PCG64 stream per
    block of BLOCK paths; with ``antithetic`` each block's second half is the
    negative of its first half. ``draw()`` gives the (2, n) normals of the next step."""

    def __init__(self, seed: int, purpose: int, first: int, n: int, antithetic: bool):
        b0 = first // BLOCK
        self.gens = [np.random.Generator(np.random.PCG64(
            np.random.SeedSequence(seed, spawn_key=(purpose, b0 + i))))
            for i in range(n // BLOCK)]
        self.antithetic = antithetic

    def draw(self) -> np.ndarray:
        if not self.antithetic:
            return np.concatenate([g.standard_normal((2, BLOCK)) for g in self.gens], axis=1)
        parts = []
        for g in self.gens:
            z = g.standard_normal((2, BLOCK // 2))
            parts += [z, -z]
        return np.concatenate(parts, axis=1)


def _pair_means(x: np.ndarray, antithetic: bool) -> np.ndarray:
    """Averages of antithetic pairs (independent samples); x itself without antithetics."""
    if not antithetic:
        return x
    return x.reshape(-1, 2, BLOCK // 2).mean(axis=1).ravel()


# ----- dynamics ------------------------------------------------------------
class _Dynamics:
    """Exact log-normal steps of (ln B, ln S) on a time grid, curves step by step;
    the hazard drift h(S) L and the survival are evaluated at the start of a step."""

    def __init__(self, market: Market, credit: Credit, times: np.ndarray):
        self.market, self.credit, self.times = market, credit, times
        self.dt = np.diff(times)
        self.rint = np.diff(-np.log(market.discount(times)))       # integrated rate per step
        var_b = np.maximum(np.diff(market.variance("btc", times)), 0.0)
        var_s = np.maximum(np.diff(market.variance("equity", times)), 0.0)
        self.sd_b, self.sd_s = np.sqrt(var_b), np.sqrt(var_s)
        self.mu_b = self.rint - market.carry("btc") * self.dt - 0.5 * var_b
        self.mu_s = self.rint - market.carry("equity") * self.dt - 0.5 * var_s
        rho = market.correlation
        self.rho, self.rho_c = rho, math.sqrt(max(1.0 - rho * rho, 0.0))
        self.hazard = credit.has_hazard
        self.loss = credit.equity_loss

    def start(self, n: int) -> dict[str, np.ndarray]:
        """Log-prices (and log-survival, shadow log-price with a hazard) at time 0."""
        m = self.market
        st = {"lb": np.full(n, math.log(m.btc_price)), "ls": np.full(n, math.log(m.equity_price))}
        if self.hazard:
            st["lss"] = st["ls"].copy()        # equity without the hazard drift
            st["lq"] = np.zeros(n)             # log survival
        return st

    def step(self, st: dict[str, np.ndarray], k: int, z: np.ndarray) -> np.ndarray | None:
        """Move ``st`` from t_k to t_{k+1}; returns h(S_k) (None without a hazard)."""
        zs = self.rho * z[0] + self.rho_c * z[1]
        diff_s = self.mu_s[k] + self.sd_s[k] * zs
        h = None
        if self.hazard:
            h = self.credit.hazard(np.exp(st["ls"]))
            st["lq"] -= h * self.dt[k]
            st["lss"] += diff_s
            st["ls"] += diff_s + h * (self.loss * self.dt[k])
        else:
            st["ls"] += diff_s
        st["lb"] += self.mu_b[k] + self.sd_b[k] * z[0]
        return h


# ----- time grid ------------------------------------------------------------
def _grid(market: Market, horizon: float, events: np.ndarray, steps_per_year: int,
          daily: tuple[date, date] | None) -> tuple[np.ndarray, np.ndarray]:
    """Times from 0 to ``horizon`` through every event; NYSE closes between the two
    dates of ``daily`` (flagged in the second array), ``steps_per_year`` elsewhere."""
    ev = events[(events > 0) & (events < horizon - _TOL)]
    steps = max(1, math.ceil(steps_per_year * horizon))
    days = np.empty(0)
    if daily is not None:
        days = np.array([market.time(d) for d in trading_days(*daily)])
        days = days[(days >= 0) & (days < horizon - _TOL)]
    coarse = time_grid(np.concatenate([ev, days[:1]]), horizon, steps)
    if days.size:
        coarse = coarse[(coarse < days[0] - _TOL) | (coarse > days[-1] + _TOL)]
    times = np.unique(np.round(np.concatenate([coarse, ev, days, [0.0, horizon]]), 12))
    monitored = np.isin(times, np.round(days, 12))
    return times, monitored


# ----- the claim's events on the grid ------------------------------------------------------------
@dataclass
class _Plan:
    """One claim's events on the grid, and what is fixed along it."""

    inst: ZeroCouponConvertible | PreferredStock
    market: Market
    structure: CapitalStructure | None
    credit: Credit
    opt: Options
    times: np.ndarray
    monitored: np.ndarray
    dyn: _Dynamics
    df: np.ndarray              # D(t_k): share-settled value
    dfc: np.ndarray             # D(t_k) exp(-cs t_k): cash value
    face: float                 # claim per unit: face, or liquidation preference
    ratio: float                # conversion ratio
    s_ref: float                # conversion price (or S0): scale of the basis
    final: float                # notes: redemption + last coupon; preferred: its preference
    convert_ok: np.ndarray
    call_ok: np.ndarray
    call_value: np.ndarray      # call price + accrued (preferred: + arrears per path)
    put_value: np.ndarray       # put price + accrued; nan = no put
    coupon: np.ndarray          # coupon per note at t_k (maturity's is in ``final``)
    claim: np.ndarray           # what the claim is owed at t_k (impairment test)
    end_date: date              # maturity, or the preferred's horizon date
    dividend: np.ndarray        # bool: a preferred dividend date
    due: np.ndarray             # bool: structural default test
    escape: np.ndarray          # bool: conversion allowed an instant before t_k
    decide: np.ndarray          # bool: a decision date
    trigger: float | None       # ln of the soft-call trigger price
    trigger_n: int | None       # N of M (None: single-day test)
    trigger_m: int | None
    funding_events: dict[int, tuple[date, tuple[int, ...]]]  # k -> (date, notes due)
    claims_through: float       # USD of claims senior to and pari passu with the claim
    var_s_end: float            # equity variance to the last date
    var_b_end: float            # BTC variance to the last date
    next_due: np.ndarray        # index of the next structural test after t_k (-1: none)
    holder_free: np.ndarray     # bool: the hold-one-step floor rules conversion out
    dyn_var_b: np.ndarray       # BTC variance to t_k
    notes: list[str] = field(default_factory=list)

    @property
    def is_note(self) -> bool:
        return isinstance(self.inst, ZeroCouponConvertible)

    @property
    def horizon(self) -> float:
        return float(self.times[-1])

    @property
    def steps(self) -> int:
        return self.times.size - 1

    @property
    def nofm(self) -> bool:
        return self.trigger_n is not None

    @property
    def cumulative(self) -> bool:
        return isinstance(self.inst, PreferredStock) and self.inst.cumulative


def _on_grid(times: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Indices of times ``ts`` (which are on the grid) in ``times``."""
    ts = np.asarray(ts, dtype=float)
    idx = np.minimum(np.searchsorted(times, ts - _TOL), times.size - 1)
    return idx[np.abs(times[idx] - ts) < 1e-7]


def _claims_through(structure: CapitalStructure, inst) -> float:
    key = priority_key(inst)
    return sum(c.notional + (c.arrears * c.units if isinstance(c, PreferredStock) else 0.0)
               for c in structure.claims if priority_key(c) <= key)


def _plan(inst, market: Market, structure: CapitalStructure | None, opt: Options) -> _Plan:
    if opt.steps_per_year is None:
        opt = dataclasses.replace(opt, steps_per_year=DEFAULT_PREFERRED_STEPS_PER_YEAR
                                  if isinstance(inst, PreferredStock) else DEFAULT_STEPS_PER_YEAR)
    vd = market.valuation_date
    credit = Credit(structure, market)
    notes: list[str] = []
    if isinstance(inst, ZeroCouponConvertible):
        if inst.maturity <= vd:
            raise InputError("maturity", inst.maturity.isoformat(),
                             f"is not after the valuation date {vd.isoformat()}: nothing to value")
        sch = convertible_schedule(inst, vd)
        horizon = sch.maturity
        events = [sch.event_times()]
        daily = None
        if opt.monitoring == "daily" and inst.call_start is not None:
            first = CALENDAR.adjust(ql_date(max(inst.call_start, vd)))
            if inst.call_trigger_window is not None:
                first = CALENDAR.advance(first, -(inst.call_trigger_window - 1), ql.Days)
            daily = (max(date(first.year(), first.month(), first.dayOfMonth()), vd),
                     inst.maturity - timedelta(days=1))
        elif inst.call_trigger_days is not None:
            notes.append(f"soft call on {inst.call_trigger_days} of {inst.call_trigger_window} "
                         "days approximated by a single-day trigger on the grid "
                         "(monitoring='grid')")
    else:
        hdate = vd + timedelta(days=round(opt.preferred_horizon * 365))
        horizon = market.time(hdate)
        psch = preferred_schedule(inst, vd, horizon)
        events = [psch.dividend_times]
        if psch.call_start is not None:
            events.append(np.array([psch.call_start]))
        daily = None
        notes.append(f"perpetual valued to a {opt.preferred_horizon:g}-year horizon: terminal "
                     "value = liquidation payout with the path's arrears, or conversion")
    due_t = credit.due_times[credit.due_times <= horizon + _TOL]
    events.append(due_t)
    times, monitored = _grid(market, horizon, np.concatenate(events), opt.steps_per_year, daily)
    nk = times.size
    dyn = _Dynamics(market, credit, times)
    df = market.discount(times)
    zeros, falses = np.zeros(nk), np.zeros(nk, bool)
    due = falses.copy()
    due[_on_grid(times, due_t)] = True
    convert_ok, call_ok, dividend = falses.copy(), falses.copy(), falses.copy()
    call_value, coupon = zeros.copy(), zeros.copy()
    put_value = np.full(nk, np.nan)
    trigger = trig_n = trig_m = None
    if isinstance(inst, ZeroCouponConvertible):
        cs = inst.credit_spread
        face, final = inst.face, sch.redemption
        ci = _on_grid(times, sch.coupon_times)
        coupon[ci] = sch.coupon_amounts[: ci.size]
        final += coupon[-1]
        claim = sch.redemption + sch.accrued(times) + coupon
        coupon[-1] = 0.0
        end_date = inst.maturity
        pi = _on_grid(times, sch.put_times)
        put_value[pi] = sch.put_price + sch.accrued(times[pi])
        for k, t in enumerate(times[:-1]):
            convert_ok[k] = sch.conversion_allowed(t) and inst.conversion_ratio > 0
            call_ok[k] = sch.call_allowed(t) and (daily is None or monitored[k])
        escape = np.array([inst.conversion_ratio > 0 and t > 0
                           and sch.conversion_allowed(t - _INSTANT) for t in times])
        call_value = sch.call_price + sch.accrued(times)
        if sch.trigger_price is not None:
            trigger = math.log(sch.trigger_price)
            if daily is not None and inst.call_trigger_days is not None:
                trig_n, trig_m = inst.call_trigger_days, inst.call_trigger_window
    else:
        cs = 0.0
        face = final = inst.liquidation_preference
        claim = np.full(nk, face)
        end_date = hdate
        dividend[_on_grid(times, psch.dividend_times)] = True
        convert_ok[:-1] = inst.conversion_ratio > 0
        escape = np.full(nk, inst.conversion_ratio > 0)
        if psch.call_start is not None:
            call_ok[:-1] = times[:-1] >= psch.call_start - _TOL
            call_value[:] = psch.call_price
    # the floor n S exp(-(q + h (1 - L)) dt) >= n S where carry and hazard loss vanish
    no_carry = market.equity_carry <= 0 and (not credit.has_hazard or credit.equity_loss >= 1)
    nxt_ok = np.append(convert_ok[1:] | (np.arange(1, nk) == nk - 1), False)
    trapped = np.append(due[1:] & ~escape[1:], False) & (structure is not None)
    holder_free = no_carry & nxt_ok & ~trapped & (inst.conversion_ratio > 0)
    decide = (convert_ok & ~holder_free) | call_ok | ~np.isnan(put_value)
    decide[0] = decide[-1] = False   # t = 0: on the estimates; maturity: the terminal payoff
    funding_events: dict[int, tuple[date, tuple[int, ...]]] = {}
    if structure is not None and opt.funding == "btc_sales":
        for j, note in enumerate(structure.convertibles):
            if note.name == inst.name:
                continue
            for d in (*note.put_dates, note.maturity):
                t = market.time(d)
                if 0 < t <= horizon + _TOL:
                    k = int(_on_grid(times, np.array([t]))[0])
                    prev = funding_events.get(k, (d, ()))
                    funding_events[k] = (d, (*prev[1], j))
    ratio = inst.conversion_ratio
    s_ref = inst.face / ratio if ratio > 0 else market.equity_price
    due_idx = np.flatnonzero(due) if credit.structural else np.empty(0, int)
    pos = np.searchsorted(due_idx, np.arange(nk), side="right")
    next_due = np.where(pos < due_idx.size, due_idx[np.minimum(pos, due_idx.size - 1)], -1) \
        if due_idx.size else np.full(nk, -1)
    return _Plan(inst=inst, market=market, structure=structure, credit=credit, opt=opt,
                 times=times, monitored=monitored, dyn=dyn, df=df, dfc=df * np.exp(-cs * times),
                 face=face, ratio=ratio, s_ref=s_ref, final=final, convert_ok=convert_ok,
                 call_ok=call_ok, call_value=call_value, put_value=put_value, coupon=coupon,
                 claim=claim, end_date=end_date, dividend=dividend, due=due, escape=escape,
                 decide=decide, trigger=trigger, trigger_n=trig_n,
                 trigger_m=trig_m, funding_events=funding_events,
                 claims_through=0.0 if structure is None else _claims_through(structure, inst),
                 var_s_end=float(market.variance("equity", horizon)),
                 var_b_end=float(market.variance("btc", horizon)),
                 next_due=next_due, dyn_var_b=market.variance("btc", times),
                 holder_free=holder_free,
                 notes=notes)


# ----- coverage: structural tests on per-path states ----------------------------------------------
class _Coverage:
    """Credit tests on per-path issuer states, through the shared ``Credit``.

    Static funding: the state is the BTC price and ``Credit(structure)`` is used
    as it is. ``btc_sales``: each path has its own holdings and set of notes
    outstanding (a bit mask over ``structure.convertibles``); the tests run on a
    copy of the structure holding 1 BTC and only those notes, at a "BTC price"
    equal to the path's assets, which is the same waterfall on the path's
    balance sheet. A preferred's per-path arrears enter its liquidation claim
    the same way (a copy with those arrears)."""

    def __init__(self, plan: _Plan):
        self.plan = plan
        self.structure = plan.structure
        self.dynamic = plan.opt.funding == "btc_sales"
        self._cache: dict[tuple, Credit] = {}

    def _credit(self, mask: int, arrears: float | None) -> Credit:
        key = (mask, arrears)
        if key not in self._cache:
            s = self.structure
            insts = [x for x in s.instruments
                     if not isinstance(x, ZeroCouponConvertible)
                     or not self.dynamic or mask >> s.convertibles.index(x) & 1]
            if arrears is not None:
                insts = [dataclasses.replace(x, arrears=arrears) if x.name == self.plan.inst.name
                         else x for x in insts]
            if self.dynamic:
                s = s.replace(instruments=tuple(insts), btc_holdings=1.0, cash=0.0,
                              other_assets=0.0)
            else:
                s = s.replace(instruments=tuple(insts))
            self._cache[key] = Credit(s, self.plan.market)
        return self._cache[key]

    def _groups(self, st: dict[str, np.ndarray], idx: np.ndarray,
                arrears: np.ndarray | None) -> Iterator[tuple[Credit, np.ndarray, np.ndarray]]:
        """(credit, positions in idx, state argument) per group of equal mask and arrears."""
        x = self.state(st, idx)
        keys = [st["mask"][idx] if self.dynamic else np.zeros(idx.size, np.int64)]
        if arrears is not None:
            keys.append(np.round(arrears, 9))
        if len(keys) == 1 and not self.dynamic:
            yield self._credit(0, None), np.arange(idx.size), x
            return
        stacked = np.stack([np.asarray(k, float) for k in keys], axis=1)
        uniq, inv = np.unique(stacked, axis=0, return_inverse=True)
        for g, row in enumerate(uniq):
            pos = np.flatnonzero(inv.ravel() == g)
            a = None if arrears is None else float(row[-1])
            yield self._credit(int(row[0]), a), pos, x[pos]

    def state(self, st: dict[str, np.ndarray], idx: np.ndarray) -> np.ndarray:
        """The argument of the Credit tests: BTC price, or the path's assets."""
        b = np.exp(st["lb"][idx])
        if not self.dynamic:
            return b
        return st["btc"][idx] * b + st["cash"][idx] + st["other"][idx]

    def assets(self, st: dict[str, np.ndarray], idx: np.ndarray) -> np.ndarray:
        x = self.state(st, idx)
        return x if self.dynamic else self.structure.assets(x)

    def insolvent(self, st, idx: np.ndarray) -> np.ndarray:
        out = np.zeros(idx.size, bool)
        for credit, pos, x in self._groups(st, idx, None):
            out[pos] = credit.insolvent(x)
        return out

    def liquidation(self, st, idx: np.ndarray, arrears: np.ndarray | None) -> np.ndarray:
        out = np.zeros(idx.size)
        for credit, pos, x in self._groups(st, idx, arrears):
            out[pos] = credit.liquidation_value(self.plan.inst, x)
        return out

    def dividend_paid(self, st, idx: np.ndarray) -> np.ndarray:
        out = np.zeros(idx.size, bool)
        for credit, pos, x in self._groups(st, idx, None):
            out[pos] = credit.dividend_paid(self.plan.inst, x)
        return out

    def fund(self, st, idx: np.ndarray, d: date, due_notes: tuple[int, ...]) -> None:
        """Other notes falling due on ``d`` (``btc_sales``): the dated waterfall decides
        who converts and what cash is paid; cash is taken from the path's cash, then
        BTC sold at the path's price, then other assets; the notes leave the mask."""
        b = np.exp(st["lb"][idx])
        s = np.exp(st["ls"][idx])
        spent = np.zeros(idx.size)
        rows = {self.structure.convertibles[j].name: j for j in due_notes}
        for credit, pos, x in self._groups(st, idx, None):
            p = payouts(credit.structure, x, s[pos], date=d)
            for i, name in enumerate(p.names):
                if name in rows:
                    spent[pos] += np.where(p.default, 0.0, p.payout[i])
        live = np.zeros(idx.size, bool)
        for j in due_notes:
            live |= (st["mask"][idx] >> j & 1).astype(bool)
            st["mask"][idx] &= ~np.int64(1 << j)
        self.pay(st, idx, np.where(live, spent, 0.0), b)

    @staticmethod
    def pay(st, idx: np.ndarray, usd: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Pay ``usd`` from cash, then BTC at ``b``, then other assets; BTC sold."""
        from_cash = np.minimum(usd, st["cash"][idx])
        st["cash"][idx] -= from_cash
        rest = usd - from_cash
        from_btc = np.minimum(rest, st["btc"][idx] * b)
        sold = from_btc / b
        st["btc"][idx] -= sold
        st["other"][idx] = np.maximum(st["other"][idx] - (rest - from_btc), 0.0)
        return sold


# ----- decisions, basis, terminal ------------------------------------------------------------
def _decide(plan: _Plan, k: int, ls: np.ndarray, cnt: np.ndarray | None,
            arrears: np.ndarray | None, eq: np.ndarray, de: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """decisions.exercise at t_k on regressed continuation values (time-t_k USD per
    unit). Where a call forces conversion (:func:`_forced_call`) the decision is
    exact: called, converted. Elsewhere the continuation is first raised to the
    exact lower bound :func:`_hold_one_step` (a holder's bound; it is not applied
    where a call forces conversion, where a tie with parity would stop the issuer
    from calling)."""
    conv = plan.ratio * np.exp(ls)
    call_value = None
    call_mask = _call_mask(plan, k, ls, cnt)
    if plan.call_ok[k]:
        call_value = plan.call_value[k] + (0.0 if arrears is None else arrears)
    forced = _forced_call(plan, k, ls, cnt, arrears)
    floor = _hold_one_step(plan, k, ls)
    if floor is not None:
        low = (eq + de < floor[:, 0] + floor[:, 1]) & ~forced
        eq, de = np.where(low, floor[:, 0], eq), np.where(low, floor[:, 1], de)
    put = None if np.isnan(plan.put_value[k]) else plan.put_value[k]
    eq, de, code = decisions.exercise(eq, de, conv, can_convert=bool(plan.convert_ok[k]),
                                      put_value=put, call_value=call_value,
                                      call_mask=call_mask)
    if forced.any():
        eq[forced], de[forced], code[forced] = conv[forced], 0.0, decisions.CALLED_CONVERTED
    return eq, de, code


def _call_mask(plan: _Plan, k: int, ls: np.ndarray, cnt: np.ndarray | None) -> np.ndarray:
    """Where the issuer may call at t_k (call period, and the soft-call trigger)."""
    if not plan.call_ok[k]:
        return np.zeros(ls.size, bool)
    if plan.trigger is None:
        return np.ones(ls.size, bool)
    if plan.nofm:
        return cnt >= plan.trigger_n
    return ls >= plan.trigger


def _forced_call(plan: _Plan, k: int, ls: np.ndarray, cnt: np.ndarray | None,
                 arrears: np.ndarray | None) -> np.ndarray:
    """Paths (bool) where the issuer may call at t_k and the call forces conversion:
    conversion allowed and conversion value >= call value (always so where a
    130% soft-call trigger holds). The claim is then worth exactly its conversion
    value, max(conv, min(cont, max(call, conv))) = conv whatever the continuation,
    and calling is optimal for the issuer (the holder's continuation is at least
    parity). Decided exactly, not regressed."""
    if not (plan.call_ok[k] and plan.convert_ok[k]):
        return np.zeros(ls.size, bool)
    call = plan.call_value[k] + (0.0 if arrears is None else arrears)
    return _call_mask(plan, k, ls, cnt) & (plan.ratio * np.exp(ls) >= call)


def _candidates(plan: _Plan, k: int, ls: np.ndarray, cnt: np.ndarray | None,
                forced: np.ndarray) -> np.ndarray:
    """Paths (bool) whose decision at t_k is regressed: not ``forced`` (a call that
    forces conversion, decided exactly), and not known to be 'hold': where the
    hold-one-step floor rules conversion out (holder_free) and there is no put,
    only where the issuer may call. Regressing on these alone is Longstaff and
    Schwartz's in-the-money restriction."""
    if plan.holder_free[k] and np.isnan(plan.put_value[k]):
        return _call_mask(plan, k, ls, cnt) & ~forced
    return ~forced


def _exponents(nvars: int, degree: int) -> list[tuple[int, ...]]:
    return [e for d in range(1, degree + 1)
            for e in itertools.product(range(d + 1), repeat=nvars) if sum(e) == d]


def _european(plan: _Plan, k: int, ls: np.ndarray) -> np.ndarray:
    """Exact TF value at t_k of converting or redeeming ``final`` at the last date,
    (n, 2): share part, cash part, USD per unit. It is the continuation when no call,
    put or early conversion matters; the regression fits what those add to it."""
    out = np.zeros((ls.size, 2))
    if plan.ratio <= 0:
        return out
    m = plan.market
    tau = plan.horizon - plan.times[k]
    sd = math.sqrt(max(plan.var_s_end - m.variance("equity", plan.times[k]), 1e-16))
    fwd = np.exp(ls) * (plan.df[k] / plan.df[-1]) * math.exp(-m.equity_carry * tau)
    d1 = (np.log(fwd * plan.ratio / plan.final) + 0.5 * sd * sd) / sd
    out[:, 0] = plan.ratio * fwd * ndtr(d1) * plan.df[-1] / plan.df[k]
    out[:, 1] = plan.final * plan.dfc[-1] / plan.dfc[k] * ndtr(sd - d1)
    return out


@dataclass(frozen=True)
class _Fit:
    """The regression at one date: coefficients, the range of each state variable
    over the pilot paths (fresh paths are clipped to it: a polynomial is not
    extrapolated), and whether the default-shape regressors are in the basis."""

    coef: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    default_shape: bool


def _state_vars(plan: _Plan, ls: np.ndarray, la: np.ndarray | None) -> np.ndarray:
    """ln(S/K) and, with a structure, ln(assets / claims senior to and pari passu
    with the claim), clipped."""
    xi = np.clip(ls - math.log(plan.s_ref), -_XI_CLIP, _XI_CLIP)
    if la is None:
        return xi[None]
    cov = np.clip(la - math.log(max(plan.claims_through, 1.0)), -_COV_CLIP, _COV_CLIP)
    return np.stack([xi, cov])


def _fails_next_test(plan: _Plan, k: int, la: np.ndarray) -> np.ndarray | None:
    """Probability that the assets (log-normal with BTC's volatility) are below the
    notes' face at the next structural test after t_k: the shape that default
    gives the continuation. None without a test ahead."""
    d = plan.next_due[k]
    if d < 0:
        return None
    m = plan.market
    sd = math.sqrt(max(plan.dyn_var_b[d] - plan.dyn_var_b[k], 1e-16))
    drift = math.log(plan.df[k] / plan.df[d]) \
        - m.carry("btc") * (plan.times[d] - plan.times[k]) - 0.5 * sd * sd
    return ndtr((math.log(plan.structure.debt) - la - drift) / sd)


def _basis(plan: _Plan, v: np.ndarray, cnt: np.ndarray | None,
           extra: list[np.ndarray]) -> np.ndarray:
    """Regressors, one per row (p, n): 1, the shape regressors ``extra`` (call cap,
    default probability), monomials of the state variables v (:func:`_state_vars`)
    to basis_degree, and with an N-of-M trigger the count fraction c, c ln S/K and
    c^2."""
    deg = plan.opt.basis_degree
    exps = _exponents(v.shape[0], deg)
    rows = 1 + len(extra) + len(exps) + (0 if cnt is None else 3)
    x = np.empty((rows, v.shape[1]))
    x[0] = 1.0
    for i, e in enumerate(extra, start=1):
        x[i] = e
    i = 1 + len(extra)
    powers = [[None, var] for var in v]
    for pw in powers:
        for _ in range(2, deg + 1):
            pw.append(pw[-1] * pw[1])
    for e in exps:
        terms = [powers[j][p] for j, p in enumerate(e) if p]
        x[i] = terms[0] if len(terms) == 1 else np.prod(terms, axis=0)
        i += 1
    if cnt is not None:
        frac = np.minimum(cnt / plan.trigger_n, 1.0)
        x[i], x[i + 1], x[i + 2] = frac, frac * v[0], frac * frac
    return x


def _weights(plan: _Plan, ls: np.ndarray, la: np.ndarray | None) -> np.ndarray:
    """Regression weights 1 / max(1, parity / face, NAV parity / face)^2: the
    realised values' noise grows with what the claim converts into (shares, or a
    share of the issuer's assets in a liquidation). A note is liquidated only where
    the assets are below the notes' face, so its NAV parity is taken at assets of at
    most that face: uncapped, weights ~ 1/BTC^2 at high coverage left the fit to a
    few crashed paths (measured: a 3-year American zero at 1e4x coverage 1571.8
    +- 0.9 against 1583.3 without a structure, now 1583.3)."""
    scale = plan.ratio * np.exp(ls)
    if la is not None:
        assets = np.exp(la)
        if plan.is_note:
            assets = np.minimum(assets, plan.structure.debt)
        scale = np.maximum(scale, plan.ratio * assets / plan.structure.shares_outstanding)
    return 1.0 / np.maximum(1.0, scale / plan.face) ** 2


def _fit(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least squares, regressors in rows of x, by the normal equations
    scaled to unit diagonal (25x faster than a QR of the tall matrix on this
    machine; the scaling keeps them conditioned)."""
    xw = x * w
    a = xw @ x.T
    b = xw @ y
    d = np.sqrt(np.diag(a))
    d[d == 0] = 1.0
    return np.linalg.lstsq(a / np.outer(d, d), b / d[:, None], rcond=None)[0] / d[:, None]


def _cap(plan: _Plan, k: int, ls: np.ndarray, euro: np.ndarray) -> np.ndarray | None:
    """min(European, max(call price, parity)) - European, per face (<= 0): the shape a
    call gives the continuation. None for a claim that cannot be called after t_k."""
    if not plan.call_ok[k:].any():
        return None
    total = euro[:, 0] + euro[:, 1]
    forced = np.maximum(plan.call_value[k], plan.ratio * np.exp(ls))
    return (np.minimum(total, forced) - total) / plan.face



def _continuation(plan: _Plan, k: int, ls: np.ndarray, la: np.ndarray | None,
                  cnt: np.ndarray | None, fit: _Fit | None = None,
                  y: np.ndarray | None = None, noise: np.ndarray | None = None
                  ) -> tuple[np.ndarray, _Fit]:
    """Regressed continuation (share part, cash part), time-t_k USD per unit: the
    European value plus the fitted excess. With ``y`` (realised values) the
    regression is fitted first, with ``noise`` (n, p) as extra regressors: the
    increments of the control martingales from t_k to each path's stop, whose
    conditional mean is zero; they soak up noise in y and are left out of the
    prediction. ``la``: ln(issuer assets) (with a structure).
    Returns (continuation, fit)."""
    v = _state_vars(plan, ls, la)
    euro = _european(plan, k, ls)
    extra = []
    cap = _cap(plan, k, ls, euro)
    if cap is not None:
        extra += [cap] if cnt is None else [cap, cap * np.minimum(cnt / plan.trigger_n, 1.0)]
    fails = None if la is None else _fails_next_test(plan, k, la)
    shape = fails is not None and (fit.default_shape if y is None
                                   else fails.sum() >= _MIN_DEFAULTS)
    if shape:
        extra += [fails, fails * (euro[:, 0] + euro[:, 1]) / plan.face]
    if y is not None:
        x = _basis(plan, v, cnt, extra)
        xn = x if noise is None or not noise.size else np.vstack([x, noise.T])
        coef = _fit(xn, y - euro, _weights(plan, ls, la))[: x.shape[0]]
        fit = _Fit(coef, v.min(axis=1), v.max(axis=1), shape)
    else:
        x = _basis(plan, np.clip(v, fit.lo[:, None], fit.hi[:, None]), cnt, extra)
    return euro + x.T @ fit.coef, fit


def _hold_one_step(plan: _Plan, k: int, ls: np.ndarray) -> np.ndarray | None:
    """An exact lower bound of the continuation at t_k: hold to t_{k+1}, then convert
    (share part n S e^{-(q + h (1 - L)) dt}, cash part the coupon of t_{k+1}, both
    weighted by survival; recovery >= 0 is left out). Across a structural test it
    holds through conversion an instant before the test (max(parity, liquidation)),
    without the coupon, which a default forfeits. None where it is not a bound: no
    conversion at t_{k+1}, or a test there that conversion cannot escape."""
    nxt = k + 1
    can = plan.ratio > 0 and (nxt == plan.steps or plan.convert_ok[nxt])
    tested = bool(plan.due[nxt]) and plan.structure is not None
    if not can or (tested and not plan.escape[nxt]):
        return None
    dyn = plan.dyn
    s = np.exp(ls)
    surv = 1.0
    carry = plan.market.equity_carry * dyn.dt[k]
    if dyn.hazard:
        h = plan.credit.hazard(s)
        surv = np.exp(-h * dyn.dt[k])
        carry = carry + h * (1.0 - dyn.loss) * dyn.dt[k]
    out = np.empty((ls.size, 2))
    out[:, 0] = plan.ratio * s * np.exp(-carry)
    out[:, 1] = 0.0 if tested else plan.coupon[nxt] * plan.dfc[nxt] / plan.dfc[k] * surv
    return out


def _terminal(plan: _Plan, cover: _Coverage | None, st, idx: np.ndarray,
              arrears: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(share part, cash part, decision) at the last date, time-T USD per unit."""
    if plan.is_note:
        cash = np.full(idx.size, plan.final)
    elif cover is None:
        cash = plan.final + (0.0 if arrears is None else arrears)
    else:
        cash = cover.liquidation(st, idx, arrears if plan.cumulative else None)
    return decisions.exercise(np.zeros(idx.size), np.broadcast_to(cash, idx.size).copy(),
                              plan.ratio * np.exp(st["ls"][idx]),
                              can_convert=plan.ratio > 0)


# ----- one pass over paths ------------------------------------------------------------
@dataclass
class _Record:
    """Pilot paths stored for the backward regression (float32 states)."""

    ls: np.ndarray                     # (K+1, n) ln S
    la: np.ndarray | None              # (K+1, n) ln(issuer assets)
    cnt: np.ndarray | None             # (K+1, n) trigger count
    q: np.ndarray | None               # (K+1, n) survival
    arrears: np.ndarray | None         # (K+1, n) preferred arrears per share
    flux: np.ndarray | None            # (K, n) PV of the hazard recovery over each step
    cash: dict[int, np.ndarray]        # k -> PV of the cash paid at t_k (per path)
    ctrl: dict[int, np.ndarray]        # k -> controls (n, p) where a path may stop
    dead: np.ndarray                   # first structural default index (K+1: none)
    dead_eq: np.ndarray                # PV there: conversion an instant before
    dead_de: np.ndarray                # PV there: liquidation payout
    term_eq: np.ndarray                # PV of the terminal share part
    term_de: np.ndarray                # PV of the terminal cash part


@dataclass
class _Outcome:
    """Per-path results of a valuation pass."""

    eq: np.ndarray          # PV of share-settled flows
    de: np.ndarray          # PV of cash flows (coupons, dividends, recovery included)
    code: np.ndarray        # outcome code at the stop
    stop: np.ndarray        # stop index on the grid
    q_stop: np.ndarray      # survival to the stop
    impaired: np.ndarray    # structural default below the claim
    cash: np.ndarray        # USD per unit paid in cash at the stop
    shares: np.ndarray      # shares per unit received at the stop
    btc_sold: np.ndarray    # BTC sold by the issuer to pay the claim's cash (all units)
    btc_left: np.ndarray    # issuer BTC after that
    b_stop: np.ndarray
    s_stop: np.ndarray
    arrears: np.ndarray
    controls: np.ndarray    # (n, p) discounted control payoffs


def _log_assets(cover: _Coverage | None, st, idx: np.ndarray) -> np.ndarray | None:
    if cover is None:
        return None
    return np.log(np.maximum(cover.assets(st, idx), 1e-300))


def _forward(plan: _Plan, normals: _Normals, n: int, policy: dict[int, _Fit] | None
             ) -> _Record | _Outcome:
    """Simulate n paths forward. Without a policy (pilot) nothing is exercised and the
    paths are recorded; with one, decisions use the fitted continuation and the
    realised flows are returned."""
    K, dyn = plan.steps, plan.dyn
    st = dyn.start(n)
    s0 = plan.structure
    cover = _Coverage(plan) if s0 is not None else None
    if cover is not None and cover.dynamic:
        st.update(btc=np.full(n, s0.btc_holdings), cash=np.full(n, s0.cash),
                  other=np.full(n, s0.other_assets),
                  mask=np.full(n, (1 << len(s0.convertibles)) - 1, np.int64))
    pilot = policy is None
    arr0 = plan.inst.arrears if plan.cumulative else None
    unpaid = np.zeros(n) if plan.cumulative else None
    ring = np.zeros((plan.trigger_m, n), bool) if plan.nofm else None
    cnt = np.zeros(n, np.int16) if plan.nofm else None
    alive = np.ones(n, bool)
    allidx = np.arange(n)
    rec: dict[str, Any] = {}
    out: dict[str, Any] = {}
    f32 = np.float32
    if pilot:
        rec["ls"] = np.empty((K + 1, n), f32)
        rec["la"] = np.empty((K + 1, n), f32) if cover is not None else None
        rec["cnt"] = np.empty((K + 1, n), np.int16) if plan.nofm else None
        rec["q"] = np.empty((K + 1, n), f32) if dyn.hazard else None
        rec["arrears"] = np.empty((K + 1, n), f32) if plan.cumulative else None
        rec["flux"] = np.empty((K, n), f32) if dyn.hazard else None
        rec["cash"] = {}
        rec["ctrl"] = {}
        rec["dead"] = np.full(n, K + 1, np.int32)
        rec["dead_eq"] = np.zeros(n)
        rec["dead_de"] = np.zeros(n)
    else:
        out = {"eq": np.zeros(n), "de": np.zeros(n), "code": np.full(n, MATURED, np.int8),
               "stop": np.full(n, K, np.int32), "q_stop": np.ones(n),
               "impaired": np.zeros(n, bool), "cash": np.zeros(n), "shares": np.zeros(n),
               "btc_sold": np.zeros(n), "btc_left": np.zeros(n), "b_stop": np.zeros(n),
               "s_stop": np.zeros(n), "arrears": np.zeros(n),
               "controls": np.zeros((n, _n_controls(plan)))}
    pos = 0

    def q_of(idx):
        return np.exp(st["lq"][idx]) if dyn.hazard else 1.0

    def arrears_of(idx):
        return None if unpaid is None else arr0 + plan.inst.dividend * unpaid[idx]

    def monitor(k: int) -> None:
        nonlocal pos
        if ring is None or not plan.monitored[k]:
            return
        above = st["ls"] >= plan.trigger
        cnt[:] += above.astype(np.int16) - ring[pos]
        ring[pos] = above
        pos = (pos + 1) % plan.trigger_m

    def stop(idx, k, eq_t, de_t, code, impaired=None):
        """Record the stop of paths idx at t_k with time-t_k values (eq_t, de_t)."""
        q = q_of(idx)
        out["eq"][idx] += eq_t * plan.df[k] * q
        out["de"][idx] += de_t * plan.dfc[k] * q
        out["code"][idx] = code
        out["stop"][idx] = k
        out["controls"][idx] = _controls(plan, k, st, idx)
        out["q_stop"][idx] = q
        b, s = np.exp(st["lb"][idx]), np.exp(st["ls"][idx])
        out["b_stop"][idx], out["s_stop"][idx] = b, s
        out["cash"][idx] = de_t
        out["shares"][idx] = np.where(eq_t > 0, plan.ratio, 0.0) if plan.ratio > 0 else 0.0
        a = arrears_of(idx)
        if a is not None:
            out["arrears"][idx] = a
        if impaired is not None:
            out["impaired"][idx] = impaired
        if s0 is None:
            return
        need = np.where(code == decisions.DEFAULTED, 0.0, plan.inst.units * de_t)
        if cover.dynamic:
            held = st["btc"][idx].copy()
            sold = _Coverage.pay(st, idx, need, b)
        else:
            held = np.full(idx.size, s0.btc_holdings)
            sold = np.minimum(np.maximum(need - s0.cash, 0.0) / b, held)
        sold = np.where(code == decisions.DEFAULTED, held, sold)
        out["btc_sold"][idx] = sold
        out["btc_left"][idx] = held - sold

    def record(k: int) -> None:
        rec["ls"][k] = st["ls"]
        if rec["la"] is not None:
            rec["la"][k] = _log_assets(cover, st, allidx)
        if rec["cnt"] is not None:
            rec["cnt"][k] = cnt
        if rec["q"] is not None:
            rec["q"][k] = np.exp(st["lq"])
        if rec["arrears"] is not None:
            rec["arrears"][k] = arrears_of(allidx)
        if plan.decide[k] or plan.due[k] or k == K:
            rec["ctrl"][k] = _controls(plan, k, st, allidx)

    monitor(0)
    if pilot:
        record(0)
    for k in range(K):
        h = None
        if dyn.hazard:
            h = plan.credit.hazard(np.exp(st["ls"]))
            x = dyn.rint[k] / dyn.dt[k] + h
            w = np.where(np.abs(x) > 1e-12, -np.expm1(-x * dyn.dt[k]) / np.where(
                np.abs(x) > 1e-12, x, 1.0), dyn.dt[k])
            rec_pay = plan.credit.default_payoff(plan.inst, np.exp(st["ls"]),
                                                 bool(plan.convert_ok[k]))
            flux = np.exp(st["lq"]) * plan.dfc[k] * rec_pay * h * w
            if pilot:
                rec["flux"][k] = flux
            else:
                out["de"] += np.where(alive, flux, 0.0)
        dyn.step(st, k, normals.draw())
        kk = k + 1
        monitor(kk)
        if plan.due[kk] and cover is not None:
            idx = np.flatnonzero(alive)
            bad = cover.insolvent(st, idx)
            if bad.any():
                di = idx[bad]
                a = arrears_of(di)
                liq = cover.liquidation(st, di, a if plan.cumulative else None)
                conv = plan.ratio * np.exp(st["ls"][di]) if plan.escape[kk] \
                    else np.zeros(di.size)
                esc = conv > liq
                eq_t, de_t = np.where(esc, conv, 0.0), np.where(esc, 0.0, liq)
                if pilot:
                    rec["dead"][di] = kk
                    rec["dead_eq"][di] = eq_t * plan.df[kk] * q_of(di)
                    rec["dead_de"][di] = de_t * plan.dfc[kk] * q_of(di)
                else:
                    claim = plan.claim[kk] + (0.0 if a is None else a)
                    stop(di, kk, eq_t, de_t,
                         np.where(esc, decisions.CONVERTED, decisions.DEFAULTED),
                         impaired=~esc & (liq < claim - 1e-9))
                alive[di] = False
        if plan.coupon[kk] > 0 or plan.dividend[kk]:
            idx = np.flatnonzero(alive)
            if plan.is_note:
                amount = np.full(idx.size, plan.coupon[kk])
            else:
                paid = cover.dividend_paid(st, idx) if cover is not None \
                    else np.ones(idx.size, bool)
                amount = np.where(paid, plan.inst.dividend, 0.0)
                if unpaid is not None:
                    unpaid[idx] += ~paid
            pv = amount * plan.dfc[kk] * q_of(idx)
            if pilot:
                rec["cash"][kk] = np.zeros(n)
                rec["cash"][kk][idx] = pv
            else:
                out["de"][idx] += pv
        if kk in plan.funding_events:
            d, due_notes = plan.funding_events[kk]
            cover.fund(st, np.flatnonzero(alive), d, due_notes)
        if pilot:
            record(kk)
        if kk == K:
            idx = np.flatnonzero(alive)
            eq_t, de_t, code = _terminal(plan, cover, st, idx, arrears_of(idx))
            if pilot:
                q = q_of(idx)
                rec["term_eq"] = np.zeros(n)
                rec["term_de"] = np.zeros(n)
                rec["term_eq"][idx] = eq_t * plan.df[kk] * q
                rec["term_de"][idx] = de_t * plan.dfc[kk] * q
            else:
                stop(idx, kk, eq_t, de_t, np.where(code == decisions.HOLD, MATURED, code))
        elif not pilot and plan.decide[kk]:
            idx = np.flatnonzero(alive)
            ls = st["ls"][idx]
            c = None if cnt is None else cnt[idx]
            a = arrears_of(idx)
            forced = _forced_call(plan, kk, ls, c, a)
            if forced.any():
                stop(idx[forced], kk, plan.ratio * np.exp(ls[forced]), np.zeros(forced.sum()),
                     decisions.CALLED_CONVERTED)
                alive[idx[forced]] = False
            cand = _candidates(plan, kk, ls, c, forced)
            if kk not in policy or not cand.any():
                continue
            idx, ls = idx[cand], ls[cand]
            c = None if c is None else c[cand]
            a = None if a is None else a[cand]
            cont = _continuation(plan, kk, ls, _log_assets(cover, st, idx), c,
                                 fit=policy[kk])[0]
            eq_t, de_t, code = _decide(plan, kk, ls, c, a, cont[:, 0], cont[:, 1])
            ex = code != decisions.HOLD
            if ex.any():
                stop(idx[ex], kk, eq_t[ex], de_t[ex], code[ex])
                alive[idx[ex]] = False
    if pilot:
        return _Record(**rec)
    return _Outcome(**out)


# ----- control variates ------------------------------------------------------------
def _btc_strike(plan: _Plan) -> float:
    """BTC price below which the issuer's assets fall short of the claims senior to
    and pari passu with this one (0 if none)."""
    s = plan.structure
    if s is None or s.btc_holdings <= 0:
        return 0.0
    return max(plan.claims_through - s.cash - s.other_assets, 0.0) / s.btc_holdings


def _btc_put(plan: _Plan, k: int, lb: np.ndarray, strike: float) -> np.ndarray:
    """Black-Scholes value at t_k of a put on BTC struck at ``strike`` expiring at the
    last date, under the curves (time-t_k USD)."""
    m = plan.market
    tau = plan.horizon - plan.times[k]
    sd = math.sqrt(max(plan.var_b_end - m.variance("btc", plan.times[k]), 1e-16))
    disc = plan.df[-1] / plan.df[k]
    fwd = np.exp(lb) / disc * math.exp(-m.carry("btc") * tau)
    d1 = (np.log(fwd / strike) + 0.5 * sd * sd) / sd
    return disc * (strike * ndtr(sd - d1) - fwd * ndtr(-d1))


def _controls(plan: _Plan, k: int, st: dict[str, np.ndarray], idx: np.ndarray) -> np.ndarray:
    """Control variates of paths ``idx`` stopping at t_k, discounted to 0: martingales
    (conditional expectations of a payoff at the last date) stopped at each path's
    stop, so their means are known by optional stopping. The European TF value of
    converting or redeeming at maturity, on the shadow equity path (no hazard
    drift); with a structure, a BTC put struck at :func:`_btc_strike` and the
    discounted BTC price itself (what a claim converting inside a liquidation
    tracks)."""
    cols = []
    if plan.opt.control_variate:
        if plan.ratio > 0:
            euro = _european(plan, k, st.get("lss", st["ls"])[idx])
            cols.append(euro[:, 0] * plan.df[k] + euro[:, 1] * plan.dfc[k])
        strike = _btc_strike(plan)
        if strike > 0:
            cols.append(plan.df[k] * _btc_put(plan, k, st["lb"][idx], strike))
        if plan.structure is not None:
            carry = plan.market.carry("btc") * plan.times[k]
            cols.append(plan.df[k] * np.exp(st["lb"][idx] + carry))
    return np.stack(cols, axis=1) if cols else np.empty((idx.size, 0))


def _n_controls(plan: _Plan) -> int:
    return int(plan.opt.control_variate) * ((plan.ratio > 0) + (_btc_strike(plan) > 0)
                                            + (plan.structure is not None))


def _control_means(plan: _Plan) -> np.ndarray:
    """Exact expectations of :func:`_controls`: the martingales at time 0."""
    return _controls(plan, 0, plan.dyn.start(1), np.zeros(1, int))[0]


# ----- Longstaff-Schwartz on the pilot paths ------------------------------------------------------
def _fit_date(plan: _Plan, rec: _Record, k: int, eq0: np.ndarray, de0: np.ndarray,
              c0: np.ndarray, policy: dict[int, _Fit]) -> None:
    """One decision date of the backward pass: forced-conversion calls stop exactly;
    the other candidates' continuation is regressed (fit stored in ``policy``,
    unless fewer than _MIN_REGRESSION paths) and decided on. Stopped paths' PVs
    (eq0, de0) and controls (c0) are replaced by their values at t_k."""
    idx = np.flatnonzero(rec.dead > k)
    ls = rec.ls[k][idx].astype(float)
    cnt = None if rec.cnt is None else rec.cnt[k][idx]
    arr = None if rec.arrears is None else rec.arrears[k][idx].astype(float)
    forced = _forced_call(plan, k, ls, cnt, arr)
    cand = _candidates(plan, k, ls, cnt, forced)
    stop = forced.copy()
    eq_t, de_t = np.where(forced, plan.ratio * np.exp(ls), 0.0), np.zeros(idx.size)
    if cand.sum() >= _MIN_REGRESSION:
        c = np.flatnonzero(cand)
        i = idx[c]
        q = rec.q[k][i].astype(float) if rec.q is not None else np.ones(c.size)
        la = None if rec.la is None else rec.la[k][i].astype(float)
        cc = None if cnt is None else cnt[c]
        ac = None if arr is None else arr[c]
        y = np.stack([eq0[i] / (plan.df[k] * q), de0[i] / (plan.dfc[k] * q)], axis=1)
        noise = (c0[i] - rec.ctrl[k][i]) / plan.df[k]
        fitted, policy[k] = _continuation(plan, k, ls[c], la, cc, y=y, noise=noise)
        e, d, code = _decide(plan, k, ls[c], cc, ac, fitted[:, 0], fitted[:, 1])
        stop[c] = code != decisions.HOLD
        eq_t[c], de_t[c] = e, d
    if not stop.any():
        return
    i = idx[stop]
    q = rec.q[k][i].astype(float) if rec.q is not None else 1.0
    eq0[i] = eq_t[stop] * plan.df[k] * q
    de0[i] = de_t[stop] * plan.dfc[k] * q
    c0[i] = rec.ctrl[k][i]


def _fit_policy(plan: _Plan, rec: _Record) -> tuple[dict[int, _Fit], float]:
    """Backward regression over the pilot paths. Returns the coefficients per decision
    date (basis -> share part, cash part, in time-t USD) and the in-sample value."""
    K = plan.steps
    eq0, de0 = rec.term_eq.copy(), rec.term_de.copy()
    c0 = rec.ctrl[K].copy()      # controls at each path's current stop

    def liquidate(k: int) -> None:
        m = rec.dead == k
        eq0[m] = rec.dead_eq[m]
        de0[m] = rec.dead_de[m]
        if m.any():
            c0[m] = rec.ctrl[k][m]

    liquidate(K)
    policy: dict[int, _Fit] = {}
    for k in range(K - 1, 0, -1):
        if rec.flux is not None:
            de0 += rec.flux[k]
        if plan.decide[k]:
            _fit_date(plan, rec, k, eq0, de0, c0, policy)
        if k in rec.cash:
            de0 += rec.cash[k]
        liquidate(k)
    if rec.flux is not None:
        de0 += rec.flux[0]
    return policy, float(np.mean(eq0 + de0))


# ----- estimation ------------------------------------------------------------
@dataclass(frozen=True)
class _Estimate:
    value: float
    std_error: float
    std_error_plain: float      # without the control variates
    p_convert: float
    p_impaired: float
    p_default: float
    pilot_value: float | None
    exercised_now: int          # decision code at t = 0 (HOLD: none)
    plan: _Plan
    outcome: _Outcome | None


def _concat(parts: list[_Outcome]) -> _Outcome:
    return _Outcome(**{f.name: np.concatenate([getattr(p, f.name) for p in parts])
                       for f in dataclasses.fields(_Outcome)})


def _estimate(inst, market: Market, structure: CapitalStructure | None, opt: Options,
              keep: bool = False) -> _Estimate:
    plan = _plan(inst, market, structure, opt)
    policy: dict[int, _Fit] = {}
    pilot_value = None
    if plan.decide.any():
        normals = _Normals(opt.seed, _PURPOSE_PILOT, 0, opt.pilot_paths, opt.antithetic)
        rec = _forward(plan, normals, opt.pilot_paths, None)
        policy, pilot_value = _fit_policy(plan, rec)
        del rec
    parts = []
    for first in range(0, opt.paths, opt.batch):
        n = min(opt.batch, opt.paths - first)
        normals = _Normals(opt.seed, _PURPOSE_VALUE, first, n, opt.antithetic)
        parts.append(_forward(plan, normals, n, policy))
    o = _concat(parts)
    y = _pair_means(o.eq + o.de, opt.antithetic)
    se_plain = float(np.std(y, ddof=1) / math.sqrt(y.size))
    value = float(np.mean(y))
    se = se_plain
    x = np.stack([_pair_means(c, opt.antithetic) for c in o.controls.T], axis=1) \
        if o.controls.shape[1] else np.empty((y.size, 0))
    mu = _control_means(plan)
    sd = x.std(axis=0)
    # a control that moves on a handful of samples only (a deep out-of-the-money
    # option) is not sampled: its beta would be fitted to those few (measured:
    # 5.7e6 for a note worth 381, and a European note 71 low with SE 0)
    moves = np.abs(x - np.median(x, axis=0)) > _CONTROL_TOL * np.maximum(np.abs(mu), 1.0)
    use = moves.sum(axis=0) >= _MIN_CONTROL_SAMPLES
    if use.any():
        z = (x[:, use] - mu[use]) / sd[use]
        beta = np.linalg.lstsq(z - z.mean(axis=0), y - value, rcond=None)[0]
        resid = y - z @ beta
        value = float(np.mean(resid))
        se = float(np.std(resid, ddof=1 + int(use.sum())) / math.sqrt(y.size))
    code_now = decisions.HOLD
    q = o.q_stop
    conv = np.isin(o.code, (decisions.CONVERTED, decisions.CALLED_CONVERTED))
    probs = (float(np.mean(q * conv)), float(np.mean(1 - q + q * o.impaired)),
             float(np.mean(1 - q + q * (o.code == decisions.DEFAULTED))))
    if plan.convert_ok[0] or plan.call_ok[0]:
        eq_hat = float(np.mean(o.eq))
        cnt = None
        if plan.nofm:
            cnt = np.array([int(plan.monitored[0] and math.log(market.equity_price)
                                >= plan.trigger)])
        arr = np.array([plan.inst.arrears]) if plan.cumulative else None
        e, d, c = _decide(plan, 0, np.array([math.log(market.equity_price)]), cnt, arr,
                          np.array([eq_hat]), np.array([value - eq_hat]))
        code_now = int(c[0])
        if code_now != decisions.HOLD:
            value, se, se_plain = float(e[0] + d[0]), 0.0, 0.0
            converted = float(e[0] > 0)
            probs = (converted, 0.0, 0.0)
    return _Estimate(value=value, std_error=se, std_error_plain=se_plain, p_convert=probs[0],
                     p_impaired=probs[1], p_default=probs[2], pilot_value=pilot_value,
                     exercised_now=code_now, plan=plan, outcome=o if keep else None)


# ----- the engine ------------------------------------------------------------
def _check(inst, market: Market, structure: CapitalStructure | None) -> None:
    if inst.kind not in KINDS:
        raise EngineError(f"engine montecarlo does not value {inst.kind} ({inst.name})")
    if structure is not None and inst not in structure.instruments:
        raise InputError("instrument", inst.name, "is not part of the given structure")


def _settings(est: _Estimate) -> dict[str, Any]:
    plan = est.plan
    s = {"engine": "montecarlo", **dataclasses.asdict(plan.opt), "generator": "PCG64",
         "block": BLOCK, "time_steps": plan.steps,
         "decision_dates": int(plan.decide.sum()),
         "estimator": "Longstaff-Schwartz policy fitted on pilot paths, valued on fresh paths "
                      "(low-biased)",
         **plan.credit.describe()}
    if not plan.is_note:
        s["preferred_horizon_date"] = plan.end_date.isoformat()
    else:
        s.pop("preferred_horizon")
    return s


def price(instrument, market: Market, structure: CapitalStructure | None = None, *,
          greeks: bool = True, **opts: Any) -> PricingResult:
    """Value one note (per note of face) or preferred share (per share), USD, by
    simulation. Options: see :class:`Options` and docs/sections/montecarlo.md.
    Greeks by bump and reprice with the same seed (common random numbers); without
    a structure BTC does not enter the claim and its greeks are 0."""
    opt = options(**opts)
    _check(instrument, market, structure)
    est = _estimate(instrument, market, structure, opt)
    sens: dict[str, float] = {}
    notes = list(est.plan.notes)
    if greeks:
        vegas = all(c is None or isinstance(c, Curve)
                    for c in (market.btc_vol_curve, market.equity_vol_curve))
        with_btc = structure is not None
        sens = bump_greeks(lambda m: _estimate(instrument, m, structure, opt).value, market,
                           est.value, factors=("btc", "equity") if with_btc else ("equity",),
                           vegas=vegas, correlation=with_btc)
        if not with_btc:
            sens.update(delta_btc=0.0, gamma_btc=0.0, correlation_sensitivity=0.0,
                        **({"vega_btc": 0.0} if vegas else {}))
        if not vegas:
            notes.append("no vegas: a QuantLib vol term structure cannot be bumped")
    if est.exercised_now != decisions.HOLD:
        notes.append(f"exercised at the valuation date ({OUTCOMES.get(est.exercised_now)}): "
                     "the value is the exercise value")
    is_note = isinstance(instrument, ZeroCouponConvertible)
    extras: dict[str, Any] = {"std_error_no_control": est.std_error_plain,
                              "variance_reduction": (est.std_error_plain / est.std_error) ** 2
                              if est.std_error > 0 else None}
    if est.pilot_value is not None:
        extras["pilot_value"] = est.pilot_value
    return PricingResult(
        name=instrument.name, kind=instrument.kind, engine="montecarlo", value=est.value,
        units=instrument.units,
        bond_floor=float(analytic.bond_floor(instrument, market)) if is_note else None,
        parity=instrument.parity(market.equity_price),
        delta_btc=sens.get("delta_btc"), delta_equity=sens.get("delta_equity"),
        gamma_btc=sens.get("gamma_btc"), gamma_equity=sens.get("gamma_equity"),
        vega_btc=sens.get("vega_btc"), vega_equity=sens.get("vega_equity"),
        correlation_sensitivity=sens.get("correlation_sensitivity"),
        p_convert=est.p_convert, p_impaired=est.p_impaired, p_default=est.p_default,
        std_error=est.std_error, settings=_settings(est), notes=tuple(notes),
        extras=extras)


# ----- studies: per-path outcomes, and raw paths ---------------------------------------------
@dataclass(frozen=True)
class ClaimPaths:
    """Per-path outcomes of one claim (arrays over paths, antithetic pairs adjacent
    within each block). ``value`` is the PV per unit of each path (survival-weighted,
    hazard recovery included): its mean is the uncontrolled estimate.
    ``outcome`` holds the codes of :data:`OUTCOMES`; ``cash`` is USD per unit paid
    in cash at the stop (undiscounted), ``shares`` shares per unit received;
    ``survival`` the probability of no hazard default before the stop;
    ``btc_sold`` the BTC the issuer sells to pay the claim's cash (all units, after
    using its cash; all its BTC at a default), ``btc_left`` its holdings after that
    (both 0 without a structure: no issuer).
    ``estimate`` and ``std_error`` are the engine's (control variates included)."""

    times: np.ndarray
    value: np.ndarray
    outcome: np.ndarray
    stop_time: np.ndarray
    cash: np.ndarray
    shares: np.ndarray
    survival: np.ndarray
    btc_price: np.ndarray
    equity_price: np.ndarray
    btc_sold: np.ndarray
    btc_left: np.ndarray
    arrears: np.ndarray
    estimate: float
    std_error: float
    settings: dict[str, Any]

    def share(self, outcome: str) -> float:
        """Survival-weighted fraction of paths ending with ``outcome`` (a name in OUTCOMES)."""
        code = {v: k for k, v in OUTCOMES.items()}[outcome]
        return float(np.mean(self.survival * (self.outcome == code)))


def simulate_claim(instrument, market: Market, structure: CapitalStructure | None = None,
                   **opts: Any) -> ClaimPaths:
    """Value a claim as :func:`price` does (no greeks) and return every path's outcome."""
    opt = options(**opts)
    _check(instrument, market, structure)
    est = _estimate(instrument, market, structure, opt, keep=True)
    o, times = est.outcome, est.plan.times
    return ClaimPaths(times=times, value=o.eq + o.de, outcome=o.code, stop_time=times[o.stop],
                      cash=o.cash, shares=o.shares, survival=o.q_stop, btc_price=o.b_stop,
                      equity_price=o.s_stop, btc_sold=o.btc_sold, btc_left=o.btc_left,
                      arrears=o.arrears, estimate=est.value, std_error=est.std_error,
                      settings=_settings(est))


@dataclass(frozen=True)
class SimulatedPaths:
    """Factor paths: ``btc`` and ``equity`` (USD) of shape (paths, times); ``equity``
    is the pre-default price (with a hazard it drifts up by h(S) L and ``survival``
    holds each path's probability of no default to each time, else None)."""

    times: np.ndarray
    dates: tuple[date, ...] | None
    btc: np.ndarray
    equity: np.ndarray
    survival: np.ndarray | None


def simulate(structure: CapitalStructure | None, market: Market, horizon: float | date,
             paths: int, seed: int = DEFAULT_SEED, *, dates: list[date] | None = None,
             steps_per_year: int = DEFAULT_STEPS_PER_YEAR, antithetic: bool = True
             ) -> SimulatedPaths:
    """Simulate (B, S) to ``horizon`` (years or a date) with the engine's scheme
    (same streams as its valuation paths). Returned on ``dates`` if given, else on
    the grid of ``steps_per_year`` equal steps. Holds paths x times x 2 floats:
    keep it to what memory allows."""
    opt = options(paths=paths, seed=seed, antithetic=antithetic,
                  steps_per_year=steps_per_year)
    t_end = market.time(horizon) if isinstance(horizon, date) else float(horizon)
    if not t_end > 0:
        raise InputError("horizon", horizon, "must be after the valuation date")
    want = None
    if dates is not None:
        want = np.array([market.time(d) for d in dates])
        if (want < 0).any() or (want > t_end + _TOL).any():
            raise InputError("dates", dates, "must lie between the valuation date and horizon")
    times = _grid(market, t_end, np.empty(0) if want is None else want,
                  opt.steps_per_year, None)[0]
    dyn = _Dynamics(market, Credit(structure, market), times)
    keep = np.arange(times.size) if want is None else _on_grid(times, want)
    n = opt.paths
    btc = np.empty((n, keep.size))
    eq = np.empty((n, keep.size))
    surv = np.empty((n, keep.size)) if dyn.hazard else None
    col = {k: i for i, k in enumerate(keep)}
    for first in range(0, n, opt.batch):
        m = min(opt.batch, n - first)
        normals = _Normals(opt.seed, _PURPOSE_VALUE, first, m, opt.antithetic)
        st = dyn.start(m)
        for k in range(times.size):
            if k:
                dyn.step(st, k - 1, normals.draw())
            if k in col:
                btc[first:first + m, col[k]] = np.exp(st["lb"])
                eq[first:first + m, col[k]] = np.exp(st["ls"])
                if surv is not None:
                    surv[first:first + m, col[k]] = np.exp(st["lq"])
    return SimulatedPaths(times=times[keep], dates=None if dates is None else tuple(dates),
                          btc=btc, equity=eq, survival=surv)
