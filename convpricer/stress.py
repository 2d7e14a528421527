"""Stress grids: bitcoin drawdowns, mNAV collapse, volatility and correlation regimes.

``stress_scenarios`` builds the cartesian product of the stresses as the
DataFrame ``value_grid`` takes; ``stress`` values it and reports each value's
change from the base market.

What equity does when bitcoin falls is a modelling choice, made explicit by
the ``equity`` rules (one scenario per rule):

* ``"constant_mnav"`` (default): the share price moves with BTC at the base
  mNAV, S = S0 * B / B0 (mNAV = S * shares / (BTC held * B) is unchanged);
* ``"fixed"``: the share price stays at S0 (a pure BTC shock; mNAV rises);
* a number m > 0 (``mnav=[1.0]``): S = m * BTC held * B / shares, the price
  at which mNAV = m; mNAV collapse is m = 1, the market paying exactly for
  the bitcoin per share;
* ``"nav"``: S = NAV per share at B, (assets - notes at face - preferreds at
  liquidation preference) / shares (``CapitalStructure.nav_per_share``):
  equity priced at its book value net of every senior claim;
* ``"diluted_nav"``: S = what common gets per share in the liquidation
  waterfall at B (``waterfall(...).attrs["common_per_share"]``), conversions
  included.

Where a rule gives a share price <= 0 (NAV below zero in a deep drawdown) the
scenario cannot be valued and its rows say so in ``error``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from . import engines
from .errors import InputError
from .grid import value_grid
from .market import Market
from .structure import CapitalStructure
from .valuation import value

#: Equity rules by name (numbers are target mNAVs).
EQUITY_RULES = ("constant_mnav", "fixed", "nav", "diluted_nav")
DEFAULT_DRAWDOWNS = (0.0, 0.25, 0.5, 0.75)


def _numbers(name: str, values: Sequence[Any], lo: float, hi: float, *,
             lo_open: bool = False, hi_open: bool = False) -> list[float]:
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int | float | np.number) \
                or not math.isfinite(v) or (v <= lo if lo_open else v < lo) \
                or (v >= hi if hi_open else v > hi):
            lo_txt = "" if lo == -math.inf else f"{'>' if lo_open else '>='} {lo:g}"
            hi_txt = "" if hi == math.inf else f"{'<' if hi_open else '<='} {hi:g}"
            raise InputError(f"{name}[{i}]", v, "must be a number "
                             + " and ".join(t for t in (lo_txt, hi_txt) if t))
        out.append(float(v))
    if not out:
        raise InputError(name, [], "must hold at least one value")
    return out


def _rule(i: int, r: Any) -> str | float:
    if isinstance(r, str):
        if r in EQUITY_RULES:
            return r
        try:
            r = float(r)
        except ValueError:
            raise InputError(f"equity[{i}]", r, f"must be one of {', '.join(EQUITY_RULES)} "
                             "or a target mNAV > 0") from None
    return _numbers(f"equity[{i}] (target mNAV)", [r], 0.0, math.inf, lo_open=True,
                    hi_open=True)[0]


def equity_label(rule: str | float) -> str:
    return rule if isinstance(rule, str) else f"mnav={rule:g}"


def stressed_equity_price(structure: CapitalStructure, market: Market, btc_price: float,
                          rule: str | float) -> float:
    """The share price (USD) under an equity rule at a stressed BTC price (module doc)."""
    if rule == "constant_mnav":
        return market.equity_price * btc_price / market.btc_price
    if rule == "fixed":
        return market.equity_price
    if rule == "nav":
        return structure.nav_per_share(btc_price)
    if rule == "diluted_nav":
        from .waterfall import waterfall
        return float(waterfall(structure, btc_price=btc_price).attrs["common_per_share"])
    return float(rule) * structure.btc_holdings * btc_price / structure.shares_outstanding


def stress_scenarios(market: Market, structure: CapitalStructure,
                     btc_drawdowns: Sequence[float] = DEFAULT_DRAWDOWNS,
                     equity: Sequence[str | float] | None = None,
                     mnav: Sequence[float | str] | None = None,
                     btc_vols: Sequence[float] | None = None,
                     equity_vols: Sequence[float] | None = None,
                     correlations: Sequence[float] | None = None) -> pd.DataFrame:
    """The cartesian product of the stresses, as ``value_grid`` scenarios.

    ``btc_drawdowns``: fractions d < 1, B = B0 * (1 - d) (negative d: a rally).
    ``equity``: rules for the share price (module doc; default
    ``["constant_mnav"]``); ``mnav``: target mNAVs (numbers, or "nav" /
    "diluted_nav"), added after the ``equity`` rules (alone, they replace the
    default). ``btc_vols``, ``equity_vols`` (> 0) and ``correlations``
    ([-1, 1]) set flat values (replacing a curve); None keeps the base market's.

    Index: (``btc_drawdown``, ``equity`` label); columns: ``btc_price``,
    ``equity_price`` and the vol/correlation columns given. Order: drawdowns,
    then equity rules, then BTC vols, equity vols, correlations.
    """
    dds = _numbers("btc_drawdowns", list(btc_drawdowns), -math.inf, 1.0, hi_open=True)
    raw = [*(equity or ()), *(mnav or ())] or ["constant_mnav"]
    rules = list(dict.fromkeys(_rule(i, r) for i, r in enumerate(raw)))
    axes: dict[str, list[float]] = {}
    for name, vals, lo, hi, lo_open in (("btc_vol", btc_vols, 0.0, math.inf, True),
                                        ("equity_vol", equity_vols, 0.0, math.inf, True),
                                        ("correlation", correlations, -1.0, 1.0, False)):
        if vals is not None:
            axes[name] = _numbers(f"{name}s" if name != "correlation" else "correlations",
                                  list(vals), lo, hi, lo_open=lo_open)
    keys, rows = [], []
    for d, rule in itertools.product(dds, rules):
        b = market.btc_price * (1.0 - d)
        s = stressed_equity_price(structure, market, b, rule)
        for combo in itertools.product(*axes.values()):
            keys.append((d, equity_label(rule)))
            rows.append({"btc_price": b, "equity_price": s, **dict(zip(axes, combo, strict=True))})
    index = pd.MultiIndex.from_tuples(keys, names=["btc_drawdown", "equity"])
    return pd.DataFrame.from_records(rows, index=index,
                                     columns=["btc_price", "equity_price", *axes])


def stress(structure: CapitalStructure, market: Market, scenarios: pd.DataFrame | None = None,
           engine: str = engines.DEFAULT_ENGINE, *, client: Any = None,
           scheduler: str | None = None, workers: int | None = None,
           chunk_size: int | None = None, progress: bool | None = False,
           greeks: bool = False, **options: Any) -> pd.DataFrame:
    """Value ``structure`` under each stress scenario and compare with the base market.

    ``scenarios``: a DataFrame as from :func:`stress_scenarios` (default: its
    default BTC drawdowns 0, 25, 50, 75% at constant mNAV) or any
    ``value_grid`` scenarios. ``client``, ``scheduler``, ``workers``,
    ``chunk_size``, ``progress`` and ``greeks`` as for ``value_grid``; other
    keywords are the engine's options.

    Returns the ``value_grid`` result plus ``base_value`` (per unit, at
    ``market``), ``change`` (value - base_value) and ``change_pct``
    (change / |base_value|, missing where the base value is 0), before ``error``.
    The base valuation (greeks off) runs in this process, the grid where
    ``client``/``scheduler`` say.
    """
    if scenarios is None:
        scenarios = stress_scenarios(market, structure)
    out = value_grid(structure, market, scenarios, engine, client=client, scheduler=scheduler,
                     workers=workers, chunk_size=chunk_size, progress=progress, greeks=greeks,
                     **options)
    base = value(structure, market, engine, greeks=False, **options).set_index("name")["value"]
    v0 = out["name"].map(base).to_numpy(dtype=float)
    v = out["value"].to_numpy(dtype=float)
    at = out.columns.get_loc("error")
    out.insert(at, "base_value", v0)
    out.insert(at + 1, "change", v - v0)
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = np.where(v0 != 0, (v - v0) / np.abs(v0), np.nan)
    out.insert(at + 2, "change_pct", pct)
    out.attrs["base_valuation"] = "value(structure, market) with greeks=False"
    return out
