"""Speed-up of ``value_grid`` with two workers against one, locally and on Dask.

    python benchmarks/bench_grid.py [--file fixtures/illustrative.toml] [--engine KIND]
        [--scenarios 64] [--steps N] [--greeks] [--repeat 3] [--no-dask]

Values the instruments of FILE that the engine values itself (and common) on a grid
of scenarios (BTC and equity spots from -50%
to +50% at constant mNAV, two equity vols) with:

* ``sync``: one core, no pool (the reference);
* ``threads``, ``processes``: the local schedulers on two workers; ``processes``
  with one worker shows the pool's own overhead;
* a ``distributed.LocalCluster`` of one, then two worker processes (one thread
  each), timed after a warm-up grid (workers import convpricer on first use;
  the cluster's start-up is printed separately).

Each timing is the best of ``--repeat`` runs (others' jobs on a shared machine
only ever slow a run down). Every run's values are checked against ``sync``.
Numbers are recorded in docs/sections/grids.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import pandas as pd

import convpricer as cp
from convpricer import engines
from convpricer.errors import EngineError
from convpricer.grid import value_grid


def default_engine() -> tuple[str, dict]:
    try:
        engines.get("lattice2d")
    except EngineError:
        return "quantlib", {}
    return "lattice2d", {}


def scenarios(market: cp.Market, n: int) -> pd.DataFrame:
    k = np.linspace(0.5, 1.5, max(1, n // 2))
    vols = (market.equity_vol or 0.8) * np.array([0.8, 1.2])
    k, v = np.meshgrid(k, vols, indexing="ij")
    df = pd.DataFrame({"btc_price": market.btc_price * k.ravel(),
                       "equity_price": market.equity_price * k.ravel(),
                       "equity_vol": v.ravel()})
    return df.iloc[:n].reset_index(drop=True)


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (a local pool's workers);
    for Dask, summed over the workers with ``client.run``."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def best(f, repeat: int) -> tuple[float, float, pd.DataFrame]:
    """Best wall time of ``repeat`` runs, the CPU seconds of that run, the result."""
    runs, out = [], None
    for _ in range(repeat):
        c0, t0 = cpu_seconds(), time.perf_counter()
        out = f()
        runs.append((time.perf_counter() - t0, cpu_seconds() - c0))
    wall, cpu = min(runs)
    return wall, cpu, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", default="fixtures/illustrative.toml")
    ap.add_argument("--engine", default=None, help="default: lattice2d if built, else quantlib")
    ap.add_argument("--scenarios", type=int, default=64)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--greeks", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-dask", action="store_true")
    a = ap.parse_args()

    structure, market = cp.load(a.file)
    engine, options = (a.engine, {}) if a.engine else default_engine()
    if a.steps:
        options["steps"] = a.steps
    kinds = engines.get(engine).KINDS  # only what this engine values itself
    structure = structure.replace(instruments=tuple(
        x for x in structure.instruments if x.kind in kinds or x.kind == "common_equity"))
    sc = scenarios(market, a.scenarios)
    kw = dict(greeks=a.greeks, **options)
    print(f"{a.file}: {len(structure.claims)} claims, engine {engine} {options}, "
          f"greeks {a.greeks}, {len(sc)} scenarios, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")

    t_sync, c_sync, ref = best(lambda: value_grid(structure, market, sc, engine,
                                                  scheduler="sync", **kw), a.repeat)
    rows = [("sync", 1, t_sync, c_sync)]

    def check(df: pd.DataFrame) -> None:
        pd.testing.assert_frame_equal(df, ref)

    for sched, w in (("processes", 1), ("threads", 2), ("processes", 2)):
        t, c, df = best(lambda s=sched, w=w: value_grid(structure, market, sc, engine,
                                                        scheduler=s, workers=w, **kw), a.repeat)
        check(df)
        rows.append((sched, w, t, c))

    if not a.no_dask:
        from distributed import Client, LocalCluster
        for w in (1, 2):
            t0 = time.perf_counter()
            with LocalCluster(n_workers=w, threads_per_worker=1, processes=True,
                              dashboard_address=None) as cl, Client(cl) as c:
                start = time.perf_counter() - t0
                value_grid(structure, market, sc.iloc[:2 * w], engine, client=c, **kw)
                c0 = sum(c.run(cpu_seconds).values())
                t, _, df = best(lambda c=c: value_grid(structure, market, sc, engine,
                                                       client=c, **kw), a.repeat)
                cpu = (sum(c.run(cpu_seconds).values()) - c0) / a.repeat  # workers' CPU
                check(df)
                rows.append((f"dask LocalCluster (start {start:.1f} s)", w, t, cpu))

    # cpu/wall: the cores this run actually got (on a busy shared machine with
    # per-session fair scheduling, about the session's share whatever the workers);
    # the Dask rows count the workers' CPU only (mean over the runs)
    print(f"\n{'scheduler':<36} {'workers':>7} {'seconds':>8} {'scen/s':>7} {'vs sync':>8} "
          f"{'cpu s':>6} {'cpu/wall':>8}")
    for name, w, t, c in rows:
        cpu = f"{c:>6.1f} {c / t:>8.2f}" if c is not None else f"{'-':>6} {'-':>8}"
        print(f"{name:<36} {w:>7} {t:>8.2f} {len(sc) / t:>7.1f} {t_sync / t:>7.2f}x {cpu}")
    d = {(n.split(" (")[0], w): t for n, w, t, _ in rows}
    if ("dask LocalCluster", 2) in d:
        one, two = d["dask LocalCluster", 1], d["dask LocalCluster", 2]
        print(f"\ndask: two workers vs one: {one / two:.2f}x")
    print(f"local processes: two workers vs one: {d['processes', 1] / d['processes', 2]:.2f}x")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
