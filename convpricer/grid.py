"""Scenario grids: ``value`` over many markets, locally or on a Dask cluster.

``value_grid(structure, market, scenarios)`` revalues every instrument of
``structure`` in each scenario. ``scenarios`` is a DataFrame with one
scenario per row whose columns are :class:`~convpricer.market.Market` field
names (``btc_price``, ``equity_price``, ``btc_vol``, ``equity_vol``,
``correlation``, ``risk_free_rate``, ``valuation_date``, ...); a cell
overrides the base market's field, an empty cell (NaN/None) keeps it. Its
index labels the scenarios. The result has one row per scenario and
instrument, in scenario order, whatever runs it:

* ``client=None``: the local cores (a process pool; no server to start);
* ``client=distributed.Client(...)``: that Dask cluster, in chunks of scenarios.

A scenario that fails (a negative volatility, a valuation date after a
maturity...) is reported in the ``error`` column of its rows; the others are
valued. Misuse that would fail every scenario (unknown engine or option, an
unknown column) is refused before anything runs.
"""

from __future__ import annotations

import ctypes
import dataclasses
import math
import os
import pickle
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

from . import engines
from .errors import InputError
from .market import Market
from .results import COLUMNS
from .structure import CapitalStructure
from .valuation import value

#: Market fields a scenario may set (the columns ``value_grid`` accepts).
FIELDS = tuple(f.name for f in dataclasses.fields(Market) if f.init)
#: A flat field and the curve it excludes: setting one in a scenario drops the other.
_PAIRS = (("risk_free_rate", "rate_curve"), ("btc_vol", "btc_vol_curve"),
          ("equity_vol", "equity_vol_curve"))
#: Local schedulers: worker processes, threads, or the calling thread.
LOCAL_SCHEDULERS = ("processes", "threads", "sync")
#: Chunks per worker: enough to balance uneven scenarios, few enough to amortise
#: the per-task overhead (about 1 ms locally, a few ms on a cluster).
CHUNKS_PER_WORKER = 4
#: Columns of the result that describe the scenario rather than its values.
_RESERVED = frozenset({"scenario", "error", "notes", *COLUMNS})

# QuantLib keeps one evaluation date per process: its engine must not run in
# two threads of one process at once (threaded Dask workers, scheduler="threads").
_QL_LOCK = threading.Lock()


# ----- one scenario ------------------------------------------------------------
def scenario_market(market: Market, changes: dict[str, Any]) -> Market:
    """The base ``market`` with one scenario's fields set (validated).

    A flat volatility or rate replaces the base market's curve for that
    factor, and a curve replaces its flat value.
    """
    changes = dict(changes)
    for flat, curve in _PAIRS:
        if flat in changes and curve not in changes:
            changes[curve] = None
        elif curve in changes and flat not in changes:
            changes[flat] = None
    try:
        return market.replace(**changes)
    except TypeError as e:  # dataclasses.replace on an unknown field
        raise InputError("scenario", sorted(changes), str(e)) from None


@dataclass(frozen=True)
class _Job:
    """What every scenario shares; pickled once per worker."""

    structure: CapitalStructure
    market: Market
    engine: str
    greeks: bool
    options: dict[str, Any]

    def run(self, chunk: Sequence[tuple[int, dict[str, Any]]]) -> list[list[dict[str, Any]]]:
        """Value a chunk of ``(position, changes)``: per scenario, its result rows."""
        return [self.one(changes) for _, changes in chunk]

    def one(self, changes: dict[str, Any]) -> list[dict[str, Any]]:
        lock = _QL_LOCK if self.engine == "quantlib" else nullcontext()
        try:
            m = scenario_market(self.market, changes)
            with lock:
                df = value(self.structure, m, engine=self.engine, greeks=self.greeks,
                           **self.options)
        except Exception as e:  # reported in the scenario's rows, not fatal to the grid
            msg = f"{type(e).__name__}: {' '.join(str(e).split())}"
            insts = self.structure.instruments
            if not insts:
                return [{"error": msg}]
            return [{"name": x.name, "kind": x.kind, "error": msg} for x in insts]
        return [{**r, "error": None} for r in df.to_dict(orient="records")]


#: glibc heap thresholds restored in Dask workers (see _heap_for_numpy), bytes.
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 128 * 2**20
_heap_tuned = False


