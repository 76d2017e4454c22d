"""Benchmarks of the orderproc hot path (``make bench``)."""
