"""Waterfall: who gets what when claims fall due. (STUB: liquidation without
conversion; the waterfall issue (#4) replaces it with the full version. The
signatures below are the contract the engines call.)"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from .instruments import PreferredStock
from .structure import CapitalStructure, priority_key


@dataclass(frozen=True)
class Payouts:
    """Arrays over states (last axis). Claims in ``structure.claims`` order.

    payout[i, k]: USD paid to claim class i (all units) in state k;
    converted[i, k]: whether class i converted; shares_issued[i, k];
    common[k]: USD left to common; assets, cash_used, btc_sold, btc_left: [k].
    """

    names: tuple[str, ...]
    units: np.ndarray
    due: np.ndarray
    payout: np.ndarray
    converted: np.ndarray
    shares_issued: np.ndarray
    common: np.ndarray
    common_shares: np.ndarray
    assets: np.ndarray
    cash_used: np.ndarray
    btc_sold: np.ndarray
    btc_left: np.ndarray

    @property
    def per_unit(self) -> np.ndarray:
        return self.payout / self.units[:, None]


def payouts(structure: CapitalStructure, btc_price, equity_price=None,
            date: date | None = None) -> Payouts:
    """Vectorised waterfall kernel (liquidation if ``date`` is None)."""
    b = np.atleast_1d(np.asarray(btc_price, dtype=float))
    claims = structure.claims
    assets = structure.assets(b)
    due = np.array([c.notional + (c.arrears * c.units if isinstance(c, PreferredStock) else 0.0)
                    for c in claims])
    pay = np.zeros((len(claims), b.size))
    left = assets.copy()
    keys = [priority_key(c) for c in claims]
    i = 0
    while i < len(claims):
        j = i
        while j < len(claims) and keys[j] == keys[i]:
            j += 1
        tot = due[i:j].sum()
        paid = np.minimum(left, tot)
        pay[i:j] = due[i:j, None] * (paid / tot)[None, :]
        left = left - paid
        i = j
    n = len(claims)
    return Payouts(names=tuple(c.name for c in claims),
                   units=np.array([c.units for c in claims]), due=due, payout=pay,
                   converted=np.zeros((n, b.size), bool), shares_issued=np.zeros((n, b.size)),
                   common=left, common_shares=np.full(b.size, structure.shares_outstanding),
                   assets=assets, cash_used=np.full(b.size, structure.cash),
                   btc_sold=np.full(b.size, structure.btc_holdings), btc_left=np.zeros(b.size))


def waterfall(structure: CapitalStructure, btc_price, equity_price=None,
              date: date | None = None) -> pd.DataFrame:
    """One row per claim plus one for common (see design.md section 7)."""
    p = payouts(structure, btc_price, equity_price, date)
    rows = []
    for i, c in enumerate(structure.claims):
        rows.append({"name": c.name, "kind": c.kind, "due": p.due[i], "payout": p.payout[i, 0],
                     "payout_per_unit": p.per_unit[i, 0], "converted": bool(p.converted[i, 0]),
                     "shares_issued": p.shares_issued[i, 0]})
    name = structure.common.name if structure.common else "Common"
    rows.append({"name": name, "kind": "common_equity", "due": 0.0, "payout": p.common[0],
                 "payout_per_unit": p.common[0] / structure.shares_outstanding,
                 "converted": False, "shares_issued": 0.0})
    df = pd.DataFrame(rows)
    df.attrs.update(assets=float(p.assets[0]), cash_used=float(p.cash_used[0]),
                    btc_sold=float(p.btc_sold[0]), btc_left=float(p.btc_left[0]),
                    common_per_share=float(p.common[0] / p.common_shares[0]))
    return df
