"""Calibration: find the parameters that reproduce observed prices.

``calibrate`` solves, by bounded least squares on relative pricing errors, for
any of ``equity_vol``, ``btc_vol``, ``correlation`` (market), ``credit_spread``
(applied to every note of the structure) and ``hazard_rate`` (issuer). It
refuses an under-determined problem and raises :class:`CalibrationError`
(carrying the best fit) when the fit misses the prices by more than ``tol``.
``hazard_from_spread`` turns a quoted credit spread into the equivalent
hazard rate of a note's straight bond.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.integrate import quad
from scipy.optimize import brentq, least_squares

from .analytic import bond_floor
from .errors import ConvPricerError, InputError
from .instruments import ZeroCouponConvertible
from .market import Market
from .schedule import convertible_schedule
from .structure import CapitalStructure
from .valuation import price

#: Parameter -> (lower bound, upper bound, where it lives).
PARAMETERS: dict[str, tuple[float, float, str]] = {
    "equity_vol": (0.05, 3.0, "market"),
    "btc_vol": (0.05, 2.0, "market"),
    "correlation": (-0.99, 0.99, "market"),
    "credit_spread": (0.0, 0.5, "notes"),
    "hazard_rate": (0.0, 2.0, "issuer"),
}


class CalibrationError(ConvPricerError):
    """The prices cannot be reproduced; ``result`` holds the best fit found."""

    def __init__(self, message: str, result: CalibrationResult | None = None):
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class CalibrationResult:
    """Calibrated parameters, the fit per instrument and the calibrated inputs."""

    parameters: dict[str, float]
    fit: pd.DataFrame           # name, observed, model, error, relative_error
    market: Market
    structure: CapitalStructure
    rms_relative_error: float
    evaluations: int
    message: str

    def __str__(self) -> str:
        ps = ", ".join(f"{k} = {v:.6g}" for k, v in self.parameters.items())
        return (f"calibrated {ps}; RMS relative error {self.rms_relative_error:.3%} "
                f"after {self.evaluations} evaluations\n{self.fit.to_string(index=False)}")


def apply(params: Mapping[str, float], structure: CapitalStructure,
          market: Market) -> tuple[CapitalStructure, Market]:
    """The structure and market with calibration parameters set."""
    mk = {k: v for k, v in params.items() if PARAMETERS[k][2] == "market"}
    if mk:
        market = market.replace(**{k: float(v) for k, v in mk.items()})
    if "credit_spread" in params:
        cs = float(params["credit_spread"])
        insts = tuple(dataclasses.replace(x, credit_spread=cs)
                      if isinstance(x, ZeroCouponConvertible) else x
                      for x in structure.instruments)
        structure = structure.replace(instruments=insts)
    if "hazard_rate" in params:
        structure = structure.replace(hazard_rate=float(params["hazard_rate"]))
    return structure, market


def calibrate(structure: CapitalStructure, market: Market, observed: Mapping[str, float],
              parameters: Sequence[str] = ("equity_vol",), *, engine: str = "lattice2d",
              initial: Mapping[str, float] | Sequence[Mapping[str, float]] | None = None,
              tol: float = 0.02,
              **options: Any) -> CalibrationResult:
    """Fit ``parameters`` so that the model reproduces ``observed`` prices.

    ``observed`` maps instrument names to per-unit prices (USD per note of
    face, per preferred share). ``tol`` is the largest acceptable RMS relative
    error; a worse best fit raises CalibrationError. ``initial`` is a starting
    point, or a list of them (multi-start: parameters such as a volatility and
    a spread can trade off along a flat valley; the best fit over all starts
    is kept). Engine options (steps...) are passed through; greeks are not
    computed.
    """
    if not observed:
        raise InputError("observed", {}, "needs at least one observed price")
    for p in parameters:
        if p not in PARAMETERS:
            raise InputError("parameters", p, f"unknown (known: {', '.join(PARAMETERS)})")
    if len(parameters) > len(observed):
        raise InputError("parameters", list(parameters),
                         f"{len(parameters)} parameters cannot be identified from "
                         f"{len(observed)} price(s)")
    if "credit_spread" in parameters and "hazard_rate" in parameters:
        raise InputError("parameters", list(parameters),
                         "credit_spread and hazard_rate model the same risk: pick one")
    names = list(observed)
    obs = np.array([float(observed[n]) for n in names])
    for n, v in zip(names, obs, strict=True):
        if n not in {x.name for x in structure.claims}:
            raise InputError(f"observed[{n}]", v, "names no note or preferred of the structure")
        if not np.isfinite(v) or v <= 0:
            raise InputError(f"observed[{n}]", v, "must be a positive price")
    lo = np.array([PARAMETERS[p][0] for p in parameters])
    hi = np.array([PARAMETERS[p][1] for p in parameters])
    starts = [initial] if initial is None or isinstance(initial, Mapping) else list(initial)
    if "hazard_rate" in parameters:  # a spread and a hazard rate cannot coexist
        structure, market = apply({"credit_spread": 0.0}, structure, market)

    def model(x: np.ndarray) -> np.ndarray:
        s, m = apply(dict(zip(parameters, x, strict=True)), structure, market)
        return np.array([price(s[n], m, s, engine, greeks=False, **options).value
                         for n in names])

    sol, nfev = None, 0
    for guess in starts:
        x0 = np.clip(_start(parameters, structure, market, guess), lo + 1e-9, hi - 1e-9)
        trial = least_squares(lambda x: model(x) / obs - 1.0, x0, bounds=(lo, hi),
                              diff_step=1e-3, xtol=1e-6, ftol=1e-8, max_nfev=60)
        nfev += trial.nfev
        if sol is None or trial.cost < sol.cost:
            sol = trial
    params = dict(zip(parameters, map(float, sol.x), strict=True))
    s, m = apply(params, structure, market)
    fitted = model(sol.x)
    rel = fitted / obs - 1
    fit = pd.DataFrame({"name": names, "observed": obs, "model": fitted,
                        "error": fitted - obs, "relative_error": rel})
    rms = float(np.sqrt(np.mean(rel ** 2)))
    res = CalibrationResult(params, fit, m, s, rms, int(nfev), sol.message)
    if rms > tol:
        raise CalibrationError(f"no parameters in the allowed ranges reproduce the prices: "
                               f"best RMS relative error {rms:.2%} > tolerance {tol:.2%} "
                               f"({params})", res)
    return res


def _start(parameters: Sequence[str], structure: CapitalStructure, market: Market,
           initial: Mapping[str, float] | None) -> np.ndarray:
    initial = initial or {}
    out = []
    for p in parameters:
        if p in initial:
            out.append(float(initial[p]))
        elif p == "credit_spread":
            out.append(0.02)
        elif p == "hazard_rate":
            out.append(max(structure.hazard_rate, 0.02))
        else:
            v = getattr(market, p)
            out.append(0.5 if v is None else float(v))
    return np.array(out)


def hazard_from_spread(note: ZeroCouponConvertible, market: Market, spread: float) -> float:
    """The constant hazard rate h under which the note's straight bond (coupons and
    redemption, recovery_rate x face paid at default) is worth the same as when
    discounted at r + ``spread``."""
    if not np.isfinite(spread) or spread < 0:
        raise InputError("spread", spread, "must be a finite number >= 0")
    target = bond_floor(note, market, spread=spread)
    sch = convertible_schedule(note, market.valuation_date)
    rec = note.recovery_rate * note.face

    def value(h: float) -> float:
        ct = sch.coupon_times
        pv = float(np.sum(sch.coupon_amounts * market.discount(ct) * np.exp(-h * ct))) \
            if ct.size else 0.0
        pv += sch.redemption * float(market.discount(sch.maturity)) * np.exp(-h * sch.maturity)
        if h > 0 and rec > 0:
            pv += rec * quad(lambda t: h * np.exp(-h * t) * float(market.discount(t)),
                             0.0, sch.maturity, limit=200)[0]
        return pv - target

    if value(0.0) <= 0:
        return 0.0
    if value(10.0) > 0:
        raise CalibrationError(f"spread {spread}: no hazard rate below 10/yr matches it "
                               f"with recovery {note.recovery_rate}")
    return float(brentq(value, 0.0, 10.0, xtol=1e-12))
