"""JSON decoding: orjson for speed, the standard library where orjson would be wrong or refuses.

orjson rejects `NaN`, `Infinity` and numbers beyond a double (which the API's JSON can hold and which the
loader keeps, as text variants), and turns integers of 2**64 and more into floats silently. A body that
orjson rejects, or that holds a run of 20 or more digits (the only way to write such an integer), is
decoded by the standard library instead, so every value arrives exactly as served.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# every digit -> "1", any other byte -> "0": a run of 20 digits is then a plain substring search, in C
# (13x faster than the regex [0-9]{20} on a 30 KB page, which cost the events backfill 2 s of GIL)
_DIGIT_MAP = bytes(0x31 if 0x30 <= byte <= 0x39 else 0x30 for byte in range(256))
_TWENTY_DIGITS = b"1" * 20


def has_long_digit_run(content: bytes) -> bool:
    return content.translate(_DIGIT_MAP).find(_TWENTY_DIGITS) >= 0


def decode_json(content: bytes) -> Any:
    """The JSON document in `content`, decoded exactly; raises ValueError when it is not JSON."""
    if not has_long_digit_run(content):
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            pass  # NaN, Infinity, 1e400, or not JSON at all: the standard library decides
    return json.loads(content)
