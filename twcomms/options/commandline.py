"""
Options on command lines: C{twistd comms} and C{twcomms serve} get a flag
per option (L{twistd_parameters}), C{twcomms send/listen} likewise
(L{add_arguments}); L{from_arguments} reads the given ones back.
L{options_table} is C{docs/options.md}.

Thread: any.
"""

from __future__ import annotations

import argparse
import enum
from collections.abc import Callable, Iterable
from typing import Any

from twcomms.options.sections import SECTIONS
from twcomms.options.spec import OptionSpec, option_fields

__all__ = ["add_arguments", "from_arguments", "options_table", "twistd_parameters"]


def _default_text(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


def twistd_parameters(sections: Iterable[type]) -> list[list[Any]]:
    """
    C{usage.Options.optParameters} rows for every option of C{sections}:
    C{[name, short, default, doc]}. The default is the field's Python
    value; a value given on the command line stays text until
    L{from_arguments} parses it (so a bad one is reported in our words,
    naming the flag).
    """
    rows: list[list[Any]] = []
    for section in sections:
        defaults = section()
        for name, spec in option_fields(section):
            rows.append([spec.flag[2:], spec.short, getattr(defaults, name), spec.doc])
    return rows


def add_arguments(parser: argparse.ArgumentParser, sections: Iterable[type]) -> None:
    """
    Add a flag to C{parser} for every option of C{sections} (defaults:
    L{None}, meaning the field's default; see L{from_arguments}).
    """
    for section in sections:
        defaults = section()
        group = parser.add_argument_group(f"{section.section} options")  # type: ignore[attr-defined]
        for name, spec in option_fields(section):
            flags = [spec.flag] + ([f"-{spec.short}"] if spec.short else [])
            group.add_argument(
                *flags,
                dest=f"option_{name}",
                type=_argparse_type(spec),
                default=None,
                metavar=spec.metavar,
                help=f"{spec.doc} Default: {_default_text(getattr(defaults, name))}.",
            )


def _argparse_type(spec: OptionSpec) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return spec.parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = spec.flag  # argparse names it in "invalid ... value"
    return parse


def from_arguments(
    values: dict[str, Any] | argparse.Namespace, sections: Iterable[type]
) -> dict[str, Any]:
    """
    The option keywords given on a command line: from an argparse namespace
    filled by L{add_arguments}, or from a C{usage.Options} mapping filled
    through L{twistd_parameters} (keyed by flag name; given values are
    parsed here).

    @raise ValueError: a value that does not parse, the message naming its
        flag (C{--type must be one of json, string, binary, not 'xml'}).
    """
    out: dict[str, Any] = {}
    for section in sections:
        defaults = section()
        for name, spec in option_fields(section):
            if isinstance(values, argparse.Namespace):
                value = getattr(values, f"option_{name}", None)
                if value is not None:
                    out[name] = value
                continue
            value = values[spec.flag[2:]]
            if value is not getattr(defaults, name):
                try:
                    value = spec.parse(value)
                except ValueError as e:
                    raise ValueError(f"{spec.flag} {e}") from None
            out[name] = value
    return out


def options_table() -> str:
    """
    Every option as Markdown tables, one per section (C{docs/options.md}
    is this text; a test keeps the two the same).
    """
    lines = [
        "# Options",
        "",
        "Generated from `twcomms/options/sections.py` (`python -m twcomms.options`).",
        "",
    ]
    for section in SECTIONS:
        lines.append(f"## {section.__name__} (`{section.section}`)")  # type: ignore[attr-defined]
        lines.append("")
        lines.append("| option | default | flag | what it does |")
        lines.append("|---|---|---|---|")
        defaults = section()
        for name, spec in option_fields(section):
            default = _default_text(getattr(defaults, name))
            lines.append(f"| `{name}` | {default} | `{spec.flag}` | {spec.doc} |")
        lines.append("")
    return "\n".join(lines)
