"""Convergence and cost of QuantLib's BinomialConvertibleEngine on typical 5-year notes.

    python benchmarks/quantlib_convergence.py [--trees crr,lr,j4] [--steps 250,500,...]

Prints, per note, tree and step count, the value per 1000 face, its error
relative to a 32001-step Leisen-Reimer reference, and the median time of one
price (no greeks). ``--band`` also prints the worst relative error over a
window of step counts, which is what a default must be judged on: with puts
and soft calls QuantLib snaps dates to its uniform grid and the error does not
fall monotonically. Numbers are recorded in docs/sections/quantlib_engine.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import date

from convpricer.engines import quantlib_engine as qe
from convpricer.instruments import ConvertibleNote, ZeroCouponConvertible
from convpricer.market import Market

MARKET = Market(valuation_date=date(2025, 2, 21), btc_price=96000, equity_price=100,
                btc_vol=0.5, equity_vol=0.4, correlation=0.5, risk_free_rate=0.04)
_TERMS = dict(face=1000.0, notional=1e9, issue_date=date(2025, 2, 21),
              maturity=date(2030, 2, 21), conversion_ratio=1000 / 150, credit_spread=0.03)
_RIGHTS = dict(put_dates=(date(2028, 2, 22),), call_start=date(2028, 3, 1), call_trigger=1.3)
NOTES = {
    "A european zero": ZeroCouponConvertible(name="A", conversion="european", **_TERMS),
    "B american zero, put, soft call": ZeroCouponConvertible(name="B", **_TERMS, **_RIGHTS),
    "C 0.625% note, put, soft call": ConvertibleNote(name="C", coupon_rate=0.00625,
                                                     **_TERMS, **_RIGHTS),
}
REFERENCE = ("lr", 32001)
BANDS = ((251, 451), (451, 651), (651, 851), (851, 1051), (1051, 1501), (1501, 2001))


def timed(note: ZeroCouponConvertible, tree: str, steps: int, repeat: int) -> tuple[float, float]:
    """Value per note and median seconds of one price."""
    times, v = [], 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        v = qe.price(note, MARKET, greeks=False, tree=tree, steps=steps).value
        times.append(time.perf_counter() - t0)
    return v, statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", default="crr,lr,j4")
    ap.add_argument("--steps", default="250,500,1000,2000,4000")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--band", action="store_true", help="worst error over step windows")
    a = ap.parse_args()
    trees, steps = a.trees.split(","), [int(s) for s in a.steps.split(",")]
    for label, note in NOTES.items():
        ref = qe.price(note, MARKET, greeks=False, tree=REFERENCE[0], steps=REFERENCE[1]).value
        print(f"{label}: reference {REFERENCE[0]} {REFERENCE[1]} steps = {ref:.4f}")
        for tree in trees:
            for n in steps:
                v, t = timed(note, tree, n, a.repeat)
                print(f"  {tree:5s} {n:5d}  {v:10.4f}  rel {(v - ref) / ref:+.1e}  "
                      f"{t * 1e3:7.1f} ms")
            if a.band:
                for lo, hi in BANDS:
                    errs = [abs(timed(note, tree, n, 1)[0] - ref) / ref
                            for n in range(lo, hi, (hi - lo) // 10)]
                    print(f"  {tree:5s} steps {lo}-{hi}: worst rel {max(errs):.1e}")


if __name__ == "__main__":
    main()
