"""The benchmark command of issue #7: accuracy and speed of convpricer against
converged references and against QuantLib and FinancePy on the same inputs.

    python -m benchmarks.run [--quick] [--cases zero_put,strategy,...] [--repeat N]
                             [--profile] [--references] [--json PATH] [--no-pin]

Prints the machine, then one markdown table row per engine and setting of each
case (benchmarks/cases.py): value, reference, relative error against the
converged reference of the engine's own model (benchmarks/references.json),
median time of ``--repeat`` runs, and for convpricer's rows the time of the
peer it is compared with and the ratio (peer time / convpricer time; > 1 means
convpricer is faster). Then the targets of issue #7, met or not, with numbers.

Time is the CPU time of this (single-threaded, pinned) process per call,
``time.process_time``: on a shared machine wall-clock time also counts the
time slices other processes take from the pinned core, which CPU time does
not; the median wall-clock time is printed beside it.

The process pins itself to CPU 0 (``os.sched_setaffinity``) and sets
OMP/OPENBLAS/MKL_NUM_THREADS=1 before numpy is imported (``--no-pin`` to
disable). Timed calls of the engines and their peers are interleaved round
robin after one warm-up call each, so that load from other processes falls on
both. "Steps to reach a tolerance": the smallest step count of a geometric
ladder from which every larger count of the ladder stays within the tolerance
(a single lucky step count of an oscillating tree does not count).

``--references`` recomputes the cached references (slow: tens of minutes);
``--profile`` runs cProfile on each case's main setting and prints where the
time goes.
"""

from __future__ import annotations

import os
import sys

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMBA_NUM_THREADS")


def pin_one_core(cpu: int = 0) -> str:
    """One thread for every BLAS/OpenMP pool and this process on one CPU. Call
    before numpy is imported (the thread variables are read at import)."""
    for v in _THREAD_VARS:
        os.environ[v] = "1"
    try:
        os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError) as e:
        return f"not pinned ({e}); {', '.join(_THREAD_VARS)}=1"
    return f"os.sched_setaffinity(0, {{{cpu}}}) (as taskset -c {cpu}); " \
           f"{', '.join(_THREAD_VARS)}=1"


if __name__ == "__main__":
    PINNING = "not pinned (--no-pin)" if "--no-pin" in sys.argv else pin_one_core()
else:
    PINNING = "not pinned (imported)"

import argparse  # noqa: E402
import cProfile  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import pstats  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

import convpricer as cp  # noqa: E402
from convpricer.engines import montecarlo  # noqa: E402
from convpricer.waterfall import payouts  # noqa: E402

from . import cases  # noqa: E402
from .peers import FinancePyTree, QuantLibTree  # noqa: E402

TOL = 1e-4
CASES = ("zero_put", "coupon_softcall", "structural_zero", "strategy", "waterfall",
         "montecarlo")


# ----- configuration ---------------------------------------------------------------------
def ladder(lo: int, hi: int, per_octave: int) -> list[int]:
    """Geometric ladder of step counts from lo to hi, ``per_octave`` points per doubling."""
    n = round(math.log2(hi / lo) * per_octave)
    return sorted({round(lo * 2 ** (i / per_octave)) for i in range(n + 1)})


@dataclass(frozen=True)
class Config:
    quick: bool
    repeat: int
    lattice_1f: list[int]
    ql_lr: list[int]
    ql_crr: list[int]
    lattice_2f: list[int]
    strategy: list[int]
    mc_paths: int
    mc_repeat: int

    @classmethod
    def make(cls, quick: bool, repeat: int | None) -> Config:
        if quick:
            return cls(quick=True, repeat=repeat or 3, lattice_1f=ladder(20, 1280, 2),
                       ql_lr=ladder(125, 4000, 2), ql_crr=ladder(125, 8000, 2),
                       lattice_2f=ladder(20, 160, 2), strategy=[100, 200],
                       mc_paths=1 << 17, mc_repeat=0)
        return cls(quick=False, repeat=repeat or 5, lattice_1f=ladder(20, 2560, 4),
                   ql_lr=ladder(125, 8000, 4), ql_crr=ladder(125, 32000, 4),
                   lattice_2f=ladder(20, 320, 4), strategy=[200, 300, 400, 500],
                   mc_paths=cases.MC_PATHS, mc_repeat=2)


