"""
How an option is declared: L{option} makes a dataclass field that carries
its documentation and how it is read from command-line text; the readers
and checks the sections share.

Thread: plain values; any thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = [
    "OptionSpec",
    "check_int",
    "check_number",
    "check_timeout",
    "option",
    "option_fields",
    "read_choice",
    "read_flag",
    "read_seconds",
    "read_timeout",
    "read_whole",
    "read_whole_or_none",
    "set_field",
]


def read_whole(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"takes a whole number, not {text!r}") from None
    if n < 0:
        raise ValueError(f"must be >= 0, not {n}")
    return n


def read_whole_or_none(text: str) -> int | None:
    return None if text.lower() == "none" else read_whole(text)


def read_seconds(text: str) -> float:
    try:
        f = float(text)
    except ValueError:
        raise ValueError(f"takes seconds, not {text!r}") from None
    if not f >= 0:
        raise ValueError(f"must be >= 0 seconds, not {text}")
    return f


def read_timeout(text: str) -> float | None:
    # 0 (or "none") turns a timeout off, as operators expect of a flag.
    if text.lower() in ("none", "off"):
        return None
    return read_seconds(text) or None


def read_choice(*values: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in values:
            raise ValueError(f"must be one of {', '.join(values)}, not {text!r}")
        return text

    parse.choices = values  # type: ignore[attr-defined]
    return parse


def read_flag(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"takes yes or no, not {text!r}")


@dataclass(frozen=True)
class OptionSpec:
    """
    What a field declares besides its type and default.

    @ivar doc: one line of documentation (help text, docstrings).
    @ivar parse: reads the value from command-line text; raises
        C{ValueError} with a message to show after the flag's name.
    @ivar flag: the long command-line flag.
    @ivar short: a one-letter flag, or L{None}.
    @ivar metavar: the value's name in help text.
    """

    doc: str
    parse: Callable[[str], Any]
    flag: str
    short: str | None
    metavar: str

    @property
    def choices(self) -> tuple[str, ...] | None:
        return getattr(self.parse, "choices", None)


def option(
    default: Any,
    doc: str,
    parse: Callable[[str], Any],
    *,
    flag: str | None = None,
    short: str | None = None,
    metavar: str = "VALUE",
) -> Any:
    """
    Declare a field as an option (its flag defaults to C{--field-name}).
    """
    return field(
        default=default,
        metadata={
            "option": {
                "doc": doc,
                "parse": parse,
                "flag": flag,
                "short": short,
                "metavar": metavar,
            }
        },
    )


def option_fields(section: type) -> Iterator[tuple[str, OptionSpec]]:
    """
    The options a section declares, as C{(name, spec)}, in order.
    """
    for f in fields(section):
        meta = f.metadata.get("option")
        if meta is None:
            continue
        flag = meta["flag"] or "--" + f.name.replace("_", "-")
        yield (
            f.name,
            OptionSpec(
                meta["doc"], meta["parse"], flag, meta["short"], meta["metavar"]
            ),
        )


# -- checks ---------------------------------------------------------------------


def check_timeout(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None")
    if not value > 0:
        raise ValueError(f"{name} must be positive (seconds), or None; not {value}")
    return float(value)


def check_int(name: str, value: Any, minimum: int, *, none: bool = False) -> None:
    if value is None and none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        kind = "an int or None" if none else "an int"
        raise TypeError(f"{name} must be {kind}, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {value}")


def check_number(name: str, value: Any, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not value >= minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {value}")
    return float(value)


def set_field(obj: object, name: str, value: Any) -> None:
    # Normalising a frozen dataclass's own field in __post_init__.
    object.__setattr__(obj, name, value)
