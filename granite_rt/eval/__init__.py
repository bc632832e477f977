"""Retrieval fidelity (``granite-rt eval``): collection loaders (``collections``), ranking metrics (``metrics``),
the torch reference (``reference``) and the runner that compares every artifact of a model folder with it
(``runner.evaluate``)."""
