"""Scenario grids and risk ladders: local and Dask runs agree, in order, with
failures kept in their rows; ladders are full revaluations."""

from __future__ import annotations

import io
from datetime import date

import numpy as np
import pandas as pd
import pytest
from conftest import base_document

import convpricer as cp
from convpricer import engines
from convpricer.cli import main
from convpricer.errors import EngineError, InputError
from convpricer.grid import scenario_errors, value_grid
from convpricer.loader import parse
from convpricer.risk import FACTORS, risk_ladder, risk_ladders
from convpricer.testing import to_toml


def _engine() -> tuple[str, dict]:
    """lattice2d (the default engine) once it exists; until then QuantLib's engine."""
    try:
        engines.get("lattice2d")
    except EngineError:
        return "quantlib", {"steps": 50}
    return "lattice2d", {"steps": 10, "extrapolate": False, "preferred_horizon": 10.0}


ENGINE, OPTIONS = _engine()


def _document() -> dict:
    doc = base_document()
    if ENGINE == "quantlib":  # one-factor: notes only (preferreds need a two-factor engine)
        doc["instruments"] = [x for x in doc["instruments"] if x["kind"] != "preferred_stock"]
    doc["engine"] = {"kind": ENGINE, **OPTIONS}
    return doc


@pytest.fixture(scope="module")
def case():
    d = parse(_document())
    return d.structure, d.market


@pytest.fixture(scope="module")
def scenarios(case):
    _, m = case
    sc = pd.DataFrame({
        "btc_price": m.btc_price * np.array([0.5, 0.75, 1.0, 1.25, 1.5, 1.0, np.nan]),
        "equity_price": m.equity_price * np.array([0.5, 0.75, 1.0, 1.25, 1.5, 1.0, np.nan]),
        "equity_vol": [0.6, 0.7, 0.8, -0.1, 0.9, 1.0, np.nan],
        "correlation": [0.5, 0.6, 0.7, 0.8, 0.9, 0.7, np.nan],
    })
    return sc


@pytest.fixture(scope="module")
def local(case, scenarios):
    s, m = case
    return value_grid(s, m, scenarios, ENGINE, scheduler="sync", **OPTIONS)


def _values(grid: pd.DataFrame) -> pd.DataFrame:
    cols = ["scenario", "name", "value", "total_value", "error"]
    return grid[cols].reset_index(drop=True)


# ----- local grid ------------------------------------------------------------------
def test_grid_is_full_revaluation_in_scenario_order(case, scenarios, local):
    s, m = case
    n_inst = len(s.instruments)
    assert len(local) == len(scenarios) * n_inst
    assert list(local["scenario"]) == [i for i in range(len(scenarios)) for _ in range(n_inst)]
    assert list(local["name"][:n_inst]) == [x.name for x in s.instruments]
    for i in (0, 4):  # each row is value() at that scenario's market
        row = scenarios.iloc[i]
        direct = cp.value(s, m.replace(btc_price=row.btc_price, equity_price=row.equity_price,
                                       equity_vol=row.equity_vol, correlation=row.correlation),
                          ENGINE, greeks=False, **OPTIONS)
        got = local[local["scenario"] == i]
        np.testing.assert_array_equal(got["value"].to_numpy(float),
                                      direct["value"].to_numpy(float))
        assert got["btc_price"].iloc[0] == row.btc_price


def test_empty_cells_keep_the_base_market(case, local):
    s, m = case
    base = cp.value(s, m, ENGINE, greeks=False, **OPTIONS)
    last = local[local["scenario"] == 6]
    np.testing.assert_array_equal(last["value"].to_numpy(float), base["value"].to_numpy(float))
    assert last["equity_vol"].iloc[0] == m.equity_vol  # effective values are shown


def test_a_failed_scenario_is_reported_in_its_rows(case, local):
    s, _ = case
    bad = local[local["scenario"] == 3]
    assert len(bad) == len(s.instruments)
    assert bad["error"].str.contains("equity_vol").all()
    assert bad["value"].isna().all()
    assert list(bad["name"]) == [x.name for x in s.instruments]
    assert local.loc[local["scenario"] != 3, "error"].isna().all()
    assert local.attrs["errors"] == 1
    errs = scenario_errors(local)
    assert list(errs["scenario"]) == [3] and errs["equity_vol"].iloc[0] == -0.1


