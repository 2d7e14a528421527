"""The ``convpricer`` command line (design.md section 6).

Exit status: 0 on success, 2 on bad input (one line on stderr, nothing on
stdout), 1 on a bug. Each subcommand lives in its own module and registers
itself through ``register(subparsers)``.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from ..errors import ConvPricerError

SUBCOMMANDS = ("value", "waterfall", "stress", "grid")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every bad input
        self.exit(2, f"convpricer: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = _Parser(prog="convpricer", description="Price a bitcoin-treasury company's "
                     "convertible notes, preferred stock and common equity.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in SUBCOMMANDS:
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name}":
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        text = args.run(args)
    except ConvPricerError as e:  # user error: one line, exit 2
        msg = " ".join(str(e).split())
        print(f"convpricer: error: {msg}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug: say so, exit 1
        if os.environ.get("CONVPRICER_DEBUG"):
            traceback.print_exc()
        print(f"convpricer: internal error ({type(e).__name__}: {e}); "
              "set CONVPRICER_DEBUG=1 for the traceback", file=sys.stderr)
        return 1
    if text:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
