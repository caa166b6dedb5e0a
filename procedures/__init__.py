"""Surgical tasks built on the scene (later issues)."""
