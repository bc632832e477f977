"""Benchmarks of granite-rt against sentence-transformers and fastembed (``python -m bench``)."""
