"""``python -m convpricer``: the command line (same as the ``convpricer`` script)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
