"""The command line, run as a user runs it (a subprocess): bad input exits 2
with one line on stderr and nothing on stdout; JSON output has the keys of
design.md section 6."""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from datetime import date
from typing import Any

import pytest
from conftest import DELETE, ROOT, base_document, edited

from convpricer import engines
from convpricer.errors import EngineError
from convpricer.testing import to_toml


def start_cli(*args: Any, module: str = "convpricer.cli") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module, *map(str, args)], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_cli(*args: Any, module: str = "convpricer.cli") -> subprocess.CompletedProcess:
    return finish(start_cli(*args, module=module))


def assert_refused(proc: subprocess.CompletedProcess, *named: str) -> str:
    """Exit 2, nothing on stdout, exactly one line on stderr naming ``named``."""
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("convpricer: error: ")
    assert "Traceback" not in proc.stderr
    for s in named:
        assert s in lines[0], f"{s!r} not in {lines[0]!r}"
    return lines[0]


def _small_document() -> dict:
    """One zero-coupon note and common: fast under every engine."""
    doc = base_document()
    doc["instruments"] = [doc["instruments"][0], doc["instruments"][3]]
    return doc


# Bad files generated into {tmp}; fixtures/invalid/ adds bad TOML, an unknown kind,
# NaN, a maturity before the valuation date and a curve given with its flat number.
BAD = {
    "missing_field": ({"market.equity_price": DELETE}, "market.equity_price"),
    "string_for_a_number": ({"instruments.0.face": "1000"}, "instruments[0].face"),
    "correlation_outside_range": ({"market.correlation": 2.0}, "market.correlation"),
    "put_after_maturity": ({"instruments.0.put_dates": [date(2031, 1, 1)]},
                           "instruments[0].put_dates[0]"),
}
INVALID = {"bad_toml": "toml", "unknown_kind": "instruments[0].kind",
           "nan_vol": "market.btc_vol", "maturity_before_valuation": "instruments[0].maturity",
           "curve_and_flat": "market.rate_curve"}
ILL = "fixtures/illustrative.toml"
# id: (module, arguments, what the one stderr line names); "{tmp}" is formatted in
REFUSALS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    **{f"generated {k}": ("convpricer.cli", ("value", f"{{tmp}}/{k}.toml"),
                          (f"{{tmp}}/{k}.toml", field)) for k, (_, field) in BAD.items()},
    **{f"fixtures/invalid/{k}": ("convpricer.cli", ("value", f"fixtures/invalid/{k}.toml"),
                                 (f"fixtures/invalid/{k}.toml", field))
       for k, field in INVALID.items()},
    "missing file": ("convpricer.cli", ("value", "{tmp}/absent.toml"),
                     ("absent.toml", "no such file")),
    "unknown subcommand": ("convpricer.cli", ("frobnicate",), ("frobnicate",)),
    "no subcommand": ("convpricer.cli", (), ("command",)),
    "no file": ("convpricer.cli", ("value",), ("file",)),
    "unknown flag": ("convpricer.cli", ("value", ILL, "--bogus"), ("--bogus",)),
    "bad format": ("convpricer.cli", ("value", ILL, "--format", "xml"), ("xml",)),
    "non-integer steps": ("convpricer.cli", ("value", ILL, "--steps", "many"), ("many",)),
    "unknown engine": ("convpricer.cli", ("value", ILL, "--engine", "blackbox"),
                       ("blackbox",)),
    "python -m convpricer": ("convpricer", ("value", "--format", "xml"), ("xml",)),
}


@pytest.fixture(scope="module")
def refused(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, list[str]]]:
    """Every case of REFUSALS, run at once (each process mostly imports)."""
    tmp = tmp_path_factory.mktemp("cli")
    for k, (edits, _) in BAD.items():
        (tmp / f"{k}.toml").write_text(to_toml(edited(_small_document(), edits)))
    started = {case: (start_cli(*(a.format(tmp=tmp) for a in args), module=module),
                      [n.format(tmp=tmp) for n in named])
               for case, (module, args, named) in REFUSALS.items()}
    return {case: (finish(proc), named) for case, (proc, named) in started.items()}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_bad_input_exits_2_with_one_line_naming_it(refused, case):
    proc, named = refused[case]
    assert_refused(proc, *named)


def _engine_or_skip(name: str) -> None:
    try:
        engines.get(name)
    except EngineError as e:
        pytest.skip(str(e))


def test_json_output_has_the_documented_keys(write_doc):
    _engine_or_skip("quantlib")
    path = write_doc(_small_document())
    proc = run_cli("value", path, "--engine", "quantlib", "--no-greeks", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert {"valuation_date", "engine", "instruments", "common"} <= set(out)
    assert out["valuation_date"] == "2025-06-30"
    assert out["engine"]["kind"] == "quantlib"
    keys = {"name", "kind", "value", "units", "total_value", "delta_btc", "delta_equity",
            "p_convert", "p_impaired"}
    for row in out["instruments"]:
        assert keys <= set(row), keys - set(row)
    note = next(r for r in out["instruments"] if r["name"] == "2030B notes")
    assert note["kind"] == "zero_coupon_convertible"
    assert note["units"] == 2.0e9 / 1000.0
    assert note["total_value"] == pytest.approx(note["value"] * note["units"])
    # no spread, American conversion, a put at face: worth at least parity and
    # at least the put discounted at 3.8%, at most parity + face
    parity = 2.3072 * 404.23
    put = 1000.0 * math.exp(-0.038 * (date(2028, 3, 1) - date(2025, 6, 30)).days / 365)
    assert parity <= note["value"] <= parity + 1000.0
    assert note["value"] >= put
    common = out["common"]
    assert {"value_per_share", "nav_per_share", "diluted_nav_per_share", "mnav"} <= set(common)
    assert common["value_per_share"] == 404.23
    assert common["mnav"] == pytest.approx(404.23 * 280958591.0 / (597325.0 * 107169.82))


def test_csv_output_is_one_row_per_instrument(write_doc):
    _engine_or_skip("quantlib")
    path = write_doc(_small_document())
    proc = run_cli("value", path, "--engine", "quantlib", "--no-greeks", "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [r["name"] for r in rows] == ["2030B notes", "Common"]
    assert {"name", "kind", "value", "units", "total_value"} <= set(rows[0])


def test_readme_command_values_the_strategy_fixture():
    """README's ``convpricer value fixtures/strategy_2025-06-30.toml`` (coarse and
    without greeks, to stay fast): every claim is valued, each note at least at
    parity (conversion is allowed at once), probabilities in [0, 1]."""
    _engine_or_skip("lattice2d")
    proc = run_cli("value", "fixtures/strategy_2025-06-30.toml", "--steps", "60",
                   "--no-greeks", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    rows = {r["name"]: r for r in out["instruments"]}
    assert len(rows) == 10 and rows["MSTR common"]["kind"] == "common_equity"
    for name, r in rows.items():
        assert r["value"] > 0, name
        for p in ("p_convert", "p_impaired"):
            assert r[p] is None or 0.0 <= r[p] <= 1.0, (name, p, r[p])
        if r["kind"] in ("zero_coupon_convertible", "convertible_note"):
            assert r["value"] >= r["parity"] * (1 - 1e-9), name
    assert out["common"]["mnav"] == pytest.approx(1.774, abs=1e-3)
