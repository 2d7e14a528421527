"""The issuer and its capital structure."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from . import _checks as chk
from .errors import InputError
from .instruments import CommonEquity, Instrument, PreferredStock, ZeroCouponConvertible

#: Priority classes, most senior first (design.md section 4). Preferreds then
#: rank among themselves by ``rank``; common is last.
PRIORITY = ("secured", "senior_unsecured", "subordinated", "preferred", "common")


def priority_key(inst: Instrument) -> tuple[int, int]:
    """Sort key of a claim in the waterfall: (class, rank). Equal keys are pari passu."""
    if isinstance(inst, ZeroCouponConvertible):
        return PRIORITY.index(inst.seniority), 0
    if isinstance(inst, PreferredStock):
        return PRIORITY.index("preferred"), inst.rank
    return PRIORITY.index("common"), 0


@dataclass(frozen=True, kw_only=True)
class CapitalStructure:
    """The issuer's assets and claims.

    Assets are ``btc_holdings`` BTC plus ``cash`` and ``other_assets`` (USD).
    ``hazard_rate`` (per year), ``hazard_exponent`` and
    ``default_equity_loss`` (fraction) describe non-bitcoin default:
    h(S) = hazard_rate * (S / S0)^(-hazard_exponent).
    ``btc_average_cost`` (USD per BTC) is informational, used by studies.
    """

    name: str
    btc_holdings: float
    shares_outstanding: float
    instruments: tuple[Instrument, ...] = ()
    cash: float = 0.0
    other_assets: float = 0.0
    hazard_rate: float = 0.0
    hazard_exponent: float = 0.0
    default_equity_loss: float = 1.0
    btc_average_cost: float | None = None

    def __post_init__(self) -> None:
        s = object.__setattr__
        s(self, "name", chk.text("issuer.name", self.name))
        s(self, "btc_holdings", chk.non_negative("issuer.btc_holdings", self.btc_holdings))
        s(self, "shares_outstanding", chk.positive("issuer.shares_outstanding",
                                                   self.shares_outstanding))
        s(self, "cash", chk.non_negative("issuer.cash", self.cash))
        s(self, "other_assets", chk.non_negative("issuer.other_assets", self.other_assets))
        s(self, "hazard_rate", chk.non_negative("issuer.hazard_rate", self.hazard_rate))
        s(self, "hazard_exponent", chk.number("issuer.hazard_exponent", self.hazard_exponent,
                                              lo=0.0, hi=10.0))
        s(self, "default_equity_loss", chk.fraction("issuer.default_equity_loss",
                                                    self.default_equity_loss))
        if self.btc_average_cost is not None:
            s(self, "btc_average_cost", chk.positive("issuer.btc_average_cost",
                                                     self.btc_average_cost))
        insts = tuple(self.instruments)
        names: set[str] = set()
        for i, inst in enumerate(insts):
            if not isinstance(inst, ZeroCouponConvertible | PreferredStock | CommonEquity):
                raise InputError(f"instruments[{i}]", type(inst).__name__,
                                 "is not a convpricer instrument")
            if inst.name in names:
                raise InputError(f"instruments[{i}].name", inst.name, "names must be unique")
            names.add(inst.name)
            if self.hazard_rate > 0 and isinstance(inst, ZeroCouponConvertible) \
                    and inst.credit_spread > 0:
                raise InputError(f"instruments[{i}].credit_spread", inst.credit_spread,
                                 "cannot be combined with issuer.hazard_rate "
                                 "(two models of the same credit risk)")
        if sum(isinstance(x, CommonEquity) for x in insts) > 1:
            raise InputError("instruments", "common_equity", "at most one common_equity entry")
        s(self, "instruments", insts)

    def __iter__(self) -> Iterator[Instrument]:
        return iter(self.instruments)

    def __getitem__(self, name: str) -> Instrument:
        for inst in self.instruments:
            if inst.name == name:
                return inst
        raise KeyError(name)

    @property
    def claims(self) -> tuple[Instrument, ...]:
        """Notes and preferreds, most senior first (stable within a rank)."""
        return tuple(sorted((x for x in self.instruments if not isinstance(x, CommonEquity)),
                            key=priority_key))

    @property
    def convertibles(self) -> tuple[ZeroCouponConvertible, ...]:
        return tuple(x for x in self.instruments if isinstance(x, ZeroCouponConvertible))

    @property
    def preferreds(self) -> tuple[PreferredStock, ...]:
        return tuple(x for x in self.instruments if isinstance(x, PreferredStock))

    @property
    def common(self) -> CommonEquity | None:
        return next((x for x in self.instruments if isinstance(x, CommonEquity)), None)

    @property
    def debt(self) -> float:
        """Aggregate principal of all notes, USD."""
        return sum(x.notional for x in self.convertibles)

    def assets(self, btc_price: Any) -> Any:
        """Issuer assets (USD) at a BTC price (scalar or array)."""
        return self.btc_holdings * np.asarray(btc_price, dtype=float) + self.cash \
            + self.other_assets

    def nav_per_share(self, btc_price: float) -> float:
        """(assets - notes at face - preferreds at liquidation preference) / shares."""
        claims = sum(x.notional + (x.arrears * x.units if isinstance(x, PreferredStock) else 0)
                     for x in self.claims)
        return (float(self.assets(btc_price)) - claims) / self.shares_outstanding

    def mnav(self, equity_price: float, btc_price: float) -> float:
        """Market cap / (BTC held * BTC price); inf if the issuer holds no BTC."""
        btc_value = self.btc_holdings * btc_price
        if btc_value <= 0:
            return float("inf")
        return equity_price * self.shares_outstanding / btc_value

    def replace(self, **changes: Any) -> CapitalStructure:
        return replace(self, **changes)
