"""The loader: bad input is refused naming the file, the field and the value;
the shipped fixtures load and carry the reference's numbers."""

from __future__ import annotations

import csv
import json
import math
import tomllib
from datetime import date
from typing import Any

import pytest
from conftest import (
    BASE,
    DELETE,
    FIXTURES,
    NO_PUT_NO_CALL,
    base_document,
    edited,
    reference_dir,
)

import convpricer as cp
from convpricer import engines
from convpricer.errors import InputError, SchemaError
from convpricer.testing import to_toml

ANY = object()
NAN, INF = float("nan"), float("inf")


def _same(a: Any, b: Any) -> bool:
    if b is ANY:
        return True
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def test_writer_round_trips_the_base_document():
    assert tomllib.loads(to_toml(BASE)) == BASE


def test_base_document_loads(write_doc):
    doc = cp.load_document(write_doc(base_document()))
    assert [i.name for i in doc.structure.instruments] == \
        ["2030B notes", "2031 notes", "STRK", "Common"]
    assert doc.engine == {"kind": "lattice2d"}
    assert doc.market.correlation == 0.70


RATE_CURVE = {"dates": [date(2026, 6, 30), date(2028, 6, 30), date(2030, 6, 30)],
              "zero_rates": [0.040, 0.038, 0.039]}
VOL_CURVE = {"dates": [date(2026, 6, 30), date(2028, 6, 30)], "vols": [0.90, 0.80]}
NO_RATE = {"market.risk_free_rate": DELETE}
NO_EQ_VOL = {"market.equity_vol": DELETE}
NO_BTC_VOL = {"market.btc_vol": DELETE}

