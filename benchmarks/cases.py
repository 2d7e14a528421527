"""The benchmark cases of issue #7 and their converged references.

Cases (term sheets below):

* ``zero_put``: a 5-year zero-coupon convertible (conversion price 150, S 100,
  vol 40%, r 4%, credit spread 3%, American conversion) with a holder put at
  par after 3 years; one factor (no capital structure).
* ``coupon_softcall``: the same with a 0.625% semi-annual coupon and a 130%
  soft call (single-day trigger: the rule all three libraries can represent)
  from the put date on.
* ``structural_zero``: a 5-year zero-coupon note, conversion at maturity, in a
  capital structure whose BTC (100,000 BTC at 96,000, USD 50m cash) covers its
  USD 2bn face; default when assets fall short at maturity (about 20% of
  paths): a two-factor (BTC, equity) valuation with structural credit.
* ``strategy``: the whole Strategy structure at 2025-06-30
  (fixtures/strategy_2025-06-30.toml: six notes, three preferreds, common).
* ``waterfall``: the Strategy waterfall over 10^6 BTC prices.
* ``montecarlo``: ``structural_zero`` by Monte Carlo with 2^20 paths.

References (``benchmarks/references.json``, recomputed by
``python -m benchmarks.run --references``) are the converged value of each
model: convpricer's exact Tsiveriotis-Fernandes model (semi-closed forms where
they exist, else the finest lattice cross-checked by fdm2d), QuantLib's model
(LR tree at 32001 steps) and FinancePy's (its tree at 8000 steps). Each engine's
error is measured against the reference of its own model; the gaps between
models are reported separately.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy import integrate, optimize
from scipy.stats import norm

import convpricer as cp
from convpricer.credit import Credit
from convpricer.instruments import ConvertibleNote, ZeroCouponConvertible
from convpricer.market import Market
from convpricer.schedule import convertible_schedule
from convpricer.structure import CapitalStructure

ROOT = Path(__file__).resolve().parent.parent
REFERENCES = Path(__file__).resolve().parent / "references.json"
STRATEGY_FILE = ROOT / "fixtures" / "strategy_2025-06-30.toml"
#: Files whose change can move each case's references (cross-checks aside): the
#: semi-closed forms depend on no engine, the lattice-based ones on the lattice.
_CORE = ("convpricer/schedule.py", "convpricer/decisions.py", "convpricer/credit.py",
         "convpricer/waterfall.py")
DEPENDS = {
    "zero_put": ("convpricer/engines/quantlib_engine.py", "convpricer/schedule.py"),
    "coupon_softcall": ("convpricer/engines/lattice2d.py",
                        "convpricer/engines/quantlib_engine.py", *_CORE),
    "structural_zero": ("convpricer/waterfall.py",),
    "strategy": ("convpricer/engines/lattice2d.py", *_CORE),
}

# ----- one-factor notes ------------------------------------------------------------------
VALUATION = date(2025, 2, 21)
MARKET_1F = Market(valuation_date=VALUATION, btc_price=96000.0, equity_price=100.0,
                   btc_vol=0.5, equity_vol=0.4, correlation=0.5, risk_free_rate=0.04)
_TERMS = dict(face=1000.0, notional=1e9, issue_date=VALUATION, maturity=date(2030, 2, 21),
              conversion_ratio=1000 / 150, credit_spread=0.03)
PUT_DATE = date(2028, 2, 22)
ZERO_PUT = ZeroCouponConvertible(name="5y zero, put", put_dates=(PUT_DATE,), **_TERMS)
COUPON_SOFTCALL = ConvertibleNote(name="5y 0.625% note, put, soft call", coupon_rate=0.00625,
                                  put_dates=(PUT_DATE,), call_start=date(2028, 3, 1),
                                  call_trigger=1.3, **_TERMS)
ONE_FACTOR = {"zero_put": ZERO_PUT, "coupon_softcall": COUPON_SOFTCALL}

# ----- two-factor note with structural credit ----------------------------------------------
MARKET_2F = Market(valuation_date=VALUATION, btc_price=96000.0, equity_price=300.0,
                   btc_vol=0.55, equity_vol=0.85, correlation=0.7, risk_free_rate=0.043)
STRUCTURAL_ZERO = ZeroCouponConvertible(
    name="5y zero, structural credit", face=1000.0, notional=2e9, issue_date=VALUATION,
    maturity=date(2030, 2, 21), conversion_ratio=2.3072, conversion="european")
STRUCTURE_2F = CapitalStructure(name="BTC treasury (benchmark)", btc_holdings=100_000.0,
                                cash=50e6, shares_outstanding=50e6,
                                instruments=(STRUCTURAL_ZERO,))

#: Monte Carlo: 2^20 paths (the engine rounds to whole blocks of 2048).
MC_PATHS = 1 << 20
#: Waterfall: states and the dated case (a put date of the 2029 notes).
WATERFALL_STATES = 1_000_000
WATERFALL_DATE = date(2028, 6, 1)


def strategy() -> tuple[CapitalStructure, Market]:
    return cp.load(STRATEGY_FILE)


def waterfall_states(market: Market, n: int = WATERFALL_STATES, seed: int = 7
                     ) -> tuple[np.ndarray, np.ndarray]:
    """n joint (BTC, equity) prices: one-year lognormal scenarios around the market,
    wide enough that every branch of the waterfall (default, conversion, cash) occurs."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((2, n))
    rho = market.correlation
    zb, zs = 1.6 * z[0], 1.6 * (rho * z[0] + math.sqrt(1 - rho * rho) * z[1])
    return (market.btc_price * np.exp(market.btc_vol * zb),
            market.equity_price * np.exp(market.equity_vol * zs))


