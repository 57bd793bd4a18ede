"""Siaga's benchmark harness: `python -m bench` (see bench/README.md); not part of the tests."""
