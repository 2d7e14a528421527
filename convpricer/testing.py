"""Hypothesis strategies for convpricer objects, for property tests (yours and ours).

Needs hypothesis, which comes with the test extra::

    pip install "convpricer[test]"

Valid objects::

    from hypothesis import given
    from convpricer import testing as cpt

    @given(cpt.convertible_cases(structure=False, note_options={"calls": False}))
    def test_floor(case):
        ...

* :func:`markets`, :func:`zero_coupon_convertibles`, :func:`convertible_notes`,
  :func:`preferred_stocks`, :func:`capital_structures` draw validated objects;
  every keyword narrows a range: a number pins the value, a ``(lo, hi)`` pair
  draws from the closed interval, ``None`` for a flag means "either".
* :func:`convertible_cases` draws a consistent ``(note, market, structure)``:
  the note's dates, moneyness and the issuer's BTC coverage are set against the
  drawn market.
* :func:`document_dicts` / :func:`documents` draw valid convpricer/1 files (as
  a dict, or as TOML text through :func:`to_toml`); :func:`to_document` turns
  a structure and a market into such a dict.

Invalid input, for testing error handling: :func:`invalid_documents` draws
``(toml_text, field)``: a valid file with exactly one field broken, and the
dotted path (``instruments[1].put_dates[0]``) that the loader must name when
it refuses the file. :data:`BREAKS` lists the classes of breakage (NaN,
infinity, wrong type, missing field, out-of-range values, inconsistent dates,
curve problems...); ``invalid_documents(breaks=[...])`` narrows to some.

Conventions (those of convpricer): money in USD, times in years (Actual/365
Fixed, 365 days to the year when a range in years becomes a date), rates
continuously compounded, vols annualised. ``moneyness`` is parity / face
(conversion_ratio * S / face; for a preferred, per liquidation preference);
``coverage`` is the issuer's assets (BTC at the market price + cash) over the
face of all its claims (notes at notional, preferreds at liquidation
preference plus arrears).
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple

try:
    from hypothesis import strategies as st
    from hypothesis.errors import InvalidArgument
except ModuleNotFoundError as _e:  # pragma: no cover - depends on the environment
    raise ModuleNotFoundError(
        "convpricer.testing needs hypothesis, which is part of the test extra: "
        "pip install 'convpricer[test]' (or pip install hypothesis)", name="hypothesis") from _e

from .instruments import (
    SENIORITIES,
    CommonEquity,
    ConvertibleNote,
    Instrument,
    PreferredStock,
    ZeroCouponConvertible,
    field_names,
)
from .loader import SCHEMA
from .market import Curve, Market
from .structure import CapitalStructure

__all__ = [
    "BREAKS",
    "BTC_PRICE",
    "CLAIM_KINDS",
    "EQUITY_PRICE",
    "NOTE_KINDS",
    "VALUATION_DATE",
    "Case",
    "Range",
    "capital_structures",
    "convertible_cases",
    "convertible_notes",
    "document_dicts",
    "documents",
    "invalid_documents",
    "markets",
    "preferred_stocks",
    "to_document",
    "to_toml",
    "zero_coupon_convertibles",
]

#: A number pins a value; a (lo, hi) pair draws from [lo, hi].
Range = float | tuple[float, float]

#: Defaults shared by the strategies, so that separately drawn objects fit together.
VALUATION_DATE = date(2025, 6, 30)
EQUITY_PRICE = 100.0
BTC_PRICE = 100_000.0

DAYS_PER_YEAR = 365
NOTE_KINDS = ("zero_coupon_convertible", "convertible_note")
CLAIM_KINDS = (*NOTE_KINDS, "preferred_stock")


# ----- ranges -------------------------------------------------------------------
def _bounds(r: Range, name: str) -> tuple[float, float]:
    if isinstance(r, bool):
        raise InvalidArgument(f"{name}={r!r}: give a number or a (lo, hi) pair")
    if isinstance(r, int | float):
        lo = hi = float(r)
    else:
        try:
            lo, hi = (float(x) for x in r)
        except (TypeError, ValueError):
            raise InvalidArgument(f"{name}={r!r}: give a number or a (lo, hi) pair") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise InvalidArgument(f"{name}={r!r}: need finite lo <= hi")
    return lo, hi


def _real(r: Range, name: str) -> st.SearchStrategy[float]:
    lo, hi = _bounds(r, name)
    if lo == hi:
        return st.just(lo)
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def _whole(r: Range, name: str) -> st.SearchStrategy[int]:
    lo, hi = _bounds(r, name)
    if lo != int(lo) or hi != int(hi):
        raise InvalidArgument(f"{name}={r!r}: need whole numbers")
    return st.integers(int(lo), int(hi))


def _flag(draw: st.DrawFn, value: bool | None) -> bool:
    return draw(st.booleans()) if value is None else bool(value)


def _days(years: float) -> timedelta:
    return timedelta(days=round(years * DAYS_PER_YEAR))



# ----- market -----------------------------------------------------------------------
def _vol_curve(draw: st.DrawFn, valuation_date: date, vol: Range, name: str) -> Curve:
    """A vol curve with non-decreasing total variance: forward vols in ``vol``."""
    n = draw(st.integers(1, 4))
    gaps = draw(st.lists(st.integers(30, 3 * DAYS_PER_YEAR), min_size=n, max_size=n))
    fwd = draw(st.lists(_real(vol, name), min_size=n, max_size=n))
    dates_, vols, t_prev, var = [], [], 0.0, 0.0
    d = valuation_date
    for gap, f in zip(gaps, fwd, strict=True):
        d = d + timedelta(days=gap)
        t = (d - valuation_date).days / DAYS_PER_YEAR
        var += f * f * (t - t_prev)
        t_prev = t
        dates_.append(d)
        vols.append(math.sqrt(var / t))
    return Curve(tuple(dates_), tuple(vols))


def _rate_curve(draw: st.DrawFn, valuation_date: date, rate: Range) -> Curve:
    n = draw(st.integers(1, 4))
    gaps = draw(st.lists(st.integers(30, 3 * DAYS_PER_YEAR), min_size=n, max_size=n))
    zs = draw(st.lists(_real(rate, "risk_free_rate"), min_size=n, max_size=n))
    dates_, d = [], valuation_date
    for g in gaps:
        d = d + timedelta(days=g)
        dates_.append(d)
    return Curve(tuple(dates_), tuple(zs))


@st.composite
def markets(draw: st.DrawFn, *, valuation_date: date = VALUATION_DATE,
            btc_price: Range = (20_000.0, 200_000.0), equity_price: Range = (10.0, 1_000.0),
            btc_vol: Range = (0.15, 1.2), equity_vol: Range = (0.15, 1.5),
            correlation: Range = (-0.9, 0.95), risk_free_rate: Range = (0.0, 0.08),
            equity_dividend_yield: Range = (0.0, 0.03), equity_borrow_cost: Range = 0.0,
            btc_lending_yield: Range = 0.0, curves: bool | None = False) -> Market:
    """A valid :class:`~convpricer.Market`.

    Prices in USD, vols annualised, rates and yields continuously compounded.
    ``curves``: False gives flat numbers, True a rate curve and both vol
    curves (forward vols drawn from the vol ranges, so total variance never
    decreases), None either, field by field.
    """
    kw: dict[str, Any] = dict(
        valuation_date=valuation_date,
        btc_price=draw(_real(btc_price, "btc_price")),
        equity_price=draw(_real(equity_price, "equity_price")),
        correlation=draw(_real(correlation, "correlation")),
        equity_dividend_yield=draw(_real(equity_dividend_yield, "equity_dividend_yield")),
        equity_borrow_cost=draw(_real(equity_borrow_cost, "equity_borrow_cost")),
        btc_lending_yield=draw(_real(btc_lending_yield, "btc_lending_yield")))
    if _flag(draw, curves):
        kw["rate_curve"] = _rate_curve(draw, valuation_date, risk_free_rate)
    else:
        kw["risk_free_rate"] = draw(_real(risk_free_rate, "risk_free_rate"))
    for asset, rng in (("equity", equity_vol), ("btc", btc_vol)):
        if _flag(draw, curves):
            kw[f"{asset}_vol_curve"] = _vol_curve(draw, valuation_date, rng, f"{asset}_vol")
        else:
            kw[f"{asset}_vol"] = draw(_real(rng, f"{asset}_vol"))
    return Market(**kw)


# ----- term sheets ----------------------------------------------------------------
_NAMES = st.integers(1, 9999)


def _convertible_fields(draw: st.DrawFn, *, valuation_date: date, equity_price: float,
                        maturity: Range, moneyness: Range, age: Range, face: Range,
                        notional: Range, puts: bool | None, put_price: Range,
                        calls: bool | None, soft_call: bool | None, call_price: Range,
                        conversion: str | None, conversion_start: bool | None,
                        credit_spread: Range, recovery_rate: Range,
                        seniority: str | None) -> dict[str, Any]:
    f = draw(_real(face, "face"))
    life = max(_days(draw(_real(maturity, "maturity"))), timedelta(days=30))
    mat = valuation_date + life
    issue = valuation_date - _days(draw(_real(age, "age")))
    m = draw(_real(moneyness, "moneyness"))
    kw: dict[str, Any] = dict(
        face=f, notional=f * max(1.0, round(draw(_real(notional, "notional")) / f)),
        issue_date=issue, maturity=mat, conversion_ratio=m * f / equity_price,
        conversion=conversion or draw(st.sampled_from(("american", "european"))),
        credit_spread=draw(_real(credit_spread, "credit_spread")),
        recovery_rate=draw(_real(recovery_rate, "recovery_rate")),
        seniority=seniority or draw(st.sampled_from(SENIORITIES)))
    days = life.days

    def inside(lo: float, hi: float) -> date:  # a date strictly inside the remaining life
        k = draw(st.integers(max(1, round(lo * days)), min(days - 1, round(hi * days))))
        return valuation_date + timedelta(days=k)

    if kw["conversion"] == "american" and _flag(draw, conversion_start):
        kw["conversion_start"] = inside(0.05, 0.5)
    if _flag(draw, puts):
        n = draw(st.integers(1, 2))
        kw["put_dates"] = tuple(sorted({inside(0.15, 0.85) for _ in range(n)}))
        kw["put_price"] = f * draw(_real(put_price, "put_price"))
    if _flag(draw, calls):
        kw["call_start"] = inside(0.1, 0.7) if draw(st.booleans()) else valuation_date
        kw["call_price"] = f * draw(_real(call_price, "call_price"))
        if _flag(draw, soft_call):
            kw["call_trigger"] = draw(st.floats(1.0, 1.6))
            if draw(st.booleans()):
                window = draw(st.integers(1, 40))
                kw["call_trigger_window"] = window
                kw["call_trigger_days"] = draw(st.integers(1, window))
    return kw


def _note_strategy(cls: type) -> Callable[..., st.SearchStrategy[Any]]:
    coupon = cls is ConvertibleNote

    @st.composite
    def strategy(draw: st.DrawFn, *, valuation_date: date = VALUATION_DATE,
                 equity_price: float = EQUITY_PRICE, maturity: Range = (0.25, 8.0),
                 moneyness: Range = (0.2, 3.0), age: Range = (0.0, 3.0),
                 face: Range = 1000.0, notional: Range = (1e7, 5e9),
                 puts: bool | None = None, put_price: Range = 1.0,
                 calls: bool | None = None, soft_call: bool | None = None,
                 call_price: Range = 1.0, conversion: str | None = None,
                 conversion_start: bool | None = None, credit_spread: Range = (0.0, 0.08),
                 recovery_rate: Range = (0.0, 1.0), seniority: str | None = None,
                 coupon_rate: Range = (0.0, 0.06), coupon_frequency: int | None = None,
                 name: str | None = None) -> Any:
        kw = _convertible_fields(
            draw, valuation_date=valuation_date, equity_price=equity_price,
            maturity=maturity, moneyness=moneyness, age=age, face=face, notional=notional,
            puts=puts, put_price=put_price, calls=calls, soft_call=soft_call,
            call_price=call_price, conversion=conversion, conversion_start=conversion_start,
            credit_spread=credit_spread, recovery_rate=recovery_rate, seniority=seniority)
        kw["name"] = name or f"{'note' if coupon else 'zero'} {draw(_NAMES)}"
        if coupon:
            kw["coupon_rate"] = draw(_real(coupon_rate, "coupon_rate"))
            kw["coupon_frequency"] = coupon_frequency or draw(st.sampled_from((1, 2, 4, 12)))
        return cls(**kw)

    return strategy


zero_coupon_convertibles = _note_strategy(ZeroCouponConvertible)
zero_coupon_convertibles.__doc__ = """A valid :class:`~convpricer.ZeroCouponConvertible`.

