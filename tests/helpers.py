"""
Shared test helpers: independent reference encoders.
"""

from __future__ import annotations

import json
import struct
from typing import Any


def reference_frame(payload: bytes, byte_order: str = "little") -> bytes:
    """
    A frame built the way the original library builds one, independently of
    twcomms: C{struct.pack('<I', n) + payload}.
    """
    fmt = "<I" if byte_order == "little" else ">I"
    return struct.pack(fmt, len(payload)) + payload


def reference_parse(stream: bytes, byte_order: str = "little") -> list[bytes]:
    """
    Split a byte stream into payloads, independently of twcomms.
    """
    fmt = "<I" if byte_order == "little" else ">I"
    out = []
    i = 0
    while i < len(stream):
        (n,) = struct.unpack(fmt, stream[i : i + 4])
        out.append(stream[i + 4 : i + 4 + n])
        i += 4 + n
    assert i == len(stream), "trailing partial frame"
    return out


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
