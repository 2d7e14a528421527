"""Fuzzing the loader and the command line with one-field-broken files.

Every broken file must be refused by ``convpricer.load`` with an InputError
naming exactly the broken field, and by the CLI with exit status 2, nothing on
stdout and one stderr line that names the file and the field: never a
traceback, an internal error (exit 1) or a printed price.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convpricer as cp
from convpricer import testing as cpt
from convpricer.cli import main

SUBCOMMANDS = {
    "value": ["--engine", "quantlib", "--steps", "20", "--no-greeks", "--format", "json"],
    "waterfall": ["--btc-price", "50000", "--format", "json"],
    "stress": ["--engine", "quantlib", "--steps", "20"],
}


@pytest.fixture(scope="module")
def doc_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "broken.toml"


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("brk", sorted(cpt.BREAKS))
@given(data=st.data())
def test_loader_names_the_broken_field(doc_path, brk, data):
    text, field = data.draw(cpt.invalid_documents(breaks=[brk]))
    doc_path.write_text(text, encoding="utf-8")
    with pytest.raises(cp.InputError) as info:
        cp.load_document(doc_path)
    assert info.value.field == field
    assert info.value.source == str(doc_path)


@pytest.mark.parametrize("brk", sorted(cpt.BREAKS))
@given(data=st.data(), command=st.sampled_from(sorted(SUBCOMMANDS)))
def test_cli_refuses_with_one_line(doc_path, brk, data, command):
    text, field = data.draw(cpt.invalid_documents(breaks=[brk]))
    doc_path.write_text(text, encoding="utf-8")
    rc, out, err = run_cli([command, str(doc_path), *SUBCOMMANDS[command]])
    assert rc == 2, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convpricer: error: ")
    assert str(doc_path) in lines[0] and f"{field} = " in lines[0]
    assert "Traceback" not in err and "internal error" not in err


@settings(max_examples=3)
@given(pair=cpt.invalid_documents())
def test_cli_subprocess_refuses(doc_path, pair):
    text, field = pair
    doc_path.write_text(text, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "CONVPRICER_DEBUG"}
    r = subprocess.run([sys.executable, "-m", "convpricer.cli", "value", str(doc_path),
                        "--engine", "quantlib"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and f"{field} = " in r.stderr


@given(text=cpt.documents(structure_options={"kinds": cpt.NOTE_KINDS, "instruments": (1, 3)}))
def test_cli_values_every_valid_file(doc_path, text):
    """The other side: valid files (notes only, which quantlib values) are priced,
    exit 0, with a finite non-negative value per note."""
    doc_path.write_text(text, encoding="utf-8")
    rc, out, err = run_cli(["value", str(doc_path), *SUBCOMMANDS["value"]])
    assert rc == 0, err
    rows = json.loads(out)["instruments"]
    structure, _ = cp.load(doc_path)
    notes = [r for r in rows if r["kind"] != "common_equity"]
    assert {r["name"] for r in notes} == {n.name for n in structure.convertibles}
    assert all(math.isfinite(r["value"]) and r["value"] >= 0 for r in notes)
