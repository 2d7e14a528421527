"""Waterfall: who gets what when claims fall due (design.md sections 2, 4, 7).

Two modes, one vectorised kernel (:func:`payouts`), arrays over states:

* ``date=None``: a liquidation. Every claim is due at once: notes at face
  (notional), preferreds at liquidation preference plus arrears. Convertible
  classes convert where their share of the diluted residual is worth more
  than repayment; the set of converting classes is the unique Nash
  equilibrium among the classes, found exactly by :func:`_liquidate`.
* ``date=d``: a going-concern payment date. If the issuer's assets are below
  the face of all its notes outstanding at ``d`` (or below the cash the notes
  demand on ``d``) it is a default and the whole structure is liquidated as
  above. Otherwise only what falls due on ``d`` is paid (maturities, puts,
  coupons, preferred dividends out of surplus), from cash first, then by
  selling BTC at the state's price, then other assets.

docs/sections/waterfall.md gives the rules and why the equilibrium search is exact.
Money in USD; ``per_unit`` is per note of face / per preferred share.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from . import _checks as chk
from .errors import InputError
from .instruments import PreferredStock, ZeroCouponConvertible
from .schedule import convertible_schedule, coupon_dates, preferred_schedule
from .structure import CapitalStructure, priority_key


@dataclass(frozen=True)
class Payouts:
    """The waterfall in every state. Claims in ``structure.claims`` order on
    the first axis; states on the last axes (the broadcast shape of the prices).

    payout[i]: USD that claim class i (all units) takes out of the assets: cash,
      or in a liquidation a converting class's share of the residual;
    due[i]: USD falling due to class i (its claim in a liquidation; on a date
      the repayment, coupon or dividend due, including what converters give up);
    converted[i], shares_issued[i]: conversion and the new common shares;
    arrears[i]: cumulative preferred arrears per share after the date (in a
      liquidation: the arrears included in the claim);
    common: USD left to common: in a liquidation the pre-existing shares' part
      of the residual; on a solvent date the assets the company keeps (they
      still back the claims not yet due);
    common_shares: shares outstanding after conversions;
    common_per_share: in a liquidation the residual per share after dilution;
      on a solvent date max(assets kept - claims outstanding at face, 0) per share;
    default: the structure was liquidated (always with ``date=None``);
    assets, cash_used, btc_sold (BTC), btc_left (BTC), other_used: funding.
    """

    names: tuple[str, ...]
    units: np.ndarray
    due: np.ndarray
    payout: np.ndarray
    converted: np.ndarray
    shares_issued: np.ndarray
    arrears: np.ndarray
    common: np.ndarray
    common_shares: np.ndarray
    common_per_share: np.ndarray
    assets: np.ndarray
    cash_used: np.ndarray
    btc_sold: np.ndarray
    btc_left: np.ndarray
    other_used: np.ndarray
    default: np.ndarray
    date: date | None = None

    @property
    def per_unit(self) -> np.ndarray:
        """Payout per unit (per note of face, per preferred share), USD."""
        return self.payout / self.units.reshape((-1,) + (1,) * (self.payout.ndim - 1))


# ----- terms of the claims at one date ----------------------------------------------------
@dataclass(frozen=True)
class _Terms:
    """Per-class constants of a structure at a date (arrays over claims, read-only)."""

    units: np.ndarray
    is_note: np.ndarray
    outstanding: np.ndarray      # notes: not matured before the date
    face_total: np.ndarray       # notes: notional if outstanding
    liq_arrears: np.ndarray      # per share, in a liquidation on this date
    liq_claim: np.ndarray        # USD, every class, in a liquidation
    liq_shares: np.ndarray       # new shares if the class converts in a liquidation
    conversion_order: tuple[int, ...]  # convertible classes, claim per new share ascending
    groups: tuple[slice, ...]          # pari passu groups (contiguous), most senior first
    # going concern on the date
    principal_due: np.ndarray    # maturity or put today
    repayment: np.ndarray        # per note: price + accrued + coupon due today
    coupon_due: np.ndarray       # per note, coupon paid today (notes not otherwise due)
    can_convert: np.ndarray      # a due note may convert instead of taking cash
    ratio: np.ndarray            # conversion ratio, shares per unit
    dividend_due: np.ndarray     # per preferred share: dividend (+ arrears if cumulative)
    cumulative: np.ndarray
    pref_claim: np.ndarray       # per preferred share: liquidation preference
    arrears0: np.ndarray


def _note_on(note: ZeroCouponConvertible, d: date) -> tuple[bool, float, float, bool]:
    """(principal due, repayment per note, coupon due, may convert) of a note on ``d``."""
    coupon = note.coupon / note.coupon_frequency_per_year if d in coupon_dates(note) else 0.0
    if d == note.maturity:
        return True, note.face + coupon, coupon, note.conversion_ratio > 0
    if d in note.put_dates:
        accrued = float(convertible_schedule(note, d).accrued(0.0))
        american = note.conversion == "american" and (note.conversion_start is None
                                                     or d >= note.conversion_start)
        return True, note.put_price + accrued + coupon, coupon, \
            american and note.conversion_ratio > 0
    return False, 0.0, coupon, False


def _pays_dividend(pref: PreferredStock, d: date) -> bool:
    """Whether ``d`` is one of the preferred's dividend dates (convpricer.schedule)."""
    s = preferred_schedule(pref, d - timedelta(days=1), horizon=1.5 / 365.0)
    return s.dividend_times.size > 0


