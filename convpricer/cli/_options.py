"""Engine arguments shared by the subcommands that price (value, grid, stress)."""

from __future__ import annotations

import argparse
from typing import Any

from .. import engines
from ..loader import Document


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    """--engine, --steps, --paths and --seed: the flags every pricing subcommand takes."""
    p.add_argument("--engine", choices=tuple(engines.ENGINES), default=None,
                   help=f"pricing engine (default: the file's [engine].kind, else "
                        f"{engines.DEFAULT_ENGINE})")
    p.add_argument("--steps", type=int, default=None, help="time steps (lattice engines)")
    p.add_argument("--paths", type=int, default=None, help="paths (montecarlo)")
    p.add_argument("--seed", type=int, default=None, help="random seed (montecarlo)")


def engine_options(doc: Document, args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The engine and its options: the file's [engine] table, overridden by the flags."""
    options = dict(doc.engine)
    file_engine = options.pop("kind", engines.DEFAULT_ENGINE)
    engine = args.engine or file_engine
    if engine != file_engine:
        options = {}  # the file's options belong to the file's engine
    for k in ("steps", "paths", "seed"):
        if getattr(args, k, None) is not None:
            options[k] = getattr(args, k)
    return engine, options
