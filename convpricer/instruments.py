"""Term sheets: small immutable, validated data classes (the contract of
design.md section 4). Money is in USD; prices are per unit (per note of
``face``, per preferred share); dates are calendar dates.

Validation happens at construction: a bad field raises :class:`InputError`
naming the field and the value. Field names in errors are the schema keys.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date
from typing import Any, ClassVar, Literal

from . import _checks as chk
from .errors import InputError

SENIORITIES = ("secured", "senior_unsecured", "subordinated")
Seniority = Literal["secured", "senior_unsecured", "subordinated"]


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


@dataclass(frozen=True, kw_only=True)
class ZeroCouponConvertible:
    """A zero-coupon convertible note (per note of ``face`` USD).

    ``conversion_ratio`` is in shares per note. ``put_price`` and
    ``call_price`` are clean prices per note (accrued interest, if any, is
    added on top) and default to ``face``. A soft call (``call_trigger``) is
    allowed only when S >= call_trigger * face / conversion_ratio, on
    ``call_trigger_days`` of the last ``call_trigger_window`` trading days if
    those are given, else on the day itself.
    """

    kind: ClassVar[str] = "zero_coupon_convertible"

    name: str
    face: float
    notional: float
    issue_date: date
    maturity: date
    conversion_ratio: float
    conversion: Literal["american", "european"] = "american"
    conversion_start: date | None = None
    put_dates: tuple[date, ...] = ()
    put_price: float | None = None
    call_start: date | None = None
    call_price: float | None = None
    call_trigger: float | None = None
    call_trigger_days: int | None = None
    call_trigger_window: int | None = None
    seniority: Seniority = "senior_unsecured"
    credit_spread: float = 0.0
    recovery_rate: float = 0.40

    def __post_init__(self) -> None:
        _set(self, "name", chk.text("name", self.name))
        _set(self, "face", chk.positive("face", self.face))
        _set(self, "notional", chk.positive("notional", self.notional))
        _set(self, "issue_date", chk.a_date("issue_date", self.issue_date))
        mat = chk.a_date("maturity", self.maturity)
        if mat <= self.issue_date:
            raise InputError("maturity", mat.isoformat(),
                             f"must be after issue_date {self.issue_date.isoformat()}")
        _set(self, "maturity", mat)
        _set(self, "conversion_ratio", chk.non_negative("conversion_ratio",
                                                        self.conversion_ratio))
        _set(self, "conversion", chk.text("conversion", self.conversion,
                                          choices=("american", "european")))
        if self.conversion_start is not None:
            cs = chk.a_date("conversion_start", self.conversion_start)
            if not self.issue_date <= cs <= mat:
                raise InputError("conversion_start", cs.isoformat(),
                                 "must lie between issue_date and maturity")
            _set(self, "conversion_start", cs)
        puts = chk.dates("put_dates", list(self.put_dates))
        for i, d in enumerate(puts):
            if not self.issue_date < d < mat:
                raise InputError(f"put_dates[{i}]", d.isoformat(),
                                 "must lie strictly between issue_date and maturity")
        _set(self, "put_dates", puts)
        _set(self, "put_price", self.face if self.put_price is None
             else chk.non_negative("put_price", self.put_price))
        if self.call_start is not None:
            cs = chk.a_date("call_start", self.call_start)
            if not self.issue_date <= cs < mat:
                raise InputError("call_start", cs.isoformat(),
                                 "must lie between issue_date and maturity")
            _set(self, "call_start", cs)
        _set(self, "call_price", self.face if self.call_price is None
             else chk.non_negative("call_price", self.call_price))
        if self.call_trigger is not None:
            _set(self, "call_trigger", chk.positive("call_trigger", self.call_trigger))
        for f in ("call_trigger_days", "call_trigger_window"):
            v = getattr(self, f)
            if v is not None:
                _set(self, f, chk.integer(f, v, lo=1))
        n, m = self.call_trigger_days, self.call_trigger_window
        if (n is None) != (m is None):
            raise InputError("call_trigger_days" if n is None else "call_trigger_window", None,
                             "call_trigger_days and call_trigger_window go together")
        if n is not None and n > m:
            raise InputError("call_trigger_days", n,
                             f"must not exceed call_trigger_window ({m})")
        if n is not None and self.call_trigger is None:
            raise InputError("call_trigger", None,
                             "is required when call_trigger_days is given")
        if (self.call_trigger is not None or n is not None) and self.call_start is None:
            raise InputError("call_start", None, "is required for a (soft) call")
        _set(self, "seniority", chk.text("seniority", self.seniority, choices=SENIORITIES))
        _set(self, "credit_spread", chk.number("credit_spread", self.credit_spread,
                                               lo=0.0, hi=1.0))
        _set(self, "recovery_rate", chk.fraction("recovery_rate", self.recovery_rate))

    # ----- derived quantities --------------------------------------------------
    @property
    def units(self) -> float:
        """Number of notes outstanding (notional / face)."""
        return self.notional / self.face

    @property
    def conversion_price(self) -> float:
        """USD per share at which face converts (face / conversion_ratio)."""
        return self.face / self.conversion_ratio if self.conversion_ratio > 0 else float("inf")

    @property
    def coupon(self) -> float:
        """Coupon per note per year, USD (zero here)."""
        return 0.0

    @property
    def coupon_frequency_per_year(self) -> int:
        return 0

    def parity(self, equity_price: float) -> float:
        """Conversion value per note at a given share price, USD."""
        return self.conversion_ratio * equity_price

    @property
    def call_trigger_price(self) -> float | None:
        """Share price at or above which a soft call is allowed (USD)."""
        if self.call_trigger is None:
            return None
        return self.call_trigger * self.conversion_price

    @property
    def is_callable(self) -> bool:
        return self.call_start is not None


@dataclass(frozen=True, kw_only=True)
class ConvertibleNote(ZeroCouponConvertible):
    """A coupon-paying convertible note: ``coupon_rate`` is annual, on face,
    paid ``coupon_frequency`` times a year on dates rolled back from maturity
    (Strategy's notes: semi-annual). Accrued interest is linear in time within
    a coupon period (the indentures' 30/360 differs by at most a day's accrual)."""

    kind: ClassVar[str] = "convertible_note"

    coupon_rate: float
    coupon_frequency: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        _set(self, "coupon_rate", chk.number("coupon_rate", self.coupon_rate, lo=0.0, hi=1.0))
        _set(self, "coupon_frequency", chk.integer("coupon_frequency", self.coupon_frequency))
        if self.coupon_frequency not in (1, 2, 4, 12):
            raise InputError("coupon_frequency", self.coupon_frequency, "must be 1, 2, 4 or 12")

    @property
    def coupon(self) -> float:
        return self.coupon_rate * self.face

    @property
    def coupon_frequency_per_year(self) -> int:
        return self.coupon_frequency


@dataclass(frozen=True, kw_only=True)
class PreferredStock:
    """Perpetual preferred stock (per share of ``liquidation_preference`` USD).

    ``dividend_rate`` is annual on the liquidation preference, paid
    ``dividend_frequency`` times a year. ``rank`` 1 is the most senior
    preferred. ``conversion_ratio`` is common shares per preferred share
    (0 = not convertible). ``arrears`` is accrued unpaid dividends per share
    at the valuation date (cumulative preferreds only).
    """

    kind: ClassVar[str] = "preferred_stock"

    name: str
    liquidation_preference: float
    units: float
    dividend_rate: float
    dividend_frequency: int = 4
    cumulative: bool = True
    conversion_ratio: float = 0.0
    rank: int = 1
    call_start: date | None = None
    call_price: float | None = None
    arrears: float = 0.0
    recovery_rate: float = 0.0

    def __post_init__(self) -> None:
        _set(self, "name", chk.text("name", self.name))
        _set(self, "liquidation_preference", chk.positive("liquidation_preference",
                                                          self.liquidation_preference))
        _set(self, "units", chk.positive("units", self.units))
        _set(self, "dividend_rate", chk.number("dividend_rate", self.dividend_rate,
                                               lo=0.0, hi=1.0))
        _set(self, "dividend_frequency", chk.integer("dividend_frequency",
                                                     self.dividend_frequency))
        if self.dividend_frequency not in (1, 2, 4, 12):
            raise InputError("dividend_frequency", self.dividend_frequency,
                             "must be 1, 2, 4 or 12")
        _set(self, "cumulative", chk.boolean("cumulative", self.cumulative))
        _set(self, "conversion_ratio", chk.non_negative("conversion_ratio",
                                                        self.conversion_ratio))
        _set(self, "rank", chk.integer("rank", self.rank, lo=1))
        if self.call_start is not None:
            _set(self, "call_start", chk.a_date("call_start", self.call_start))
        if self.call_price is not None:
            if self.call_start is None:
                raise InputError("call_start", None, "is required when call_price is given")
            _set(self, "call_price", chk.positive("call_price", self.call_price))
        elif self.call_start is not None:
            _set(self, "call_price", self.liquidation_preference)
        _set(self, "arrears", chk.non_negative("arrears", self.arrears))
        if self.arrears > 0 and not self.cumulative:
            raise InputError("arrears", self.arrears,
                             "only a cumulative preferred accrues arrears")
        _set(self, "recovery_rate", chk.fraction("recovery_rate", self.recovery_rate))

    @property
    def face(self) -> float:
        """Claim per share in a liquidation before arrears (liquidation preference)."""
        return self.liquidation_preference

    @property
    def notional(self) -> float:
        return self.liquidation_preference * self.units

    @property
    def dividend(self) -> float:
        """Dividend per share per period, USD."""
        return self.dividend_rate * self.liquidation_preference / self.dividend_frequency

    @property
    def is_callable(self) -> bool:
        return self.call_start is not None

    def parity(self, equity_price: float) -> float:
        return self.conversion_ratio * equity_price


@dataclass(frozen=True, kw_only=True)
class CommonEquity:
    """The residual claim: one common share of the issuer."""

    kind: ClassVar[str] = "common_equity"

    name: str = "Common"

    def __post_init__(self) -> None:
        _set(self, "name", chk.text("name", self.name))


Instrument = ZeroCouponConvertible | PreferredStock | CommonEquity
KINDS: dict[str, type] = {c.kind: c for c in (ZeroCouponConvertible, ConvertibleNote,
                                              PreferredStock, CommonEquity)}


def field_names(cls: type) -> tuple[str, ...]:
    """Schema keys of a term-sheet class (its init fields)."""
    return tuple(f.name for f in fields(cls) if f.init)
