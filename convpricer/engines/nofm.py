"""The hot start of an N-of-M soft call: the rule's call hazard for the lattice engines.

lattice2d and fdm2d value an N-of-M trigger as an equivalent continuous barrier,
exact in law for a stock arriving from below. A note callable within the rule's
first window (closes before the valuation date count as below) is the exception:
paths that just miss the rule on one close meet it within days, which the
barrier (4.2 daily standard deviations above the trigger) does not know; it
overvalued such notes by up to 0.75% (docs/sections/lattice2d.md).

Over the hot start, from the valuation date to HOT_CLOSES closes after the first
possible call, the engines call instead with

    lambda_k(S) = P(the rule first holds on a close in step k | S at its end, not before),

the mimicking hazard of the killed process: a Markov engine that kills with it
reproduces the exact law of (call date, S at the call), because the call depends
on S alone and ln S has independent increments. It is measured per engine step
and cell of ln S on a seeded daily simulation of ln S (HOT_PATHS antithetic
paths); a bumped market weights the unbumped market's paths by their likelihood
ratio, so greeks are smooth. The barrier takes over after the hot start.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import QuantLib as ql

from ..instruments import ZeroCouponConvertible
from ..market import Market, ql_date
from ..schedule import CALENDAR, convertible_schedule, trading_days

#: Closes after the first possible call over which the hazard replaces the barrier.
HOT_CLOSES = 120
#: Simulated paths (antithetic pairs) and their seed.
HOT_PATHS = 1 << 17
HOT_SEED = 20261124
_TOL = 1e-9
#: The result note of an engine that used a hot start.
HOT_NOTE = (f"soft call's hot start (callable within the rule's first window): called with "
            f"the rule's per-close hazard, measured on {HOT_PATHS} seeded simulated paths "
            f"over its first {HOT_CLOSES} closes after the first possible call "
            "(convpricer.engines.nofm), then the equivalent barrier, with seeded "
            "sampling noise of about 1e-4 relative in the value (the same for the same inputs, "
            "docs/sections/lattice2d.md)")


@dataclass(frozen=True)
class HotStart:
    """The hot start of a note's N-of-M rule: its closes (years from valuation; calls
    allowed on ``hot`` ones) from the valuation date to the last hot close ``end``,
    and what the simulation of ln S needs."""

    closes: np.ndarray
    hot: np.ndarray
    need: int
    window: int
    ln_s0: float
    ln_k: float
    market: Market
    equity_drift: float
    reference: Market | None = None

    @property
    def end(self) -> float:
        """The last hot close: the barrier takes over after it."""
        return float(self.closes[-1])

    @property
    def barrier_from(self) -> float:
        """Where the engines' equivalent barrier starts: half a trading day (1/504
        year) after the last hot close, so that no step of the hot start has it."""
        return self.end + 0.5 / 252.0

    @property
    def hot_times(self) -> np.ndarray:
        return self.closes[self.hot]

    def hazards(self, engines: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """For each engine (times, edges): lambda[k, j] = P(the rule first holds on a
        close in (times[k-1], times[k]] | ln S at times[k] in [edges[j], edges[j+1]),
        not before), its kill probability per step and cell of ln S (0 on steps without
        a hot close, where no call is allowed; ``times`` increasing from 0, cells
        covering its nodes). A cell no surviving path reached takes the rule's verdict
        on its centre alone. All engines see the same paths (a Richardson pair's noise
        cancels in part)."""
        grid = np.unique(np.round(np.concatenate(
            [self.closes, *(t[(t > _TOL) & (t <= self.end + _TOL)] for t, _ in engines)]), 12))
        mu, sd = self._law(self.market, grid)
        mu_r, sd_r = self._law(self.reference or self.market, grid)
        ln_r = math.log((self.reference or self.market).equity_price)
        close = np.isin(grid, np.round(self.closes, 12))
        hot = np.zeros(grid.size, bool)
        hot[close] = self.hot
        step = np.full((len(engines), grid.size), -1, np.int64)
        for q, (t, _) in enumerate(engines):
            inside = np.flatnonzero((t > _TOL) & (t <= self.end + _TOL))
            step[q, np.searchsorted(grid, np.round(t[inside], 12))] = inside
        sizes = tuple(t.size for t, _ in engines)
        edges = tuple(np.asarray(e, float).tobytes() for _, e in engines)
        return _simulate((mu_r.tobytes(), sd_r.tobytes(), ln_r),
                         (mu.tobytes(), sd.tobytes(), self.ln_s0), close.tobytes(),
                         hot.tobytes(), step.tobytes(), sizes, edges, self.need, self.window,
                         self.ln_k)

    def _law(self, m: Market, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of the moves of ln S to each grid time."""
        var = np.asarray(m.variance("equity", grid), float)
        dv = np.maximum(np.diff(var, prepend=0.0), 0.0)
        mu = -np.diff(np.log(m.discount(grid)), prepend=0.0) + (
            self.equity_drift - m.equity_carry) * np.diff(grid, prepend=0.0) - dv / 2
        return mu, np.sqrt(dv)