def _heap_for_numpy() -> None:
    """Keep numpy temporaries on the heap in a process started with MALLOC_TRIM_THRESHOLD_.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which
    turns off glibc's adaptive mmap threshold: every temporary array over
    128 KiB is then mmapped, page-faulted and unmapped afresh. Measured on a
    lattice2d valuation (illustrative.toml, steps=40): 2.8x the CPU time,
    0.4 million page faults per valuation. Raising both thresholds (once per
    process, glibc only) restores the speed of a plain process; memory is
    still reused, only returned to the OS less eagerly.
    """
    global _heap_tuned
    if _heap_tuned:
        return
    _heap_tuned = True
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    libc.mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, TRIM_THRESHOLD)  # M_TRIM_THRESHOLD


def _run_chunk(chunk: Sequence[tuple[int, dict[str, Any]]], job: _Job) -> list[list[dict]]:
    _heap_for_numpy()
    return job.run(chunk)


_WORKER_JOB: dict[str, _Job] = {}


def _init_worker(payload: bytes) -> None:
    _WORKER_JOB["job"] = pickle.loads(payload)


def _run_local_chunk(chunk: Sequence[tuple[int, dict[str, Any]]]) -> list[list[dict]]:
    return _WORKER_JOB["job"].run(chunk)


# ----- input ---------------------------------------------------------------------
def _cell(field: str, v: Any) -> Any:
    """A DataFrame cell as a Market field value; ``None`` means 'keep the base'."""
    if v is None or v is pd.NaT or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, np.generic):
        v = v.item()
        if isinstance(v, float) and math.isnan(v):
            return None
    if field == "valuation_date":
        if isinstance(v, datetime) and v == datetime(v.year, v.month, v.day, tzinfo=v.tzinfo):
            return date(v.year, v.month, v.day)
        if isinstance(v, str):
            try:
                return date.fromisoformat(v.strip())
            except ValueError:
                return v  # refused by Market, in this scenario's error column
    return v


def _changes(scenarios: pd.DataFrame) -> list[dict[str, Any]]:
    cols = list(scenarios.columns)
    out = []
    for row in scenarios.itertuples(index=False, name=None):
        ch = {}
        for c, v in zip(cols, row, strict=True):
            cv = _cell(c, v)
            if cv is not None:
                ch[c] = cv
        out.append(ch)
    return out


def _check_scenarios(scenarios: Any) -> pd.DataFrame:
    if not isinstance(scenarios, pd.DataFrame):
        try:
            scenarios = pd.DataFrame(scenarios)
        except (TypeError, ValueError) as e:
            raise InputError("scenarios", type(scenarios).__name__,
                             f"must be a DataFrame of Market fields ({e})") from None
    for c in scenarios.columns:
        if c not in FIELDS:
            raise InputError(f"scenarios.{c}", c, "is not a Market field (allowed: "
                             f"{', '.join(FIELDS)})")
    if scenarios.columns.duplicated().any():
        dup = scenarios.columns[scenarios.columns.duplicated()][0]
        raise InputError(f"scenarios.{dup}", dup, "appears twice")
    return scenarios


def _labels(scenarios: pd.DataFrame) -> pd.DataFrame:
    """Scenario description columns: ``scenario`` (position or the index) and index levels."""
    idx = scenarios.index
    n = len(scenarios)
    if isinstance(idx, pd.RangeIndex) and idx.name is None and idx.equals(pd.RangeIndex(n)):
        return pd.DataFrame({"scenario": np.arange(n)})
    names = [nm if nm is not None else ("label" if idx.nlevels == 1 else f"label_{i}")
             for i, nm in enumerate(idx.names)]
    labels = pd.DataFrame({nm: idx.get_level_values(i) for i, nm in enumerate(names)})
    for nm in names:
        if nm != "scenario" and (nm in _RESERVED or nm in scenarios.columns):
            raise InputError("scenarios.index", nm, "index level name clashes with a "
                             "result column; rename it")
    if "scenario" not in names:
        labels.insert(0, "scenario", np.arange(n))
    return labels


def _check_engine(structure: CapitalStructure, engine: str, options: dict[str, Any]) -> None:
    """Refuse, before any work, what would fail every scenario."""
    mod = engines.get(engine)
    engines.check_options(engine, options, mod.OPTIONS)
    if any(x.kind not in mod.KINDS for x in structure.claims):
        engines.get(engines.DEFAULT_ENGINE)  # value() falls back to it for those kinds


