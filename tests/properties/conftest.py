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

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

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
#: engine declares in OPTIONS are passed). Monte Carlo is seeded: with the same
#: seed, paths are common to both prices of a comparison.
COARSE: dict[str, dict[str, Any]] = {
    "quantlib": {"steps": 60},
    "lattice2d": {"steps": 60},
    "fdm2d": {"steps": 40, "grid": 40, "btc_grid": 30, "equity_grid": 40},
    "montecarlo": {"paths": 2000, "steps": 40, "seed": 7},
}

#: Discretisation tolerance of a comparison between two prices (fraction of
#: face), per engine at its COARSE settings: docs/sections/testing.md gives the
#: measurements behind each number.
TOLERANCE: dict[str, float] = {
    "quantlib": 1e-3,
    "lattice2d": 5e-3,
    "fdm2d": 5e-3,
    "montecarlo": 3e-2,
}


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
        return cp.price(instrument, market, structure, engine=self.name, greeks=False,
                        **{**self.options, **options})

    def value(self, *args: Any, **options: Any) -> float:
        return self.price(*args, **options).value


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
