"""Shared test helpers: paths, a valid base document and edits of it.

TOML text is written with :func:`convpricer.testing.to_toml`."""

from __future__ import annotations

import copy
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from convpricer.testing import to_toml

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"


def reference_dir() -> Path | None:
    """The shared reference data (``shared/reference`` beside or inside the checkout)."""
    for p in (ROOT.parent / "shared" / "reference", ROOT / "shared" / "reference"):
        if p.is_dir():
            return p
    return None


# ----- a valid document with every instrument kind ------------------------------
BASE: dict[str, Any] = {
    "schema": "convpricer/1",
    "market": {
        "valuation_date": date(2025, 6, 30),
        "btc_price": 107169.82,
        "equity_price": 404.23,
        "btc_vol": 0.50,
        "equity_vol": 0.80,
        "correlation": 0.70,
        "risk_free_rate": 0.038,
    },
    "issuer": {
        "name": "Test issuer",
        "btc_holdings": 597325.0,
        "cash": 50.1e6,
        "shares_outstanding": 280958591.0,
    },
    "instruments": [
        {"kind": "zero_coupon_convertible", "name": "2030B notes", "face": 1000.0,
         "notional": 2.0e9, "issue_date": date(2025, 2, 21), "maturity": date(2030, 3, 1),
         "conversion_ratio": 2.3072, "put_dates": [date(2028, 3, 1)],
         "call_start": date(2027, 3, 5), "call_trigger": 1.30, "call_trigger_days": 20,
         "call_trigger_window": 30, "seniority": "senior_unsecured", "credit_spread": 0.0,
         "recovery_rate": 0.40},
        {"kind": "convertible_note", "name": "2031 notes", "face": 1000.0,
         "notional": 603.661e6, "issue_date": date(2024, 3, 18), "maturity": date(2031, 3, 15),
         "conversion_ratio": 4.297, "coupon_rate": 0.00875, "coupon_frequency": 2,
         "put_dates": [date(2028, 9, 15)], "call_start": date(2028, 3, 22),
         "call_trigger": 1.30},
        {"kind": "preferred_stock", "name": "STRK", "liquidation_preference": 100.0,
         "units": 12201367.0, "dividend_rate": 0.08, "dividend_frequency": 4,
         "cumulative": True, "conversion_ratio": 0.1, "rank": 2},
        {"kind": "common_equity", "name": "Common"},
    ],
    "engine": {"kind": "lattice2d"},
}


def base_document() -> dict[str, Any]:
    """A fresh deep copy of :data:`BASE` (a valid convpricer/1 document)."""
    return copy.deepcopy(BASE)


DELETE = object()  # as a value in ``edited``: remove the key


def edited(doc: dict[str, Any], edits: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with ``{dotted path: value}`` edits applied in place (``DELETE``
    removes the key); integer parts index lists: ``"instruments.0.face"``."""
    for path, value in edits.items():
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node = doc
        for p in parents:
            node = node[p]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return doc


#: edits that strip the first note of its put and (soft) call, so that its
#: maturity can move anywhere after its issue date
NO_PUT_NO_CALL = {f"instruments.0.{k}": DELETE for k in (
    "put_dates", "call_start", "call_trigger", "call_trigger_days", "call_trigger_window")}


@pytest.fixture
def write_doc(tmp_path):
    """``write_doc(doc, name="doc.toml") -> Path``: write a document (dict or TOML
    text) into the test's temporary directory."""
    def write(doc: dict | str, name: str = "doc.toml") -> Path:
        p = tmp_path / name
        p.write_text(doc if isinstance(doc, str) else to_toml(doc), encoding="utf-8")
        return p
    return write