# ----- machine ---------------------------------------------------------------------------
def _version(mod: str) -> str:
    try:
        m = __import__(mod)
    except ImportError:
        return "not installed"
    return getattr(m, "__version__", "?")


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or cpu
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except AttributeError:
        affinity = []
    return {
        "cpu": cpu, "cores": f"{os.cpu_count()} logical, running on {affinity}",
        "pinning": PINNING, "python": platform.python_version(),
        "numpy": np.__version__, "scipy": _version("scipy"), "QuantLib": _version("QuantLib"),
        "financepy": _version("financepy"), "numba": _version("numba"),
        "convpricer": f"{cp.__version__ if hasattr(cp, '__version__') else '?'} commit "
                      f"{cases._git('rev-parse', '--short', 'HEAD')}"
                      f"{' (dirty tree)' if cases._git('status', '--porcelain', '-uno') else ''}",
        "load average at start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


# ----- timing and sweeps -------------------------------------------------------------------
@dataclass
class Timing:
    """Seconds of one call: median and best CPU time of this process over ``runs``
    calls, and the median wall-clock time."""

    median: float
    best: float
    runs: int
    wall: float


def _clock(f: Callable[[], Any]) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    f()
    return time.process_time() - c, time.perf_counter() - w


def race(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, Timing]:
    """Median time of each function: one warm-up call each, then ``repeat`` rounds
    calling every function once per round (interleaved). ``repeat=0``: the one
    call is timed, no warm-up (for runs too slow to repeat)."""
    if repeat == 0:
        out = {}
        for k, f in fns.items():
            c, w = _clock(f)
            out[k] = Timing(c, c, 1, w)
        return out
    for f in fns.values():
        f()
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    wall: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():
            c, w = _clock(f)
            cpu[k].append(c)
            wall[k].append(w)
    return {k: Timing(statistics.median(cpu[k]), min(cpu[k]), repeat,
                      statistics.median(wall[k])) for k in fns}


def rel(value: float, ref: float) -> float:
    return (value - ref) / abs(ref)


def sweep(value_at: Callable[[int], float], steps: Sequence[int], ref: float
          ) -> list[tuple[int, float, float]]:
    """(steps, value, relative error) along a ladder."""
    out = []
    for n in steps:
        v = value_at(n)
        out.append((n, v, rel(v, ref)))
    return out


def steps_to(points: list[tuple[int, float, float]], tol: float) -> int | None:
    """Smallest ladder step count from which every larger one stays within ``tol``."""
    ok = None
    for n, _, e in reversed(points):
        if abs(e) > tol:
            break
        ok = n
    return ok


def worst_tail(points: list[tuple[int, float, float]], last: int) -> float:
    """Largest |relative error| over the last ``last`` points of a sweep."""
    return max(abs(e) for _, _, e in points[-last:])


# ----- rows ----------------------------------------------------------------------------------
@dataclass
class Row:
    case: str
    engine: str
    setting: str
    value: float | None
    reference: float | None
    error: float | None
    time: Timing | None
    peer: dict[str, Any] = field(default_factory=dict)    # name, time, ratio
    note: str = ""


@dataclass
class Target:
    name: str
    met: bool | None          # None: cannot be judged
    detail: str


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    sweeps: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _ref(refs: dict[str, Any], case: str, model: str = "convpricer") -> dict[str, Any]:
    try:
        return refs["cases"][case][model]
    except KeyError:
        raise SystemExit(f"no reference for {case}/{model} in {cases.REFERENCES}: run "
                         "python -m benchmarks.run --references") from None


def _ms(t: float) -> str:
    return f"{t * 1e3:.1f} ms" if t < 1 else f"{t:.2f} s"


# ----- one-factor cases -----------------------------------------------------------------------
def _financepy(note, market) -> FinancePyTree | None:
    """FinancePy's tree on the note, compiled (None when FinancePy is not installed)."""
    try:
        fin = FinancePyTree(note, market)
    except ImportError:
        return None
    fin.value(50)                   # numba compilation (cached on disk after the first run)
    return fin


def one_factor(key: str, cfg: Config, refs: dict[str, Any], rep: Report) -> None:
    note, m = cases.ONE_FACTOR[key], cases.MARKET_1F
    r_cp = _ref(refs, key)["value"]
    r_ql = _ref(refs, key, "quantlib")["value"]
    crr = QuantLibTree(note, m, "crr")
    fin = _financepy(note, m)

    def lattice(n: int | None) -> cp.PricingResult:
        """lattice2d with ``n`` steps, or at its default (n None)."""
        opts = {} if n is None else {"steps": n}
        return cp.price(note, m, None, engine="lattice2d", greeks=False, **opts)

    def qlengine(n: int) -> float:
        return cp.price(note, m, None, engine="quantlib", greeks=False, tree="lr",
                        steps=n).value

    sw = {"lattice2d": sweep(lambda n: lattice(n).value, cfg.lattice_1f, r_cp),
          "quantlib (lr)": sweep(qlengine, cfg.ql_lr, r_ql),
          "QuantLib crr": sweep(crr.value, cfg.ql_crr, r_ql)}
    rep.sweeps[key] = {k: [list(p) for p in v] for k, v in sw.items()}
    n_lat, n_lr, n_crr = (steps_to(sw[k], TOL) for k in sw)
    crr_n = n_crr if n_crr is not None else cfg.ql_crr[-1]
    lr_n = n_lr if n_lr is not None else cfg.ql_lr[-1]
    # convpricer rows: lattice2d at the count reaching 1e-4 and at its default; quantlib lr
    rows: dict[str, int | None] = {"lattice2d default": None}
    if n_lat is not None:
        rows = {"lattice2d 1e-4": n_lat, **rows}
    used = {k: lattice(n).settings for k, n in rows.items()}
    steps_of = {k: u["time_steps"] for k, u in used.items()}
    steps_of["quantlib"] = lr_n | 1
    fns: dict[str, Callable[[], Any]] = {k: (lambda n=n: lattice(n)) for k, n in rows.items()}
    fns["quantlib"] = lambda: qlengine(lr_n)
    fns["crr"] = lambda: crr.value(crr_n)
    if fin is not None:
        fns.update({f"financepy {k}": (lambda n=n: fin.value(n)) for k, n in steps_of.items()})
    t = race(fns, cfg.repeat)
    crr_label = f"crr {crr_n} steps" + ("" if n_crr is not None else " (1e-4 not reached)")

    def peers(k: str) -> dict[str, Any]:
        out = {"QuantLib": {"name": crr_label, "time": t["crr"].median,
                            "ratio": t["crr"].median / t[k].median}}
        if fin is not None:
            f = t[f"financepy {k}"].median
            out["FinancePy"] = {"name": f"{steps_of[k]} steps", "time": f,
                                "ratio": f / t[k].median}
        return out

    for k, n in rows.items():
        res = lattice(n)
        rep.rows.append(Row(key, "convpricer lattice2d (structure=None)",
                            f"steps={res.settings['steps']} ({steps_of[k]} time steps, "
                            "Richardson)", res.value, r_cp,
                            rel(res.value, r_cp), t[k], peers(k),
                            "first ladder count holding 1e-4" if k.endswith("1e-4") else
                            "default steps"))
    if n_lat is None:
        worst = worst_tail(sw["lattice2d"], 4)
        rep.rows.append(Row(key, "convpricer lattice2d (structure=None)",
                            f"steps={cfg.lattice_1f[0]}..{cfg.lattice_1f[-1]}", None, r_cp, worst,
                            None, {}, "1e-4 not held from any ladder count on: the error is the "
                            "worst of the last 4 counts"))
    ql_v = qlengine(lr_n)
    rep.rows.append(Row(key, "convpricer quantlib (QuantLib lr tree)", f"steps={lr_n | 1}", ql_v,
                        r_ql, rel(ql_v, r_ql), t["quantlib"], peers("quantlib"),
                        "QuantLib's model (blended TF discount): error vs its own limit"
                        + ("" if n_lr is not None else "; 1e-4 not reached on the ladder")))
    crr_v = crr.value(crr_n)
    rep.rows.append(Row(key, "peer QuantLib BinomialConvertibleEngine", crr_label, crr_v, r_ql,
                        rel(crr_v, r_ql), t["crr"], {}, "error vs QuantLib's own limit"))
    gaps = f"QuantLib {rel(r_ql, r_cp):+.2e}"
    if fin is not None:
        r_fp = _ref(refs, key, "financepy")["value"]
        gaps += f", FinancePy {rel(r_fp, r_cp):+.2e}"
        for k, n in steps_of.items():
            fv = fin.value(n)
            rep.rows.append(Row(key, "peer FinancePy BondConvertible", f"{n} steps", fv, r_fp,
                                rel(fv, r_fp), t[f"financepy {k}"], {},
                                f"equal steps to the {k} row; error vs FinancePy's own limit"))
    else:
        rep.notes.append(f"{key}: FinancePy not installed (pip install '.[benchmark]'): "
                         "no FinancePy rows")
    rep.notes.append(f"{key}: converged values differ by model: {gaps} relative to "
                     f"convpricer's exact TF reference {r_cp:.4f}")
    # targets
    name = f"{key}: 1e-4 at least 5x faster than QuantLib crr needs"
    if n_crr is None:
        name += f" (crr does not hold 1e-4 up to {cfg.ql_crr[-1]} steps: ratios are lower bounds)"
    def verdict(ratio: float) -> bool | None:
        """A lower bound below 5 (crr not converged on the ladder) decides nothing."""
        return True if ratio >= 5 else (False if n_crr is not None else None)

    if n_lat is not None:
        ratio = t["crr"].median / t["lattice2d 1e-4"].median
        rep.targets.append(Target(
            f"{name}, lattice2d", verdict(ratio),
            f"lattice2d {n_lat} steps {_ms(t['lattice2d 1e-4'].median)} vs {crr_label} "
            f"{_ms(t['crr'].median)}: {ratio:.1f}x"))
    else:
        rep.targets.append(Target(
            f"{name}, lattice2d", False,
            f"lattice2d does not hold 1e-4 up to {cfg.lattice_1f[-1]} steps (worst "
            f"{worst_tail(sw['lattice2d'], 4):.1e} over the last 4 counts)"))
    ratio = t["crr"].median / t["quantlib"].median
    rep.targets.append(Target(
        f"{name}, quantlib engine (lr)", verdict(ratio) if n_lr is not None else False,
        f"lr {lr_n | 1} steps {_ms(t['quantlib'].median)} vs {crr_label} "
        f"{_ms(t['crr'].median)}: {ratio:.1f}x" + ("" if n_lr is not None else
                                                  "; lr does not hold 1e-4 on the ladder")))
    if fin is not None:
        k = "lattice2d 1e-4" if n_lat is not None else "lattice2d default"
        ratio = t[f"financepy {k}"].median / t[k].median
        rep.targets.append(Target(
            f"{key}: at least 10x faster than FinancePy at equal steps", ratio >= 10,
            f"lattice2d steps={used[k]['steps']} ({steps_of[k]} time steps) {_ms(t[k].median)} vs "
            f"FinancePy {steps_of[k]} steps {_ms(t[f'financepy {k}'].median)}: {ratio:.1f}x"))


# ----- two-factor note -----------------------------------------------------------------------
def structural_zero(cfg: Config, refs: dict[str, Any], rep: Report) -> None:
    note, s, m = cases.STRUCTURAL_ZERO, cases.STRUCTURE_2F, cases.MARKET_2F
    ref = _ref(refs, "structural_zero")["value"]

    def lattice(n: int | None) -> cp.PricingResult:
        opts = {} if n is None else {"steps": n}
        return cp.price(note, m, s, engine="lattice2d", greeks=False, **opts)

    def fdm() -> cp.PricingResult:
        return cp.price(note, m, s, engine="fdm2d", greeks=False)

    sw = sweep(lambda n: lattice(n).value, cfg.lattice_2f, ref)
    rep.sweeps["structural_zero"] = {"lattice2d": [list(p) for p in sw]}
    n_tol = steps_to(sw, TOL)
    settings: dict[str, int | None] = {"default": None}
    if n_tol is not None:
        settings = {"1e-4": n_tol, **settings}
    fns: dict[str, Callable[[], Any]] = {k: (lambda n=n: lattice(n)) for k, n in settings.items()}
    fns["fdm2d"] = fdm
    t = race(fns, cfg.repeat)
    fd = fdm()
    peer = {"QuantLib": {"name": "fdm2d (QuantLib 2-D FD) defaults", "time": t["fdm2d"].median}}
    for k, n in settings.items():
        res = lattice(n)
        rep.rows.append(Row("structural_zero", "convpricer lattice2d",
                            f"steps={res.settings['steps']} "
                            f"(grid {res.settings['grid']}, {res.settings['time_steps']} time "
                            "steps)", res.value, ref, rel(res.value, ref), t[k],
                            {"QuantLib": {**peer["QuantLib"],
                                          "ratio": t["fdm2d"].median / t[k].median}},
                            "first ladder count holding 1e-4" if k == "1e-4" else
                            "default steps"))
    rep.rows.append(Row("structural_zero", "convpricer fdm2d (QuantLib Fdm2dBlackScholesOp)",
                        f"defaults (grid {fd.settings['grid_equity']}x{fd.settings['grid_btc']},"
                        f" {fd.settings['steps']} steps)", fd.value, ref, rel(fd.value, ref),
                        t["fdm2d"], {}, "FinancePy and QuantLib's convertible tree: one "
                        "factor, no BTC coverage: not comparable"))
    if n_tol is None:
        rep.targets.append(Target("two-factor note: 1e-4 in under 0.2 s", False,
                                  f"lattice2d does not hold 1e-4 up to {cfg.lattice_2f[-1]} "
                                  f"steps (worst {worst_tail(sw, 3):.1e})"))
    else:
        tt = t["1e-4"].median
        rep.targets.append(Target("two-factor note: 1e-4 in under 0.2 s", tt < 0.2,
                                  f"lattice2d steps={n_tol}: {_ms(tt)}"))


# ----- Strategy structure --------------------------------------------------------------------
def strategy(cfg: Config, refs: dict[str, Any], rep: Report) -> None:
    s, m = cases.strategy()
    claims = _ref(refs, "strategy")["claims"]
    notes = {c.name for c in s.convertibles}

    def value(n: int, greeks: bool = False) -> Any:
        # the preferreds at 6/5 of the notes' steps, as the defaults (500 and 600)
        return cp.value(s, m, engine="lattice2d", greeks=greeks, steps=n,
                        preferred_steps=round(1.2 * n))

    def worst(df, names: set[str]) -> tuple[float, str]:
        errs = {r["name"]: abs(rel(r["value"], claims[r["name"]]["value"]))
                for _, r in df.iterrows() if r["name"] in names}
        name = max(errs, key=errs.get)
        return errs[name], name

    everyone = set(claims)
    points: dict[str, list[tuple[int, float, float]]] = {"all claims": [], "notes": []}
    for n in cfg.strategy:
        df = value(n)
        for k, names in (("all claims", everyone), ("notes", notes)):
            e = worst(df, names)[0]
            points[k].append((n, e, e))
    rep.sweeps["strategy"] = {f"lattice2d worst error, {k}": [list(p) for p in v]
                              for k, v in points.items()}
    n_all, n_notes = steps_to(points["all claims"], TOL), steps_to(points["notes"], TOL)
    unc = {c: claims[c]["uncertainty"] / abs(claims[c]["value"]) for c in claims}
    ref_unc = {k: max(unc[c] for c in names)
               for k, names in (("all claims", everyone), ("notes", notes))}
    least = max(unc, key=unc.get)
    settings = {"all claims": n_all or cfg.strategy[-1]}
    if n_notes is not None and n_notes != settings["all claims"]:
        settings["notes"] = n_notes
    t = race({k: (lambda n=n: value(n)) for k, n in settings.items()},
             max(1, min(cfg.repeat, 3)))
    for k, n in settings.items():
        df = value(n)
        e_all, name_all = worst(df, everyone)
        e_notes, name_notes = worst(df, notes)
        total = float(df.loc[df["name"].isin(everyone), "total_value"].sum())
        why = ("first ladder count holding 1e-4 on every note" if k == "notes" else
               "first ladder count holding 1e-4 on every claim" if n_all is not None else
               "largest ladder count (1e-4 not held on every claim)")
        rep.rows.append(Row("strategy", "convpricer lattice2d, value(greeks=False)",
                            f"steps={n} (preferreds {round(1.2 * n)}), {len(s.claims)} claims "
                            "+ common", total, None, e_all,
                            t[k], {}, f"{why}; value = total USD of the claims; error: worst "
                            f"claim {name_all} ({e_all:.1e}), worst note {name_notes} "
                            f"({e_notes:.1e})"))
    n_main = settings["all claims"]
    tg = race({"greeks": lambda: value(n_main, greeks=True)}, 0)["greeks"]
    rep.rows.append(Row("strategy", "convpricer lattice2d, value(greeks=True)", f"steps={n_main}",
                        None, None, None, tg, {}, "one timed run (bump-and-reprice greeks: "
                        "delta, gamma, vega of both factors, correlation)"))
    unc_txt = f"; reference uncertain to {ref_unc['all claims']:.1e} ({least})" \
        if ref_unc["all claims"] > TOL / 2 else ""
    if n_all is not None:
        rep.targets.append(Target("Strategy structure to 1e-4 in under 2 s (greeks=False)",
                                  t["all claims"].median < 2 if not unc_txt else None,
                                  f"lattice2d steps={n_all}: {_ms(t['all claims'].median)}"
                                  f"{unc_txt}"))
    else:
        last = points["all claims"][-1]
        rep.targets.append(Target(
            "Strategy structure to 1e-4 in under 2 s (greeks=False)", False,
            f"lattice2d does not hold 1e-4 on every claim up to steps={cfg.strategy[-1]} "
            f"(worst claim error there {last[2]:.1e}; {_ms(t['all claims'].median)})"
            f"{unc_txt}"))
    if n_notes is not None:
        k = "notes" if "notes" in settings else "all claims"
        rep.targets.append(Target("(the six notes alone) to 1e-4 in under 2 s", None,
                                  f"lattice2d holds 1e-4 on every note from steps={n_notes}: "
                                  f"whole structure {_ms(t[k].median)}"))
    rep.targets.append(Target("Strategy structure with greeks (timed separately)", None,
                              f"steps={n_main}: {_ms(tg.median)}"))


# ----- waterfall -----------------------------------------------------------------------------
def waterfall(cfg: Config, refs: dict[str, Any], rep: Report) -> None:
    s, m = cases.strategy()
    b, eq = cases.waterfall_states(m)
    runs = {"liquidation": lambda: payouts(s, b),
            "dated": lambda: payouts(s, b, eq, date=cases.WATERFALL_DATE)}
    t = race(runs, max(cfg.repeat, 5))
    for k, f in runs.items():
        p = f()
        conservation = float(np.max(np.abs(p.payout.sum(axis=0) + p.common - p.assets)
                                    / p.assets))
        idx = np.random.default_rng(1).choice(b.size, 200, replace=False)
        one = [payouts(s, b[i], None if k == "liquidation" else eq[i],
                       date=None if k == "liquidation" else cases.WATERFALL_DATE)
               for i in idx]
        diff = max(float(np.max(np.abs(o.payout[:, 0] - p.payout[:, i])
                                / np.maximum(np.abs(p.payout[:, i]), 1.0)))
                   for o, i in zip(one, idx, strict=True))
        when = "liquidation" if k == "liquidation" else f"dated {cases.WATERFALL_DATE}"
        rep.rows.append(Row("waterfall", f"convpricer waterfall.payouts, {when}",
                            f"{b.size:,} states, {len(s.claims)} claims",
                            None, None, max(conservation, diff), t[k], {},
                            f"error: max of conservation (sum payouts + common - assets) and "
                            f"vector vs one-state calls on 200 states; defaults in "
                            f"{float(np.mean(p.default)):.1%} of states"))
        rep.targets.append(Target(f"waterfall, {when}: 10^6 states in under 0.5 s",
                                  t[k].median < 0.5, _ms(t[k].median)))


# ----- Monte Carlo ---------------------------------------------------------------------------
def monte_carlo(cfg: Config, refs: dict[str, Any], rep: Report) -> None:
    note, s, m = cases.STRUCTURAL_ZERO, cases.STRUCTURE_2F, cases.MARKET_2F
    ref = _ref(refs, "structural_zero")["value"]

    results: list[cp.PricingResult] = []

    def run() -> None:
        results.append(montecarlo.price(note, m, s, greeks=False, paths=cfg.mc_paths))

    t = race({"mc": run}, cfg.mc_repeat)["mc"]
    res = results[-1]
    paths = res.settings["paths"]
    rep.rows.append(Row("montecarlo", "convpricer montecarlo (CPU, numpy)",
                        f"{paths:,} paths, {res.settings['time_steps']} time steps", res.value,
                        ref, rel(res.value, ref), t, {},
                        f"std error {res.std_error:.3f} ({res.std_error / ref:.1e} rel.); "
                        f"error = {(res.value - ref) / res.std_error:+.1f} se; no GPU run "
                        "(no device lent)"))
    scale = 1e6 / paths
    label = "" if paths >= 1e6 else f" (measured {paths:,} paths, scaled x{scale:.1f})"
    rep.targets.append(Target("Monte Carlo: 10^6 paths of a five-year note in under 10 s (CPU)",
                              t.median * max(scale, 1.0) < 10,
                              f"{_ms(t.median * max(scale, 1.0))}{label}"))


RUNNERS: dict[str, Callable[[Config, dict[str, Any], Report], None]] = {
    "zero_put": lambda c, r, rep: one_factor("zero_put", c, r, rep),
    "coupon_softcall": lambda c, r, rep: one_factor("coupon_softcall", c, r, rep),
    "structural_zero": structural_zero,
    "strategy": strategy,
    "waterfall": waterfall,
    "montecarlo": monte_carlo,
}


# ----- profiling -----------------------------------------------------------------------------
def profile_targets(cfg: Config) -> dict[str, Callable[[], Any]]:
    """The main setting of each case, for cProfile."""
    s, m = cases.strategy()
    b, _ = cases.waterfall_states(m)
    return {
        "zero_put": lambda: cp.price(cases.ZERO_PUT, cases.MARKET_1F, None, greeks=False,
                                     steps=1280),
        "coupon_softcall": lambda: cp.price(cases.COUPON_SOFTCALL, cases.MARKET_1F, None,
                                            greeks=False, steps=1280),
        "structural_zero": lambda: cp.price(cases.STRUCTURAL_ZERO, cases.MARKET_2F,
                                            cases.STRUCTURE_2F, greeks=False, steps=95),
        "strategy": lambda: cp.value(s, m, greeks=False, steps=cfg.strategy[-1]),
        "waterfall": lambda: payouts(s, b),
        "montecarlo": lambda: montecarlo.price(cases.STRUCTURAL_ZERO, cases.MARKET_2F,
                                               cases.STRUCTURE_2F, greeks=False,
                                               paths=cfg.mc_paths),
    }


def profile(names: list[str], cfg: Config, top: int = 12) -> str:
    out = io.StringIO()
    targets = profile_targets(cfg)
    for name in names:
        pr = cProfile.Profile(time.process_time)
        t0 = time.process_time()
        pr.runcall(targets[name])
        total = time.process_time() - t0
        st = pstats.Stats(pr)
        rows = sorted(st.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
        out.write(f"\n### profile {name} ({total:.2f} s CPU under cProfile)\n\n"
                  "| function | file:line | calls | own time | share |\n|---|---|---|---|---|\n")
        for (file, line, fn), (_, ncalls, tt, _, _) in rows:
            short = file.split("site-packages/")[-1].split("/work/main/")[-1]
            out.write(f"| {fn} | {short}:{line} | {ncalls} | {tt:.3f} s | "
                      f"{tt / total:.0%} |\n")
    return out.getvalue()


# ----- output --------------------------------------------------------------------------------
def _fmt(x: float | None, spec: str) -> str:
    if x is None:
        return ""
    return f"{x:,.0f}" if abs(x) >= 1e6 else format(x, spec)


def table(rep: Report) -> str:
    lines = ["| case | engine | setting | value | reference | rel. error | CPU time (median) "
             "| vs QuantLib | x | vs FinancePy | x | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rep.rows:
        q, f = r.peer.get("QuantLib", {}), r.peer.get("FinancePy", {})
        cells = [r.case, r.engine, r.setting, _fmt(r.value, ".4f"), _fmt(r.reference, ".4f"),
                 _fmt(r.error, ".1e") if r.error is not None else "",
                 "" if r.time is None else f"{_ms(r.time.median)} (wall {_ms(r.time.wall)}, "
                                           f"n={r.time.runs})",
                 f"{q['name']}: {_ms(q['time'])}" if q else "",
                 f"{q['ratio']:.1f}" if "ratio" in q else "",
                 f"{f['name']}: {_ms(f['time'])}" if f else "",
                 f"{f['ratio']:.1f}" if "ratio" in f else "", r.note]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(rep: Report) -> str:
    mark = {True: "MET", False: "NOT MET", None: "n/a"}
    return "\n".join(f"- **{mark[t.met]}** {t.name}: {t.detail}" for t in rep.targets)


def main(argv: Sequence[str] | None = None) -> Report:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter ladders, fewer repeats")
    ap.add_argument("--cases", default=",".join(CASES), help=f"subset of {','.join(CASES)}")
    ap.add_argument("--repeat", type=int, default=None, help="timed runs per setting")
    ap.add_argument("--profile", action="store_true", help="cProfile each case's main setting")
    ap.add_argument("--references", action="store_true",
                    help="recompute benchmarks/references.json for the chosen cases and exit "
                         "(slow)")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--no-pin", action="store_true", help="do not pin to one core")
    a = ap.parse_args(argv)
    names = [c for c in a.cases.split(",") if c]
    unknown = set(names) - set(CASES)
    if unknown:
        ap.error(f"unknown case(s) {', '.join(sorted(unknown))}")
    cfg = Config.make(a.quick, a.repeat)
    mach = machine()
    print("## Machine\n")
    for k, v in mach.items():
        print(f"- {k}: {v}")
    if a.references:
        cases.compute_references([n for n in names if n not in ("waterfall", "montecarlo")]
                                 + (["structural_zero"] if "montecarlo" in names
                                    and "structural_zero" not in names else []),
                                 log=lambda s: print(s, flush=True))
        print(f"references written to {cases.REFERENCES}")
        return Report()
    refs = cases.load_references()
    rep = Report()
    for n in names:
        key = "structural_zero" if n == "montecarlo" else n
        stale = cases.stale_engines(refs, key) if key in refs.get("cases", {}) else []
        if stale:
            rep.notes.append(f"{n}: reference computed at commit "
                             f"{refs['cases'][key].get('commit')}; changed since: "
                             f"{', '.join(stale)} (python -m benchmarks.run --references "
                             f"--cases {key} if their model moved)")
    t0 = time.perf_counter()
    for n in names:
        t1 = time.perf_counter()
        RUNNERS[n](cfg, refs, rep)
        print(f"[{n}: {time.perf_counter() - t1:.0f} s]", file=sys.stderr, flush=True)
    mode = "--quick" if a.quick else "full"
    print(f"\n## Results ({mode}, tolerance {TOL:g}, {time.perf_counter() - t0:.0f} s, "
          f"load average at end {' '.join(f'{x:.1f}' for x in os.getloadavg())})\n")
    print(table(rep))
    print("\n## Targets\n")
    print(targets(rep))
    if rep.notes:
        print("\n## Notes\n")
        print("\n".join(f"- {n}" for n in rep.notes))
    if a.profile:
        print("\n## Profiles\n" + profile(names, cfg))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"machine": mach, "mode": mode, "rows": [asdict(r) for r in rep.rows],
                       "targets": [asdict(t) for t in rep.targets], "sweeps": rep.sweeps,
                       "notes": rep.notes}, fh, indent=1, default=str)
    return rep


if __name__ == "__main__":
    main()
