"""granite_rt.arguments: the shared argument checks, one wording for every caller."""

from __future__ import annotations

import numpy as np
import pytest

from granite_rt.arguments import as_list, is_int, json_object
from granite_rt.errors import CollectionError, CorpusError


def test_is_int_takes_numpy_ints_and_refuses_bools():
    assert is_int(3) and is_int(np.int64(3))
    assert not is_int(True) and not is_int(3.0)


def test_as_list_refuses_a_bare_str():
    assert as_list(("a", "b"), "texts") == ["a", "b"]
    with pytest.raises(TypeError, match=r"texts must be .* got a str \(pass \[text\]"):
        as_list("one", "texts")


@pytest.mark.parametrize("line, message", [("{broken", r"f\.jsonl line 3 is not JSON: "),
                                           ("[1, 2]", r"f\.jsonl line 3 is a JSON list; each line must be an object"),
                                           ('"text"', r"f\.jsonl line 3 is a JSON str; each line must be an object")])
@pytest.mark.parametrize("error", [CorpusError, CollectionError])
def test_json_object_names_the_line_in_the_callers_error(line, message, error):
    with pytest.raises(error, match=message):
        json_object(line, "f.jsonl line 3", error)
    assert json_object('{"text": "x", "id": 1}', "f.jsonl line 3", error) == {"text": "x", "id": 1}
