"""JSON decoding: orjson for speed, the standard library where orjson would be wrong or refuses.

orjson rejects `NaN`, `Infinity` and numbers beyond a double (which the API's JSON can hold and which the
loader keeps, as text variants), and turns integers of 2**64 and more into floats silently. A body that
orjson rejects, or that holds a run of 20 or more digits (the only way to write such an integer), is
decoded by the standard library instead, so every value arrives exactly as served.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_LONG_DIGITS = re.compile(rb"[0-9]{20}")


def decode_json(content: bytes) -> Any:
    """The JSON document in `content`, decoded exactly; raises ValueError when it is not JSON."""
    if _LONG_DIGITS.search(content) is None:
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            pass  # NaN, Infinity, 1e400, or not JSON at all: the standard library decides
    return json.loads(content)
