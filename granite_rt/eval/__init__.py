"""Pieces of the retrieval-fidelity evaluation: collection loaders and ranking metrics (numpy only)."""
