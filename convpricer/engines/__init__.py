"""Pricing engines. Each engine module exposes

    price(instrument, market, structure, *, greeks=True, **options) -> PricingResult

and ``OPTIONS``, the names of the options it accepts (anything else is refused).
Modules are imported on first use so that optional pieces stay optional.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import EngineError

DEFAULT_ENGINE = "lattice2d"
ENGINES = {
    "quantlib": "convpricer.engines.quantlib_engine",
    "lattice2d": "convpricer.engines.lattice2d",
    "montecarlo": "convpricer.engines.montecarlo",
    "fdm2d": "convpricer.engines.fdm2d",
}


def get(name: str) -> ModuleType:
    """The engine module called ``name``."""
    if name not in ENGINES:
        raise EngineError(f"engine = {name!r}: unknown engine (known: {', '.join(ENGINES)})")
    try:
        return importlib.import_module(ENGINES[name])
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("convpricer.engines"):
            raise EngineError(f"engine = {name!r}: not available in this build") from None
        raise


def check_options(engine: str, options: dict, allowed: frozenset[str]) -> None:
    """Refuse options an engine does not know (a typo must not go unnoticed)."""
    unknown = set(options) - allowed
    if unknown:
        raise EngineError(f"engine {engine}: unknown option(s) {', '.join(sorted(unknown))} "
                          f"(allowed: {', '.join(sorted(allowed)) or 'none'})")
