"""The result object every engine returns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

#: Columns of ``value()`` and of the JSON ``instruments`` rows, in order.
COLUMNS = ("name", "kind", "engine", "value", "units", "total_value", "bond_floor", "parity",
           "premium", "delta_btc", "delta_equity", "gamma_btc", "gamma_equity", "vega_btc",
           "vega_equity", "correlation_sensitivity", "p_convert", "p_impaired", "p_default",
           "std_error")


@dataclass(frozen=True, kw_only=True)
class PricingResult:
    """Value of one instrument under one engine.

    ``value`` is per unit (per note of face, per preferred share, per common
    share), USD; ``total_value = value * units``. Greeks are per unit:
    ``delta_*`` in USD per USD of the factor's price, ``gamma_*`` per USD^2,
    ``vega_*`` in USD per 1.00 of volatility (divide by 100 for per vol
    point), ``correlation_sensitivity`` in USD per 1.00 of correlation.
    ``premium`` is value / parity - 1. Probabilities are risk-neutral.
    A field an engine does not compute is ``None`` (JSON null), never NaN.
    ``settings`` records what produced the number (engine, steps, tree, paths,
    seed, horizon...); ``notes`` says what the engine simplified.
    """

    name: str
    kind: str
    engine: str
    value: float
    units: float
    bond_floor: float | None = None
    parity: float | None = None
    delta_btc: float | None = None
    delta_equity: float | None = None
    gamma_btc: float | None = None
    gamma_equity: float | None = None
    vega_btc: float | None = None
    vega_equity: float | None = None
    correlation_sensitivity: float | None = None
    p_convert: float | None = None
    p_impaired: float | None = None
    p_default: float | None = None
    std_error: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for f in fields(self):
            k, v = f.name, getattr(self, f.name)
            if isinstance(v, float) and not math.isfinite(v):
                raise ArithmeticError(f"{self.engine} produced a non-finite {k} ({v}) "
                                      f"for {self.name}: refusing to report it")

    @property
    def total_value(self) -> float:
        return self.value * self.units

    @property
    def premium(self) -> float | None:
        """Premium to parity (value / parity - 1); None when parity is zero or absent."""
        if not self.parity:
            return None
        return self.value / self.parity - 1.0

    def with_(self, **changes: Any) -> PricingResult:
        return replace(self, **changes)

    def row(self) -> dict[str, Any]:
        """A flat dict: the COLUMNS, then extras, then settings as ``engine.*``."""
        out = {c: getattr(self, c) for c in COLUMNS}
        out.update(self.extras)
        if self.notes:
            out["notes"] = "; ".join(self.notes)
        return out
