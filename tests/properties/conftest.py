"""Property tests: hypothesis profiles and the engines under test.

Profiles (docs/sections/testing.md):

* ``ci`` (the default): derandomized, few examples, coarse engine settings;
  the whole folder runs in a few minutes on two cores.
* ``deep``: many random examples, for a nightly-style run::

      pytest tests/properties --hypothesis-profile=deep
      HYPOTHESIS_PROFILE=deep pytest tests            # from the whole suite

The chosen profile is loaded only while the modules of this folder are
imported (their ``@given`` tests take their settings then), and the previous
one is restored afterwards: hypothesis tests elsewhere keep their own settings.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, reject, settings

import convpricer as cp
from convpricer import engines
from convpricer.errors import EngineError

HERE = Path(__file__).resolve().parent

settings.register_profile(
    "ci", max_examples=12, derandomize=True, deadline=None, database=None,
    print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "deep", max_examples=400, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow])


def _chosen(config: pytest.Config) -> str:
    return (config.getoption("--hypothesis-profile", None)
            or os.environ.get("HYPOTHESIS_PROFILE") or "ci")


_previous: dict[str, str] = {}  # module node id -> profile to restore


def pytest_collectstart(collector: pytest.Collector) -> None:
    if isinstance(collector, pytest.Module) and collector.path.parent == HERE:
        _previous[collector.nodeid] = settings.get_current_profile_name()
        settings.load_profile(_chosen(collector.config))


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.nodeid in _previous:
        settings.load_profile(_previous.pop(report.nodeid))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "engines(group): run the test once per engine of the "
                            "group (one_factor, two_factor, all); unbuilt engines skip")


#: Invariant failures traced to an engine defect (docs/sections/testing.md has
#: the measurements), reported to the engine's owner: (test, engine) -> reason.
#: Expected failures; under the ci profile they are not run (a failing
#: hypothesis test spends a minute shrinking), under deep they run.
KNOWN_DEFECTS: dict[tuple[str, str], str] = {
    ("test_two_factor_tends_to_one_factor_as_coverage_grows", "montecarlo"):
        "montecarlo: the 16x-coverage European zero (a BTC put control fitted to one "
        "default) and the 1/BTC^2 regression weights are fixed (docs/sections/montecarlo.md); "
        "the deep profile still finds a 6-year American zero at vols 100% (sigma sqrt(T) "
        "2.45) 0.5% low without any structure at the test's coarse 12 steps a year: the "
        "regression's low bias",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    deep = _chosen(config) == "deep"
    for item in items:
        spec = getattr(item, "callspec", None)
        name = getattr(item, "originalname", item.name)
        reason = KNOWN_DEFECTS.get((name, spec.params.get("engine") if spec else None))
        if reason:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=False, run=deep))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine" in metafunc.fixturenames:
        m = metafunc.definition.get_closest_marker("engines")
        names = ENGINE_GROUPS[m.args[0] if m else "all"]
        metafunc.parametrize("engine", names, indirect=True, scope="session")


def pytest_report_header(config: pytest.Config) -> str:
    return f"convpricer property tests: hypothesis profile {_chosen(config)!r}"


# ----- engines -----------------------------------------------------------------------------
ONE_FACTOR = ("quantlib",)
TWO_FACTOR = ("lattice2d", "fdm2d", "montecarlo")
ENGINE_GROUPS = {"one_factor": ONE_FACTOR, "two_factor": TWO_FACTOR,
                 "all": ONE_FACTOR + TWO_FACTOR}

#: Coarse settings for the property tests, per engine (only the options an
#: engine declares in OPTIONS are passed): about 0.1 s a price. Calls and soft
#: calls are monitored on the time grid, not daily, and perpetual preferreds
#: are valued to a 10-year horizon. Monte Carlo is seeded: the two prices of a
#: comparison share their random numbers.
COARSE: dict[str, dict[str, Any]] = {
    "quantlib": {"steps": 60},
    "lattice2d": {"steps": 60, "extrapolate": False, "preferred_horizon": 10.0},
    "fdm2d": {"steps": 40, "grid_equity": 40, "grid_btc": 20, "monitoring": "grid",
              "preferred_horizon": 10.0},
    "montecarlo": {"paths": 2048, "pilot_paths": 2048, "steps_per_year": 12,
                   "monitoring": "grid", "seed": 7, "preferred_horizon": 10.0},
}

#: Discretisation tolerance of a comparison between two prices (fraction of
#: face), per engine at its COARSE settings: docs/sections/testing.md gives the
#: measurements behind each number. Monte Carlo adds 3 standard errors.
TOLERANCE: dict[str, float] = {
    "quantlib": 1e-3,
    "lattice2d": 1e-2,
    "fdm2d": 1e-2,
    "montecarlo": 5e-3,
}
#: Standard errors of Monte Carlo allowed in a comparison.
STD_ERRORS = 3.0


@dataclass(frozen=True)
class Engine:
    """One engine under test: ``price(instrument, market, structure)`` at the
    coarse settings, no greeks; ``tol`` is its comparison tolerance (fraction
    of face)."""

    name: str
    module: Any
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self.module.KINDS)

    @property
    def tol(self) -> float:
        return TOLERANCE[self.name]

    @property
    def two_factor(self) -> bool:
        return self.name in TWO_FACTOR

    def price(self, instrument: Any, market: cp.Market,
              structure: cp.CapitalStructure | None = None, **options: Any) -> cp.PricingResult:
        """The coarse price. An engine's own refusal (EngineError: say "increase
        steps" at coarse settings) is a legitimate answer, not a failure: the
        example is dropped and counted (``--hypothesis-show-statistics``).
        Anything else propagates: a crash, a NaN, a non-finite result."""
        try:
            return cp.price(instrument, market, structure, engine=self.name, greeks=False,
                            **{**self.options, **options})
        except EngineError as e:
            event(f"{self.name} refused: {str(e).split(';')[0].split('(')[0]}")
            reject()

    def slack(self, face: float, *results: cp.PricingResult) -> float:
        """What a comparison of ``results`` may miss by: ``tol`` x face, plus
        STD_ERRORS combined standard errors for Monte Carlo."""
        se = math.sqrt(sum((r.std_error or 0.0) ** 2 for r in results))
        return self.tol * face + STD_ERRORS * se


def engine_or_skip(name: str) -> Engine:
    """The engine ``name``, or a clean skip if it is not built yet."""
    try:
        mod = engines.get(name)
    except EngineError as e:
        pytest.skip(f"engine {name} not available: {e}")
    if not callable(getattr(mod, "price", None)):
        pytest.skip(f"engine {name}: module has no price() yet")
    allowed = getattr(mod, "OPTIONS", frozenset())
    return Engine(name, mod, {k: v for k, v in COARSE.get(name, {}).items() if k in allowed})


@pytest.fixture(scope="session")
def engine(request: pytest.FixtureRequest) -> Engine:
    """The engine under test: a test taking ``engine`` runs once per engine of its
    ``@pytest.mark.engines(group)`` (default: all)."""
    return engine_or_skip(request.param)


@pytest.fixture(scope="session")
def get_engine() -> Callable[[str], Engine]:
    return engine_or_skip