Keywords: ``maturity`` (remaining life, years), ``moneyness`` (parity / face
at ``equity_price``), ``age`` (years since issue), ``face``, ``notional``
(USD), ``puts`` / ``calls`` / ``soft_call`` / ``conversion_start`` (flags,
None = either), ``put_price`` and ``call_price`` (fractions of face),
``conversion`` ("american" / "european" / None), ``credit_spread``,
``recovery_rate``, ``seniority``. Dates lie after ``valuation_date``: puts and
call starts strictly inside the remaining life; the issue date is on or
before it (engines value outstanding notes)."""
convertible_notes = _note_strategy(ConvertibleNote)
convertible_notes.__doc__ = """A valid coupon-paying :class:`~convpricer.ConvertibleNote`:
the keywords of :func:`zero_coupon_convertibles` plus ``coupon_rate`` (annual,
on face) and ``coupon_frequency`` (1, 2, 4 or 12; None = any)."""


@st.composite
def preferred_stocks(draw: st.DrawFn, *, valuation_date: date = VALUATION_DATE,
                     equity_price: float = EQUITY_PRICE, liquidation_preference: Range = 100.0,
                     units: Range = (1e5, 5e7), dividend_rate: Range = (0.0, 0.15),
                     dividend_frequency: int | None = None, cumulative: bool | None = None,
                     convertible: bool | None = None, moneyness: Range = (0.05, 2.0),
                     rank: Range = (1, 4), calls: bool | None = None,
                     arrears: bool | None = False, recovery_rate: Range = 0.0,
                     name: str | None = None) -> PreferredStock:
    """A valid perpetual :class:`~convpricer.PreferredStock`.

    ``moneyness`` (parity / liquidation preference) applies when
    ``convertible``; ``arrears`` (flag) gives a cumulative preferred up to two
    years of unpaid dividends; ``calls`` adds a call from a date within two
    years of ``valuation_date`` at 100-110% of the liquidation preference.
    """
    lp = draw(_real(liquidation_preference, "liquidation_preference"))
    cum = _flag(draw, cumulative)
    kw: dict[str, Any] = dict(
        name=name or f"preferred {draw(_NAMES)}", liquidation_preference=lp,
        units=draw(_real(units, "units")), dividend_rate=draw(_real(dividend_rate,
                                                                    "dividend_rate")),
        dividend_frequency=dividend_frequency or draw(st.sampled_from((1, 2, 4, 12))),
        cumulative=cum, rank=draw(_whole(rank, "rank")),
        recovery_rate=draw(_real(recovery_rate, "recovery_rate")))
    if _flag(draw, convertible):
        kw["conversion_ratio"] = draw(_real(moneyness, "moneyness")) * lp / equity_price
    if _flag(draw, calls):
        kw["call_start"] = valuation_date + timedelta(days=draw(st.integers(-365, 730)))
        kw["call_price"] = lp * draw(st.floats(1.0, 1.1))
    if cum and _flag(draw, arrears):
        kw["arrears"] = kw["dividend_rate"] * lp * draw(st.floats(0.0, 2.0))
    return PreferredStock(**kw)


def _claim_face(inst: Instrument) -> float:
    if isinstance(inst, PreferredStock):
        return inst.notional + inst.arrears * inst.units
    return inst.notional


@st.composite
def capital_structures(draw: st.DrawFn, *, valuation_date: date = VALUATION_DATE,
                       btc_price: float = BTC_PRICE, equity_price: float = EQUITY_PRICE,
                       instruments: Range = (1, 4), kinds: Iterable[str] = CLAIM_KINDS,
                       coverage: Range = (0.3, 20.0), mnav: Range = (0.5, 4.0),
                       cash_fraction: Range = (0.0, 0.1), hazard: bool | None = False,
                       common: bool | None = None, maturity: Range = (0.25, 8.0),
                       moneyness: Range = (0.2, 3.0),
                       note_options: Mapping[str, Any] | None = None,
                       preferred_options: Mapping[str, Any] | None = None,
                       include: Iterable[Instrument] = ()) -> CapitalStructure:
    """A valid :class:`~convpricer.CapitalStructure` at one market state.

    ``instruments``: number of drawn claims (notes and preferreds, of
    ``kinds``), besides the term sheets in ``include`` (placed at random
    positions); ``coverage``: assets / face of all claims at ``btc_price``;
    ``cash_fraction``: the part of the assets held in cash; ``mnav``: market
    cap / BTC held (sets shares_outstanding); ``hazard``: add an issuer hazard
    rate (drawn notes then carry no credit spread: the two are exclusive);
    ``common``: add a common_equity entry. ``maturity`` and ``moneyness`` go
    to every drawn note (moneyness also to convertible preferreds); other
    keywords of the instrument strategies go in ``note_options`` /
    ``preferred_options``.
    """
    kinds = tuple(kinds)
    if not kinds or set(kinds) - set(CLAIM_KINDS):
        raise InvalidArgument(f"kinds={kinds!r}: choose from {CLAIM_KINDS}")
    insts: list[Instrument] = list(include)
    taken = {x.name for x in insts}
    with_hazard = _flag(draw, hazard)
    nopts = {"valuation_date": valuation_date, "equity_price": equity_price,
             "maturity": maturity, "moneyness": moneyness, **(note_options or {})}
    if with_hazard:
        nopts["credit_spread"] = 0.0
    popts = {"valuation_date": valuation_date, "equity_price": equity_price,
             "moneyness": moneyness, **(preferred_options or {})}
    for i in range(draw(_whole(instruments, "instruments"))):
        kind = draw(st.sampled_from(kinds))
        name = next(f"{kind.split('_')[0]} {i + 1}{'+' * k}" for k in range(len(taken) + 1)
                    if f"{kind.split('_')[0]} {i + 1}{'+' * k}" not in taken)
        taken.add(name)
        if kind == "preferred_stock":
            inst: Instrument = draw(preferred_stocks(**popts, name=name))
        else:
            strat = zero_coupon_convertibles if kind == NOTE_KINDS[0] else convertible_notes
            inst = draw(strat(**nopts, name=name))
        insts.insert(draw(st.integers(0, len(insts))), inst)
    if _flag(draw, common) and not any(isinstance(x, CommonEquity) for x in insts):
        insts.insert(draw(st.integers(0, len(insts))), CommonEquity(name="common"))
    claims = max(sum(_claim_face(x) for x in insts if not isinstance(x, CommonEquity)), 1e6)
    assets = draw(_real(coverage, "coverage")) * claims
    cash = assets * draw(_real(cash_fraction, "cash_fraction"))
    btc = (assets - cash) / btc_price
    kw: dict[str, Any] = {}
    if with_hazard:
        kw = dict(hazard_rate=draw(st.floats(0.001, 0.2)),
                  hazard_exponent=draw(st.floats(0.0, 2.0)),
                  default_equity_loss=draw(st.floats(0.0, 1.0)))
    shares = draw(_real(mnav, "mnav")) * max(btc * btc_price, 1e6) / equity_price
    return CapitalStructure(name=f"issuer {draw(_NAMES)}", btc_holdings=btc, cash=cash,
                            shares_outstanding=shares, instruments=tuple(insts), **kw)


class Case(NamedTuple):
    """One valuation problem: a note (or preferred), its market and its issuer
    (None: unlimited coverage, only the note's own credit spread)."""

    instrument: Instrument
    market: Market
    structure: CapitalStructure | None


@st.composite
def convertible_cases(draw: st.DrawFn, *, structure: bool | None = True,
                      kinds: Iterable[str] = NOTE_KINDS,
                      market_options: Mapping[str, Any] | None = None,
                      note_options: Mapping[str, Any] | None = None,
                      preferred_options: Mapping[str, Any] | None = None,
                      structure_options: Mapping[str, Any] | None = None) -> Case:
    """A consistent :class:`Case`: a market from :func:`markets`, then a claim
    named ``"subject"`` of one of ``kinds`` (``"preferred_stock"`` allowed) at
    that market's valuation date and share price, inside a capital structure
    drawn at the market's BTC price (0 to 3 other claims by default;
    ``structure=False``: no structure, None: either). The options go to
    :func:`markets`, the note strategies (``note_options``) or
    :func:`preferred_stocks` (``preferred_options``), and
    :func:`capital_structures`; a hazard rate in the structure sets the
    subject's credit spread to 0."""
    kinds = tuple(kinds)
    market = draw(markets(**(market_options or {})))
    at = {"valuation_date": market.valuation_date, "equity_price": market.equity_price}
    kind = draw(st.sampled_from(kinds))
    nopts = dict(note_options or {})
    sopts = {"instruments": (0, 3), **(structure_options or {})}
    with_structure = _flag(draw, structure)
    with_hazard = with_structure and _flag(draw, sopts.get("hazard", False))
    sopts["hazard"] = with_hazard
    if kind == "preferred_stock":
        inst: Instrument = draw(preferred_stocks(**at, **(preferred_options or {}),
                                                 name="subject"))
    else:
        if with_hazard:
            nopts["credit_spread"] = 0.0
        strat = zero_coupon_convertibles if kind == NOTE_KINDS[0] else convertible_notes
        inst = draw(strat(**at, **nopts, name="subject"))
    if not with_structure:
        return Case(inst, market, None)
    s = draw(capital_structures(**at, btc_price=market.btc_price, include=(inst,), **sopts))
    return Case(inst, market, s)


# ----- documents --------------------------------------------------------------------
def _curve_dict(c: Curve, values_key: str) -> dict[str, list]:
    return {"dates": list(c.dates), values_key: list(c.values)}


def to_document(structure: CapitalStructure, market: Market,
                engine: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The convpricer/1 document (a dict ready for :func:`to_toml`) of a
    structure and a market. Curves must be :class:`~convpricer.Curve` tables
    (a QuantLib term structure has no file form: ValueError)."""
    mk: dict[str, Any] = {"valuation_date": market.valuation_date,
                          "btc_price": market.btc_price, "equity_price": market.equity_price,
                          "correlation": market.correlation,
                          "equity_dividend_yield": market.equity_dividend_yield,
                          "equity_borrow_cost": market.equity_borrow_cost,
                          "btc_lending_yield": market.btc_lending_yield}
    for flat, curve, key in (("risk_free_rate", "rate_curve", "zero_rates"),
                             ("equity_vol", "equity_vol_curve", "vols"),
                             ("btc_vol", "btc_vol_curve", "vols")):
        c = getattr(market, curve)
        if c is None:
            mk[flat] = getattr(market, flat)
        elif isinstance(c, Curve):
            mk[curve] = _curve_dict(c, key)
        else:
            raise ValueError(f"market.{curve} is a QuantLib object: no file form")
    issuer: dict[str, Any] = {k: getattr(structure, k) for k in (
        "name", "btc_holdings", "cash", "other_assets", "shares_outstanding", "hazard_rate",
        "hazard_exponent", "default_equity_loss")}
    if structure.btc_average_cost is not None:
        issuer["btc_average_cost"] = structure.btc_average_cost
    doc: dict[str, Any] = {"schema": SCHEMA, "market": mk, "issuer": issuer,
                           "instruments": [_instrument_dict(x) for x in structure.instruments]}
    if engine:
        doc["engine"] = dict(engine)
    return doc


def _instrument_dict(inst: Instrument) -> dict[str, Any]:
    """The [[instruments]] table of one term sheet (fields left at None omitted)."""
    d: dict[str, Any] = {"kind": inst.kind}
    for f in field_names(type(inst)):
        v = getattr(inst, f)
        if v is None or (f == "put_dates" and not v):
            continue
        d[f] = list(v) if isinstance(v, tuple) else v
    return d


@st.composite
def document_dicts(draw: st.DrawFn, *, market_options: Mapping[str, Any] | None = None,
                   structure_options: Mapping[str, Any] | None = None,
                   engine: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A valid convpricer/1 document as a dict (dates as ``datetime.date``):
    a market from :func:`markets` and a structure from
    :func:`capital_structures` drawn at its prices and date."""
    mopts = {"curves": None, **(market_options or {})}
    market = draw(markets(**mopts))
    sopts = {"common": None, **(structure_options or {})}
    s = draw(capital_structures(valuation_date=market.valuation_date,
                                btc_price=market.btc_price,
                                equity_price=market.equity_price, **sopts))
    return to_document(s, market, engine)


def documents(**options: Any) -> st.SearchStrategy[str]:
    """Valid convpricer/1 TOML text: :func:`document_dicts` through :func:`to_toml`."""
    return document_dicts(**options).map(to_toml)


# ----- TOML writer --------------------------------------------------------------------
_BARE = re.compile(r"[A-Za-z0-9_-]+\Z")


def _key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, datetime | date):
        return v.isoformat()
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"no TOML form for {type(v).__name__}")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, Mapping) for x in v)