def _frozen(**arrays: Any) -> dict[str, Any]:
    out = {}
    for k, v in arrays.items():
        if isinstance(v, np.ndarray):
            v.setflags(write=False)
        out[k] = v
    return out


@lru_cache(maxsize=256)
def _terms(structure: CapitalStructure, d: date | None) -> _Terms:
    claims = structure.claims
    n = len(claims)
    t = {k: np.zeros(n) for k in ("units", "face_total", "liq_arrears", "liq_claim",
                                  "liq_shares", "repayment", "coupon_due", "ratio",
                                  "dividend_due", "pref_claim", "arrears0")}
    b = {k: np.zeros(n, bool) for k in ("is_note", "outstanding", "principal_due",
                                        "can_convert", "cumulative")}
    for i, c in enumerate(claims):
        t["units"][i] = c.units
        t["ratio"][i] = c.conversion_ratio
        if isinstance(c, ZeroCouponConvertible):
            b["is_note"][i] = True
            live = d is None or d <= c.maturity
            b["outstanding"][i] = live
            if not live:  # matured before the date: settled, no longer a claim
                continue
            t["face_total"][i] = c.notional
            t["liq_claim"][i] = c.notional
            if d is not None:
                due, repay, coupon, conv = _note_on(c, d)
                b["principal_due"][i] = due
                t["repayment"][i] = repay
                t["coupon_due"][i] = coupon
                b["can_convert"][i] = conv
        else:
            b["outstanding"][i] = True
            b["cumulative"][i] = c.cumulative
            t["arrears0"][i] = c.arrears
            t["pref_claim"][i] = c.liquidation_preference
            paying = d is not None and _pays_dividend(c, d)
            if paying:
                t["dividend_due"][i] = c.dividend + c.arrears
            t["liq_arrears"][i] = c.arrears + (c.dividend if paying and c.cumulative else 0.0)
            t["liq_claim"][i] = c.units * (c.liquidation_preference + t["liq_arrears"][i])
        if c.conversion_ratio > 0:
            t["liq_shares"][i] = c.units * c.conversion_ratio
    conv = [i for i in range(n) if t["liq_shares"][i] > 0 and t["liq_claim"][i] > 0]
    order = tuple(sorted(conv, key=lambda i: t["liq_claim"][i] / t["liq_shares"][i]))
    keys = [priority_key(c) for c in claims]  # claims are sorted: groups are contiguous
    starts = [i for i in range(n) if i == 0 or keys[i] != keys[i - 1]]
    groups = tuple(slice(lo, hi) for lo, hi in zip(starts, [*starts[1:], n], strict=True))
    return _Terms(conversion_order=order, groups=groups, **_frozen(**t, **b))


