"""``convpricer waterfall FILE --btc-price X [--equity-price Y] [--date D]
[--format table|json|csv]``: pay every claim at one state of the world."""

from __future__ import annotations

import argparse

from .. import _checks as chk
from ..errors import InputError
from ..loader import load_document
from ..waterfall import waterfall
from ._output import add_format, clean, records, table, to_json

_CLAIM_KEYS = ("name", "kind", "due", "payout", "payout_per_unit", "converted",
               "shares_issued", "arrears")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("waterfall", help="pay every claim at one BTC price "
                       "(a liquidation, or the claims due on --date)")
    p.add_argument("file", help="a convpricer/1 TOML file")
    p.add_argument("--btc-price", type=float, required=True, help="USD per BTC")
    p.add_argument("--equity-price", type=float, default=None,
                   help="USD per common share: informs convert-or-put decisions on --date")
    p.add_argument("--date", default=None,
                   help="YYYY-MM-DD: pay what falls due that day (default: liquidate)")
    add_format(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> str:
    doc = load_document(args.file)
    d = None if args.date is None else chk.a_date("--date", args.date)
    if d is not None and d < doc.market.valuation_date:
        raise InputError("--date", d.isoformat(), "must not be before market.valuation_date "
                         f"{doc.market.valuation_date.isoformat()}")
    for field, v in (("--btc-price", args.btc_price), ("--equity-price", args.equity_price)):
        if v is not None:
            chk.non_negative(field, v)
    df = waterfall(doc.structure, args.btc_price, args.equity_price, d)
    a = df.attrs
    if args.format == "csv":
        return df.to_csv(index=False)
    rows = records(df)
    claims, common = rows[:-1], rows[-1]
    if args.format == "json":
        return to_json({
            "btc_price": args.btc_price, "equity_price": args.equity_price,
            "date": a["date"], "default": a["default"], "assets": a["assets"],
            "claims": [{k: r[k] for k in _CLAIM_KEYS} for r in claims],
            "common": {"name": common["name"], "payout": common["payout"],
                       "per_share": common["payout_per_unit"], "shares": a["common_shares"]},
            "cash_used": a["cash_used"], "btc_sold": a["btc_sold"], "btc_left": a["btc_left"],
            "other_used": a["other_used"]})
    if d is None:
        what = "liquidation"
    else:
        what = f"due on {d.isoformat()}" + (": DEFAULT, structure liquidated"
                                            if a["default"] else "")
    s = "" if args.equity_price is None else f", equity {args.equity_price:,.2f}"
    text = table(df, f"convpricer waterfall {args.file}  (BTC {args.btc_price:,.2f}{s}; "
                 f"{what})")
    summary = clean({k: a[k] for k in ("assets", "cash_used", "btc_sold", "btc_left",
                                       "other_used", "common_shares")})
    return text + "\n\n" + ", ".join(f"{k} {v:,.4f}" for k, v in summary.items())