def test_convertibles_rise_with_the_share_price(local):
    """Along the diagonal (both spots up, vol and correlation vary little) every note gains."""
    notes = local[local["kind"].isin(["zero_coupon_convertible", "convertible_note"])
                  & local["scenario"].isin([0, 1, 2])]
    for _, g in notes.groupby("name"):
        assert np.all(np.diff(g["value"].to_numpy(float)) > 0)
        assert np.all(g["value"] >= g["parity"] - 1e-9)  # never below conversion value


@pytest.mark.parametrize("scheduler", ["processes", "threads"])
def test_local_schedulers_give_identical_results(case, scenarios, local, scheduler):
    s, m = case
    got = value_grid(s, m, scenarios, ENGINE, scheduler=scheduler, workers=2, chunk_size=2,
                     **OPTIONS)
    pd.testing.assert_frame_equal(got, local)
    assert got.attrs["scheduler"] == scheduler


def test_index_labels_become_columns(case, scenarios):
    s, m = case
    sc = scenarios.iloc[:2].copy()
    sc.index = pd.MultiIndex.from_tuples([("down", 1), ("flat", 2)], names=["case", "k"])
    got = value_grid(s, m, sc, ENGINE, scheduler="sync", **OPTIONS)
    assert list(got.columns[:3]) == ["scenario", "case", "k"]
    assert list(got["case"].unique()) == ["down", "flat"]


def test_valuation_date_scenarios(case):
    s, m = case
    sc = pd.DataFrame({"valuation_date": ["2026-06-30", pd.Timestamp("2027-06-30"),
                                          "2026-02-30"]})
    got = value_grid(s, m, sc, ENGINE, scheduler="sync", **OPTIONS)
    assert got.loc[got["scenario"] < 2, "error"].isna().all()
    assert got["valuation_date"].iloc[0] == date(2026, 6, 30)
    assert got.loc[got["scenario"] == 2, "error"].str.contains("valuation_date").all()
    v = got[got["kind"] == "zero_coupon_convertible"]["value"].to_numpy(float)
    assert v[0] != v[1]  # the note is revalued at each date


def test_misuse_is_refused_before_running(case, scenarios):
    s, m = case
    with pytest.raises(InputError, match="btc_volatility"):
        value_grid(s, m, pd.DataFrame({"btc_volatility": [0.5]}), ENGINE)
    with pytest.raises(EngineError, match="stepz"):
        value_grid(s, m, scenarios, ENGINE, stepz=10)
    with pytest.raises(InputError, match="scheduler"):
        value_grid(s, m, scenarios, ENGINE, scheduler="gpu")


# ----- risk ladders ----------------------------------------------------------------
def test_equity_ladder_is_a_full_revaluation(case):
    s, m = case
    lad = risk_ladder(s, m, "equity_price", [-0.3, 0.3], ENGINE, scheduler="sync", **OPTIONS)
    assert sorted(lad["bump"].unique()) == [-0.3, 0.0, 0.3]  # the base point is added
    assert (lad.loc[lad["bump"] == 0, "change"] == 0).all()
    up = lad[(lad["bump"] == 0.3) & (lad["kind"] == "convertible_note")].iloc[0]
    direct = cp.value(s, m.bumped("equity_price", 0.3, relative=True), ENGINE, greeks=False,
                      **OPTIONS).set_index("name")
    assert up["value"] == direct.loc[up["name"], "value"]
    assert up["level"] == pytest.approx(m.equity_price * 1.3)
    assert up["pnl"] == pytest.approx(up["change"] * up["units"])
    for _, g in lad[lad["kind"] != "common_equity"].groupby("name"):
        assert np.all(np.diff(g.sort_values("bump")["value"].to_numpy(float)) > 0)


def test_all_ladders_in_one_grid(case):
    s, m = case
    small = {f: [-0.1, 0.1] if rel else [-0.05, 0.05] for f, (_, rel) in FACTORS.items()}
    lad = risk_ladders(s, m, small, ENGINE, **OPTIONS)
    assert set(lad["factor"]) == set(FACTORS)
    assert lad["error"].isna().all()
    assert len(lad) == len(FACTORS) * 3 * len(s.instruments)
    notes = lad[lad["kind"].isin(["zero_coupon_convertible", "convertible_note"])]
    # more BTC never hurts a note at a given share price (coverage only grows)
    for _, g in notes[notes["factor"] == "btc_price"].groupby("name"):
        assert np.all(np.diff(g.sort_values("bump")["value"].to_numpy(float)) >= -1e-9)
    # a rate rise lowers the bond floor
    rates = notes[notes["factor"] == "risk_free_rate"].sort_values("bump")
    for _, g in rates.groupby("name"):
        assert np.all(np.diff(g["bond_floor"].to_numpy(float)) < 0)
    with pytest.raises(InputError, match="vega"):
        risk_ladder(s, m, "vega", [0.1], ENGINE)


