"""Siaga ingest package."""
