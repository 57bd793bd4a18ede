"""Siaga rules package."""
