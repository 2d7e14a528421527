"""convpricer: price the capital structure of a bitcoin-treasury company.

    import convpricer as cp
    structure, market = cp.load("fixtures/strategy_2025-06-30.toml")
    report = cp.value(structure, market)                  # pandas DataFrame
    result = cp.price(structure["2030B notes"], market, structure=structure)
    cp.waterfall(structure, btc_price=30_000.0)           # who gets what

Units: USD, years (Actual/365 Fixed), continuously compounded rates,
annualised lognormal volatilities; values per unit (per note of face, per
preferred share, per common share).
"""

from .calibrate import CalibrationError, CalibrationResult, calibrate, hazard_from_spread
from .errors import ConvPricerError, EngineError, InputError, SchemaError
from .grid import value_grid
from .instruments import CommonEquity, ConvertibleNote, PreferredStock, ZeroCouponConvertible
from .loader import Document, load, load_document
from .market import Curve, Market
from .results import PricingResult
from .risk import risk_ladder, risk_ladders
from .stress import stress, stress_scenarios
from .structure import CapitalStructure
from .valuation import price, value
from .waterfall import waterfall

__all__ = [
    "CalibrationError",
    "CalibrationResult",
    "CapitalStructure",
    "CommonEquity",
    "ConvPricerError",
    "ConvertibleNote",
    "Curve",
    "Document",
    "EngineError",
    "InputError",
    "Market",
    "PreferredStock",
    "PricingResult",
    "SchemaError",
    "ZeroCouponConvertible",
    "calibrate",
    "hazard_from_spread",
    "load",
    "load_document",
    "price",
    "risk_ladder",
    "risk_ladders",
    "stress",
    "stress_scenarios",
    "value",
    "value_grid",
    "waterfall",
]
__version__ = "0.1.0"
