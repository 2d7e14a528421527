"""``convpricer value FILE [--engine KIND] [--steps N] [--format table|json|csv]``."""

from __future__ import annotations

import argparse

from ..loader import load_document
from ..valuation import value
from ._options import add_engine_arguments, engine_options
from ._output import add_format, records, table, to_json

_TABLE_COLUMNS = ("name", "kind", "engine", "value", "units", "total_value", "parity",
                  "delta_btc", "delta_equity", "p_convert", "p_impaired", "p_default",
                  "std_error")
_COMMON_KEYS = ("value_per_share", "nav_per_share", "diluted_nav_per_share", "mnav",
                "btc_per_share", "model_value_per_share")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("value", help="value every instrument in a file")
    p.add_argument("file", help="a convpricer/1 TOML file")
    add_engine_arguments(p)
    p.add_argument("--no-greeks", action="store_true", help="skip bump-and-reprice greeks")
    add_format(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> str:
    doc = load_document(args.file)
    engine, options = engine_options(doc, args)
    df = value(doc.structure, doc.market, engine=engine, greeks=not args.no_greeks, **options)
    if args.format == "csv":
        return df.to_csv(index=False)
    rows = records(df)
    common = next((r for r in rows if r["kind"] == "common_equity"), None)
    if args.format == "json":
        out = {"valuation_date": df.attrs["valuation_date"],
               "engine": {"kind": engine, **options, "settings": df.attrs["settings"]},
               "instruments": rows,
               "common": None if common is None else
               {k: common.get(k) for k in (*_COMMON_KEYS, "delta_btc", "units")}}
        return to_json(out)
    cols = [c for c in _TABLE_COLUMNS if c in df.columns]
    text = table(df[cols], f"convpricer value {args.file}  "
                 f"(valuation date {df.attrs['valuation_date']}, engine {engine})")
    if common is not None:
        text += "\n\ncommon: " + ", ".join(f"{k} {common[k]:,.4f}" for k in _COMMON_KEYS
                                           if common.get(k) is not None)
    notes = sorted({n for r in rows for n in (r.get("notes") or "").split("; ") if n})
    if notes:
        text += "\n\nnotes:\n" + "\n".join(f"  - {n}" for n in notes)
    return text