@functools.lru_cache(maxsize=16)
def _simulate(proposal: tuple[bytes, bytes, float], target: tuple[bytes, bytes, float],
              close_b: bytes, hot_b: bytes, step_b: bytes, sizes: tuple[int, ...],
              edges_b: tuple[bytes, ...], need: int, window: int,
              ln_k: float) -> list[np.ndarray]:
    """:meth:`HotStart.hazards` on its simulation grid (arrays as bytes: cached, so a
    bump of bitcoin or of the correlation reuses the tables). Paths follow the
    ``proposal`` law of ln S (per grid time the mean and standard deviation of the
    move since the last, and the start), weighted by the likelihood ratio of the
    ``target`` law: a bumped market on the unbumped paths moves every estimate
    smoothly (no path changes its call date), so its greeks are differences of
    smooth functions. ``close``, ``hot``: whether a grid time is a close, a hot one;
    ``step``: each engine's step ending there (-1: none)."""
    mu, sd = np.frombuffer(proposal[0]), np.frombuffer(proposal[1])
    mu_t, sd_t = np.frombuffer(target[0]), np.frombuffer(target[1])
    close, hot = np.frombuffer(close_b, bool), np.frombuffer(hot_b, bool)
    step = np.frombuffer(step_b, np.int64).reshape(len(sizes), -1)
    edges = [np.frombuffer(e) for e in edges_b]
    centres = [0.5 * (e[1:] + e[:-1]) for e in edges]
    uniform = [np.allclose(np.diff(c), c[1] - c[0], rtol=1e-9, atol=0.0) for c in centres]
    lam = [np.zeros((n, e.size - 1)) for n, e in zip(sizes, edges, strict=True)]
    rng = np.random.default_rng(HOT_SEED)
    half = HOT_PATHS // 2
    x = np.full(HOT_PATHS, proposal[2])
    shift = target[2] - proposal[2]         # the start's, carried to the first move
    weighted = shift != 0.0 or proposal[:2] != target[:2]
    ln_w = np.zeros(HOT_PATHS)
    ring = np.zeros((window, HOT_PATHS), bool)
    count = np.zeros(HOT_PATHS, np.int32)
    called = np.zeros(HOT_PATHS, bool)             # the rule has held on a hot close
    alive = np.ones((len(sizes), HOT_PATHS), bool)  # ... not by each engine's last step
    ids = np.arange(HOT_PATHS)                      # each path keeps its own normals
    pending = np.zeros(len(sizes), bool)            # a hot close since each engine's step
    day = 0
    for g in range(mu.size):
        z = rng.standard_normal(half, dtype=np.float32)   # drawn for all: the same paths
        if sd[g] > 0:
            z = np.concatenate([z, -z])
            z = z if x.size == HOT_PATHS else z[ids]
            if weighted:
                # log N(move; target) - log N(move; proposal), the start's shift in the
                # target's first move
                u = (sd[g] * z + mu[g] - mu_t[g] - shift) / sd_t[g]
                ln_w += 0.5 * z * z - 0.5 * u * u - math.log(sd_t[g] / sd[g])
                shift = 0.0
            x += mu[g] + sd[g] * z
        if close[g]:
            # a close before the first move is the start itself, the target's
            above = x + shift >= ln_k
            count += above.astype(np.int32) - ring[day % window]
            ring[day % window] = above
            day += 1
            if hot[g]:
                called |= count >= need
                pending[:] = True
        for q in np.flatnonzero((step[:, g] >= 0) & pending):
            live = alive[q]
            w = np.exp(ln_w[live]) if weighted else None
            lam[q][step[q, g]] = _tent_ratio(x[live], called[live], w, centres[q],
                                             uniform[q], ln_k)
            live &= ~called
        pending[step[:, g] >= 0] = False
        if g % 16 == 15 and alive.any(axis=0).sum() < x.size // 2:
            # drop the paths every engine has seen called
            keep = alive.any(axis=0)
            x, ring, count, called, alive, ids, ln_w = (
                x[keep], ring[:, keep], count[keep], called[keep], alive[:, keep], ids[keep],
                ln_w[keep])
    return lam


