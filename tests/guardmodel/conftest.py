"""Fixtures for the guard model tests live in tests/conftest.py (the jury tests share them)."""
