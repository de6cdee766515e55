"""Segmenting a volume: ensemble sampling, fusion, clean-up, sample cache, summary."""
