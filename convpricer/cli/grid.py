"""``convpricer grid FILE SCENARIOS.csv [--scheduler ADDRESS] [--out PATH] [--engine KIND]``.

SCENARIOS.csv has one scenario per row; its columns are Market field names
(an empty cell keeps the file's value) and optionally ``scenario``, a label.
Without ``--out`` the result is printed as CSV; with it, written as CSV or
Parquet (by the file's suffix) and a one-line summary is printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import InputError
from ..grid import LOCAL_SCHEDULERS, value_grid
from ..loader import Document, load_document
from ._options import add_engine_arguments, engine_options


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Engine and scheduling options shared by ``grid`` and ``stress``."""
    add_engine_arguments(p)
    p.add_argument("--greeks", action="store_true",
                   help="also compute bump-and-reprice greeks in every scenario (slower)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="a Dask scheduler address (tcp://host:8786), or "
                        f"{'/'.join(LOCAL_SCHEDULERS)} to run here (default: processes "
                        "on the local cores)")
    p.add_argument("--workers", type=int, default=None,
                   help="local worker processes/threads (default: all cores)")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="scenarios per task (default: about 4 tasks per worker)")
    p.add_argument("--out", default=None, metavar="PATH",
                   help="write the full result to PATH (.csv or .parquet)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def run_grid(doc: Document, scenarios: pd.DataFrame, args: argparse.Namespace,
             runner: Any = value_grid) -> pd.DataFrame:
    """Run ``runner`` (value_grid or stress) where ``--scheduler`` says, with a progress bar."""
    engine, options = engine_options(doc, args)
    progress = False if args.no_progress else None  # None: a bar when stderr is a terminal
    kw: dict[str, Any] = {"progress": progress, "greeks": args.greeks, **options}
    target = args.scheduler
    if target is None or target in LOCAL_SCHEDULERS:
        return runner(doc.structure, doc.market, scenarios, engine, scheduler=target,
                      workers=args.workers, chunk_size=args.chunk_size, **kw)
    if args.workers is not None:
        raise InputError("--workers", args.workers, "is for local runs; the cluster's "
                         "workers are set where it is started")
    try:
        from distributed import Client
    except ImportError:
        raise InputError("--scheduler", target, "needs dask.distributed on this machine: "
                         "pip install 'convpricer[dask]'") from None
    try:
        client = Client(target, timeout="10s")
    except (OSError, TimeoutError, ValueError) as e:
        raise InputError("--scheduler", target, f"cannot connect ({e})") from None
    with client:
        if progress is not False:
            print(f"convpricer: dask dashboard {client.dashboard_link}", file=sys.stderr)
        return runner(doc.structure, doc.market, scenarios, engine, client=client,
                      chunk_size=args.chunk_size, **kw)


def write(df: pd.DataFrame, out: str | None) -> str:
    """CSV text when ``out`` is None; otherwise write the file and return a summary."""
    n, bad = df.attrs.get("scenarios", 0), df.attrs.get("errors", 0)
    if bad:
        print(f"convpricer: warning: {bad} of {n} scenarios failed (see the error column)",
              file=sys.stderr)
    if out is None:
        return df.to_csv(index=False)
    path = Path(out)
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            df.to_csv(path, index=False)
        elif suffix == ".parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise InputError("--out", out, "writing Parquet needs pyarrow: "
                                 "pip install 'convpricer[dask]'") from None
            _arrow_safe(df).to_parquet(path, index=False)
        else:
            raise InputError("--out", out, "must end in .csv or .parquet")
    except OSError as e:
        raise InputError("--out", out, f"cannot be written ({e.strerror or e})") from None
    return (f"wrote {len(df)} rows ({n} scenarios, {bad} failed) to {out} "
            f"in {df.attrs.get('seconds', 0.0):.1f} s on {df.attrs.get('scheduler')}")


def _arrow_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Object columns mixing types (a bad date next to good ones) written as text."""
    out = df.copy()
    for c in [c for c in out.columns if pd.api.types.is_object_dtype(out[c])]:
        kinds = {type(v) for v in out[c] if v is not None and v == v}
        if len(kinds) > 1:
            out[c] = [None if v is None or v != v else str(v) for v in out[c]]
    return out


def read_scenarios(path: str) -> pd.DataFrame:
    """A scenarios CSV as a DataFrame (a ``scenario`` column becomes the index)."""
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise InputError("scenarios", path, "no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError("scenarios", path, f"cannot be read ({e})") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as e:
        raise InputError("scenarios", path, f"is not a CSV table of scenarios ({e})") from None
    if "scenario" in df.columns:
        df = df.set_index("scenario")
    return df


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("grid", help="value every instrument in every scenario of a CSV",
                       description="Value every instrument of FILE in each scenario (row) of "
                       "SCENARIOS.csv, whose columns are market fields (btc_price, "
                       "equity_price, btc_vol, equity_vol, correlation, risk_free_rate, "
                       "valuation_date, ...); an empty cell keeps FILE's value.")
    p.add_argument("file", help="a convpricer/1 TOML file (the base market and structure)")
    p.add_argument("scenarios", help="CSV of scenarios, one per row")
    add_run_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> str:
    doc = load_document(args.file)
    scenarios = read_scenarios(args.scenarios)
    return write(run_grid(doc, scenarios, args), args.out)