def _emit(tbl: Mapping[str, Any], path: str, out: list[str]) -> None:
    for k, v in tbl.items():
        if not isinstance(v, Mapping) and not _is_table_array(v):
            out.append(f"{_key(k)} = {_value(v)}")
    for k, v in tbl.items():
        sub = f"{path}.{_key(k)}" if path else _key(k)
        if isinstance(v, Mapping):
            out.extend(("", f"[{sub}]"))
            _emit(v, sub, out)
        elif _is_table_array(v):
            for x in v:
                out.extend(("", f"[[{sub}]]"))
                _emit(x, sub, out)


def to_toml(document: Mapping[str, Any]) -> str:
    """TOML text of a document dict (tables, arrays of tables, dates, NaN and
    infinities as TOML writes them). Floats are written with ``repr``, so
    they read back exactly."""
    out: list[str] = []
    _emit(document, "", out)
    return "\n".join(out).lstrip("\n") + "\n"


# ----- invalid documents --------------------------------------------------------------
Break = Callable[[st.DrawFn, dict], str]

_MARKET_NUMBERS = ("btc_price", "equity_price", "btc_vol", "equity_vol", "correlation",
                   "risk_free_rate", "equity_dividend_yield", "equity_borrow_cost",
                   "btc_lending_yield")
