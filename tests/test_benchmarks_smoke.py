"""The benchmark harness (benchmarks/) imports and runs one case with tiny settings,
so that it does not rot. Nothing is timed or compared with a time here."""

from __future__ import annotations

import dataclasses
import math

import pytest

import convpricer as cp
from benchmarks import cases, run
from benchmarks.peers import QuantLibTree


def test_ladder_and_steps_to_tolerance():
    assert run.ladder(20, 160, 1) == [20, 40, 80, 160]
    pts = [(10, 0, 3e-4), (20, 0, -5e-5), (40, 0, 2e-4), (80, 0, 9e-5), (160, 0, -2e-5)]
    assert run.steps_to(pts, 1e-4) == 80         # the lucky 20 does not count
    assert run.steps_to(pts[:3], 1e-4) is None


def test_zero_put_semi_closed_form_is_quantlib_at_zero_spread():
    """At credit_spread 0 QuantLib's convertible tree is exact TF: the benchmark's
    reference formula must agree with it (LR, 2001 steps: about 1e-5)."""
    note = dataclasses.replace(cases.ZERO_PUT, credit_spread=0.0)
    exact = cases.zero_put_reference(note, cases.MARKET_1F)
    tree = QuantLibTree(note, cases.MARKET_1F, "lr").value(2001)
    assert exact == pytest.approx(tree, rel=5e-5)
    # the put is worth something: above the European note without it
    bare = dataclasses.replace(note, put_dates=(), conversion="european")
    assert exact > cp.analytic.tf_european_zero(bare, cases.MARKET_1F) + 1.0


def test_structural_zero_reference_is_between_bounds_and_near_the_lattice():
    note, s, m = cases.STRUCTURAL_ZERO, cases.STRUCTURE_2F, cases.MARKET_2F
    exact = cases.structural_zero_reference(note, s, m)
    no_default = cp.analytic.tf_european_zero(note, m)        # unlimited coverage
    assert 0.5 * no_default < exact < no_default
    lattice = cp.price(note, m, s, engine="lattice2d", greeks=False, steps=40).value
    assert lattice == pytest.approx(exact, rel=2e-3)


def test_one_trivial_case_runs_end_to_end():
    cfg = dataclasses.replace(run.Config.make(quick=True, repeat=1), lattice_1f=[20, 28],
                              ql_lr=[31, 45], ql_crr=[30, 40], repeat=1)
    refs = cases.load_references()
    if "zero_put" not in refs.get("cases", {}):
        pytest.skip("benchmarks/references.json has no zero_put reference")
    rep = run.Report()
    run.one_factor("zero_put", cfg, refs, rep)
    engines = {r.engine for r in rep.rows}
    assert "convpricer quantlib (QuantLib lr tree)" in engines
    assert "peer QuantLib BinomialConvertibleEngine" in engines
    for r in rep.rows:
        if r.value is not None:
            assert math.isfinite(r.value) and abs(r.error) < 0.05
    text = run.table(rep) + run.targets(rep)
    assert "zero_put" in text and "crr" in text
