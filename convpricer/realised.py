"""Realised volatilities and correlation from daily closes.

BTC trades every calendar day, the equity on NYSE trading days. Both are
measured on the equity's trading days (BTC log returns over the same
intervals) so that the correlation is between returns over the same
periods; BTC volatility is also given from its own daily series.
Annualisation: 252 trading days, 365 calendar days.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError


def read_closes(path: str | Path) -> pd.DataFrame:
    """Read a CSV with columns date, btc_usd, mstr_usd (blank on non-trading days)."""
    df = pd.read_csv(path, parse_dates=["date"]).set_index("date").sort_index()
    for col in ("btc_usd", "mstr_usd"):
        if col not in df.columns:
            raise InputError("columns", list(df.columns), f"missing column {col!r}")
    return df


def realised(closes: pd.DataFrame, start: str | None = None, end: str | None = None,
             btc: str = "btc_usd", equity: str = "mstr_usd") -> pd.Series:
    """Annualised realised vols and correlation of log returns between two dates.

    Returns btc_vol (on the equity's trading days), btc_vol_calendar (every day),
    equity_vol, correlation, and the number of returns used.
    """
    df = closes.loc[start:end]
    traded = df[[btc, equity]].dropna()
    if len(traded) < 3:
        raise InputError("closes", len(traded), "needs at least three common closes")
    r = np.log(traded).diff().dropna()
    rb_cal = np.log(df[btc].dropna()).diff().dropna()
    return pd.Series({
        "btc_vol": float(r[btc].std(ddof=1) * np.sqrt(252)),
        "btc_vol_calendar": float(rb_cal.std(ddof=1) * np.sqrt(365)),
        "equity_vol": float(r[equity].std(ddof=1) * np.sqrt(252)),
        "correlation": float(r[btc].corr(r[equity])),
        "returns": len(r),
    })


def rolling(closes: pd.DataFrame, window: int = 63, btc: str = "btc_usd",
            equity: str = "mstr_usd") -> pd.DataFrame:
    """Rolling annualised vols and correlation over ``window`` trading days."""
    traded = closes[[btc, equity]].dropna()
    r = np.log(traded).diff().dropna()
    out = pd.DataFrame({
        "btc_vol": r[btc].rolling(window).std() * np.sqrt(252),
        "equity_vol": r[equity].rolling(window).std() * np.sqrt(252),
        "correlation": r[btc].rolling(window).corr(r[equity]),
    })
    return out.dropna()