_ISSUER_NUMBERS = ("btc_holdings", "cash", "other_assets", "shares_outstanding",
                   "hazard_rate", "hazard_exponent", "default_equity_loss")
_NOTE_NUMBERS = ("face", "notional", "conversion_ratio", "put_price", "call_price",
                 "credit_spread", "recovery_rate", "coupon_rate")
_PREF_NUMBERS = ("liquidation_preference", "units", "dividend_rate", "conversion_ratio",
                 "arrears", "recovery_rate")
_REQUIRED = {"zero_coupon_convertible": ("name", "face", "notional", "issue_date", "maturity",
                                         "conversion_ratio"),
             "convertible_note": ("name", "face", "notional", "issue_date", "maturity",
                                  "conversion_ratio", "coupon_rate"),
             "preferred_stock": ("name", "liquidation_preference", "units", "dividend_rate")}


def _numeric_fields(doc: dict) -> list[tuple[dict, str, str]]:
    """(table, key, reported field) of every number in the document."""
    out = [(doc["market"], k, f"market.{k}") for k in _MARKET_NUMBERS if k in doc["market"]]
    out += [(doc["issuer"], k, f"issuer.{k}") for k in _ISSUER_NUMBERS if k in doc["issuer"]]
    for i, inst in enumerate(doc["instruments"]):
        keys = _PREF_NUMBERS if inst["kind"] == "preferred_stock" else _NOTE_NUMBERS
        out += [(inst, k, f"instruments[{i}].{k}") for k in keys if k in inst]
    return out


