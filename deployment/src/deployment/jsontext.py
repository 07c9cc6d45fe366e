"""JSON in and out of the prediction endpoints: orjson on the way, the standard library's words on refusal.

orjson parses a body in a fraction of the standard parser's time and refuses what is not JSON
(NaN, Infinity, nesting deeper than 1,024). What it refuses is parsed again by the standard
parser, strictly (no NaN or Infinity, a RecursionError is a refusal): its message says where
it stopped in the words the API always used, and a body it accepts (an integer wider than
64 bits, a UTF-16 body) is taken as before. Only refusals pay for the second parse.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# Answers: NumPy arrays written as they are, a newline at the end (as Flask's jsonify does).
DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_loads(text: str | bytes, **kwargs: Any) -> Any:
    """The standard parser as the standard says: NaN and Infinity are refused (ValueError), and
    so is nesting deeper than the parser goes (`[[[[...`: a ValueError, not a RecursionError)."""
    try:
        return json.loads(text, parse_constant=_no_constants, **kwargs)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def loads(raw: bytes) -> Any:
    """A request body's JSON; ValueError naming where the parser stopped when it is none."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return strict_loads(raw)  # the message, or a body only the standard parser takes


def dumps(payload: Any) -> bytes:
    """Compact JSON, keys in the order given, NumPy arrays and scalars as their values."""
    return orjson.dumps(payload, option=DUMP_OPTIONS)
