"""Data sources, cache and document selection (see catalog.py for the public functions)."""