def _pick_instrument(draw: st.DrawFn, doc: dict, kinds: tuple[str, ...]) -> int:
    """Index of an instrument of one of ``kinds``, appending one if there is none."""
    idx = [i for i, x in enumerate(doc["instruments"]) if x["kind"] in kinds]
    if idx:
        return draw(st.sampled_from(idx))
    vd = doc["market"]["valuation_date"]
    s = doc["market"]["equity_price"]
    kind = draw(st.sampled_from(kinds))
    names = {x.get("name") for x in doc["instruments"]}
    name = next(f"extra {k}" for k in range(1, 100) if f"extra {k}" not in names)
    if kind == "preferred_stock":
        inst = draw(preferred_stocks(valuation_date=vd, equity_price=s, name=name))
    else:
        strat = zero_coupon_convertibles if kind == NOTE_KINDS[0] else convertible_notes
        cs = 0.0 if doc["issuer"].get("hazard_rate", 0.0) > 0 else (0.0, 0.08)
        inst = draw(strat(valuation_date=vd, equity_price=s, name=name, credit_spread=cs))
    doc["instruments"].append(_instrument_dict(inst))
    return len(doc["instruments"]) - 1


def _put_fields(inst: dict) -> None:
    """Drop the fields tied to dates inside a note's life (before moving its dates)."""
    for k in ("put_dates", "call_start", "call_trigger", "call_trigger_days",
              "call_trigger_window", "conversion_start"):
        inst.pop(k, None)


def _brk_nan(draw: st.DrawFn, doc: dict) -> str:
    tbl, k, field = draw(st.sampled_from(_numeric_fields(doc)))
    tbl[k] = math.nan
    return field


def _brk_inf(draw: st.DrawFn, doc: dict) -> str:
    tbl, k, field = draw(st.sampled_from(_numeric_fields(doc)))
    tbl[k] = draw(st.sampled_from((math.inf, -math.inf, 10 ** 400, -(10 ** 400))))
    return field


def _brk_wrong_type(draw: st.DrawFn, doc: dict) -> str:
    choice = draw(st.sampled_from(("number", "date", "text", "bool", "kind", "list")))
    if choice == "number":
        tbl, k, field = draw(st.sampled_from(_numeric_fields(doc)))
        tbl[k] = draw(st.sampled_from(("1.5", True, [1.0], {"x": 1.0}, date(2025, 1, 1))))
        return field
    if choice == "date":
        i = _pick_instrument(draw, doc, NOTE_KINDS)
        opts = [("market", doc["market"], "valuation_date"),
                (f"instruments[{i}]", doc["instruments"][i], "issue_date"),
                (f"instruments[{i}]", doc["instruments"][i], "maturity")]
        where, tbl, k = draw(st.sampled_from(opts))
        tbl[k] = draw(st.sampled_from((20250101, 2025.5, "not a date", True,
                                       datetime(2030, 1, 1, 12, 0))))
        return f"{where}.{k}"
    if choice == "text":
        i = draw(st.integers(0, len(doc["instruments"]) - 1)) if doc["instruments"] else None
        opts = [("issuer", doc["issuer"])]
        if i is not None and doc["instruments"][i]["kind"] != "common_equity":
            opts.append((f"instruments[{i}]", doc["instruments"][i]))
        where, tbl = draw(st.sampled_from(opts))
        tbl["name"] = draw(st.sampled_from((7, "", "   ", ["a"], False)))
        return f"{where}.name"
    if choice == "bool":
        i = _pick_instrument(draw, doc, ("preferred_stock",))
        doc["instruments"][i]["cumulative"] = draw(st.sampled_from(("yes", 1, 0.0, [True])))
        return f"instruments[{i}].cumulative"
    if choice == "kind":
        i = _pick_instrument(draw, doc, CLAIM_KINDS)
        doc["instruments"][i]["kind"] = draw(st.sampled_from((3, ["convertible_note"],
                                                               {"a": 1}, "swap", "")))
        return f"instruments[{i}].kind"
    i = _pick_instrument(draw, doc, NOTE_KINDS)
    inst = doc["instruments"][i]
    k = draw(st.sampled_from(("put_dates", "put_dates[]")))
    if k == "put_dates":
        inst["put_dates"] = draw(st.sampled_from((5, "2026-01-01", {"a": 1})))
        return f"instruments[{i}].put_dates"
    _put_fields(inst)
    inst["put_dates"] = [draw(st.sampled_from((1.0, "soon", True)))]
    return f"instruments[{i}].put_dates[0]"


