"""Haptic devices, wire protocol, safety and calibration (later issues)."""
