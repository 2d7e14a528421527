"""``python -m convpricer.cli``: the command line (same as the ``convpricer`` script)."""

from . import main

if __name__ == "__main__":
    raise SystemExit(main())
