"""Exact-daily references for N-of-M soft calls (lattice2d's equivalent barrier).

A zero-coupon note without put, unlimited coverage, no credit spread, flat
market without dividends: holding is optimal unless called, so the note is its
European value plus the loss of the call. Paths of ln S on the NYSE closes
(calendar-time variance between closes, as the montecarlo engine); days before
the valuation date count as below the trigger; the issuer calls on the first
close of the call period on which the rule holds (parity is then at least the
call price, and calling at parity is optimal against a holder who may convert);
holders take max(parity, call price). With the European value as a control:

    value = European(0) + E[e^-r tau (max(n S_tau, call) - European(tau, S_tau))]

    python benchmarks/nofm_reference.py [--paths N] [--out FILE]

writes the cases of docs/sections/lattice2d.md (20 of 30 and single-day
triggers) to fixtures/golden/nofm_reference.json, which
tests/test_lattice2d.py checks lattice2d against.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import QuantLib as ql
from scipy.special import ndtr

from convpricer import load
from convpricer.instruments import ZeroCouponConvertible
from convpricer.market import Market, ql_date
from convpricer.schedule import convertible_schedule

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "fixtures" / "golden" / "nofm_reference.json"
NYSE = ql.UnitedStates(ql.UnitedStates.NYSE)
SEED = 20250630
CHUNK = 1 << 14

#: (label, fixture, note, call_start: "fixture" | "now", S0 / trigger or None: the
#: fixture's S0)
CASES = [
    ("2027 notes at 2024-12-31 (callable, S = 1.55 x trigger)", "strategy_2024-12-31.toml",
     "2027 notes", "fixture", None),
    ("2029 notes at 2025-06-30 (call from 2026-12-04)", "strategy_2025-06-30.toml",
     "2029 notes", "fixture", None),
    ("2030B notes at 2025-06-30 (call from 2027-03-05)", "strategy_2025-06-30.toml",
     "2030B notes", "fixture", None),
    ("2030B notes at 2025-06-30, callable at once", "strategy_2025-06-30.toml",
     "2030B notes", "now", None),
    ("2029 notes at 2025-06-30, callable at once", "strategy_2025-06-30.toml",
     "2029 notes", "now", None),
    ("2030B notes at 2025-06-30, callable at once, S = trigger", "strategy_2025-06-30.toml",
     "2030B notes", "now", 1.0),
    ("2030B notes at 2025-06-30, callable at once, S = 1.2 x trigger",
     "strategy_2025-06-30.toml", "2030B notes", "now", 1.2),
    ("2030B notes at 2025-06-30, callable at once, S = 0.9 x trigger",
     "strategy_2025-06-30.toml", "2030B notes", "now", 0.9),
]


def case(fixture: str, name: str, start: str, days: int | None,
         s_over_trigger: float | None = None) -> tuple[ZeroCouponConvertible, Market]:
    """The fixture's note without put, with an N-of-M (``days`` of 30) or single-day
    trigger, and the fixture's market (its equity price moved to ``s_over_trigger`` x
    the trigger price if given)."""
    structure, market = load(ROOT / "fixtures" / fixture)
    note = structure[name]
    assert type(note) is ZeroCouponConvertible
    note = replace(note, put_dates=(), credit_spread=0.0,
                   call_start=market.valuation_date if start == "now" else note.call_start,
                   call_trigger_days=days, call_trigger_window=30 if days else None)
    if s_over_trigger is not None:
        market = replace(market, equity_price=s_over_trigger * note.call_trigger_price)
    return note, market


def _bs_call(s: np.ndarray, k: float, t: float, r: float, vol: float) -> np.ndarray:
    if t <= 0:
        return np.maximum(s - k, 0.0)
    sd = vol * math.sqrt(t)
    d1 = (np.log(s / k) + (r + vol * vol / 2) * t) / sd
    return s * ndtr(d1) - k * math.exp(-r * t) * ndtr(d1 - sd)


def daily_reference(note: ZeroCouponConvertible, market: Market, paths: int,
                    seed: int = SEED, uniform: bool = False) -> tuple[float, float]:
    """(value, standard error) per note of face, exact daily rule (module docstring);
    ``uniform``: closes every 1/252 year from the valuation date instead of NYSE's."""
    if market.equity_carry != 0 or note.coupon != 0 or note.put_dates:
        raise ValueError("zero-coupon notes without put in a market without carry only")
    sch = convertible_schedule(note, market.valuation_date)
    r, vol, n, face = market.risk_free_rate, market.equity_vol, note.conversion_ratio, note.face
    big_t = sch.maturity
    need = sch.trigger_days or 1
    window = sch.trigger_window or 1
    vd = market.valuation_date
    first = NYSE.adjust(ql_date(max(note.call_start, vd)))
    first = NYSE.advance(first, -(window - 1), ql.Days)
    lo = max(date(first.year(), first.month(), first.dayOfMonth()), vd)
    days = [date(d.year(), d.month(), d.dayOfMonth())
            for d in NYSE.businessDayList(ql_date(lo), ql_date(note.maturity - timedelta(days=1)))]
    times = np.array([market.time(d) for d in days])
    if uniform:
        times = np.arange(0.0, big_t - 0.5 / 365, 1 / 252)
        times = times[times >= times[times <= market.time(lo) + 1e-9][-1] - 1e-9]
    callable_ = np.array([sch.call_allowed(t) for t in times])
    ln_k = math.log(sch.trigger_price)
    european0 = face * math.exp(-r * big_t) + n * float(_bs_call(
        np.array(market.equity_price), face / n, big_t, r, vol))
    rng = np.random.default_rng(seed)
    gains = []
    for c0 in range(0, paths, CHUNK):
        m = min(CHUNK, paths - c0) // 2 * 2
        z = np.full(m, math.log(market.equity_price))
        ring = np.zeros((window, m), bool)
        count = np.zeros(m, np.int32)
        alive = np.ones(m, bool)
        gain = np.zeros(m)
        t_prev = 0.0
        for i, t in enumerate(times):
            dt = t - t_prev
            t_prev = t
            if dt > 0:
                half = rng.standard_normal(m // 2)
                z += (r - vol * vol / 2) * dt + vol * math.sqrt(dt) * np.concatenate([half, -half])
            above = z >= ln_k
            count += above.astype(np.int32) - ring[i % window]
            ring[i % window] = above
            if not callable_[i]:
                continue
            called = alive & (count >= need)
            if called.any():
                s = np.exp(z[called])
                left = big_t - t
                euro = face * math.exp(-r * left) + n * _bs_call(s, face / n, left, r, vol)
                gain[called] = (np.maximum(n * s, sch.call_price) - euro) * math.exp(-r * t)
                alive &= ~called
            if not alive.any():
                break
        gains.append(gain.reshape(2, -1).mean(axis=0))     # antithetic pairs
    g = np.concatenate(gains)
    return european0 + float(g.mean()), float(g.std() / math.sqrt(g.size))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--paths", type=int, default=1 << 18)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    rows = []
    for label, fixture, name, start, ratio in CASES:
        for days in (20, None):
            note, market = case(fixture, name, start, days, ratio)
            t0 = time.process_time()
            v, se = daily_reference(note, market, args.paths)
            rows.append({"case": label, "fixture": fixture, "note": name, "call_start": start,
                         "s_over_trigger": ratio, "trigger_days": days,
                         "value": round(v, 4), "se": round(se, 4)})
            print(f"{label:60s} {days or 1:>2} of {30 if days else 1:<2} {v:10.3f} +- {se:.3f}"
                  f"  ({time.process_time() - t0:.0f} s)", flush=True)
    doc = {
        "provenance": {
            "command": f"python benchmarks/nofm_reference.py --paths {args.paths}",
            "paths": args.paths, "seed": SEED,
            "antithetic": True, "control": "European value (Black-Scholes)",
            "model": "zero-coupon note, put removed, credit_spread 0, unlimited coverage, "
                     "fixture market; ln S on NYSE closes with calendar-time variance; days "
                     "before the valuation date below the trigger; first-opportunity call; "
                     "holder takes max(parity, call price)",
        },
        "values": rows,
    }
    args.out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
