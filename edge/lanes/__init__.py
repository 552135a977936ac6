"""Registers (lanes): identity, lifecycle and presence."""