# ----- semi-closed forms --------------------------------------------------------------------
def _quad(f: Callable[[float], float], lo: float, hi: float) -> float:
    return integrate.quad(f, lo, hi, epsabs=1e-13, epsrel=1e-13, limit=400)[0]


def zero_put_reference(note: ZeroCouponConvertible, market: Market) -> float:
    """Exact Tsiveriotis-Fernandes value (USD per note) of a zero-coupon note with
    one holder put and conversion at maturity, flat market.

    At the put time t_p the note is a European TF convertible: share part
    E(S) = n S e^{-q tau} N(d1), cash part D(S) = F e^{-(r+cs) tau} N(-d2); the
    holder puts where E + D < P. Back to 0: E discounted at r, D and the put
    at r + cs, integrated over the lognormal S(t_p) by adaptive quadrature
    on each side of the put boundary.
    """
    sch = convertible_schedule(note, market.valuation_date)
    (tp,) = sch.put_times
    big_t = sch.maturity
    tau = big_t - tp
    r = market.flat_rate(big_t)
    q = market.equity_carry
    vol = market.vol("equity", big_t)
    cs, n, f, p = note.credit_spread, note.conversion_ratio, note.face, sch.put_price
    k = f / n

    def parts(s: float) -> tuple[float, float]:
        sd = vol * math.sqrt(tau)
        d1 = (math.log(s / k) + (r - q + 0.5 * vol * vol) * tau) / sd
        return (n * s * math.exp(-q * tau) * norm.cdf(d1),
                f * math.exp(-(r + cs) * tau) * norm.cdf(-(d1 - sd)))

    def spot(z: float) -> float:
        return market.equity_price * math.exp((r - q - 0.5 * vol * vol) * tp
                                              + vol * math.sqrt(tp) * z)

    z_put = optimize.brentq(lambda z: sum(parts(spot(z))) - p, -12.0, 12.0, xtol=1e-14)
    eq = _quad(lambda z: parts(spot(z))[0] * norm.pdf(z), z_put, 12.0)
    de = _quad(lambda z: parts(spot(z))[1] * norm.pdf(z), z_put, 12.0)
    return math.exp(-r * tp) * eq + math.exp(-(r + cs) * tp) * (de + p * norm.cdf(z_put))


def structural_zero_reference(note: ZeroCouponConvertible, structure: CapitalStructure,
                              market: Market) -> float:
    """Exact value (USD per note) of a zero-coupon note converting only at maturity,
    no spread, whose issuer is liquidated at maturity when its assets
    (btc_holdings x B + cash + other) fall below the notes' face: then the note
    gets its liquidation payout (convpricer.waterfall), else max(n S, F).

    Conditional on ln B(T), ln S(T) is normal, so E[max(n S, F) | B] is
    Black-Scholes; the remaining integral over B is done by quadrature on each
    side of the default boundary. Flat market, no carry.
    """
    if note.credit_spread or note.conversion != "european" or note.put_dates or \
            note.is_callable:
        raise ValueError("structural_zero_reference: European zero without spread, put, call")
    big_t = market.time(note.maturity)
    r = market.flat_rate(big_t)
    vb, vs, rho = market.vol("btc", big_t), market.vol("equity", big_t), market.correlation
    sq = math.sqrt(big_t)
    credit = Credit(structure, market)
    b_star = (structure.debt - structure.cash - structure.other_assets) / structure.btc_holdings

    def btc(z: float) -> float:
        return market.btc_price * math.exp((r - market.carry("btc") - 0.5 * vb * vb) * big_t
                                           + vb * sq * z)

    def solvent(z: float) -> float:
        mean = math.log(market.equity_price) + (r - market.equity_carry - 0.5 * vs * vs) \
            * big_t + vs * sq * rho * z
        var = vs * vs * big_t * (1 - rho * rho)
        fwd = math.exp(mean + 0.5 * var)
        k = note.face / note.conversion_ratio
        sd = math.sqrt(var)
        d1 = (math.log(fwd / k) + 0.5 * var) / sd
        return note.face + note.conversion_ratio * (fwd * norm.cdf(d1) - k * norm.cdf(d1 - sd))

    def liquidation(z: float) -> float:
        return float(credit.liquidation_value(note, np.array([btc(z)]))[0])

    z_star = (math.log(b_star / market.btc_price)
              - (r - market.carry("btc") - 0.5 * vb * vb) * big_t) / (vb * sq)
    # the default test is the waterfall's own: check the boundary agrees with it
    assert credit.insolvent(np.array([btc(z_star - 1e-6)]))[0]
    assert not credit.insolvent(np.array([btc(z_star + 1e-6)]))[0]
    lo = _quad(lambda z: liquidation(z) * norm.pdf(z), -12.0, z_star)
    hi = _quad(lambda z: solvent(z) * norm.pdf(z), z_star, 12.0)
    return math.exp(-r * big_t) * (lo + hi)


