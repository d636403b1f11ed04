"""A small TOML writer for the master's marea.toml (the standard library reads TOML but does not write it).

Only what marea's config contains: strings, numbers, booleans, lists of scalars, tables and arrays of tables.
JSON string escapes are a subset of TOML basic-string escapes, so `json.dumps` quotes strings safely.
"""

from __future__ import annotations

import json
from typing import Any


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as a TOML value")


def _is_table(value: Any) -> bool:
    return isinstance(value, dict)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _emit(table: dict[str, Any], prefix: str, out: list[str]) -> None:
    for key, value in table.items():
        if not _is_table(value) and not _is_table_array(value):
            out.append(f"{json.dumps(key)} = {_scalar(value)}")
    for key, value in table.items():
        name = f"{prefix}.{json.dumps(key)}" if prefix else json.dumps(key)
        if _is_table(value):
            out.append(f"\n[{name}]")
            _emit(value, name, out)
        elif _is_table_array(value):
            for item in value:
                out.append(f"\n[[{name}]]")
                _emit(item, name, out)


def dumps(data: dict[str, Any]) -> str:
    out: list[str] = []
    _emit(data, "", out)
    return "\n".join(out).lstrip("\n") + "\n"
