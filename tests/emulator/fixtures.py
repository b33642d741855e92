"""Placeholder until the emulator lands: defines no fixtures yet."""
