"""Conventions every part of the engine shares: errors, labels, atomic writes, progress, logging. No torch."""