def _workers(client: Any) -> int:
    if client is not None:
        return max(1, sum(client.nthreads().values()))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _chunked(items: Sequence[Any], chunk_size: int) -> list[list[Any]]:
    return [list(items[i:i + chunk_size]) for i in range(0, len(items), chunk_size)]


def _progress_bar(total: int, progress: bool | None, desc: str):
    from tqdm import tqdm  # plain bar on stderr: tqdm.auto warns in kernels without ipywidgets

    # progress=None: a bar only when stderr is a terminal (tqdm's disable=None)
    return tqdm(total=total, desc=desc, unit="scenario", disable=None if progress is None
                else not progress, leave=False)


# ----- running -------------------------------------------------------------------
def _run_local(job: _Job, payload: bytes, chunks: list[list], scheduler: str, workers: int,
               bar: Any) -> list[list[list[dict]]]:
    if scheduler == "sync":
        out = []
        for ch in chunks:
            out.append(job.run(ch))
            bar.update(len(ch))
        return out
    ex: Executor
    if scheduler == "threads":
        ex = ThreadPoolExecutor(max_workers=workers)
        submit = lambda ch: ex.submit(_run_chunk, ch, job)  # noqa: E731
    else:
        ex = ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                                 initargs=(payload,))
        submit = lambda ch: ex.submit(_run_local_chunk, ch)  # noqa: E731
    with ex:
        futs = {submit(ch): i for i, ch in enumerate(chunks)}
        out: list[Any] = [None] * len(chunks)
        for f in as_completed(futs):
            i = futs[f]
            out[i] = f.result()
            bar.update(len(chunks[i]))
    return out


def _run_client(job: _Job, chunks: list[list], client: Any, bar: Any) -> list[list[list[dict]]]:
    from distributed import as_completed as dask_completed

    [job_f] = client.scatter([job], broadcast=True, hash=False)
    token = uuid.uuid4().hex
    futs = client.map(_run_chunk, chunks, job=job_f, pure=False,
                      key=[f"convpricer-grid-{token}-{i}" for i in range(len(chunks))])
    position = {f.key: i for i, f in enumerate(futs)}
    try:
        for f in dask_completed(futs):
            bar.update(len(chunks[position[f.key]]))
        return client.gather(futs)
    finally:
        client.cancel([*futs, job_f])


