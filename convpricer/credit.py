"""Credit in the two-factor engines: default from bitcoin coverage at due dates,
and the optional issuer hazard rate with a jump of the equity at default.

Rules (docs/sections/credit.md gives the reasons):

* Structural default is tested at every *due date* of the structure: each
  note's coupon dates, put dates and maturity. The issuer is in default there
  when its assets (BTC held x BTC price + cash + other assets) are below the
  face of all its notes (balance-sheet insolvency; cross-acceleration makes
  every note due at once). A default liquidates the issuer: each claim receives
  its payout from the liquidation waterfall (per unit), at once.
* The capital structure is static for these tests: a note repaid at an earlier
  solvent due date is assumed refinanced at the same seniority. This keeps the
  lattice recombining; Monte Carlo's ``funding="btc_sales"`` tracks BTC sold
  path by path instead.
* A preferred dividend is paid on its date only out of surplus: if assets
  after paying it still cover the notes and every preferred ranking senior.
  Otherwise it accrues as arrears (cumulative) or is lost (non-cumulative).
* Hazard: h(S) = hazard_rate * (S / S0)^(-hazard_exponent), capped at
  ``HAZARD_CAP``; at such a default the equity loses ``default_equity_loss``
  of its price and a claim receives ``recovery_rate`` x face (liquidation
  preference for a preferred), or converts the post-default shares if that is
  worth more and conversion is allowed. Before default the equity drifts at
  r - q + h(S) x loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .instruments import Instrument, PreferredStock, ZeroCouponConvertible
from .market import Market
from .schedule import convertible_schedule, on_times
from .structure import CapitalStructure, priority_key

#: Upper bound on the hazard rate (per year) where h(S) explodes as S -> 0.
HAZARD_CAP = 25.0


@dataclass(frozen=True)
class Credit:
    """The credit model of one valuation. ``structure=None``: unlimited coverage."""

    structure: CapitalStructure | None
    market: Market

    # ----- structural (BTC coverage) ------------------------------------------
    @cached_property
    def due_times(self) -> np.ndarray:
        """Times (years) at which structural default is tested."""
        if self.structure is None:
            return np.empty(0)
        ts: list[float] = []
        for note in self.structure.convertibles:
            s = convertible_schedule(note, self.market.valuation_date)
            ts += [s.maturity, *s.coupon_times, *s.put_times]
        ts = [t for t in ts if t > 0]
        return np.unique(np.round(np.array(ts), 12)) if ts else np.empty(0)

    @property
    def structural(self) -> bool:
        return self.structure is not None and bool(self.structure.convertibles)

    def is_due(self, t: float | np.ndarray) -> bool | np.ndarray:
        """Whether time(s) t are due dates (structural default tested)."""
        return on_times(t, self.due_times, 1e-9)

    def insolvent(self, btc_price: np.ndarray) -> np.ndarray:
        """Where assets fall short of the notes' face (bool, same shape as btc_price):
        the liquidation waterfall's default test."""
        from .waterfall import insolvent

        b = np.asarray(btc_price, dtype=float)
        if not self.structural:
            return np.zeros(b.shape, dtype=bool)
        return insolvent(self.structure, b)

    def liquidation_value(self, instrument: Instrument, btc_price: np.ndarray) -> np.ndarray:
        """Per-unit payout of ``instrument`` if the issuer is liquidated at these BTC prices."""
        from .waterfall import payouts

        b = np.asarray(btc_price, dtype=float)
        p = payouts(self.structure, b.ravel())
        i = p.names.index(instrument.name)
        return p.per_unit[i].reshape(b.shape)

    def dividend_paid(self, pref: PreferredStock, btc_price: np.ndarray) -> np.ndarray:
        """Whether a dividend of ``pref`` can be paid out of surplus at these BTC prices."""
        b = np.asarray(btc_price, dtype=float)
        if self.structure is None:
            return np.ones(b.shape, dtype=bool)
        key = priority_key(pref)
        senior = sum(c.notional + (c.arrears * c.units if isinstance(c, PreferredStock) else 0)
                     for c in self.structure.claims if priority_key(c) < key)
        return self.structure.assets(b) - pref.dividend * pref.units >= senior

    # ----- hazard rate ------------------------------------------------------------
    @property
    def hazard_rate(self) -> float:
        return 0.0 if self.structure is None else self.structure.hazard_rate

    @property
    def has_hazard(self) -> bool:
        return self.hazard_rate > 0

    @property
    def equity_loss(self) -> float:
        return 1.0 if self.structure is None else self.structure.default_equity_loss

    @property
    def equity_drift(self) -> float:
        """h(S0) x equity loss: the extra drift of ln S per year that compensates the
        hazard at today's stock price (the engines' deterministic part of it)."""
        return float(self.hazard(np.array(self.market.equity_price))) * self.equity_loss

    def hazard(self, equity_price: np.ndarray) -> np.ndarray:
        """Default intensity h(S) per year, capped at HAZARD_CAP."""
        s = np.asarray(equity_price, dtype=float)
        if not self.has_hazard:
            return np.zeros(s.shape)
        p = self.structure.hazard_exponent
        if p == 0:
            return np.full(s.shape, min(self.hazard_rate, HAZARD_CAP))
        with np.errstate(divide="ignore", over="ignore"):
            h = self.hazard_rate * (np.maximum(s, 1e-300) / self.market.equity_price) ** (-p)
        return np.minimum(h, HAZARD_CAP)

    def default_payoff(self, instrument: Instrument, equity_price: np.ndarray,
                       can_convert: bool) -> np.ndarray:
        """Per-unit value received at a hazard default: recovery x face, or the
        post-default shares if conversion is allowed and worth more."""
        s = np.asarray(equity_price, dtype=float)
        face = instrument.face
        rec = np.full(s.shape, instrument.recovery_rate * face)
        if can_convert and instrument.conversion_ratio > 0:
            rec = np.maximum(rec, instrument.conversion_ratio * s * (1 - self.equity_loss))
        return rec

    def describe(self) -> dict:
        """What the result's settings record about credit."""
        return {"structural_default": self.structural,
                "due_dates": int(self.due_times.size),
                "hazard_rate": self.hazard_rate,
                "hazard_exponent": 0.0 if self.structure is None
                else self.structure.hazard_exponent,
                "default_equity_loss": self.equity_loss}


def credit_spread(instrument: Instrument) -> float:
    """The Tsiveriotis-Fernandes spread of a claim (notes only; 0 otherwise)."""
    return instrument.credit_spread if isinstance(instrument, ZeroCouponConvertible) else 0.0
