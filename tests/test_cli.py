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

import pytest
from conftest import DELETE, ROOT, base_document, edited

from convpricer import engines
from convpricer.errors import EngineError


def run_cli(*args: str, module: str = "convpricer.cli") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


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


# Bad files generated here; fixtures/invalid/ adds bad TOML, an unknown kind, NaN,
# a maturity before the valuation date and a curve given with its flat number.
BAD = [
    ("missing field", {"market.equity_price": DELETE}, "market.equity_price"),
    ("string for a number", {"instruments.0.face": "1000"}, "instruments[0].face"),
    ("correlation outside [-1, 1]", {"market.correlation": 2.0}, "market.correlation"),
    ("put after maturity", {"instruments.0.put_dates": [date(2031, 1, 1)]},
     "instruments[0].put_dates[0]"),
]


@pytest.mark.parametrize(("edits", "field"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_file_exits_2_with_one_line_naming_the_field(write_doc, edits, field):
    path = write_doc(edited(_small_document(), edits))
    assert_refused(run_cli("value", path), str(path), field)


def test_missing_file_exits_2(tmp_path):
    assert_refused(run_cli("value", tmp_path / "absent.toml"), "absent.toml", "no such file")


INVALID = {"bad_toml.toml": "toml", "unknown_kind.toml": "instruments[0].kind",
           "nan_vol.toml": "market.btc_vol",
           "maturity_before_valuation.toml": "instruments[0].maturity",
           "curve_and_flat.toml": "market.rate_curve"}


@pytest.mark.parametrize(("name", "field"), INVALID.items(), ids=list(INVALID))
def test_shipped_invalid_samples_exit_2(name, field):
    assert_refused(run_cli("value", f"fixtures/invalid/{name}"), f"fixtures/invalid/{name}",
                   field)


@pytest.mark.parametrize("args", [
    ("frobnicate",),
    (),
    ("value",),
    ("value", "fixtures/illustrative.toml", "--bogus"),
    ("value", "fixtures/illustrative.toml", "--format", "xml"),
    ("value", "fixtures/illustrative.toml", "--steps", "many"),
    ("value", "fixtures/illustrative.toml", "--engine", "blackbox"),
], ids=["unknown subcommand", "no subcommand", "no file", "unknown flag", "bad format",
        "non-integer steps", "unknown engine"])
def test_usage_errors_exit_2(args):
    assert_refused(run_cli(*args))


def test_python_dash_m_convpricer_is_the_same_command():
    line = assert_refused(run_cli("value", "--format", "xml", module="convpricer"))
    assert "xml" in line


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
