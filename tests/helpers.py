"""
Shared test helpers: what the original library writes and reads, written
independently of twcomms (its framing is in L{harness.wire}).
"""

from __future__ import annotations

import json
from typing import Any


def original_encode(value: Any) -> bytes:
    """
    What the original library's sender writes for C{value}, whatever its
    mode: dict -> json.dumps, str -> UTF-8, bytes -> as is.
    """
    if type(value) is dict:
        return json.dumps(value).encode()
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes):
        return value
    raise TypeError(f"the original crashes on {type(value).__name__}")


def original_decode(payload: bytes, data_type: str) -> Any:
    """
    What the original library's receiver makes of a payload.
    """
    if data_type == "json":
        return json.loads(payload.decode("utf-8"))
    if data_type == "string":
        return payload.decode("utf-8")
    return payload
