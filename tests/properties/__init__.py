"""Property tests. A package so that its conftest.py is imported as
``properties.conftest`` and does not replace ``tests/conftest.py`` as the
``conftest`` module whose helpers the tests in ``tests/`` import."""
