"""Golden values: every shipped fixture repriced with the recorded engine
settings must give the recorded numbers (fixtures/golden/golden.json, made by
fixtures/golden/make_golden.py; provenance in fixtures/golden/README.md).

A failure lists every number that moved. If the change is intended, regenerate
the file and let the diff of golden.json show the new prices in review.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import pytest

import convpricer as cp
from convpricer import engines
from convpricer.errors import ConvPricerError, EngineError

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = json.loads((ROOT / "fixtures" / "golden" / "golden.json").read_text())
PROVENANCE = GOLDEN["provenance"]
RTOL = PROVENANCE["rtol"]
FIELDS = ("value", "bond_floor", "parity", "p_convert", "p_impaired", "p_default")

GROUPS: dict[tuple[str, str], list[dict]] = defaultdict(list)
for _e in GOLDEN["values"]:
    GROUPS[_e["fixture"], _e["engine"]].append(_e)


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=RTOL, abs_tol=1e-9)


@pytest.mark.parametrize(("fixture", "engine"), sorted(GROUPS),
                         ids=[f"{f}-{e}" for f, e in sorted(GROUPS)])
def test_golden_values(fixture, engine):
    try:
        engines.get(engine)
    except EngineError as e:
        pytest.skip(str(e))
    structure, market = cp.load(ROOT / "fixtures" / fixture)
    settings = PROVENANCE["engines"][engine]
    moved = []
    for e in GROUPS[fixture, engine]:
        inst = structure[e["instrument"]]
        try:
            r = cp.price(inst, market, structure, engine=engine, greeks=False, **settings)
        except ConvPricerError as err:
            got = {"refused": f"{type(err).__name__}: {err}"}
        else:
            got = {f: getattr(r, f) for f in FIELDS}
        if "refused" in e or "refused" in got:
            if e.get("refused") != got.get("refused"):
                moved.append(f"{e['instrument']}: {e.get('refused', e.get('value'))} -> "
                             f"{got.get('refused', got.get('value'))}")
            continue
        for f in FIELDS:
            if not close(e[f], got[f]):
                rel = (got[f] - e[f]) / abs(e[f]) if e[f] and got[f] is not None else None
                moved.append(f"{e['instrument']}.{f}: {e[f]!r} -> {got[f]!r}"
                             + (f" ({rel:+.2e} relative)" if rel is not None else ""))
    assert not moved, (f"{len(moved)} golden number(s) moved for {fixture} under {engine} "
                       f"(generated at {PROVENANCE['commit'][:10]}):\n  " + "\n  ".join(moved)
                       + "\nIf intended: python fixtures/golden/make_golden.py")


def test_every_fixture_and_engine_has_golden_values():
    """A new fixture, or a deterministic engine that is now built, needs golden values."""
    fixtures = {p.name for p in (ROOT / "fixtures").glob("*.toml")}
    for engine in PROVENANCE["engines"]:
        assert {f for f, e in GROUPS if e == engine} == fixtures, engine
    for engine in ("quantlib", "lattice2d"):
        try:
            engines.get(engine)
        except EngineError:
            continue
        assert engine in PROVENANCE["engines"], (
            f"engine {engine} is built but has no golden values: "
            "python fixtures/golden/make_golden.py")
