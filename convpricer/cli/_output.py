"""Formatting shared by the subcommands: table, JSON or CSV of DataFrames."""

from __future__ import annotations

import json
import math
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

FORMATS = ("table", "json", "csv")


def clean(v: Any) -> Any:
    """JSON-safe scalar: numpy types to Python, NaN/None to None."""
    if isinstance(v, dict):
        return {k: clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [clean(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if v is pd.NA:
        return None
    if isinstance(v, date):
        return v.isoformat()
    return v


def to_json(obj: Any) -> str:
    return json.dumps(clean(obj), indent=2)


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [clean(r) for r in df.to_dict(orient="records")]


def table(df: pd.DataFrame, title: str = "") -> str:
    """A plain-text table; missing values (None, NaN) print as '-'."""
    df = df.apply(lambda c: c.map(lambda v: "-" if v is None else v) if c.dtype == object
                  else c)
    with pd.option_context("display.max_columns", None, "display.width", 200,
                           "display.float_format", lambda x: f"{x:,.4f}"):
        body = df.to_string(index=False, na_rep="-")
    return f"{title}\n{body}" if title else body


def add_format(parser: Any) -> None:
    parser.add_argument("--format", choices=FORMATS, default="table",
                        help="output format (default: table)")