# (id, edits {dotted path: new value or DELETE}, field named, value named)
CASES: list[tuple[str, dict[str, Any], str, Any]] = [
    # schema, kinds and keys
    ("unknown schema", {"schema": "convpricer/2"}, "schema", "convpricer/2"),
    ("missing schema", {"schema": DELETE}, "schema", None),
    ("unknown kind", {"instruments.0.kind": "zero_coupon"}, "instruments[0].kind",
     "zero_coupon"),
    ("missing kind", {"instruments.2.kind": DELETE}, "instruments[2].kind", None),
    ("unknown top-level key", {"issuers": {}}, "issuers", {}),
    ("unknown market key", {"market.vol": 0.8}, "market.vol", 0.8),
    ("unknown issuer key", {"issuer.btc": 1.0}, "issuer.btc", 1.0),
    ("unknown note key", {"instruments.1.coupon": 0.01}, "instruments[1].coupon", 0.01),
    ("coupon key on a zero", {"instruments.0.coupon_rate": 0.01},
     "instruments[0].coupon_rate", 0.01),
    ("unknown curve key", {**NO_RATE, "market.rate_curve": {**RATE_CURVE, "rates": [0.1]}},
     "market.rate_curve.rates", [0.1]),
    ("market not a table", {"market": 1.0}, "market", 1.0),
    # missing fields
    ("missing market", {"market": DELETE}, "market", None),
    ("missing valuation date", {"market.valuation_date": DELETE}, "market.valuation_date",
     None),
    ("missing equity price", {"market.equity_price": DELETE}, "market.equity_price", None),
    ("missing vol", NO_EQ_VOL, "market.equity_vol", None),
    ("missing rate", NO_RATE, "market.risk_free_rate", None),
    ("missing btc holdings", {"issuer.btc_holdings": DELETE}, "issuer.btc_holdings", None),
    ("missing maturity", {"instruments.0.maturity": DELETE}, "instruments[0].maturity", None),
    ("missing coupon rate", {"instruments.1.coupon_rate": DELETE},
     "instruments[1].coupon_rate", None),
    ("missing units", {"instruments.2.units": DELETE}, "instruments[2].units", None),
    ("missing curve values", {**NO_RATE, "market.rate_curve": {"dates": [date(2027, 1, 1)]}},
     "market.rate_curve.zero_rates", None),
    # mistyped fields
    ("string for a price", {"market.btc_price": "107169.82"}, "market.btc_price",
     "107169.82"),
    ("string for a notional", {"instruments.0.notional": "2e9"}, "instruments[0].notional",
     "2e9"),
    ("boolean for a number", {"instruments.0.face": True}, "instruments[0].face", True),
    ("number for a date", {"instruments.0.issue_date": 20250221},
     "instruments[0].issue_date", 20250221),
    ("number for the valuation date", {"market.valuation_date": 45838.0},
     "market.valuation_date", 45838.0),
    ("not-a-date string", {"instruments.1.maturity": "2031-15-03"},
     "instruments[1].maturity", "2031-15-03"),
    ("number in put dates", {"instruments.0.put_dates": [20280301]},
     "instruments[0].put_dates[0]", 20280301),
    ("put dates not a list", {"instruments.0.put_dates": "2028-03-01"},
     "instruments[0].put_dates", "2028-03-01"),
    ("string for a boolean", {"instruments.2.cumulative": "yes"}, "instruments[2].cumulative",
     "yes"),
    ("float for an integer", {"instruments.0.call_trigger_days": 20.5},
     "instruments[0].call_trigger_days", 20.5),
    ("unknown conversion style", {"instruments.0.conversion": "bermudan"},
     "instruments[0].conversion", "bermudan"),
    ("unknown seniority", {"instruments.1.seniority": "senior"},
     "instruments[1].seniority", "senior"),
    ("number in curve dates", {**NO_RATE, "market.rate_curve": {**RATE_CURVE,
                                                                "dates": [2026, 2028, 2030]}},
     "market.rate_curve.dates[0]", 2026),
    # NaN and infinity
    ("NaN vol", {"market.btc_vol": NAN}, "market.btc_vol", NAN),
    ("NaN correlation", {"market.correlation": NAN}, "market.correlation", NAN),
    ("infinite price", {"market.equity_price": INF}, "market.equity_price", INF),
    ("minus infinite rate", {"market.risk_free_rate": -INF}, "market.risk_free_rate", -INF),
    ("NaN cash", {"issuer.cash": NAN}, "issuer.cash", NAN),
    ("infinite notional", {"instruments.0.notional": INF}, "instruments[0].notional", INF),
    ("NaN conversion ratio", {"instruments.1.conversion_ratio": NAN},
     "instruments[1].conversion_ratio", NAN),
    ("NaN dividend rate", {"instruments.2.dividend_rate": NAN},
     "instruments[2].dividend_rate", NAN),
    ("NaN in a curve", {**NO_RATE, "market.rate_curve": {**RATE_CURVE,
                                                         "zero_rates": [0.04, NAN, 0.04]}},
     "market.rate_curve.zero_rates[1]", NAN),
    # ranges
    ("zero equity vol", {"market.equity_vol": 0.0}, "market.equity_vol", 0.0),
    ("negative btc vol", {"market.btc_vol": -0.5}, "market.btc_vol", -0.5),
    ("correlation above 1", {"market.correlation": 1.5}, "market.correlation", 1.5),
    ("correlation below -1", {"market.correlation": -1.01}, "market.correlation", -1.01),
    ("negative btc price", {"market.btc_price": -1.0}, "market.btc_price", -1.0),
    ("zero shares", {"issuer.shares_outstanding": 0.0}, "issuer.shares_outstanding", 0.0),
    ("negative notional", {"instruments.0.notional": -2.0e9}, "instruments[0].notional",
     -2.0e9),
    ("negative preferred units", {"instruments.2.units": -1.0}, "instruments[2].units", -1.0),
    ("recovery above 1", {"instruments.0.recovery_rate": 1.5}, "instruments[0].recovery_rate",
     1.5),
    ("negative recovery", {"instruments.0.recovery_rate": -0.1},
     "instruments[0].recovery_rate", -0.1),
    ("negative hazard rate", {"issuer.hazard_rate": -0.01}, "issuer.hazard_rate", -0.01),
    ("hazard rate with a credit spread", {"issuer.hazard_rate": 0.05,
                                          "instruments.0.credit_spread": 0.02},
     "instruments[0].credit_spread", 0.02),
    ("trigger days above window", {"instruments.0.call_trigger_days": 25,
                                   "instruments.0.call_trigger_window": 20},
     "instruments[0].call_trigger_days", 25),
    ("coupon frequency 3", {"instruments.1.coupon_frequency": 3},
     "instruments[1].coupon_frequency", 3),
    ("preferred rank 0", {"instruments.2.rank": 0}, "instruments[2].rank", 0),
    ("duplicate names", {"instruments.1.name": "2030B notes"}, "instruments[1].name",
     "2030B notes"),
    # dates
    ("maturity before valuation date",
     {"instruments.0.maturity": date(2025, 6, 1), **NO_PUT_NO_CALL},
     "instruments[0].maturity", "2025-06-01"),
    ("maturity on valuation date",
     {"instruments.0.maturity": date(2025, 6, 30), **NO_PUT_NO_CALL},
     "instruments[0].maturity", "2025-06-30"),
    ("maturity before issue", {"instruments.1.maturity": date(2024, 1, 1)},
     "instruments[1].maturity", "2024-01-01"),
    ("put after maturity", {"instruments.0.put_dates": [date(2031, 1, 1)]},
     "instruments[0].put_dates[0]", "2031-01-01"),
    ("put before issue", {"instruments.1.put_dates": [date(2023, 9, 15)]},
     "instruments[1].put_dates[0]", "2023-09-15"),
    ("put dates not increasing", {"instruments.0.put_dates": [date(2028, 3, 1),
                                                             date(2027, 3, 1)]},
     "instruments[0].put_dates[1]", "2027-03-01"),
    ("call start after maturity", {"instruments.0.call_start": date(2030, 6, 1)},
     "instruments[0].call_start", "2030-06-01"),
    # curves
    ("rate curve and flat rate", {"market.rate_curve": RATE_CURVE}, "market.rate_curve",
     ANY),
    ("vol curve and flat vol", {"market.equity_vol_curve": VOL_CURVE},
     "market.equity_vol_curve", ANY),
    ("btc vol curve and flat vol", {"market.btc_vol_curve": VOL_CURVE},
     "market.btc_vol_curve", ANY),
    ("curve dates not increasing",
     {**NO_RATE, "market.rate_curve": {**RATE_CURVE, "dates": [date(2027, 6, 30),
                                                              date(2026, 6, 30),
                                                              date(2030, 6, 30)]}},
     "market.rate_curve.dates[1]", "2026-06-30"),
    ("curve date on valuation date",
     {**NO_EQ_VOL, "market.equity_vol_curve": {**VOL_CURVE, "dates": [date(2025, 6, 30),
                                                                     date(2028, 6, 30)]}},
     "market.equity_vol_curve.dates[0]", "2025-06-30"),
    ("curve date before valuation date",
     {**NO_RATE, "market.rate_curve": {**RATE_CURVE, "dates": [date(2024, 6, 30),
                                                              date(2028, 6, 30),
                                                              date(2030, 6, 30)]}},
     "market.rate_curve.dates[0]", "2024-06-30"),
    ("curve lengths differ", {**NO_RATE, "market.rate_curve": {**RATE_CURVE,
                                                               "zero_rates": [0.04, 0.04]}},
     "market.rate_curve.dates", 3),
    ("empty curve", {**NO_BTC_VOL, "market.btc_vol_curve": {"dates": [], "vols": []}},
     "market.btc_vol_curve.vols", []),
    ("zero vol in a curve", {**NO_EQ_VOL, "market.equity_vol_curve": {**VOL_CURVE,
                                                                      "vols": [0.9, 0.0]}},
     "market.equity_vol_curve.vols[1]", 0.0),
    ("negative vol in a curve", {**NO_BTC_VOL, "market.btc_vol_curve": {**VOL_CURVE,
                                                                        "vols": [-0.5, 0.5]}},
     "market.btc_vol_curve.vols[0]", -0.5),
    ("curve not a table", {**NO_RATE, "market.rate_curve": 0.04}, "market.rate_curve", 0.04),
]