def _brk_missing(draw: st.DrawFn, doc: dict) -> str:
    opts = [(doc, "schema", "schema"), (doc, "market", "market"), (doc, "issuer", "issuer")]
    mk = doc["market"]
    opts += [(mk, k, f"market.{k}") for k in ("valuation_date", "btc_price", "equity_price",
                                               "btc_vol", "equity_vol", "risk_free_rate")
             if k in mk]
    opts += [(doc["issuer"], k, f"issuer.{k}") for k in ("name", "btc_holdings",
                                                         "shares_outstanding")]
    for i, inst in enumerate(doc["instruments"]):
        opts.append((inst, "kind", f"instruments[{i}].kind"))
        opts += [(inst, k, f"instruments[{i}].{k}") for k in _REQUIRED.get(inst["kind"], ())]
    tbl, k, field = draw(st.sampled_from(opts))
    del tbl[k]
    return field


def _brk_nonpositive(draw: st.DrawFn, doc: dict) -> str:
    """Vols, spot prices, face, notional, units, shares <= 0; holdings, cash < 0."""
    mk = doc["market"]
    opts: list[tuple[dict, str, str, bool]] = [
        (mk, k, f"market.{k}", True) for k in ("btc_price", "equity_price", "btc_vol",
                                               "equity_vol") if k in mk]
    opts += [(doc["issuer"], "shares_outstanding", "issuer.shares_outstanding", True),
             (doc["issuer"], "btc_holdings", "issuer.btc_holdings", False),
             (doc["issuer"], "cash", "issuer.cash", False)]
    for i, inst in enumerate(doc["instruments"]):
        keys = {"zero_coupon_convertible": ("face", "notional"),
                "convertible_note": ("face", "notional"),
                "preferred_stock": ("liquidation_preference", "units")}.get(inst["kind"], ())
        opts += [(inst, k, f"instruments[{i}].{k}", True) for k in keys]
        opts += [(inst, "conversion_ratio", f"instruments[{i}].conversion_ratio", False)]
    tbl, k, field, zero_too = draw(st.sampled_from(opts))
    tbl[k] = -draw(st.floats(0.0 if zero_too else 1e-9, 1e6))
    return field


def _brk_out_of_range(draw: st.DrawFn, doc: dict) -> str:
    """Correlation outside [-1, 1]; rates, yields, spreads, fractions out of range."""
    mk, iss = doc["market"], doc["issuer"]
    big = st.floats(1.0, 1e6, exclude_min=True)
    opts: list[tuple[dict, str, str]] = [(mk, "correlation", "market.correlation"),
                                         (mk, "equity_dividend_yield",
                                          "market.equity_dividend_yield"),
                                         (mk, "btc_lending_yield", "market.btc_lending_yield"),
                                         (iss, "default_equity_loss",
                                          "issuer.default_equity_loss"),
                                         (iss, "hazard_exponent", "issuer.hazard_exponent")]
    if "risk_free_rate" in mk:
        opts.append((mk, "risk_free_rate", "market.risk_free_rate"))
    for i, inst in enumerate(doc["instruments"]):
        if inst["kind"] in NOTE_KINDS:
            opts += [(inst, "recovery_rate", f"instruments[{i}].recovery_rate"),
                     (inst, "credit_spread", f"instruments[{i}].credit_spread")]
        if inst["kind"] == "convertible_note":
            opts.append((inst, "coupon_rate", f"instruments[{i}].coupon_rate"))
        if inst["kind"] == "preferred_stock":
            opts += [(inst, "recovery_rate", f"instruments[{i}].recovery_rate"),
                     (inst, "dividend_rate", f"instruments[{i}].dividend_rate")]
    tbl, k, field = draw(st.sampled_from(opts))
    if k == "hazard_exponent":  # allowed in [0, 10]
        tbl[k] = draw(st.sampled_from((-1.0, 10.5, 1e9)))
    else:  # every other one lies in [-1, 1] or [0, 1]
        tbl[k] = draw(big) * draw(st.sampled_from((1.0, -1.0)))
    return field


def _brk_correlation(draw: st.DrawFn, doc: dict) -> str:
    doc["market"]["correlation"] = draw(st.sampled_from((1.0000001, -1.0000001, 2.0, -5.0,
                                                         100.0)))
    return "market.correlation"


def _brk_vol(draw: st.DrawFn, doc: dict) -> str:
    mk = doc["market"]
    k = draw(st.sampled_from(("equity_vol", "btc_vol")))
    mk.pop(f"{k}_curve", None)
    mk[k] = draw(st.sampled_from((0.0, -0.2, -1e-12)))
    return f"market.{k}"


def _brk_maturity(draw: st.DrawFn, doc: dict) -> str:
    """Maturity on or before the valuation date (after issue), or on or before issue."""
    i = _pick_instrument(draw, doc, NOTE_KINDS)
    inst = doc["instruments"][i]
    _put_fields(inst)
    vd = doc["market"]["valuation_date"]
    if draw(st.booleans()):
        inst["maturity"] = vd - timedelta(days=draw(st.integers(0, 2000)))
        inst["issue_date"] = inst["maturity"] - timedelta(days=draw(st.integers(1, 3000)))
    else:
        inst["maturity"] = inst["issue_date"] - timedelta(days=draw(st.integers(0, 3000)))
    return f"instruments[{i}].maturity"


def _brk_put_date(draw: st.DrawFn, doc: dict) -> str:
    """A put date on or before issue (first) or on or after maturity (last)."""
    i = _pick_instrument(draw, doc, NOTE_KINDS)
    inst = doc["instruments"][i]
    puts = list(inst.get("put_dates", []))
    if draw(st.booleans()):
        puts.insert(0, inst["issue_date"] - timedelta(days=draw(st.integers(0, 1000))))
        j = 0
    else:
        puts.append(inst["maturity"] + timedelta(days=draw(st.integers(0, 1000))))
        j = len(puts) - 1
    inst["put_dates"] = puts
    return f"instruments[{i}].put_dates[{j}]"


def _brk_dates_order(draw: st.DrawFn, doc: dict) -> str:
    """Put dates not strictly increasing."""
    i = _pick_instrument(draw, doc, NOTE_KINDS)
    inst = doc["instruments"][i]
    vd = doc["market"]["valuation_date"]
    _put_fields(inst)
    k = draw(st.integers(2, (inst["maturity"] - vd).days - 1))  # notes live >= 30 days
    a = vd + timedelta(days=k)
    inst["put_dates"] = [a, a - timedelta(days=draw(st.integers(0, k - 1)))]
    return f"instruments[{i}].put_dates[1]"


def _brk_trigger_days(draw: st.DrawFn, doc: dict) -> str:
    i = _pick_instrument(draw, doc, NOTE_KINDS)
    inst = doc["instruments"][i]
    inst.setdefault("call_start", doc["market"]["valuation_date"])
    inst.setdefault("call_trigger", 1.3)
    w = draw(st.integers(1, 60))
    inst["call_trigger_window"] = w
    inst["call_trigger_days"] = w + draw(st.integers(1, 30))
    return f"instruments[{i}].call_trigger_days"


