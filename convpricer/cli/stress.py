"""``convpricer stress FILE [--btc-drawdowns 0,0.25,0.5,0.75] [--mnav 1,nav] ...``.

Builds the cartesian product of BTC drawdowns, equity rules (what the share
price does when BTC falls: constant mNAV by default), BTC/equity volatility
regimes and correlations (``convpricer.stress.stress_scenarios``), values it
(``convpricer.stress.stress``) and prints a table (or CSV/JSON), or writes the
full result with ``--out``.
"""

from __future__ import annotations

import argparse

from ..errors import InputError
from ..grid import grid_columns
from ..loader import load_document
from ..stress import DEFAULT_DRAWDOWNS, EQUITY_RULES, stress, stress_scenarios
from ._output import add_format, records, table, to_json
from .grid import add_run_options, run_grid, write

_TABLE_COLUMNS = ("name", "value", "base_value", "change_pct", "p_convert", "p_impaired",
                  "mnav", "error")


def _list(flag: str, numbers: bool = True):
    def parse(text: str) -> list:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"{flag} needs a comma-separated list")
        if not numbers:
            return items
        try:
            return [float(t) for t in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} {text!r}: not a list of numbers") \
                from None
    return parse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stress", help="value the structure under BTC drawdowns, mNAV collapse, vol regimes",
        description="Stress grid: the cartesian product of the lists given. When BTC falls "
        "the share price follows at constant mNAV unless --equity/--mnav say otherwise. "
        "Negative values (rallies) need '=': --btc-drawdowns=-0.2,0,0.5.")
    p.add_argument("file", help="a convpricer/1 TOML file (the base market and structure)")
    p.add_argument("--btc-drawdowns", type=_list("--btc-drawdowns"),
                   default=list(DEFAULT_DRAWDOWNS), metavar="D,D,...",
                   help="BTC falls as fractions: B = B0 * (1 - d) (default: 0,0.25,0.5,0.75)")
    p.add_argument("--equity", type=_list("--equity", numbers=False), default=None,
                   metavar="RULE,...",
                   help=f"share price rules: {', '.join(EQUITY_RULES)} or a target mNAV "
                        "(default: constant_mnav)")
    p.add_argument("--mnav", type=_list("--mnav", numbers=False), default=None,
                   metavar="M,...", help="target mNAVs (S = M * BTC held * B / shares; 1 = "
                   "mNAV collapse), or nav / diluted_nav")
    p.add_argument("--btc-vols", type=_list("--btc-vols"), default=None, metavar="V,...",
                   help="BTC volatility regimes, e.g. 0.35,0.55 (default: the file's)")
    p.add_argument("--equity-vols", type=_list("--equity-vols"), default=None,
                   metavar="V,...", help="equity volatility regimes (default: the file's)")
    p.add_argument("--correlations", type=_list("--correlations"), default=None,
                   metavar="R,...", help="BTC/equity correlations (default: the file's)")
    add_run_options(p)
    add_format(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> str:
    doc = load_document(args.file)
    try:
        scenarios = stress_scenarios(doc.market, doc.structure, args.btc_drawdowns,
                                     equity=args.equity, mnav=args.mnav, btc_vols=args.btc_vols,
                                     equity_vols=args.equity_vols,
                                     correlations=args.correlations)
    except InputError as e:
        raise e.within(source=args.file) from None
    df = run_grid(doc, scenarios, args, runner=stress)
    if args.out is not None or args.format == "csv":
        return write(df, args.out)
    if args.format == "json":
        return to_json({"valuation_date": doc.market.valuation_date.isoformat(),
                        "engine": {"kind": df.attrs["engine"], **df.attrs["options"]},
                        "scenarios": df.attrs["scenarios"], "errors": df.attrs["errors"],
                        "rows": records(df)})
    desc = [c for c in grid_columns(df) if c != "scenario"]
    cols = [*desc, *(c for c in _TABLE_COLUMNS if c in df.columns
                     and (c != "error" or df["error"].notna().any()))]
    return table(df[cols], f"convpricer stress {args.file}  (valuation date "
                 f"{doc.market.valuation_date.isoformat()}, engine {df.attrs['engine']}; "
                 "change_pct against the file's market)")