@pytest.mark.parametrize(("edits", "field", "value"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_is_refused_naming_file_field_and_value(write_doc, edits, field, value):
    path = write_doc(edited(base_document(), edits))
    with pytest.raises(InputError) as info:
        cp.load(path)
    e = info.value
    assert e.field == field
    assert _same(e.value, value), f"value named {e.value!r}, expected {value!r}"
    assert e.source == str(path)
    text = str(e)
    assert text.startswith(f"{path}: {field} = ")
    assert e.reason and "\n" not in text


@pytest.mark.parametrize("text", [
    'schema = "convpricer/1\n',                        # unterminated string
    'schema = "convpricer/1"\n[market]\nbtc_price = \n',  # missing value
    'schema = "convpricer/1"\n[market]\n[market]\n',   # table defined twice
    "\x00",
], ids=["unterminated string", "missing value", "duplicate table", "nul byte"])
def test_bad_toml_is_a_schema_error_naming_the_file(write_doc, text):
    path = write_doc(text)
    with pytest.raises(SchemaError) as info:
        cp.load(path)
    assert info.value.field == "toml"
    assert info.value.source == str(path)
    assert str(info.value).startswith(f"{path}: toml = ")


def test_missing_file_and_non_utf8_file_are_input_errors(tmp_path):
    with pytest.raises(InputError) as info:
        cp.load(tmp_path / "nope.toml")
    assert info.value.field == "file" and "nope.toml" in str(info.value)
    bad = tmp_path / "latin1.toml"
    bad.write_bytes('schema = "convpricer/1"\n# caf\xe9\n'.encode("latin-1"))
    with pytest.raises(InputError) as info:
        cp.load(bad)
    assert info.value.field == "file" and info.value.source is None
    assert str(bad) in str(info.value)


@pytest.mark.parametrize("path", sorted((FIXTURES / "invalid").glob("*.toml")),
                         ids=lambda p: p.name)
def test_shipped_invalid_samples_are_refused(path):
    with pytest.raises(InputError) as info:
        cp.load(path)
    assert info.value.source == str(path)


# ----- the shipped fixtures ---------------------------------------------------
@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.toml")), ids=lambda p: p.name)
def test_every_fixture_loads(path):
    doc = cp.load_document(path)
    assert doc.structure.instruments
    assert doc.engine.get("kind", engines.DEFAULT_ENGINE) in engines.ENGINES


S2412 = FIXTURES / "strategy_2024-12-31.toml"
S2506 = FIXTURES / "strategy_2025-06-30.toml"


def test_strategy_2024_12_31_holds_the_year_end_structure():
    s, m = cp.load(S2412)
    assert m.valuation_date == date(2024, 12, 31)
    assert (m.btc_price, m.equity_price) == (93391.98, 289.62)
    assert [x.name for x in s.convertibles] == \
        ["2027 notes", "2028 notes", "2029 notes", "2030A notes", "2031 notes", "2032 notes"]
    assert s.preferreds == ()
    assert s.debt == pytest.approx(7_263_750_000.0, abs=0.5)
    assert s.shares_outstanding == 226_138_000 + 19_640_250
    assert s.btc_holdings == 447_470 and s.cash == 38.1e6 and s.btc_average_cost == 62_503
    assert s["2027 notes"].put_dates == ()
    # the reference: basic mNAV "about 1.7 at 2024-12-31"
    assert s.mnav(m.equity_price, m.btc_price) == pytest.approx(1.70, abs=0.01)


def test_strategy_2025_06_30_holds_notes_and_preferreds():
    s, m = cp.load(S2506)
    assert m.valuation_date == date(2025, 6, 30)
    assert (m.btc_price, m.equity_price) == (107169.82, 404.23)
    assert [x.name for x in s.convertibles] == \
        ["2028 notes", "2029 notes", "2030A notes", "2030B notes", "2031 notes", "2032 notes"]
    b = s["2030B notes"]
    assert b.kind == "zero_coupon_convertible" and b.conversion_ratio == 2.3072
    assert b.conversion_price == pytest.approx(433.43, abs=0.01)
    assert b.call_trigger_price == pytest.approx(1.3 * 433.43, abs=0.02)
    assert s["2031 notes"].notional == 603_661_000.0
    assert s.debt == pytest.approx(8_213_661_000.0, abs=0.5)
    assert [(p.name, p.rank, p.units, p.dividend_rate, p.cumulative, p.conversion_ratio)
            for p in sorted(s.preferreds, key=lambda p: p.rank)] == [
        ("STRF", 1, 10_066_750, 0.10, True, 0.0),
        ("STRK", 2, 12_201_367, 0.08, True, 0.1),
        ("STRD", 3, 11_764_700, 0.10, False, 0.0)]
    assert [x.name for x in s.claims][-3:] == ["STRF", "STRK", "STRD"]
    assert sum(p.notional for p in s.preferreds) == pytest.approx(3_403_281_700.0)
    assert s.shares_outstanding == 261_318_341 + 19_640_250
    assert s.btc_holdings == 597_325 and s.cash == 50.1e6
    # NAV per share after notes and preferreds at face is positive but far below
    # the share price (mNAV above 1)
    assert 0 < s.nav_per_share(m.btc_price) < m.equity_price
    assert s.mnav(m.equity_price, m.btc_price) == pytest.approx(1.774, abs=0.001)


@pytest.mark.parametrize("path", [S2412, S2506], ids=lambda p: p.name)
def test_strategy_notes_share_the_indenture_terms(path):
    s, m = cp.load(path)
    for n in s.convertibles:
        assert (n.face, n.seniority, n.credit_spread, n.recovery_rate) == \
            (1000.0, "senior_unsecured", 0.0, 0.40)
        assert (n.call_trigger, n.call_trigger_days, n.call_trigger_window) == (1.30, 20, 30)
        assert n.conversion == "american" and n.conversion_start is None
        assert n.issue_date <= m.valuation_date < n.maturity
        assert n.put_price == n.call_price == 1000.0
        assert (n.kind == "convertible_note") == (n.coupon > 0)
        if n.coupon:
            assert n.coupon_frequency == 2


# ----- against the reference files (shared/reference), when present ---------
REF = reference_dir()
needs_reference = pytest.mark.skipif(REF is None, reason="shared/reference not found")


@needs_reference
@pytest.mark.parametrize("path", [S2412, S2506], ids=lambda p: p.name)
def test_strategy_notes_match_the_reference(path):
    ref = json.loads((REF / "strategy_convertible_notes.json").read_text())
    s, m = cp.load(path)
    vd = m.valuation_date.isoformat()
    entries = [e for e in ref["fair_values"] if e["date"] == vd]
    assert sorted(f"{e['series']} notes" for e in entries) == sorted(x.name for x in
                                                                      s.convertibles)
    for e in entries:
        n, t = s[f"{e['series']} notes"], ref["notes"][e["series"]]
        assert (m.equity_price, m.btc_price) == (e["mstr_close"], e["btc_usd"])
        assert n.notional == e["principal_usd_k"] * 1000
        assert n.parity(m.equity_price) / 10 == pytest.approx(e["parity_per_100"], abs=1e-3)
        assert n.conversion_ratio == t["cr"]
        assert n.conversion_price == pytest.approx(t["cp"], abs=0.01)
        assert n.coupon / n.face == pytest.approx(t["coupon"] / 100)
        assert (n.issue_date.isoformat(), n.maturity.isoformat()) == (t["issue"],
                                                                     t["maturity"])
        assert [d.isoformat() for d in n.put_dates] == ([t["put"]] if t["put"] else [])
        assert n.call_start.isoformat() == t["call_from"]


@needs_reference
def test_strategy_preferreds_match_the_reference():
    ref = json.loads((REF / "strategy_preferred_stock.json").read_text())
    s, _ = cp.load(S2506)
    for p in s.preferreds:
        t = ref[p.name]
        assert p.units == t["shares_2025_06_30"]
        assert p.dividend_rate == t["rate"] and p.cumulative == t["cumulative"]
        assert p.conversion_ratio == (t.get("conversion_rate_mstr_per_pref") or 0.0)
    order = [x for x in ref["seniority_high_to_low"] if x in {p.name for p in s.preferreds}]
    assert order == [p.name for p in sorted(s.preferreds, key=lambda p: p.rank)]


@needs_reference
@pytest.mark.parametrize("path", [S2412, S2506], ids=lambda p: p.name)
def test_strategy_market_matches_the_price_file(path):
    _, m = cp.load(path)
    with open(REF / "btc_mstr_daily_close.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["date"] == m.valuation_date.isoformat())
    assert (m.btc_price, m.equity_price) == (float(row["btc_usd"]), float(row["mstr_usd"]))
