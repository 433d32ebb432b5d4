"""Helpers shared by the test modules (imported explicitly, never from conftest.py)."""
