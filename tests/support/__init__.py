"""Helpers that only the tests use; not part of the framelm package."""