# ----- Dask cluster ----------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cl, distributed.Client(cl) as c:
        yield c


def test_dask_cluster_gives_the_local_result(case, scenarios, local, cluster):
    s, m = case
    got = value_grid(s, m, scenarios, ENGINE, client=cluster, chunk_size=1, **OPTIONS)
    pd.testing.assert_frame_equal(got, local)  # same numbers, same order, same error rows
    assert got.attrs["scheduler"].startswith("dask tcp://")
    assert got.attrs["workers"] == 2
    # Dask starts workers with MALLOC_TRIM_THRESHOLD_; grid tasks restore the heap thresholds
    tuned = cluster.run(lambda: __import__("convpricer.grid").grid._heap_tuned)
    assert list(tuned.values()) == [True, True]
    lad = risk_ladder(s, m, "btc_vol", [-0.1, 0.1], ENGINE, client=cluster, **OPTIONS)
    ref = risk_ladder(s, m, "btc_vol", [-0.1, 0.1], ENGINE, scheduler="sync", **OPTIONS)
    pd.testing.assert_frame_equal(lad, ref)


def test_cli_grid_on_the_cluster_and_locally(case, scenarios, local, cluster, tmp_path,
                                              capsys):
    doc = tmp_path / "doc.toml"
    doc.write_text(to_toml(_document()), encoding="utf-8")
    csv = tmp_path / "scenarios.csv"
    scenarios.to_csv(csv, index=False)
    assert main(["grid", str(doc), str(csv), "--scheduler", "sync"]) == 0
    out, err = capsys.readouterr()
    got = pd.read_csv(io.StringIO(out))
    np.testing.assert_allclose(got["value"].to_numpy(float), local["value"].to_numpy(float),
                               rtol=1e-12)
    assert "1 of 7 scenarios failed" in err
    address = cluster.scheduler.address
    pq = tmp_path / "result.parquet"
    assert main(["grid", str(doc), str(csv), "--scheduler", address, "--out", str(pq),
                 "--no-progress"]) == 0
    out, _ = capsys.readouterr()
    assert f"wrote {len(local)} rows" in out
    back = pd.read_parquet(pq)
    np.testing.assert_array_equal(back["value"].to_numpy(float), local["value"].to_numpy(float))
    assert list(back["error"].notna()) == list(local["error"].notna())


def test_cli_grid_refuses_bad_input(tmp_path, capsys):
    doc = tmp_path / "doc.toml"
    doc.write_text(to_toml(_document()), encoding="utf-8")
    csv = tmp_path / "bad.csv"
    csv.write_text("btc_price,spot_vol\n90000,0.5\n", encoding="utf-8")
    assert main(["grid", str(doc), str(csv)]) == 2
    assert "spot_vol" in capsys.readouterr().err
    assert main(["grid", str(doc), str(tmp_path / "missing.csv")]) == 2
    assert "no such file" in capsys.readouterr().err
    good = tmp_path / "good.csv"
    good.write_text("scenario,btc_price\nup,120000\n", encoding="utf-8")
    assert main(["grid", str(doc), str(good), "--out", str(tmp_path / "x.xlsx")]) == 2
    assert ".csv or .parquet" in capsys.readouterr().err


def test_quantlib_term_structures_stay_in_process(case):
    """A Market holding QuantLib objects cannot be pickled: threads locally, refused
    where it would have to travel."""
    import QuantLib as ql

    from convpricer.market import ql_date

    s, m = case
    flat = ql.FlatForward(ql_date(m.valuation_date), m.risk_free_rate, ql.Actual365Fixed(),
                          ql.Continuous)
    mq = m.replace(risk_free_rate=None, rate_curve=ql.YieldTermStructureHandle(flat))
    sc = pd.DataFrame({"btc_price": [m.btc_price * 0.9, m.btc_price * 1.1]})
    got = value_grid(s, mq, sc, ENGINE, **OPTIONS)
    assert got.attrs["scheduler"] == "threads" and got["error"].isna().all()
    ref = value_grid(s, m, sc, ENGINE, scheduler="sync", **OPTIONS)
    np.testing.assert_allclose(got["value"].to_numpy(float), ref["value"].to_numpy(float),
                               rtol=1e-10)
    with pytest.raises(InputError, match="cannot be sent"):
        value_grid(s, mq, sc, ENGINE, scheduler="processes", **OPTIONS)
