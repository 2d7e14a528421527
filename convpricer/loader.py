"""Reading schema "convpricer/1" TOML files (design.md section 5)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError, SchemaError
from .instruments import KINDS, field_names
from .market import Curve, Market
from .structure import CapitalStructure

SCHEMA = "convpricer/1"
_MARKET_KEYS = set(field_names(Market)) - {"rate_curve", "equity_vol_curve", "btc_vol_curve"}
_CURVES = {"rate_curve": "zero_rates", "equity_vol_curve": "vols", "btc_vol_curve": "vols"}
_ISSUER_KEYS = set(field_names(CapitalStructure)) - {"instruments"}
_TUPLE_FIELDS = {"put_dates"}


@dataclass(frozen=True)
class Document:
    """A loaded file: the structure, the market and the optional [engine] table."""

    structure: CapitalStructure
    market: Market
    engine: dict[str, Any] = field(default_factory=dict)
    path: str | None = None


def _table(doc: dict, key: str, where: str) -> dict:
    value = doc.get(key)
    if value is None:
        raise SchemaError(f"{where}{key}", None, "is missing")
    if not isinstance(value, dict):
        raise SchemaError(f"{where}{key}", value, "must be a table")
    return value


def _reject_unknown(tbl: dict, allowed: set[str], where: str) -> None:
    for k in tbl:
        if k not in allowed:
            raise SchemaError(f"{where}.{k}", tbl[k],
                              f"unknown field (allowed: {', '.join(sorted(allowed))})")


def _build(cls: type, kwargs: dict, where: str) -> Any:
    try:
        return cls(**kwargs)
    except InputError as e:
        raise e.within(where) from None


def _required(cls: type) -> set[str]:
    from dataclasses import MISSING, fields
    return {f.name for f in fields(cls)
            if f.init and f.default is MISSING and f.default_factory is MISSING}


def _market(tbl: dict) -> Market:
    _reject_unknown(tbl, _MARKET_KEYS | set(_CURVES), "market")
    kwargs = {k: v for k, v in tbl.items() if k in _MARKET_KEYS}
    for name, values_key in _CURVES.items():
        if name not in tbl:
            continue
        c = tbl[name]
        if not isinstance(c, dict):
            raise SchemaError(f"market.{name}", c, "must be a table with dates and "
                              f"{values_key}")
        _reject_unknown(c, {"dates", values_key}, f"market.{name}")
        for k in ("dates", values_key):
            if k not in c:
                raise SchemaError(f"market.{name}.{k}", None, "is missing")
            if not isinstance(c[k], list):
                raise SchemaError(f"market.{name}.{k}", c[k], "must be a list")
        kwargs[name] = Curve(tuple(c["dates"]), tuple(c[values_key]))
    for k in ("valuation_date", "btc_price", "equity_price"):
        if k not in kwargs:
            raise SchemaError(f"market.{k}", None, "is missing")
    m = Market(**kwargs)
    return m


def _instrument(i: int, tbl: Any) -> Any:
    where = f"instruments[{i}]"
    if not isinstance(tbl, dict):
        raise SchemaError(where, tbl, "must be a table")
    kind = tbl.get("kind")
    if kind is None:
        raise SchemaError(f"{where}.kind", None, "is missing")
    if not isinstance(kind, str) or kind not in KINDS:
        raise SchemaError(f"{where}.kind", kind, f"unknown kind (known: {', '.join(KINDS)})")
    cls = KINDS[kind]
    allowed = set(field_names(cls))
    _reject_unknown({k: v for k, v in tbl.items() if k != "kind"}, allowed, where)
    for k in _required(cls):
        if k not in tbl:
            raise SchemaError(f"{where}.{k}", None, "is missing")
    kwargs = {k: (tuple(v) if k in _TUPLE_FIELDS and isinstance(v, list) else v)
              for k, v in tbl.items() if k != "kind"}
    if "put_dates" in kwargs and not isinstance(kwargs["put_dates"], tuple):
        raise SchemaError(f"{where}.put_dates", kwargs["put_dates"], "must be a list of dates")
    return _build(cls, kwargs, where)


def _check_dates(structure: CapitalStructure, market: Market) -> None:
    vd = market.valuation_date
    for i, inst in enumerate(structure.instruments):
        mat = getattr(inst, "maturity", None)
        if mat is not None and mat <= vd:
            raise InputError(f"instruments[{i}].maturity", mat.isoformat(),
                             f"must be after market.valuation_date {vd.isoformat()}")


def parse(doc: dict, source: str | None = None) -> Document:
    """Build a :class:`Document` from a parsed TOML table."""
    try:
        schema = doc.get("schema")
        if schema != SCHEMA:
            raise SchemaError("schema", schema, f'must be "{SCHEMA}"')
        _reject_unknown(doc, {"schema", "market", "issuer", "instruments", "engine"}, "")
        market = _market(_table(doc, "market", ""))
        issuer = _table(doc, "issuer", "")
        _reject_unknown(issuer, _ISSUER_KEYS, "issuer")
        for k in ("name", "btc_holdings", "shares_outstanding"):
            if k not in issuer:
                raise SchemaError(f"issuer.{k}", None, "is missing")
        raw = doc.get("instruments", [])
        if not isinstance(raw, list):
            raise SchemaError("instruments", raw, "must be an array of tables [[instruments]]")
        insts = tuple(_instrument(i, t) for i, t in enumerate(raw))
        structure = CapitalStructure(instruments=insts, **issuer)
        _check_dates(structure, market)
        engine = doc.get("engine", {})
        if not isinstance(engine, dict):
            raise SchemaError("engine", engine, "must be a table")
    except InputError as e:
        if e.field.startswith("."):
            e = type(e)(e.field[1:], e.value, e.reason, e.source)
        raise e.within(source=source) from None
    return Document(structure, market, dict(engine), source)


def load_document(path: str | Path) -> Document:
    """Read a file into a :class:`Document` (structure, market, [engine] options)."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("file", str(p), "no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError("file", str(p), f"cannot be read ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise SchemaError("toml", str(e), "is not valid TOML", str(p)) from None
    return parse(data, str(p))


def load(path: str | Path) -> tuple[CapitalStructure, Market]:
    """Read a convpricer/1 file; return ``(structure, market)``."""
    d = load_document(path)
    return d.structure, d.market
