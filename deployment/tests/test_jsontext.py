"""The prediction endpoints' JSON: orjson's speed, the standard parser's refusals and words."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deployment import jsontext


def test_a_body_is_parsed_as_the_standard_parser_would() -> None:
    text = b'{"idx": 7, "features": {"a": 1.5, "b": "\\u00e9t\\u00e9", "c": null, "d": [true, false, -0.0, 1e-7]}}'
    assert jsontext.loads(text) == json.loads(text)
    assert jsontext.loads(b"18446744073709551615") == 2**64 - 1


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (b"{idx: 1", "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        (b'{"a": NaN}', "NaN is not JSON"),
        (b"[Infinity]", "Infinity is not JSON"),
        (b"[-Infinity]", "-Infinity is not JSON"),
        (b"", "Expecting value: line 1 column 1 (char 0)"),
        (b'{"a": 1} x', "Extra data: line 1 column 10 (char 9)"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"[" * 1_025 + b"]" * 1_025, "nested too deeply"),  # orjson's limit is 1,024 levels
    ],
)
def test_what_is_not_json_is_refused_in_the_standard_parsers_words(text: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match="^" + problem.replace("(", r"\(").replace(")", r"\)") + "$"):
        jsontext.loads(text)


def test_what_only_the_standard_parser_reads_is_read_as_before() -> None:
    """An integer beyond a double (orjson calls it infinity) stays an integer: the request
    models refuse it by its value, naming the field, as before."""
    huge = 10**400
    assert jsontext.loads(f'{{"idx": {huge}}}'.encode()) == {"idx": huge}


def test_answers_keep_key_order_write_arrays_and_end_with_a_newline() -> None:
    payload = {"z": 1, "a": np.array([0.1, 1e-05]), "m": np.array([1, 0], dtype=np.int64), "k": [None, True]}
    text = jsontext.dumps(payload)
    assert text.endswith(b"\n") and list(json.loads(text)) == ["z", "a", "m", "k"]
    assert json.loads(text) == {"z": 1, "a": [0.1, 1e-05], "m": [1, 0], "k": [None, True]}
