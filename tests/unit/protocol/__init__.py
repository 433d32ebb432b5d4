"""Unit tests of the sans-IO MySQL protocol package."""
