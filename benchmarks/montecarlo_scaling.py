"""Monte Carlo engine: standard error against paths, the control variates' variance
reduction, and the cost of 1e5 and 1e6 paths on a 5-year note (the numbers in
docs/sections/montecarlo.md).

    python -m benchmarks.montecarlo_scaling            # SE ladder + 1e5 paths
    python -m benchmarks.montecarlo_scaling --million  # and 1e6 paths (minutes)

Times are CPU seconds of this process (time.process_time, one BLAS thread), which
other work on the machine inflates far less than wall time.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import time
from dataclasses import replace
from datetime import date

from convpricer.engines import montecarlo as mc
from convpricer.instruments import ZeroCouponConvertible
from convpricer.market import Market
from convpricer.structure import CapitalStructure

VAL = date(2025, 2, 21)
MARKET = Market(valuation_date=VAL, btc_price=96000.0, equity_price=100.0, btc_vol=0.55,
                equity_vol=0.6, correlation=0.7, risk_free_rate=0.04)
#: A Strategy-like 5-year zero: conversion price 150, put at par after 3 years,
#: soft call from year 2 on 20 of 30 NYSE closes above 130%.
NOTE = ZeroCouponConvertible(name="5y zero", face=1000.0, notional=2e9, issue_date=VAL,
                             maturity=date(2030, 2, 21), conversion_ratio=1000 / 150,
                             put_dates=(date(2028, 2, 22),), call_start=date(2027, 2, 22),
                             call_trigger=1.3, call_trigger_days=20, call_trigger_window=30)
#: The same note against 30,000 BTC (1.44x coverage): structural defaults.
STRUCTURE = CapitalStructure(name="issuer", btc_holdings=30000.0, shares_outstanding=1e8,
                             instruments=(NOTE,))
CASES = {"no structure": (NOTE, None),
         "thin coverage": (NOTE, STRUCTURE),
         "European, no structure": (replace(NOTE, put_dates=(), call_start=None,
                                            call_trigger=None, call_trigger_days=None,
                                            call_trigger_window=None, conversion="european"),
                                    None)}


def run(case: str, **opts) -> tuple[float, float, float, float]:
    inst, structure = CASES[case]
    t = time.process_time()
    r = mc.price(inst, MARKET, structure, greeks=False, **opts)
    return r.value, r.std_error, r.extras["std_error_no_control"], time.process_time() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--million", action="store_true", help="also time 1e6 paths")
    args = ap.parse_args()
    print(f"{'case':24s} {'paths':>8s} {'value':>10s} {'SE':>8s} {'SE plain':>9s} "
          f"{'VR':>8s} {'CPU s':>7s}")
    for case in CASES:
        for paths in (1 << 14, 1 << 16, 100_000, *((1_000_000,) if args.million else ())):
            v, se, se0, cpu = run(case, paths=paths)
            vr = (se0 / se) ** 2 if se > 0 else float("inf")
            print(f"{case:24s} {paths:8d} {v:10.3f} {se:8.4f} {se0:9.4f} {vr:8.1f} {cpu:7.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