def value_grid(structure: CapitalStructure, market: Market, scenarios: pd.DataFrame | Any,
               engine: str = engines.DEFAULT_ENGINE, *, client: Any = None,
               scheduler: str | None = None, workers: int | None = None,
               chunk_size: int | None = None, progress: bool | None = False,
               greeks: bool = False, **options: Any) -> pd.DataFrame:
    """Value every instrument of ``structure`` in every scenario.

    ``scenarios``: DataFrame, one row per scenario, columns among :data:`FIELDS`
    overriding ``market`` (empty cells keep the base value); its index labels
    the scenarios. ``engine`` and ``options`` as for :func:`convpricer.value`;
    ``greeks`` is off by default (a grid is full revaluation).

    ``client``: a ``dask.distributed.Client``; without one the grid runs on
    this machine with ``scheduler`` "processes" (default when there is more
    than one core and more than one chunk), "threads" or "sync", on
    ``workers`` cores (default: all). ``chunk_size``: scenarios per task
    (default: about :data:`CHUNKS_PER_WORKER` tasks per worker).
    ``progress``: a tqdm bar on stderr (None: only on a terminal).

    Returns one row per scenario and instrument, in scenario order: the
    ``scenario`` column (position, or the index's own ``scenario`` level), the
    index levels, the scenario's market fields (effective values), the
    columns of :func:`convpricer.value`, and ``error`` (None, or why that
    scenario failed; its values are then missing). ``df.attrs`` records the
    engine, options, scheduler, workers, scenario and error counts and seconds.
    """
    scenarios = _check_scenarios(scenarios)
    _check_engine(structure, engine, options)
    if scheduler is not None and scheduler not in LOCAL_SCHEDULERS:
        raise InputError("scheduler", scheduler, f"must be one of {', '.join(LOCAL_SCHEDULERS)}"
                         " (use client= for a Dask cluster)")
    if client is not None and scheduler is not None:
        raise InputError("scheduler", scheduler, "is for local runs; a client was given")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise InputError("workers", workers, "must be an integer >= 1")
    if chunk_size is not None and (isinstance(chunk_size, bool)
                                   or not isinstance(chunk_size, int) or chunk_size < 1):
        raise InputError("chunk_size", chunk_size, "must be an integer >= 1")
    labels = _labels(scenarios)
    changes = _changes(scenarios)
    n = len(changes)
    nw = workers or _workers(client)
    size = chunk_size or max(1, math.ceil(n / (nw * CHUNKS_PER_WORKER)))
    chunks = _chunked(list(enumerate(changes)), size)

    job = _Job(structure, market, engine, greeks, dict(options))
    if client is not None:
        where = f"dask {client.scheduler.address}"
    elif scheduler is None:
        where = "processes" if nw > 1 and len(chunks) > 1 else "sync"
    else:
        where = scheduler
    payload = b""
    if client is not None or where == "processes":
        try:  # a clean copy (no cached QuantLib handles) is what travels
            job = dataclasses.replace(job, market=market.replace())
            payload = pickle.dumps(job)
        except (pickle.PicklingError, TypeError, AttributeError) as e:
            if client is not None or scheduler == "processes":
                raise InputError("market", "QuantLib term structure", "cannot be sent to "
                                 f"other processes ({e}); give curves as Curve tables or "
                                 "use scheduler='threads'") from None
            job, where = _Job(structure, market, engine, greeks, dict(options)), "threads"

    t0 = time.perf_counter()
    with _progress_bar(n, progress, "convpricer grid") as bar:
        if client is not None:
            results = _run_client(job, chunks, client, bar)
        else:
            results = _run_local(job, payload, chunks, where, nw, bar)
    seconds = time.perf_counter() - t0
    per_scenario = [rows for chunk in results for rows in chunk]
    return _assemble(labels, scenarios, market, per_scenario, attrs={
        "engine": engine, "options": dict(options), "greeks": greeks,
        "base_valuation_date": market.valuation_date.isoformat(), "scheduler": where,
        "workers": nw if where != "sync" else 1, "chunk_size": size, "scenarios": n,
        "seconds": seconds})


def _effective(scenarios: pd.DataFrame, market: Market) -> pd.DataFrame:
    """The scenario columns with empty cells filled by the base market's values."""
    out = {}
    for c in scenarios.columns:
        cells = (_cell(c, v) for v in scenarios[c])
        out[c] = [getattr(market, c) if v is None else v for v in cells]
    return pd.DataFrame(out, columns=list(scenarios.columns))


def _assemble(labels: pd.DataFrame, scenarios: pd.DataFrame, market: Market,
              per_scenario: list[list[dict]], attrs: dict[str, Any]) -> pd.DataFrame:
    desc = pd.concat([labels, _effective(scenarios, market)], axis=1)
    counts = [len(rows) for rows in per_scenario]
    desc = desc.loc[desc.index.repeat(counts)].reset_index(drop=True)
    res = pd.DataFrame.from_records([r for rows in per_scenario for r in rows])
    if "error" in res.columns:  # last, after whatever columns value() returned
        res = res[[c for c in res.columns if c != "error"] + ["error"]]
    else:
        res["error"] = None
    res = res.rename(columns={c: f"{c}_result" for c in res.columns if c in desc.columns})
    df = pd.concat([desc, res], axis=1)
    df.attrs.update(attrs, errors=sum(1 for rows in per_scenario
                                      if rows and rows[0].get("error") is not None))
    return df


def grid_columns(grid: pd.DataFrame) -> list[str]:
    """The scenario-description columns of a ``value_grid`` result (those before ``name``)."""
    cols = list(grid.columns)
    return cols[:cols.index("name")] if "name" in cols else cols[:1]


def scenario_errors(grid: pd.DataFrame) -> pd.DataFrame:
    """One row per failed scenario of a ``value_grid`` result: its description and error."""
    cols = [*grid_columns(grid), "error"]
    bad = grid.loc[grid["error"].notna(), cols]
    return bad.drop_duplicates(subset=cols[:-1]).reset_index(drop=True)