def _tent_ratio(x: np.ndarray, hit: np.ndarray, w: np.ndarray | None, centres: np.ndarray,
                uniform: bool, ln_k: float) -> np.ndarray:
    """P(hit | x at each centre): the (``w``-weighted) share of hits among the paths,
    each path shared
    between its two neighbouring centres linearly (a path moving a little moves the
    estimate a little: bumped markets on the same paths give smooth greeks). A
    centre no path reached takes the rule's verdict on itself alone."""
    n = centres.size
    if uniform:
        u = (x - centres[0]) / (centres[1] - centres[0])
    else:
        j = np.clip(np.searchsorted(centres, x) - 1, 0, n - 2)
        u = j + (x - centres[j]) / (centres[j + 1] - centres[j])
    u = np.clip(u, 0.0, n - 1.0)
    j = np.minimum(np.floor(u).astype(np.int64), n - 2)
    f = u - j
    a, b = (1 - f, f) if w is None else ((1 - f) * w, f * w)
    den = np.bincount(j, a, n) + np.bincount(j + 1, b, n)
    num = np.bincount(j[hit], a[hit], n) + np.bincount(j[hit] + 1, b[hit], n)
    return np.where(den > 1e-9, num / np.maximum(den, 1e-9), centres >= ln_k)


def settings(hot: HotStart) -> dict[str, float | int]:
    """What a hot start ran with, for a result's settings."""
    return {"paths": HOT_PATHS, "seed": HOT_SEED, "closes": int(hot.closes.size),
            "hot_closes": int(hot.hot.sum()), "end": round(hot.end, 6)}


def is_hot_start(note: ZeroCouponConvertible, market: Market) -> bool:
    """Whether the note has a hot start (:func:`hot_start`)."""
    return hot_start(note, market) is not None


def _call_in_first_window(note: ZeroCouponConvertible, market: Market) -> bool:
    """An N-of-M call possible within the rule's first window (closes before the
    valuation date below the trigger)."""
    n, m = note.call_trigger_days or 1, note.call_trigger_window or 1
    if n <= 1 or note.call_start is None:
        return False
    first = CALENDAR.adjust(ql_date(market.valuation_date))       # the first close
    last = CALENDAR.advance(first, m - 1, ql.Days)                  # the window's last
    return ql_date(note.call_start) <= last


def hot_start(note: ZeroCouponConvertible, market: Market, equity_drift: float = 0.0,
              reference: Market | None = None) -> HotStart | None:
    """The note's hot start (module docstring): an N-of-M call possible within the
    rule's first window, on a close before maturity; None if it has none.
    ``equity_drift``: a constant extra drift of ln S per year (the engines' hazard
    times equity loss); ``reference``: the market whose paths to weight (the unbumped
    one, for greeks; default ``market``)."""
    if not _call_in_first_window(note, market):
        return None
    vd = market.valuation_date
    sch = convertible_schedule(note, vd)
    days = trading_days(vd, note.maturity - timedelta(days=1))
    t = np.array([market.time(d) for d in days])
    ok = np.array([bool(sch.call_allowed(x)) for x in t])
    ok[:sch.trigger_days - 1] = False                 # fewer closes than the rule needs
    if not ok.any():
        return None
    last = min(int(np.argmax(ok)) + HOT_CLOSES, t.size - 1)
    return HotStart(closes=t[:last + 1], hot=ok[:last + 1], need=int(sch.trigger_days),
                    window=int(sch.trigger_window), ln_s0=math.log(market.equity_price),
                    ln_k=math.log(sch.trigger_price), market=market,
                    equity_drift=equity_drift, reference=reference)
