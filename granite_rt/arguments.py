"""Checks of the public API's arguments, shared by every module that takes them (one wording, one rule)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np


def is_int(value: Any) -> bool:
    """An integer that is not a bool (``True`` is an int to Python, never a count to us); numpy ints count."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def as_list(items: Any, what: str, expected: str = "a str or a list of str") -> list:
    """A list from a list/tuple/iterable argument; anything else is a TypeError naming the argument.

    A str is refused too (callers that take one str handle it before): iterating it would turn each
    character into an input, e.g. ``rank(query, "one document")`` ranking 12 one-letter documents.
    """
    if isinstance(items, str):
        raise TypeError(f"{what} must be {expected}, got a str (pass [{what[:-1] if what.endswith('s') else what}] "
                        "for a single one)")
    if items is None or isinstance(items, (bytes, dict)) or not hasattr(items, "__iter__"):
        raise TypeError(f"{what} must be {expected}, got {type(items).__name__}")
    return list(items)


def json_object(line: str, where: str, error: type[Exception]) -> dict:
    """One line of a JSON Lines file as a dict; ``error(where ...)`` names the line when it is not a JSON object."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise error(f"{where} is not JSON: {err.msg}") from None
    if not isinstance(record, dict):
        raise error(f"{where} is a JSON {type(record).__name__}; each line must be an object")
    return record
