"""Greeks by bump and reprice, shared by every engine.

Bumps: spots by 1% (central differences), volatilities by 1 vol point
(central), correlation by 0.05 (central, one-sided at the +-1 limits).
Engines that take a seed reuse it for every bump (common random numbers).
"""

from __future__ import annotations

from collections.abc import Callable

from .market import Market

SPOT_BUMP = 0.01
VOL_BUMP = 0.01
CORR_BUMP = 0.05

Pricer = Callable[[Market], float]


def _central(f: Pricer, up: Market, down: Market, width: float) -> float:
    return (f(up) - f(down)) / width


def bump_greeks(f: Pricer, market: Market, base: float, *, factors: tuple[str, ...] = (
        "btc", "equity"), vegas: bool = True, correlation: bool = True) -> dict[str, float]:
    """Deltas, gammas, vegas and correlation sensitivity of ``f`` at ``market``.

    ``f`` maps a market to a per-unit value; ``base`` is f(market).
    """
    out: dict[str, float] = {}
    for asset in factors:
        spot = f"{asset}_price"
        h = market.spot(asset) * SPOT_BUMP
        up, dn = f(market.bumped(spot, h)), f(market.bumped(spot, -h))
        out[f"delta_{asset}"] = (up - dn) / (2 * h)
        out[f"gamma_{asset}"] = (up - 2 * base + dn) / (h * h)
        if vegas:
            vol = f"{asset}_vol"
            out[f"vega_{asset}"] = _central(f, market.bumped(vol, VOL_BUMP),
                                            market.bumped(vol, -VOL_BUMP), 2 * VOL_BUMP)
    if correlation:
        hi = min(1.0, market.correlation + CORR_BUMP)
        lo = max(-1.0, market.correlation - CORR_BUMP)
        if hi > lo:
            out["correlation_sensitivity"] = _central(
                f, market.replace(correlation=hi), market.replace(correlation=lo), hi - lo)
    return out
