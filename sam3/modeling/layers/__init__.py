"""Reusable layers: one per file."""
