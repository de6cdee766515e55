"""Scoring: metrics, reports, preview images."""