def _brk_call_inconsistent(draw: st.DrawFn, doc: dict) -> str:
    """A soft call without call_start, days without window, call_start outside life."""
    i = _pick_instrument(draw, doc, NOTE_KINDS)
    inst = doc["instruments"][i]
    for k in ("call_start", "call_trigger", "call_trigger_days", "call_trigger_window"):
        inst.pop(k, None)
    what = draw(st.sampled_from(("no_start", "no_window", "no_trigger", "start_late")))
    if what == "no_start":
        inst["call_trigger"] = 1.3
        return f"instruments[{i}].call_start"
    inst["call_start"] = doc["market"]["valuation_date"]
    if what == "no_window":
        inst["call_trigger"] = 1.3
        inst["call_trigger_days"] = 20
        return f"instruments[{i}].call_trigger_window"
    if what == "no_trigger":
        inst["call_trigger_days"], inst["call_trigger_window"] = 20, 30
        return f"instruments[{i}].call_trigger"
    inst["call_start"] = inst["maturity"] + timedelta(days=draw(st.integers(0, 500)))
    return f"instruments[{i}].call_start"


def _brk_negative_hazard(draw: st.DrawFn, doc: dict) -> str:
    doc["issuer"]["hazard_rate"] = -draw(st.floats(1e-9, 10.0))
    return "issuer.hazard_rate"


def _brk_hazard_with_spread(draw: st.DrawFn, doc: dict) -> str:
    i = _pick_instrument(draw, doc, NOTE_KINDS)
    doc["issuer"]["hazard_rate"] = draw(st.floats(1e-4, 0.5))
    doc["instruments"][i]["credit_spread"] = draw(st.floats(1e-4, 0.5))
    first = next(j for j, x in enumerate(doc["instruments"])
                 if x["kind"] in NOTE_KINDS and x.get("credit_spread", 0.0) > 0)
    return f"instruments[{first}].credit_spread"


def _brk_recovery(draw: st.DrawFn, doc: dict) -> str:
    i = _pick_instrument(draw, doc, CLAIM_KINDS)
    doc["instruments"][i]["recovery_rate"] = draw(st.sampled_from((-0.1, 1.01, 2.0, -1e-9)))
    return f"instruments[{i}].recovery_rate"


def _brk_choice(draw: st.DrawFn, doc: dict) -> str:
    """conversion, seniority, frequencies and rank outside their allowed values."""
    i = _pick_instrument(draw, doc, CLAIM_KINDS)
    inst = doc["instruments"][i]
    if inst["kind"] == "preferred_stock":
        k, bad = draw(st.sampled_from((("dividend_frequency", 3), ("dividend_frequency", 0),
                                       ("rank", 0), ("rank", -2), ("rank", 1.5))))
    else:
        opts = [("conversion", "bermudan"), ("seniority", "junior"), ("seniority", 1)]
        if inst["kind"] == "convertible_note":
            opts += [("coupon_frequency", 3), ("coupon_frequency", 0)]
        k, bad = draw(st.sampled_from(opts))
    inst[k] = bad
    return f"instruments[{i}].{k}"


def _brk_arrears(draw: st.DrawFn, doc: dict) -> str:
    i = _pick_instrument(draw, doc, ("preferred_stock",))
    inst = doc["instruments"][i]
    inst["cumulative"] = False
    inst["arrears"] = draw(st.floats(0.01, 100.0))
    return f"instruments[{i}].arrears"


def _brk_duplicate_name(draw: st.DrawFn, doc: dict) -> str:
    _pick_instrument(draw, doc, CLAIM_KINDS)
    named = [i for i, x in enumerate(doc["instruments"]) if x["kind"] in CLAIM_KINDS]
    if len(named) < 2:
        doc["instruments"].append(copy.deepcopy(doc["instruments"][named[0]]))
        j = len(doc["instruments"]) - 1
        i = named[0]
    else:
        i, j = sorted(draw(st.lists(st.sampled_from(named), min_size=2, max_size=2,
                                    unique=True)))
        doc["instruments"][j]["name"] = doc["instruments"][i]["name"]
    return f"instruments[{j}].name"


def _brk_unknown(draw: st.DrawFn, doc: dict) -> str:
    """An unknown key (a typo) at top level, in a table or in an instrument, or an
    unknown schema or instrument kind."""
    where = draw(st.sampled_from(("top", "market", "issuer", "instrument", "schema", "kind")))
    key = draw(st.sampled_from(("volatility", "btc_vol_", "Maturity", "coupon")))
    if where == "top":
        doc[key] = 1.0
        return key
    if where == "schema":
        doc["schema"] = draw(st.sampled_from(("convpricer/2", "", "convpricer", 1)))
        return "schema"
    if where in ("market", "issuer"):
        doc[where][key] = 1.0
        return f"{where}.{key}"
    i = _pick_instrument(draw, doc, CLAIM_KINDS)
    if where == "kind":
        doc["instruments"][i]["kind"] = draw(st.sampled_from(("swap", "convertible",
                                                              "Preferred_Stock")))
        return f"instruments[{i}].kind"
    doc["instruments"][i][key] = 1.0
    return f"instruments[{i}].{key}"


def _brk_tables(draw: st.DrawFn, doc: dict) -> str:
    """market, issuer, instruments, an instrument, engine or a curve that is not a table."""
    what = draw(st.sampled_from(("market", "issuer", "instruments", "instrument", "engine",
                                 "curve")))
    bad = draw(st.sampled_from((5, "x", [1, 2])))
    if what == "instrument":
        _pick_instrument(draw, doc, CLAIM_KINDS)
        doc["instruments"][0] = bad
        return "instruments[0]"
    if what == "instruments":
        doc["instruments"] = draw(st.sampled_from((5, "x", {"kind": "preferred_stock"})))
        return "instruments"
    if what == "curve":
        mk = doc["market"]
        flat, curve = draw(st.sampled_from((("risk_free_rate", "rate_curve"),
                                            ("equity_vol", "equity_vol_curve"),
                                            ("btc_vol", "btc_vol_curve"))))
        mk.pop(flat, None)
        mk[curve] = bad
        return f"market.{curve}"
    doc[what] = bad
    return what


def _curve_target(draw: st.DrawFn, doc: dict) -> tuple[dict, str, str]:
    """A curve of the document (one is made if none): (curve table, name, values key)."""
    mk = doc["market"]
    name = draw(st.sampled_from(("rate_curve", "equity_vol_curve", "btc_vol_curve")))
    flat = {"rate_curve": "risk_free_rate"}.get(name, name.removesuffix("_curve"))
    key = "zero_rates" if name == "rate_curve" else "vols"
    if name not in mk:
        v = mk.pop(flat)
        vd = mk["valuation_date"]
        mk[name] = {"dates": [vd + timedelta(days=365), vd + timedelta(days=730)],
                    key: [v, v]}
    return mk[name], name, key


