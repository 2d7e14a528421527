"""``price`` one instrument and ``value`` a whole structure."""

from __future__ import annotations

from typing import Any

import pandas as pd

from . import engines
from .errors import EngineError, InputError
from .instruments import CommonEquity, Instrument
from .market import Market
from .results import COLUMNS, PricingResult
from .structure import CapitalStructure


def price(instrument: Instrument, market: Market, structure: CapitalStructure | None = None,
          engine: str = engines.DEFAULT_ENGINE, *, greeks: bool = True,
          **options: Any) -> PricingResult:
    """Value one note or preferred share.

    ``structure`` supplies the issuer (BTC held, cash, other claims, hazard
    rate) for structural credit; without it the issuer's coverage is
    unlimited and only the note's own credit_spread applies. Options are the
    engine's (``steps``, ``tree``, ``paths``, ``seed``...); unknown ones are refused.
    """
    if isinstance(instrument, CommonEquity):
        if structure is None:
            raise InputError("structure", None, "is required to value common equity")
        return common_result(structure, market, [], engine)
    if structure is not None and instrument not in structure.instruments:
        raise InputError("instrument", instrument.name, "is not part of the given structure")
    mod = engines.get(engine)
    if instrument.kind not in mod.KINDS:
        raise EngineError(f"engine {engine} does not value {instrument.kind} "
                          f"({instrument.name}); use one of the two-factor engines")
    return mod.price(instrument, market, structure, greeks=greeks, **options)


def common_result(structure: CapitalStructure, market: Market,
                  claims: list[PricingResult], engine: str) -> PricingResult:
    """The common share: market price, NAVs, mNAV, BTC per share and, when every
    claim was valued with a BTC delta, the model residual value and its BTC delta."""
    from .waterfall import waterfall

    common = structure.common or CommonEquity(name="Common")
    shares = structure.shares_outstanding
    liq = waterfall(structure, btc_price=market.btc_price)
    diluted = float(liq.attrs["common_per_share"])
    extras: dict[str, Any] = {
        "value_per_share": market.equity_price,
        "nav_per_share": structure.nav_per_share(market.btc_price),
        "diluted_nav_per_share": diluted,
        "mnav": structure.mnav(market.equity_price, market.btc_price),
        "btc_per_share": structure.btc_holdings / shares,
    }
    notes = ["value is the market price; NAVs value claims at face (liquidation waterfall)"]
    delta = None
    if claims and all(c.delta_btc is not None for c in claims):
        assets = float(structure.assets(market.btc_price))
        extras["model_value_per_share"] = (assets - sum(c.total_value for c in claims)) / shares
        delta = (structure.btc_holdings - sum(c.delta_btc * c.units for c in claims)) / shares
    elif claims:
        notes.append(f"model residual value needs BTC deltas, which engine {engine} "
                     "does not give")
    return PricingResult(name=common.name, kind=common.kind, engine="structure", value=market.
                         equity_price, units=shares, delta_btc=delta, delta_equity=1.0,
                         extras=extras, notes=tuple(notes))


def value(structure: CapitalStructure, market: Market, engine: str = engines.DEFAULT_ENGINE,
          *, greeks: bool = True, **options: Any) -> pd.DataFrame:
    """Value every instrument of ``structure``: one row per instrument.

    Columns: ``COLUMNS`` (name, kind, engine, value, units, total_value, ...),
    then instrument-specific extras. An instrument kind the chosen engine does
    not value is valued by the default engine, and its ``engine`` column says so.
    ``df.attrs`` holds the valuation date and each engine's settings.
    """
    mod = engines.get(engine)
    results: list[PricingResult] = []
    for inst in structure.claims:
        if inst.kind in mod.KINDS:
            results.append(mod.price(inst, market, structure, greeks=greeks, **options))
        else:
            fb = engines.get(engines.DEFAULT_ENGINE)
            r = fb.price(inst, market, structure, greeks=greeks)
            results.append(r.with_(notes=(*r.notes, f"{engine} does not value {inst.kind}; "
                                          f"valued by {engines.DEFAULT_ENGINE}")))
    order = {x.name: i for i, x in enumerate(structure.instruments)}
    rows = list(results)
    if structure.common is not None:
        rows.append(common_result(structure, market, results, engine))
    rows.sort(key=lambda r: order.get(r.name, len(order)))
    df = pd.DataFrame([r.row() for r in rows])
    df["total_value"] = [r.total_value for r in rows]
    df["premium"] = [r.premium for r in rows]
    cols = [c for c in COLUMNS if c in df.columns] + [c for c in df.columns if c not in COLUMNS]
    df = df[cols]
    df.attrs["valuation_date"] = market.valuation_date.isoformat()
    df.attrs["engine"] = engine
    df.attrs["settings"] = {r.name: r.settings for r in rows}
    return df