# ----- references: computing and caching ----------------------------------------------------
def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def engine_hashes(case: str) -> dict[str, str]:
    """sha256 (12 hex digits) of the files whose change can move ``case``'s reference."""
    return {f: hashlib.sha256((ROOT / f).read_bytes()).hexdigest()[:12]
            for f in DEPENDS.get(case, ()) if (ROOT / f).exists()}


def load_references() -> dict[str, Any]:
    if not REFERENCES.exists():
        return {}
    return json.loads(REFERENCES.read_text())


def stale_engines(refs: dict[str, Any], case: str) -> list[str]:
    """Engine files changed since the reference of ``case`` was computed."""
    now = engine_hashes(case)
    then = refs.get("cases", {}).get(case, {}).get("engine_files", {})
    return sorted(f for f in now if then.get(f) != now[f])


def _price(inst, market, structure, engine: str, **opts) -> float:
    return cp.price(inst, market, structure, engine=engine, greeks=False, **opts).value


def _band(values: dict[str, float]) -> dict[str, Any]:
    """Reference from the finest few settings: their median, half their range."""
    v = np.array(list(values.values()))
    return {"value": float(np.median(v)), "uncertainty": float(np.ptp(v) / 2),
            "ladder": values}


def _timed(log: Callable[[str], None], label: str, fn: Callable[[], Any]) -> Any:
    t0 = time.perf_counter()
    out = fn()
    log(f"  {label}: {out if not isinstance(out, dict) else out.get('value')} "
        f"({time.perf_counter() - t0:.1f} s)")
    return out


def reference_one_factor(key: str, log: Callable[[str], None]) -> dict[str, Any]:
    """References of a one-factor case: convpricer's model, QuantLib's, FinancePy's."""
    from .peers import FinancePyTree, QuantLibTree

    note, m = ONE_FACTOR[key], MARKET_1F
    out: dict[str, Any] = {}
    lat = {f"lattice2d steps={n}": _timed(log, f"lattice2d {n}",
                                          lambda n=n: _price(note, m, None, "lattice2d",
                                                             steps=n))
           for n in (3200, 4525, 6400, 9051, 12800)}
    fdm = {f"fdm2d grid_equity={g} steps={s}": _timed(
        log, f"fdm2d {g}x{s}", lambda g=g, s=s: _price(note, m, None, "fdm2d", grid_equity=g,
                                                       steps=s))
        for g, s in ((800, 1000), (1600, 2000))}
    if key == "zero_put":
        exact = _timed(log, "semi-closed form", lambda: zero_put_reference(note, m))
        eu = ZeroCouponConvertible(**{**_fields(note), "conversion": "european"})
        early = {n: _price(note, m, None, "lattice2d", steps=n, extrapolate=False)
                 - _price(eu, m, None, "lattice2d", steps=n, extrapolate=False)
                 for n in (800, 3200)}
        zero_cs = ZeroCouponConvertible(**{**_fields(note), "credit_spread": 0.0})
        out["check_at_zero_spread"] = {
            "why": "at credit_spread 0 QuantLib's model is exact TF: the semi-closed form "
                   "must equal QuantLib's converged tree",
            "semi_closed_form": zero_put_reference(zero_cs, m),
            "quantlib_lr_16001": QuantLibTree(zero_cs, m, "lr").value(16001)}
        out["convpricer"] = {
            "value": exact, "uncertainty": max(abs(v) for v in early.values()),
            "method": "semi-closed form (analytic TF European from the put date, quadrature "
                      "over S at the put date); American = European + put checked on the "
                      "lattice (early-conversion premium = uncertainty)",
            "american_minus_european_lattice": {str(k): v for k, v in early.items()},
            "cross_checks": {**lat, **fdm}}
    else:
        band = _band(dict(list(lat.items())[-3:]))
        out["convpricer"] = {
            **band, "method": "lattice2d (Richardson) at the three finest step counts: median,"
                              " uncertainty = half their range; fdm2d as a cross-check "
                              "(its soft call is monitored on its own time steps)",
            "cross_checks": {**lat, **fdm}}
    ql_lr = QuantLibTree(note, m, "lr")
    qv = {f"lr steps={n}": _timed(log, f"QuantLib lr {n}", lambda n=n: ql_lr.value(n))
          for n in (16001, 32001)}
    out["quantlib"] = {"value": qv["lr steps=32001"],
                       "uncertainty": abs(qv["lr steps=32001"] - qv["lr steps=16001"]),
                       "method": "QuantLib BinomialConvertibleEngine, LR tree, 32001 steps "
                                 "(uncertainty: difference to 16001)", "ladder": qv}
    fp = FinancePyTree(note, m)
    fv = {f"steps={n}": _timed(log, f"FinancePy {n}", lambda n=n: fp.value(n))
          for n in (4000, 8000)}
    out["financepy"] = {"value": fv["steps=8000"],
                        "uncertainty": abs(fv["steps=8000"] - fv["steps=4000"]),
                        "method": "FinancePy BondConvertible at 8000 tree steps (uncertainty:"
                                  " difference to 4000; memory grows as steps^2)",
                        "ladder": fv}
    return out