def _brk_curve(draw: st.DrawFn, doc: dict) -> str:
    """Curve problems: dates out of order, lengths that differ, a first date on or
    before the valuation date, empty, a curve and its flat number both given, a
    missing key, a bad value, a vol curve whose total variance decreases."""
    c, name, key = _curve_target(draw, doc)
    vd = doc["market"]["valuation_date"]
    where = f"market.{name}"
    what = draw(st.sampled_from(("order", "length", "early", "empty", "both", "missing",
                                 "value", "variance")))
    if what == "order":
        j = draw(st.integers(1, len(c["dates"])))
        c["dates"].insert(j, c["dates"][j - 1] - timedelta(days=draw(st.integers(0, 20))))
        c[key].insert(j, c[key][j - 1])
        return f"{where}.dates[{j}]"
    if what == "length":
        c[key] = c[key] + [c[key][-1]] if draw(st.booleans()) or len(c[key]) == 1 \
            else c[key][:-1]
        return f"{where}.dates"
    if what == "early":
        c["dates"][0] = vd - timedelta(days=draw(st.integers(0, 400)))
        return f"{where}.dates[0]"
    if what == "empty":
        c["dates"], c[key] = [], []
        return f"{where}.{key}"
    if what == "both":
        flat = {"rate_curve": "risk_free_rate"}.get(name, name.removesuffix("_curve"))
        doc["market"][flat] = 0.5 if key == "vols" else 0.03
        return where
    if what == "missing":
        k = draw(st.sampled_from(("dates", key)))
        del c[k]
        return f"{where}.{k}"
    j = draw(st.integers(0, len(c[key]) - 1))
    if what == "value":
        c[key][j] = draw(st.sampled_from((math.nan, math.inf, "x", True) + (
            (0.0, -0.3) if key == "vols" else ())))
        return f"{where}.{key}[{j}]"
    if key != "vols":  # rates have no variance condition: break a value instead
        c[key][j] = math.nan
        return f"{where}.{key}[{j}]"
    # total variance v_j^2 t_j must not decrease: shrink one vol after the first
    if len(c["dates"]) == 1:
        c["dates"].append(c["dates"][0] + timedelta(days=365))
        c[key].append(c[key][0])
    j = max(j, 1)
    t0 = (c["dates"][j - 1] - vd).days
    t1 = (c["dates"][j] - vd).days
    c[key][j] = c[key][j - 1] * math.sqrt(t0 / t1) * draw(st.floats(0.1, 0.95))
    return f"{where}.{key}[{j}]"


def _brk_date_range(draw: st.DrawFn, doc: dict) -> str:
    """A date outside QuantLib's range (1901-01-01 to 2199-12-31)."""
    far = draw(st.sampled_from((date(2200, 1, 1), date(2500, 6, 30), date(9999, 12, 31))))
    early = draw(st.sampled_from((date(1, 1, 1), date(1900, 12, 31))))
    i = _pick_instrument(draw, doc, CLAIM_KINDS)
    inst = doc["instruments"][i]
    what = draw(st.sampled_from(("valuation_date", "maturity", "issue_date", "call_start")))
    if what == "valuation_date":
        doc["market"]["valuation_date"] = early
        return "market.valuation_date"
    if inst["kind"] == "preferred_stock":
        inst["call_start"] = far
        return f"instruments[{i}].call_start"
    if what == "issue_date":
        inst["issue_date"] = early
        return f"instruments[{i}].issue_date"
    _put_fields(inst)
    inst["maturity"] = far
    return f"instruments[{i}].maturity"


def _brk_datetime(draw: st.DrawFn, doc: dict) -> str:
    vd = doc["market"]["valuation_date"]
    doc["market"]["valuation_date"] = datetime(vd.year, vd.month, vd.day,
                                               draw(st.integers(0, 23)))
    return "market.valuation_date"


#: Classes of breakage of :func:`invalid_documents`, name -> what it does.
BREAKS: dict[str, Break] = {
    "nan": _brk_nan,
    "infinity": _brk_inf,
    "wrong_type": _brk_wrong_type,
    "missing_field": _brk_missing,
    "non_positive": _brk_nonpositive,
    "out_of_range": _brk_out_of_range,
    "correlation": _brk_correlation,
    "volatility": _brk_vol,
    "maturity": _brk_maturity,
    "put_date": _brk_put_date,
    "dates_order": _brk_dates_order,
    "trigger_days": _brk_trigger_days,
    "call_terms": _brk_call_inconsistent,
    "negative_hazard": _brk_negative_hazard,
    "hazard_with_spread": _brk_hazard_with_spread,
    "recovery": _brk_recovery,
    "choice": _brk_choice,
    "arrears": _brk_arrears,
    "duplicate_name": _brk_duplicate_name,
    "unknown": _brk_unknown,
    "not_a_table": _brk_tables,
    "curve": _brk_curve,
    "datetime": _brk_datetime,
    "date_range": _brk_date_range,
    "toml_syntax": lambda draw, doc: "toml",  # handled in invalid_documents
}


@st.composite
def _broken(draw: st.DrawFn, breaks: tuple[str, ...]) -> tuple[str, str]:
    kind = draw(st.sampled_from(breaks))
    doc = draw(document_dicts(structure_options={"instruments": (1, 3)}))
    field = BREAKS[kind](draw, doc)
    text = to_toml(doc)
    if kind == "toml_syntax":
        lines = text.splitlines()
        j = draw(st.integers(0, len(lines) - 1))
        junk = draw(st.sampled_from(("= 1", "[market", "x = ", "btc_price = 1 2", "[[]]",
                                     'name = "unterminated')))
        text = "\n".join([*lines[:j], junk, *lines[j:]]) + "\n"
    return text, field


def invalid_documents(*, breaks: Iterable[str] | None = None) -> st.SearchStrategy[
        tuple[str, str]]:
    """``(toml_text, field)``: a valid convpricer/1 document with exactly one thing
    broken, and the dotted field path the loader must name in its refusal
    (``"toml"`` for a file that is not TOML at all). ``breaks`` narrows the
    classes of breakage to some of :data:`BREAKS`."""
    chosen = tuple(BREAKS) if breaks is None else tuple(breaks)
    unknown = set(chosen) - set(BREAKS)
    if not chosen or unknown:
        raise InvalidArgument(f"breaks={breaks!r}: choose from {', '.join(BREAKS)}")
    return _broken(chosen)
