"""Full-revaluation risk: bump-and-reprice ladders built on ``value_grid``.

A ladder moves one risk factor through a list of bumps, holds every other
market field at its base value, and revalues the whole structure at each
point (no Taylor expansion: the ladder shows the convexity, the put floor and
the conversion kink as they are). Factors:

* ``btc_price``, ``equity_price``: relative bumps by default (-0.5 = spot halves);
* ``spot``: BTC and equity moved by the same relative bump (constant mNAV);
* ``btc_vol``, ``equity_vol``: absolute bumps in vol (0.05 = 5 vol points);
  a vol curve is shifted in parallel;
* ``correlation``: absolute bumps, clipped to [-1, 1];
* ``risk_free_rate``: absolute bumps (0.01 = 100 bp); a rate curve is
  shifted in parallel.

The result is long ("tidy") and ready to plot, one row per factor, bump and
instrument: ``ladder.pivot(index="level", columns="name", values="value")``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from . import engines
from .errors import InputError
from .grid import value_grid
from .market import Market
from .structure import CapitalStructure

#: Factors a ladder can move, with default bumps and whether they are relative.
FACTORS: dict[str, tuple[tuple[float, ...], bool]] = {
    "btc_price": ((-0.5, -0.4, -0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5), True),
    "equity_price": ((-0.5, -0.4, -0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5), True),
    "spot": ((-0.5, -0.4, -0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5), True),
    "btc_vol": ((-0.2, -0.1, -0.05, 0.0, 0.05, 0.1, 0.2), False),
    "equity_vol": ((-0.2, -0.1, -0.05, 0.0, 0.05, 0.1, 0.2), False),
    "correlation": ((-0.4, -0.2, -0.1, 0.0, 0.1, 0.2), False),
    "risk_free_rate": ((-0.02, -0.01, -0.005, 0.0, 0.005, 0.01, 0.02), False),
}
_CURVE_OF = {"risk_free_rate": "rate_curve", "btc_vol": "btc_vol_curve",
             "equity_vol": "equity_vol_curve"}


def _bumps(factor: str, bumps: Sequence[float] | None) -> list[float]:
    raw = FACTORS[factor][0] if bumps is None else bumps
    out = []
    for i, b in enumerate(raw):
        if isinstance(b, bool) or not isinstance(b, int | float | np.number) \
                or not np.isfinite(b):
            raise InputError(f"bumps[{i}]", b, "must be a finite number")
        out.append(float(b))
    if 0.0 not in out:  # the base point, against which changes are measured
        out.append(0.0)
    return sorted(set(out))


def _scenario(market: Market, factor: str, bump: float, relative: bool) -> dict[str, Any]:
    """Market fields of one ladder point (a bump that leaves the domain, e.g. a
    negative vol, is passed on as it is: ``value_grid`` reports it in ``error``)."""
    if factor == "spot":
        k = 1 + bump if relative else None
        if k is None:
            raise InputError("relative", relative, "factor 'spot' moves both prices "
                             "by the same relative bump: relative must be True")
        return {"btc_price": market.btc_price * k, "equity_price": market.equity_price * k}
    if factor == "correlation" and relative:
        raise InputError("relative", relative, "correlation bumps are absolute")
    curve_name = _CURVE_OF.get(factor)
    curve = getattr(market, curve_name) if curve_name else None
    if curve is None:
        v = getattr(market, factor)
        new = v * (1 + bump) if relative else v + bump
        if factor == "correlation":
            new = float(np.clip(new, -1.0, 1.0))
        return {factor: new}
    try:  # a curve: shifted in parallel by Market.bumped (validates the shifted curve)
        return {curve_name: getattr(market.bumped(factor, bump, relative=relative), curve_name)}
    except InputError as e:
        raise InputError(f"bumps ({factor})", bump, f"gives an invalid curve: {e}") from None


def _level(market: Market, factor: str, bump: float, relative: bool) -> float | None:
    """The factor's value at the ladder point (None for a curve)."""
    if factor == "spot":
        return market.btc_price * (1 + bump)
    base = getattr(market, factor)
    if base is None:
        return None
    new = base * (1 + bump) if relative else base + bump
    return float(np.clip(new, -1, 1)) if factor == "correlation" else new


def risk_ladders(structure: CapitalStructure, market: Market,
                 factors: Sequence[str] | Mapping[str, Sequence[float] | None] | None = None,
                 engine: str = engines.DEFAULT_ENGINE, *, relative: bool | None = None,
                 client: Any = None, progress: bool | None = False,
                 **options: Any) -> pd.DataFrame:
    """Ladders of several factors in one grid (one submission to the cluster).

    ``factors``: names (default bumps of :data:`FACTORS`) or a mapping
    ``{factor: bumps or None}``; default: all factors. ``relative`` overrides
    the factor's default (relative for prices, absolute otherwise). Other
    keywords go to :func:`~convpricer.grid.value_grid` (``scheduler``,
    ``workers``, ``chunk_size``, ``greeks``) and to the engine.

    Columns: ``factor``, ``bump``, ``relative``, ``level`` (the factor's value;
    BTC price for ``spot``; None for a curve), the scenario's market field(s),
    ``name``, ``kind``, the value columns of :func:`convpricer.value`,
    ``change`` (value minus the value at bump 0, per unit), ``pnl``
    (total_value change, USD) and ``error``.
    """
    spec = {f: None for f in FACTORS} if factors is None else (
        dict(factors) if isinstance(factors, Mapping) else {f: None for f in factors})
    rows, keys = [], []
    for f, bumps in spec.items():
        if f not in FACTORS:
            raise InputError("factor", f, f"unknown risk factor (known: {', '.join(FACTORS)})")
        rel = FACTORS[f][1] if relative is None else bool(relative)
        for b in _bumps(f, bumps):
            rows.append(_scenario(market, f, b, rel))
            keys.append((f, b, rel, _level(market, f, b, rel)))
    index = pd.MultiIndex.from_tuples(keys, names=["factor", "bump", "relative", "level"])
    scen = pd.DataFrame.from_records(rows, index=index)
    grid = value_grid(structure, market, scen, engine, client=client, progress=progress,
                      **options)
    grid = grid.drop(columns="scenario")
    base = grid[grid["bump"] == 0.0].set_index(["factor", "name"])
    key = pd.MultiIndex.from_arrays([grid["factor"], grid["name"]])
    v0 = base["value"].reindex(key).to_numpy(dtype=float)
    t0 = base["total_value"].reindex(key).to_numpy(dtype=float)
    value_at = grid.columns.get_loc("error")
    grid.insert(value_at, "change", grid["value"].to_numpy(dtype=float) - v0)
    grid.insert(value_at + 1, "pnl", grid["total_value"].to_numpy(dtype=float) - t0)
    return grid


def risk_ladder(structure: CapitalStructure, market: Market, factor: str = "btc_price",
                bumps: Sequence[float] | None = None, engine: str = engines.DEFAULT_ENGINE, *,
                relative: bool | None = None, client: Any = None,
                progress: bool | None = False, **options: Any) -> pd.DataFrame:
    """One factor's ladder: see :func:`risk_ladders` for columns and conventions.

    ``bumps`` default to the factor's :data:`FACTORS` entry; 0 is always added
    (the base point that ``change`` and ``pnl`` are measured from).
    """
    return risk_ladders(structure, market, {factor: bumps}, engine, relative=relative,
                        client=client, progress=progress, **options)