# ----- inputs -------------------------------------------------------------------------------
def _prices(field: str, value: Any) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise InputError(field, value, "must be a number or an array of numbers") from None
    bad = ~np.isfinite(a) | (a < 0)
    if bad.any():
        raise InputError(field, float(a[bad].flat[0]), "must be finite and >= 0")
    return a


def _date(value: Any) -> date | None:
    return None if value is None else chk.a_date("date", value)


# ----- the two kernels --------------------------------------------------------------------
def _by_priority(groups: tuple[slice, ...], claim: np.ndarray,
                 assets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pay ``claim`` (classes x states, USD) from ``assets`` by priority, pro rata
    within a pari passu group. Returns (payout, left)."""
    pay = np.empty_like(claim)
    left = assets.copy()
    for g in groups:
        tot = claim[g].sum(axis=0)
        paid = np.minimum(left, tot)
        frac = np.divide(paid, tot, out=np.zeros_like(paid), where=tot > 0)
        np.multiply(claim[g], frac, out=pay[g])
        left -= paid
    return pay, left


def _liquidate(t: _Terms, assets: np.ndarray, shares: float) -> dict[str, np.ndarray]:
    """Liquidation with the equilibrium conversion decisions (1-D states).

    Classes are visited by claim per new share k_j = D_j / n_j, ascending;
    class j converts iff G / N > k_j, where G = assets - claims of the classes
    not converting so far (j included) and N = shares after the conversions so
    far. The converting set is a prefix of that order (see waterfall.md)."""
    n, k = t.liq_claim.size, assets.size
    converted = np.zeros((n, k), bool)
    gross = assets - t.liq_claim.sum()
    n_sh = np.full(k, shares)
    alive = np.ones(k, bool)
    done = []
    for j in t.conversion_order:
        d_j, n_j = t.liq_claim[j], t.liq_shares[j]
        alive &= gross * n_j > d_j * n_sh
        if not alive.any():
            break
        converted[j] = alive
        np.add(gross, d_j, out=gross, where=alive)
        np.add(n_sh, n_j, out=n_sh, where=alive)
        done.append(j)
    claim = np.broadcast_to(t.liq_claim[:, None], (n, k))
    if done:
        claim = claim * ~converted
    pay, residual = _by_priority(t.groups, claim, assets)
    per_share = residual / n_sh
    issued = np.zeros((n, k))
    for j in done:
        np.multiply(converted[j], t.liq_shares[j], out=issued[j])
        pay[j] += issued[j] * per_share
    return {"due": np.broadcast_to(t.liq_claim[:, None], (n, k)), "payout": pay,
            "converted": converted, "shares_issued": issued,
            "arrears": np.broadcast_to(t.liq_arrears[:, None], (n, k)),
            "common": shares * per_share, "common_shares": n_sh,
            "common_per_share": per_share}


def _going_concern(t: _Terms, assets: np.ndarray, equity: np.ndarray | None,
                   shares: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Pay what falls due on the date, assuming no default (1-D states).
    Returns the result and the cash due to the notes."""
    n, k = t.units.size, assets.size
    u = t.units[:, None]
    per_unit_due = np.where(t.principal_due, t.repayment, t.coupon_due) + t.dividend_due
    due = np.broadcast_to(u * per_unit_due[:, None], (n, k))
    converted = np.zeros((n, k), bool)
    issued = np.zeros((n, k))
    pay = np.zeros((n, k))
    for i in np.flatnonzero(t.is_note & (per_unit_due > 0)):
        cash = t.units[i] * per_unit_due[i]
        if equity is not None and t.can_convert[i]:  # convert iff parity > repayment
            np.greater(t.ratio[i] * equity, t.repayment[i], out=converted[i])
            np.multiply(converted[i], t.ratio[i] * t.units[i], out=issued[i])
            np.multiply(~converted[i], cash, out=pay[i])
        else:
            pay[i] = cash
    notes_cash = pay.sum(axis=0)
    kept = assets - notes_cash
    # claims outstanding after today, senior to the next preferred (surplus test)
    senior = np.full(k, t.face_total[t.outstanding & ~t.principal_due].sum())
    arrears = np.broadcast_to(t.arrears0[:, None], (n, k))
    if t.dividend_due.any():
        arrears = arrears.copy()
    for g in t.groups:
        if t.is_note[g.start]:
            continue
        if t.dividend_due[g].any():
            tot = due[g].sum(axis=0)
            paid = np.clip(kept - senior, 0.0, tot)
            frac = np.divide(paid, tot, out=np.zeros_like(paid), where=tot > 0)
            pay[g] = due[g] * frac
            kept = kept - paid
            cum = (t.dividend_due[g] > 0) & t.cumulative[g]  # unpaid becomes arrears
            arrears[g][cum] = ((due[g] - pay[g]) / u[g])[cum]
        senior = senior + (u[g] * (t.pref_claim[g, None] + arrears[g])).sum(axis=0)
    n_sh = shares + issued.sum(axis=0)
    out = {"due": due, "payout": pay, "converted": converted, "shares_issued": issued,
           "arrears": arrears, "common": kept, "common_shares": n_sh,
           "common_per_share": np.maximum(kept - senior, 0.0) / n_sh}
    return out, notes_cash


def payouts(structure: CapitalStructure, btc_price: Any, equity_price: Any = None,
            date: date | str | None = None) -> Payouts:
    """Vectorised waterfall kernel (liquidation if ``date`` is None).

    ``btc_price`` (USD per BTC) and ``equity_price`` (USD per share, only
    used on a date, for the holders' convert-or-put decisions) broadcast
    together; the states are their broadcast shape (at least 1-D).
    """
    d = _date(date)
    b = _prices("btc_price", btc_price)
    s = None if equity_price is None else _prices("equity_price", equity_price)
    shape = np.broadcast_shapes(np.shape(b), () if s is None else np.shape(s))
    shape = shape or (1,)
    b = np.broadcast_to(b, shape).ravel()
    if s is not None:
        s = np.broadcast_to(s, shape).ravel()
    t = _terms(structure, d)
    shares = structure.shares_outstanding
    assets = structure.assets(b)
    k = b.size
    if d is None:
        res = _liquidate(t, assets, shares)
        default = np.ones(k, bool)
    else:
        res, notes_cash = _going_concern(t, assets, s, shares)
        default = (assets < t.face_total.sum()) | (assets < notes_cash)
        if default.any():
            idx = np.flatnonzero(default)
            liq = _liquidate(t, assets[idx], shares)
            for key, v in liq.items():
                if not res[key].flags.writeable:  # a broadcast view: materialise it
                    res[key] = res[key].copy()
                res[key][..., idx] = v
    # funding: cash, then BTC at the state's price, then other assets
    spent = assets - res["common"]
    spent[default] = assets[default]
    cash_used = np.minimum(spent, structure.cash)
    btc_value = structure.btc_holdings * b
    from_btc = np.minimum(spent - cash_used, btc_value)
    btc_sold = np.divide(from_btc, b, out=np.zeros(k), where=b > 0)
    btc_sold[default] = structure.btc_holdings
    other_used = spent - cash_used - from_btc
    n = t.units.size
    full = lambda a: a.reshape((n, *shape))  # noqa: E731
    flat = lambda a: a.reshape(shape)  # noqa: E731
    return Payouts(
        names=tuple(c.name for c in structure.claims), units=t.units,
        due=full(res["due"]), payout=full(res["payout"]), converted=full(res["converted"]),
        shares_issued=full(res["shares_issued"]), arrears=full(res["arrears"]),
        common=flat(res["common"]), common_shares=flat(res["common_shares"]),
        common_per_share=flat(res["common_per_share"]), assets=flat(assets),
        cash_used=flat(cash_used), btc_sold=flat(btc_sold),
        btc_left=flat(structure.btc_holdings - btc_sold), other_used=flat(other_used),
        default=flat(default), date=d)


def insolvent(structure: CapitalStructure, btc_price: Any, date: date | str | None = None
              ) -> np.ndarray:
    """Where assets < face of the notes outstanding (at ``date``, if given): the
    dated waterfall's default test. Bool array of the shape of ``btc_price``."""
    b = _prices("btc_price", btc_price)
    t = _terms(structure, _date(date))
    return structure.assets(b) < t.face_total.sum()


# ----- the DataFrame ------------------------------------------------------------------------
_COLUMNS = ("name", "kind", "due", "payout", "payout_per_unit", "converted",
            "shares_issued", "arrears")


def _tiled(values: np.ndarray, k: int) -> pd.Categorical:
    """``values`` repeated for each of k states, as a categorical column."""
    cats, codes = np.unique(values.astype(str), return_inverse=True)
    return pd.Categorical.from_codes(np.tile(codes, k), cats)


def waterfall(structure: CapitalStructure, btc_price: Any, equity_price: Any = None,
              date: date | str | None = None) -> pd.DataFrame:
    """Who gets what: one row per claim (``structure.claims`` order) plus one for
    common; with arrays of prices one such block per state and a ``state`` column
    (the flat index of the broadcast prices).

    The common row's ``payout`` is :attr:`Payouts.common`, its ``payout_per_unit``
    the common per share after dilution, its ``due`` 0. ``df.attrs``: assets,
    cash_used, btc_sold, btc_left, other_used, common_per_share, common_shares,
    default (floats, or arrays per state), btc_price, equity_price, date.
    """
    p = payouts(structure, btc_price, equity_price, date)
    claims = structure.claims
    n, k = len(claims), p.assets.size
    common_name = structure.common.name if structure.common is not None else "Common"
    names = np.array([*(c.name for c in claims), common_name], dtype=object)
    kinds = np.array([*(c.kind for c in claims), "common_equity"], dtype=object)

    def block(claim_part: np.ndarray, common_part: np.ndarray) -> np.ndarray:
        return np.concatenate([claim_part.reshape(n, k), common_part.reshape(1, k)]).T.ravel()

    zeros = np.zeros(k)
    cols = {
        "due": block(p.due, zeros),
        "payout": block(p.payout, p.common),
        "payout_per_unit": block(p.per_unit, p.common_per_share),
        "converted": block(p.converted, zeros.astype(bool)),
        "shares_issued": block(p.shares_issued, zeros),
        "arrears": block(p.arrears, zeros),
    }
    scalar = np.ndim(btc_price) == 0 and np.ndim(equity_price) == 0
    if scalar:
        df = pd.DataFrame({"name": names, "kind": kinds, **cols})
    else:
        df = pd.DataFrame({"state": np.repeat(np.arange(k), n + 1),
                           "name": _tiled(names, k), "kind": _tiled(kinds, k), **cols})
    attrs = {f: getattr(p, f).ravel() for f in ("assets", "cash_used", "btc_sold",
                                                 "btc_left", "other_used", "common_per_share",
                                                 "common_shares", "default")}
    if scalar:
        attrs = {f: v[0].item() for f, v in attrs.items()}
        attrs["btc_price"] = float(btc_price)
        attrs["equity_price"] = None if equity_price is None else float(equity_price)
    attrs["date"] = None if p.date is None else p.date.isoformat()
    df.attrs.update(attrs)
    return df


__all__ = ["Payouts", "insolvent", "payouts", "waterfall"]