def reference_structural(log: Callable[[str], None]) -> dict[str, Any]:
    note, s, m = STRUCTURAL_ZERO, STRUCTURE_2F, MARKET_2F
    exact = _timed(log, "semi-closed form", lambda: structural_zero_reference(note, s, m))
    lat = {f"lattice2d steps={n}": _timed(log, f"lattice2d {n}",
                                          lambda n=n: _price(note, m, s, "lattice2d", steps=n))
           for n in (200, 400)}
    fdm = {"fdm2d default": _timed(log, "fdm2d default", lambda: _price(note, m, s, "fdm2d"))}
    return {"convpricer": {"value": exact, "uncertainty": 0.0,
                           "method": "semi-closed form: Black-Scholes for max(n S, F) given "
                                     "B(T), quadrature over B(T) on each side of the "
                                     "default boundary; liquidation payout from "
                                     "convpricer.waterfall",
                           "cross_checks": {**lat, **fdm}}}


def reference_strategy(log: Callable[[str], None], steps: tuple[int, ...] = (800, 1600)
                       ) -> dict[str, Any]:
    s, m = strategy()
    claims: dict[str, Any] = {}
    for inst in s.claims:
        vals = {f"lattice2d steps={n}": _timed(log, f"{inst.name} lattice2d {n}",
                                               lambda i=inst, n=n: _price(i, m, s, "lattice2d",
                                                                          steps=n))
                for n in steps}
        fd = _timed(log, f"{inst.name} fdm2d default",
                    lambda i=inst: _price(i, m, s, "fdm2d"))
        v = list(vals.values())
        claims[inst.name] = {"value": v[-1], "uncertainty": abs(v[-1] - v[-2]),
                             "ladder": vals, "fdm2d_default": fd}
    return {"convpricer": {"claims": claims,
                           "method": f"lattice2d (Richardson) at steps={steps[-1]}; "
                                     f"uncertainty = difference to steps={steps[-2]}; fdm2d "
                                     "at its defaults as a cross-check"}}


def compute_references(cases: list[str], log: Callable[[str], None] = print) -> dict[str, Any]:
    """Recompute the references of ``cases`` and merge them into references.json."""
    refs = load_references()
    refs.setdefault("cases", {})
    # engine modules are imported once, on first use: hash the files that will be used
    hashes = {key: engine_hashes(key) for key in cases}
    builders: dict[str, Callable[[], dict[str, Any]]] = {
        "zero_put": lambda: reference_one_factor("zero_put", log),
        "coupon_softcall": lambda: reference_one_factor("coupon_softcall", log),
        "structural_zero": lambda: reference_structural(log),
        "strategy": lambda: reference_strategy(log),
    }
    for key in cases:
        if key not in builders:
            continue
        log(f"reference {key}")
        t0 = time.perf_counter()
        refs["cases"][key] = {**builders[key](),
                              "computed": datetime.now(UTC).isoformat(
                                  timespec="seconds"),
                              "seconds": round(time.perf_counter() - t0, 1),
                              "commit": _git("rev-parse", "--short", "HEAD"),
                              "engine_files": hashes[key]}
    refs.pop("commit", None)
    refs.pop("engine_files", None)
    refs["command"] = "python -m benchmarks.run --references [--cases ...]"
    REFERENCES.write_text(json.dumps(refs, indent=1, sort_keys=True) + "\n")
    return refs


def _fields(note: ZeroCouponConvertible) -> dict[str, Any]:
    import dataclasses

    return {f.name: getattr(note, f.name) for f in dataclasses.fields(note)}
